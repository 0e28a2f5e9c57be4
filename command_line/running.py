"""How a script runs: every line for a person on stderr through one path
(say, warn), every failure one line and an exit status, Ctrl-C, SIGTERM and SIGHUP
a cancellation of main's Deferred.

    @running.script(parser)
    @defer.inlineCallbacks
    def main(reactor, args): ...
"""

from __future__ import annotations

import atexit
import functools
import gc
import os
import signal
import sys
import traceback
from typing import TYPE_CHECKING, cast

from twisted.internet import defer
from twisted.logger import ILogObserver, formatEvent, globalLogBeginner, textFileLogObserver
from twisted.python.failure import Failure

from amqp_support import ConnectionFailed, UsageError, explain, is_status, remedy
from command_line.options import parse_args
from command_line.text import shorten

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from types import FrameType
    from typing import TextIO

    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorCore, IReactorFromThreads, IReactorTime
    from twisted.logger import LogEvent

    from command_line.options import ArgumentParser

    class IScriptReactor(IReactorCore, IReactorTime, IReactorFromThreads):
        """What a script's main(reactor, args) uses of the reactor task.react gives it."""

    # A script's main(reactor, args), and what script() makes of it for task.react.
    Main = Callable[[IScriptReactor, argparse.Namespace], Deferred[None]]
    Run = Callable[..., Deferred[None]]

# What to do about the failures whose remedy is on the command line
# (amqp_support's remedy() names them).
HINTS = {
    "untrusted-certificate": "give its CA with --cafile",
    "client-certificate": "give --certfile and --keyfile",
    "speaks-0-9-1": "use amqp0-9-1.xml",
    "speaks-0-8": "use amqp0-8.xml",
    "unexpected": "run with --verbose for the traceback",
}


class Stderr:
    """stderr as the scripts write to it: whole lines, and when live (a
    terminal, not with --verbose) the progress line redrawn in place below
    them, which any other line erases first."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.prog = os.path.basename(sys.argv[0])
        self.live = False
        self.drawn = False

    def start(self, prog: str, live: bool) -> None:
        self.prog = prog
        self.live = live and self.stream.isatty() and os.environ.get("TERM") != "dumb"

    def status(self, event: LogEvent) -> None:
        """A twisted.logger observer: amqp_support's status lines."""
        if is_status(event):
            self.line(formatEvent(event))

    def line(self, text: str) -> None:
        self.erase()
        print(text, file=self.stream, flush=True)

    def draw(self, text: str) -> None:
        """(Re)draw the progress line: at most as wide as the terminal, so it cannot wrap."""
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns
        except OSError:
            width = 80
        self.stream.write("\r" + text[:width - 1] + "\x1b[K")  # \x1b[K: erase to the end of the line
        self.stream.flush()
        self.drawn = True

    def erase(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False


stderr = Stderr(sys.stderr)


def say(text: str) -> None:
    stderr.line(text)


def warn(text: str) -> None:
    stderr.line("%s: warning: %s" % (stderr.prog, text))


def fail(text: str) -> None:
    stderr.line("%s: error: %s" % (stderr.prog, shorten(text, limit=1000, word=300)))


def script(parser: ArgumentParser) -> Callable[[Main], Run]:
    """Run main(reactor, args); every failure ends in one line on stderr and
    exit status 2 (usage or spec) or 1. On Ctrl-C, SIGTERM or SIGHUP, main decides
    what its cancelled step means (the consumer stops consuming and closes)."""
    def decorate(main: Main) -> Run:
        @functools.wraps(main)
        def run(reactor: IScriptReactor, *argv: str) -> Deferred[None]:
            # What the imports made (some 40,000 objects) lives as long as the
            # process: frozen, the garbage collector no longer walks it
            # (docs/benchmark.md, "Where the time goes": Start-up).
            gc.freeze()
            args = parse_args(parser, argv)
            stderr.start(parser.prog, live=not args.verbose)
            observer = textFileLogObserver(sys.stderr) if args.verbose else stderr.status
            # (A function is an ILogObserver, but mypy cannot tell.)
            globalLogBeginner.beginLoggingTo([cast(ILogObserver, observer)], redirectStandardIO=False)
            d = defer.maybeDeferred(main, reactor, args)
            interruption = Interruption(reactor, d)
            # After reactor.run() has installed its own handlers, to replace them.
            reactor.callWhenRunning(interruption.install)
            d.addErrback(exit_with_one_line, args.verbose, interruption)
            if main.__module__ == "__main__":  # the script run as a program, not imported (a test's)
                d.addBoth(end_at_exit)
            return d
        return run
    return decorate


class Interruption:
    """Ctrl-C, SIGTERM or SIGHUP cancels main's Deferred; a second one ends the process."""

    def __init__(self, reactor: IScriptReactor, d: Deferred[None]) -> None:
        self.reactor = reactor
        self.d = d
        self.signal: str | None = None

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal closed
            signal.signal(signum, self.handler)

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.d.called:
            return
        if self.signal is not None:
            os._exit(1)  # the second one: stop now, without closing
        self.signal = signal.Signals(signum).name
        self.reactor.callFromThread(self.d.cancel)


def end_at_exit(result: object) -> object:
    """Speed only: once main's result is known, have the process end at Python's
    exit (its threads joined, what atexit is given from now on run first; what it
    was given before is skipped) with os._exit and the status task.react exits
    with. Python's own teardown of every module and object the imports made took
    some 10 ms more, about 4% of sending one message (docs/benchmark.md, "Where
    the time goes": Start-up)."""
    code: object = 0
    if isinstance(result, Failure):
        code = result.value.code if isinstance(result.value, SystemExit) else 1
    if code is None or type(code) is int:  # else (a text) Python prints it: left to it
        atexit.register(_end_now, code or 0)
    return result


def _end_now(code: int) -> None:
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):  # Python's exit says what failed, and exits with 120: left to it
        return
    os._exit(code)


def exit_with_one_line(failure: Failure, verbose: bool, interruption: Interruption) -> Failure:
    if failure.check(SystemExit):
        return failure
    if verbose:
        traceback.print_exception(failure.type, failure.value, failure.getTracebackObject())
    if failure.check(defer.CancelledError) and interruption.signal:
        line = "interrupted by %s before the end" % interruption.signal
        notes = getattr(failure.value, "__notes__", ())  # what had been done (AMQPService.run's note)
        line += " (%s)" % "; ".join(notes) if notes else ""
    else:
        e = failure.value
        assert e is not None  # (a Failure always holds its exception)
        line = explain(e)
        hint = remedy(e.reason if isinstance(e, ConnectionFailed) else e)
        if hint in HINTS and not (verbose and hint == "unexpected"):  # verbose: the traceback is there
            line += "; " + HINTS[hint]
    fail(line)
    raise SystemExit(2 if failure.check(UsageError) else 1)
