"""amqp_support: txamqp 0.8.2 made safe to use against today's brokers.

Its public face is what this module lists in __all__ (docs/how-it-is-built.md
has the table); every other name is private (the modules start with "_").
It takes explicit values, never a command line, prints nothing (status lines
are twisted.logger events: is_status tells them), and raises the exceptions
listed here. A name is imported the first time a program asks for it, so a
program that needs only BrokerURL (tools/demo.py, before any virtualenv
exists) needs only Python's standard library.

    from amqp_support import AMQPService, BrokerURL, load_spec

    service = AMQPService(reactor, load_spec(data), [BrokerURL(url)], timeout=10, heartbeat=60,
                          reconnect=True)
    result = yield service.run(conversation)  # conversation(conn) on each new connection
"""

from importlib import import_module
from typing import TYPE_CHECKING

# Each public name, and the private module it lives in.
_HOMES = {
    "AMQPService": "_service",
    "AMQClient": "_client", "AMQChannel": "_client", "Message": "_client", "has_confirms": "_client",
    "BrokerURL": "_url",
    "ClientTLS": "_endpoint",
    "load_spec": "_spec",
    "Outbox": "_publish",
    "explain": "_explain", "remedy": "_explain",
    "is_status": "_status",
    "LongLong": "_codec", "Timestamp": "_codec",
    "Failed": "_errors", "UsageError": "_errors", "BadURL": "_errors", "BadTLSFile": "_errors",
    "ConnectionFailed": "_errors", "ConsumerCancelled": "_errors", "UnsupportedTxamqp": "_errors",
}

__all__ = [
    "AMQClient", "AMQChannel", "AMQPService", "BadTLSFile", "BadURL", "BrokerURL", "ClientTLS", "ConnectionFailed",
    "ConsumerCancelled", "Failed", "LongLong", "Message", "Outbox", "Timestamp", "UnsupportedTxamqp", "UsageError",
    "explain", "has_confirms", "is_status", "load_spec", "remedy",
]

if TYPE_CHECKING:
    from amqp_support._client import AMQChannel, AMQClient, Message, has_confirms
    from amqp_support._codec import LongLong, Timestamp
    from amqp_support._endpoint import ClientTLS
    from amqp_support._errors import (BadTLSFile, BadURL, ConnectionFailed, ConsumerCancelled, Failed,
                                      UnsupportedTxamqp, UsageError)
    from amqp_support._explain import explain, remedy
    from amqp_support._publish import Outbox
    from amqp_support._service import AMQPService
    from amqp_support._spec import load_spec
    from amqp_support._status import is_status
    from amqp_support._url import BrokerURL


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError("module 'amqp_support' has no attribute %r" % name)
    value = getattr(import_module("amqp_support." + _HOMES[name]), name)
    globals()[name] = value  # the next time, without this function
    return value
