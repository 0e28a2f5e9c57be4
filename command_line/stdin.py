"""producer.py's messages, stdin's lines read by a thread as they come."""

from __future__ import annotations

import errno
import os
import sys
import threading
from collections import deque
from typing import TYPE_CHECKING

from twisted.internet import defer

from amqp_support import Failed

if TYPE_CHECKING:
    from collections.abc import Iterable

    from twisted.internet.interfaces import IReactorFromThreads


class MessageBodies:
    """Every MESSAGE as bytes, and for "-" every line of stdin without its
    newline, each --count times. A thread reads stdin (a read may wait as
    long as the writer likes, as with `tail -f log |`), at most READ_AHEAD
    bytes ahead. Call next() only when ready() is None, not a Deferred. A
    stdin that cannot be read ends the lines (what was read is sent), and
    check() then says so."""

    READ_AHEAD = 256 << 10  # short lines are some 50 bytes of memory each: 4 MiB of them held 17 MiB

    def __init__(self, reactor: IReactorFromThreads, messages: Iterable[str], count: int) -> None:
        self.messages = list(messages)
        self.count = count
        self.body, self.copies = b"", 0  # the body being repeated, and how many more times
        self.reactor = reactor
        self.lines: deque[bytes] = deque()  # stdin's lines read, not yet given out
        self.buffered = 0  # their bytes, and those of the line still coming
        self.partial: list[bytes] = []  # chunks of the line still coming
        self.ended = "-" not in self.messages
        self.error: str | None = None  # why stdin could not be read, if it could not
        self.waiting: defer.Deferred[None] | None = None  # the Deferred ready() gave out
        self.more = threading.Event()  # the thread may read on
        self.more.set()
        if not self.ended:
            # The thread reads the file descriptor itself, not sys.stdin.buffer: a read of a
            # BufferedReader holds its lock, and one that returns as Python exits (the writer
            # gone with the same Ctrl-C) would keep it, so that Python aborts ("could not
            # acquire lock ... at interpreter shutdown") instead of exiting with our status.
            fd = sys.stdin.fileno() if sys.stdin is not None else None  # None: closed (`0<&-`)
            threading.Thread(target=self.read, args=(fd,), daemon=True).start()

    def __iter__(self) -> MessageBodies:
        return self

    def __next__(self) -> bytes:
        if not self.copies:
            self.body = self.take()
            self.copies = self.count
        self.copies -= 1
        return self.body

    def take(self) -> bytes:
        while self.messages:
            if self.messages[0] != "-":
                return os.fsencode(self.messages.pop(0))  # the bytes the shell passed
            if self.lines:
                line = self.lines.popleft()
                self.buffered -= len(line)
                self.read_on()
                return line
            assert self.ended, "next() before ready()"
            self.messages.pop(0)
        raise StopIteration

    def ready(self) -> defer.Deferred[None] | None:
        if self.copies or self.lines or self.ended or not self.messages or self.messages[0] != "-":
            return None
        if self.waiting is None:
            self.waiting = defer.Deferred()
        return self.waiting

    def read_on(self) -> None:
        # Read on below READ_AHEAD, or while no whole line is in: a line may be longer.
        if not self.more.is_set() and (self.buffered < self.READ_AHEAD or not self.lines):
            self.more.set()  # (set() takes a lock: not for every line)

    def check(self, sent: int) -> None:
        """After the sending: Failed if stdin could not be read, saying what the broker had taken."""
        if self.error is not None:
            raise Failed("cannot read stdin: %s; the broker had taken %d message(s)" % (self.error, sent))

    def read(self, fd: int | None) -> None:
        """In the thread: stdin in chunks, each handed to the reactor."""
        while True:
            self.more.wait()
            try:
                if fd is None:
                    raise OSError(errno.EBADF, "it is closed")
                chunk = os.read(fd, 1 << 16)
            except OSError as e:  # write-only (EBADF), a terminal gone (EIO), ...
                self.reactor.callFromThread(self.failed, e.strerror or str(e))
                return
            self.more.clear()  # until received() (or take()) says there is room for more
            self.reactor.callFromThread(self.received, chunk)
            if not chunk:
                return

    def failed(self, why: str) -> None:
        """In the reactor: stdin could not be read; a line it had not ended is not sent."""
        self.error, self.partial = why, []
        self.received(b"")

    def received(self, chunk: bytes) -> None:
        """In the reactor: the lines of a chunk (b"" at the end of stdin)."""
        if chunk:
            *complete, rest = chunk.split(b"\n")
            if complete:
                self.partial.append(complete[0])
                complete[0] = b"".join(self.partial)
                self.partial = []
                self.lines.extend(complete)
            if rest:
                self.partial.append(rest)
            self.buffered += len(chunk) - len(complete)
            self.read_on()
        else:
            if self.partial:  # a last line without a newline
                self.lines.append(b"".join(self.partial))
                self.partial = []
            self.ended = True
        if self.waiting is not None and (self.lines or self.ended):
            d, self.waiting = self.waiting, None
            d.callback(None)

