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
    flush(): once it returns they are out, and their messages may be acknowledged."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.printed = 0  # lines flushed
        self.written = 0  # lines written since
        if stream is not None and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="txamqp-example-escape")

    def write(self, line: str) -> None:
        try:
            if self.stream is None:
                raise OSError(errno.EBADF, "closed")
            self.stream.write(line + "\n")
        except OSError as e:
            self._failed(e)
        self.written += 1

    def flush(self) -> None:
        try:
            if self.stream is not None:
                self.stream.flush()
        except OSError as e:
            self._failed(e)
        self.printed += self.written
        self.written = 0

    def _failed(self, e: OSError) -> None:
        if self.stream is not None:
            # Python flushes stdout once more as it exits: to /dev/null, so that says nothing.
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
        closed = e.errno in (errno.EPIPE, errno.EBADF)
        what = "stdout was closed" if closed else "cannot write to stdout: %s" % (e.strerror or e)
        raise OutputFailed("%s; %d message(s) printed" % (what, self.printed)) from None
