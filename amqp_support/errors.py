"""Every way a run can fail, said in one line a person can act on."""

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, error
from twisted.python.failure import Failure
from txamqp import client, queue
from txamqp.message import Message

from amqp_support.client import (ConsumerCancelled, CutMidFrame, HeartbeatMissed, LoginRefused,
                                 ProtocolRefused, UnexpectedMethod)
from amqp_support.codec import FrameError


class Failed(Exception):
    """An expected failure, already explained: exit status 1."""


class UsageError(Failed):
    """Bad command line or spec file: exit status 2."""


HEADERS = {
    (0, 0, 9, 1): "AMQP 0-9-1", (1, 1, 8, 0): "AMQP 0-8", (1, 1, 0, 9): "AMQP 0-9",
    (0, 1, 0, 0): "AMQP 1.0", (2, 1, 0, 0): "AMQP 1.0 (TLS)", (3, 1, 0, 0): "AMQP 1.0 (SASL)",
}


def protocol_refused(e):
    ours = "AMQP 0-8" if (e.spec.major, e.spec.minor) == (8, 0) else "AMQP 0-9-1"
    offered = HEADERS.get(tuple(e.header[4:8]), repr(e.header))
    use = "amqp0-8.xml" if offered in ("AMQP 0-8", "AMQP 0-9") else "amqp0-9-1.xml"
    if ours == "AMQP 0-8":
        hint = "RabbitMQ 4.0 and later no longer speak AMQP 0-8: use %s" % use
    else:
        hint = "use %s" % use
    return "the broker refused %s and answered with the %s protocol header; %s" % (ours, offered, hint)


def broker_closed(message):
    """connection.close or channel.close, as the broker explained it."""
    what = "connection" if message.method.klass.name == "connection" else "channel"
    return "the broker closed the %s: %s" % (what, close_reason(message))


def close_reason(message):
    """The reply code and text of a close, and the method it answers."""
    text = "%s %s" % (message.reply_code, message.reply_text)
    try:
        klass = message.method.klass.spec.classes.byid[message.class_id]
        text += " (in reply to %s.%s)" % (klass.name, klass.methods.byid[message.method_id].name)
    except KeyError:
        pass
    return text


def channel_closed(e, conn=None):
    """Why the broker closed the channel, if that is what ended this call:
    a channel error (406 on a declare, 403, a message too big) leaves the
    connection as it was."""
    e = reason_of(e, conn)
    if isinstance(e, Message) and e.method.klass.name == "channel":
        return close_reason(e)
    return None


def reason_of(e, conn=None):
    """What really ended a call: txamqp wraps it in Closed(...) or Failure."""
    while True:
        if isinstance(e, Failure):
            e = e.value
        elif isinstance(e, (client.Closed, queue.Closed)) and e.args and e.args[0] is not None:
            e = e.args[0]
        elif isinstance(e, (client.Closed, queue.Closed)) and conn is not None and conn.reason is not None:
            e, conn = conn.reason, None
        else:
            return e


TRANSIENT = (error.ConnectionRefusedError, error.DNSLookupError, error.TimeoutError,
             error.ConnectionDone, error.ConnectionLost, error.ConnectionClosed,
             defer.TimeoutError, HeartbeatMissed, CutMidFrame)


def is_transient(e, conn=None):
    """Could trying again help? After a lost or refused connection, a timeout,
    a broker shutting down: yes. After a refusal (login, vhost, protocol,
    TLS) or a channel error: no."""
    e = reason_of(e, conn)
    if isinstance(e, Message):
        return e.reply_code == 320  # CONNECTION_FORCED: the broker is shutting down
    return isinstance(e, TRANSIENT)

# What OpenSSL's reason for a failed handshake means for the person running the script.
TLS_HINTS = {
    "certificate verify failed":
        "the broker's certificate is not from a CA we trust, or not valid now (give its CA with --cafile)",
    "certificate required": "the broker requires a client certificate (give --certfile and --keyfile)",
    "unknown ca": "the broker does not trust the CA of our client certificate",
    "bad certificate": "the broker refused our client certificate",
    "wrong version number": "the broker did not answer in TLS: is this its amqps:// port?",
    "packet length too long": "the broker did not answer in TLS: is this its amqps:// port?",
    "record layer failure": "the broker did not answer in TLS: is this its amqps:// port?",
}


def tls_failed(e):
    if isinstance(e, VerificationError):
        # Raised by Twisted's host name check, inside the handshake.
        return ("TLS failed: the broker's certificate does not name the host in the URL"
                " (connect with a host name the certificate names)")
    # OpenSSL's errors come as a list of (library, function, reason).
    errors = e.args[0] if e.args and isinstance(e.args[0], list) else []
    text = "; ".join(str(err[-1]) for err in errors if isinstance(err, tuple) and err) or str(e)
    hint = next((hint for words, hint in TLS_HINTS.items() if words in text), None)
    return "TLS failed: %s%s" % (text, ": " + hint if hint else "")


def explain(e, conn=None, verbose=False):
    """e in one line; verbose: the traceback is shown already."""
    e = reason_of(e, conn)
    if isinstance(e, Message):
        return broker_closed(e)
    if isinstance(e, (client.Closed, queue.Closed)):
        return "the connection closed"
    if isinstance(e, (Failed, ConsumerCancelled, CutMidFrame, HeartbeatMissed, UnexpectedMethod)):
        return str(e)
    if isinstance(e, ProtocolRefused):
        return protocol_refused(e)
    if isinstance(e, LoginRefused):
        return ("the broker closed the connection during login: wrong user name or password,"
                " or that user may not log in from this host")
    if isinstance(e, FrameError):
        return "the broker sent data that is not AMQP: %s" % e
    if isinstance(e, error.ConnectionRefusedError):
        return "connection refused (is RabbitMQ running there?)"
    if isinstance(e, error.DNSLookupError):
        return "unknown host"
    if isinstance(e, (error.TimeoutError, defer.TimeoutError, defer.CancelledError)):
        return "no answer in time"
    if isinstance(e, error.ConnectionDone):
        return "the broker closed the connection"
    if isinstance(e, (error.ConnectionLost, error.ConnectionClosed)):
        return "the connection to the broker was lost"
    if isinstance(e, (SSL.Error, VerificationError)):
        return tls_failed(e)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = "%s: %s" % (type(e).__name__, e)
    return text if verbose else text + " (run with --verbose for the traceback)"
