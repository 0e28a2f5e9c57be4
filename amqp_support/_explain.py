"""Any failure of a connection, said in one line a person can act on.

explain(e) words what amqp_support, txamqp, Twisted or OpenSSL raised in the
library's own terms. Some failures have a remedy that only the program knows
how to name (an option to give, a file to use): remedy(e) names it, for the
program to say in its own words, as one of:

    untrusted-certificate  the broker's certificate is not from a trusted CA
    client-certificate     the broker asks for a client certificate
    speaks-0-9-1           the broker refused AMQP 0-8 and speaks 0-9-1 (or 1.0)
    speaks-0-8             the broker refused AMQP 0-9-1 and speaks 0-8
    unexpected             an exception nobody expected
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, error
from twisted.python.failure import Failure
from txamqp import client, queue
from txamqp.message import Message

from amqp_support._errors import (ConsumerCancelled, CutMidFrame, Failed, FrameError, HeartbeatMissed,
                                  LoginRefused, ProtocolRefused, UnexpectedMethod)
from amqp_support._protocol import NAMES, may_speak_0_9_1, protocol_name

if TYPE_CHECKING:
    from amqp_support._client import AMQClient, Reason  # Reason: an exception, a Failure, or the broker's close

Explained = tuple[str, str | None]  # (one line, the name of its remedy or None)


def reason_of(e: Reason, conn: AMQClient | None = None) -> Reason:
    """What really ended a call: txamqp wraps it in Closed(...) or Failure;
    conn.reason says why a connection ended when txamqp's Closed does not."""
    while True:
        if isinstance(e, Failure):
            e = e.value
        elif isinstance(e, (client.Closed, queue.Closed)) and e.args and e.args[0] is not None:
            e = e.args[0]
        elif isinstance(e, (client.Closed, queue.Closed)) and conn is not None and conn.reason is not None:
            e, conn = conn.reason, None
        else:
            return e


def protocol_refused(e: ProtocolRefused) -> Explained:
    ours = protocol_name(e.spec)
    offered = NAMES.get(e.header, repr(e.header))
    text = "the broker refused %s and answered with the %s protocol header" % (ours, offered)
    if ours == "AMQP 0-8":
        text += "; RabbitMQ 4.0 and later no longer speak AMQP 0-8"
    if not may_speak_0_9_1(e.header):
        return text, "speaks-0-8"
    if ours == "AMQP 0-8":
        return text, "speaks-0-9-1"
    return text, None  # 0-9-1 refused: no other spec file to offer


def broker_closed(message: Message) -> str:
    """connection.close or channel.close, as the broker explained it."""
    what = "connection" if message.method.klass.name == "connection" else "channel"
    return "the broker closed the %s: %s" % (what, close_reason(message))


def close_reason(message: Message) -> str:
    """The reply code and text of a close, and the method it answers."""
    return "%s %s%s" % (message.reply_code, message.reply_text, in_reply_to(message))


def channel_closed(e: Reason, conn: AMQClient | None = None) -> str | None:
    """Why the broker closed the channel, if that is what ended this call, else
    None. A channel error (406 on a declare, 403, a message too big) leaves
    the connection as it was."""
    e = reason_of(e, conn)
    if isinstance(e, Message) and e.method.klass.name == "channel":
        return close_reason(e)
    return None


def in_reply_to(message: Message) -> str:
    """The method the broker's close answers, as " (in reply to class.method)"."""
    try:
        klass = message.method.klass.spec.classes.byid[message.class_id]
        return " (in reply to %s.%s)" % (klass.name, klass.methods.byid[message.method_id].name)
    except KeyError:
        return ""


# What OpenSSL's reason for a failed handshake means, and the hint for it.
TLS_REASONS = {
    "certificate verify failed":
        ("the broker's certificate is not from a CA we trust, or not valid now", "untrusted-certificate"),
    "certificate required": ("the broker requires a client certificate", "client-certificate"),
    "unknown ca": ("the broker does not trust the CA of our client certificate", None),
    "bad certificate": ("the broker refused our client certificate", None),
    "wrong version number": ("the broker did not answer in TLS: is this its amqps:// port?", None),
    "packet length too long": ("the broker did not answer in TLS: is this its amqps:// port?", None),
    "record layer failure": ("the broker did not answer in TLS: is this its amqps:// port?", None),
}


def tls_failed(e: SSL.Error | VerificationError) -> Explained:
    if isinstance(e, VerificationError):
        # Raised by Twisted's host name check, inside the handshake.
        return ("TLS failed: the broker's certificate does not name the host in the URL"
                " (connect with a host name the certificate names)"), None
    # OpenSSL's errors come as a list of (library, function, reason).
    errors = e.args[0] if e.args and isinstance(e.args[0], list) else []
    text = "; ".join(str(err[-1]) for err in errors if isinstance(err, tuple) and err) or str(e)
    meaning, hint = next((found for words, found in TLS_REASONS.items() if words in text), (None, None))
    return "TLS failed: %s%s" % (text, ": " + meaning if meaning else ""), hint


def explain(e: Reason, conn: AMQClient | None = None) -> str:
    """e in one line. conn: the connection it happened on (its reason is
    the real one when txamqp only says Closed)."""
    return explained(reason_of(e, conn))[0]


def remedy(e: Reason, conn: AMQClient | None = None) -> str | None:
    """The name of what a person could do about e (see above), or None."""
    return explained(reason_of(e, conn))[1]


def explained(e: Reason) -> Explained:
    if isinstance(e, ProtocolRefused):
        return protocol_refused(e)
    if isinstance(e, (SSL.Error, VerificationError)):
        return tls_failed(e)
    if isinstance(e, Message):
        return broker_closed(e), None
    if isinstance(e, (client.Closed, queue.Closed)):
        return "the connection closed", None
    if isinstance(e, (Failed, ConsumerCancelled, CutMidFrame, HeartbeatMissed, UnexpectedMethod)):
        return str(e), None
    if isinstance(e, LoginRefused):
        return ("the broker closed the connection during login: wrong user name or password,"
                " or that user may not log in from this host"), None
    if isinstance(e, FrameError):
        return "the broker sent data that is not AMQP: %s" % e, None
    for kinds, text in PLAIN_WORDS:
        if isinstance(e, kinds):
            return text, None
    if isinstance(e, OSError) and e.strerror:
        return e.strerror, None
    return "%s: %s" % (type(e).__name__, e), "unexpected"


# Twisted's failures to connect, and what they mean.
PLAIN_WORDS: list[tuple[type[Exception] | tuple[type[Exception], ...], str]] = [
    (error.ConnectionRefusedError, "connection refused (is RabbitMQ running there?)"),
    (error.DNSLookupError, "unknown host"),
    ((error.TimeoutError, defer.TimeoutError, defer.CancelledError), "no answer in time"),
    (error.ConnectionDone, "the broker closed the connection"),
    ((error.ConnectionLost, error.ConnectionClosed), "the connection to the broker was lost"),
]
