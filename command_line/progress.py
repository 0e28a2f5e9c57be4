"""The producer's progress line on a terminal."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from twisted.internet import task

from command_line.running import Stderr, stderr

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from amqp_support import Outbox


class Progress:
    """with Progress(reactor, outbox): on a live stderr, a line counting the
    messages sent and taken, from one second into the run; erased at the end."""

    INTERVAL = 0.25  # seconds between drawings
    DELAY = 1.0  # seconds before the first

    def __init__(self, reactor: IReactorTime, outbox: Outbox, stderr: Stderr = stderr) -> None:
        self.clock = reactor
        self.stderr = stderr
        self.outbox = outbox
        self.loop = task.LoopingCall(self.draw)
        self.loop.clock = reactor
        self.started = 0.0
        self.samples: deque[tuple[float, int]] = deque()  # (time, taken) over the last second or so, for the rate

    def __enter__(self) -> Progress:
        if self.stderr.live:
            self.started = self.clock.seconds()
            self.samples.append((self.started, self.outbox.counts()[1]))
            self.loop.start(self.INTERVAL, now=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.loop.running:
            self.loop.stop()
        self.stderr.erase()

    def draw(self) -> None:
        now = self.clock.seconds()
        elapsed = now - self.started
        if elapsed < self.DELAY:
            return
        sent, taken = self.outbox.counts()
        self.samples.append((now, taken))
        while now - self.samples[0][0] > 1.0 + self.INTERVAL / 2:
            self.samples.popleft()
        then, taken_then = self.samples[0]
        rate = (taken - taken_then) / (now - then) if now > then else 0
        self.stderr.draw("sent %d, %s %d, %d msg/s, %d:%02d"
                         % (sent, "confirmed" if self.outbox.confirms else "committed", taken,
                            rate, elapsed // 60, elapsed % 60))

