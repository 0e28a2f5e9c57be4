"""Every exception amqp_support raises, at the bottom of the package: every
other module imports from here, this one from none of them, and from
nothing but Python's standard library (tools/demo.py imports _url.py, and so
this, with any Python). A program catches them by name; _explain.py says any
of them (and whatever Twisted, txamqp or OpenSSL raised) in one line.
"""

import os
from typing import Any


class Failed(Exception):
    """An expected failure, already said in words: its text is the whole story."""


class UsageError(Failed):
    """A value given to the library cannot be used (a URL, a spec file, a TLS file)."""


class BadURL(UsageError):
    """Not an amqp:// or amqps:// URL that names a broker."""


class BadTLSFile(UsageError):
    """A certificate or key file that cannot be used.

    `parameter` is the name of the argument the file came in (cafile,
    certfile, keyfile); `template` says what is wrong with "{file}" where the
    file goes. A program with its own words for the file (a command-line
    option, say) gets its line from worded(name)."""

    def __init__(self, parameter: str, path: str | os.PathLike[str], template: str) -> None:
        self.parameter, self.path, self.template = parameter, path, template
        super().__init__(self.worded(parameter))

    def worded(self, name: str) -> str:
        return self.template.format(file="%s %r" % (name, str(self.path)))


class UnsupportedTxamqp(ImportError):
    """The installed txamqp is not the release amqp_support was written for."""


class FrameError(Exception):
    """The peer sent bytes that are not a valid AMQP frame, or in the wrong place."""


class ProtocolRefused(Exception):
    """The broker answered our protocol header with the one it speaks."""

    def __init__(self, spec: Any, header: bytes | bytearray) -> None:  # spec: a txamqp Spec
        super().__init__(spec, header)
        self.spec = spec
        self.header = bytes(header)


class CutMidFrame(Exception):
    """The connection ended in the middle of a frame: the broker went away
    while it was sending (a shutdown with deliveries on their way, a network
    cut). A lost connection like any other, not a protocol error."""


class LoginRefused(Exception):
    """The broker hung up between our credentials and its connection.tune."""


class HeartbeatMissed(Exception):
    """Nothing from the broker for three heartbeat intervals."""


class ConsumerCancelled(Exception):
    """The broker cancelled a consumer (its queue was deleted, for one)."""


class UnexpectedMethod(Exception):
    """The broker sent a method that makes no sense where it came."""


class ConnectionFailed(Failed):
    """Connecting, or the conversation on a connection, failed for good.

    `what` says which ("cannot connect to amqp://...", "lost the connection
    to ..."), `reason` what ended it (an exception, or the broker's close: a
    txamqp Message), `note` what had been done by then (or None). str() is
    the whole line."""

    def __init__(self, line: str, what: str, reason: object, note: str | None = None) -> None:
        super().__init__(line)
        self.what, self.reason, self.note = what, reason, note
