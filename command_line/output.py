"""The consumer's stdout: lines that are out once flush() returns, or one clear failure.

A character the stream's encoding cannot write (PYTHONIOENCODING=ascii, LC_ALL=C)
is written as printable() writes one that is not printable, \\uNNNN or
\\UNNNNNNNN: the line still reads back to the exact bytes, and the message is not
a poison message for this consumer. A closed stdout (`>&-`, the end of `| head`)
or a full disk raises OutputFailed, saying how many lines were printed.
"""

from __future__ import annotations

import codecs
import errno
import os
from typing import TYPE_CHECKING

from amqp_support import Failed

if TYPE_CHECKING:
    from typing import TextIO


class OutputFailed(Failed):
    """stdout cannot take the consumer's lines."""


def _escape(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeEncodeError)
    chars = error.object[error.start:error.end]
    return "".join("\\u%04x" % ord(c) if ord(c) <= 0xFFFF else "\\U%08x" % ord(c) for c in chars), error.end


codecs.register_error("txamqp-example-escape", _escape)


class Lines:
    """Lines to stream (sys.stdout, None if it was closed): write() them, then
    flush(): once it returns they are out, and their messages may be acknowledged.

    Speed only: the lines wait here and go to the stream together, a write of
    about 64 KiB at most, so that the cost of a line does not hang on how the
    stream buffers (with PYTHONUNBUFFERED=1, as many container images set it,
    every write to sys.stdout is a system call of its own)."""

    BATCH = 65536  # characters waiting at most before they go to the stream

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.printed = 0  # lines flushed
        self.written = 0  # lines written since
        self._waiting: list[str] = []  # lines written and not yet given to the stream
        self._size = 0  # their characters
        if stream is not None and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="txamqp-example-escape")

    def write(self, line: str) -> None:
        self._waiting.append(line)
        self._size += len(line) + 1
        self.written += 1
        if self._size >= self.BATCH:
            self._write_waiting()

    def flush(self) -> None:
        self._write_waiting()
        try:
            if self.stream is not None:
                self.stream.flush()
        except OSError as e:
            self._failed(e)
        self.printed += self.written
        self.written = 0

    def _write_waiting(self) -> None:
        if not self._waiting:
            return
        self._waiting.append("")  # so that the last line ends with a newline too
        text = "\n".join(self._waiting)
        self._waiting.clear()
        self._size = 0
        try:
            if self.stream is None:
                raise OSError(errno.EBADF, "closed")
            self.stream.write(text)
        except OSError as e:
            self._failed(e)

    def _failed(self, e: OSError) -> None:
        if self.stream is not None:
            # Python flushes stdout once more as it exits: to /dev/null, so that says nothing.
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
        closed = e.errno in (errno.EPIPE, errno.EBADF)
        what = "stdout was closed" if closed else "cannot write to stdout: %s" % (e.strerror or e)
        raise OutputFailed("%s; %d message(s) printed" % (what, self.printed)) from None
