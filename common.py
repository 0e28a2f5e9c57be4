"""What producer.py and consumer.py share: the spec file, the connection,
logging in and opening a channel, the exchange, queue and binding both
declare, and closing.

    spec = common.load_spec("amqp0-8.xml")
    service = common.connection(reactor, spec, [BrokerURL(url)], timeout=10, heartbeat=60,
                                tls=None, reconnect=True)
    # then, in the conversation service.run() holds on each connection:
    chan = yield common.open_channel(conn)
    yield common.declare(chan, common.EXCHANGE_NAME, "direct", common.QUEUE_NAME, "classic",
                         common.binding("direct", common.ROUTING_KEY))
    ...
    yield common.close(conn, chan)

The robustness underneath (byte-exact frames, reconnecting, failures said
in one line) is amqp_support's; the command line is command_line's.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

import amqp_support

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable

    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorTime
    from txamqp.spec import Spec

    from amqp_support import AMQChannel, AMQClient, AMQPService, BrokerURL, ClientTLS

# The original example's names, kept as defaults.
EXCHANGE_NAME = "test_message_exchange"
QUEUE_NAME = "test_message_queue"
ROUTING_KEY = "test_routing_key"
CONSUMER_TAG = "test_consumer_tag"
DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"

NON_PERSISTENT = 1
PERSISTENT = 2  # delivery-mode 2: the broker writes the message to disk

# Where RabbitMQ 4.0 and later, which refuse AMQP 0-8, take the scripts.
FALLBACK_SPEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "amqp0-9-1.xml")


def load_spec(path: str) -> Spec:
    """The AMQP spec file at path. txamqp builds its methods from it
    (chan.queue_declare and the others), so a script works with the
    protocol the file describes: amqp0-8.xml or amqp0-9-1.xml."""
    try:
        with open(path, "rb") as f:
            spec = amqp_support.load_spec(f.read(), path)
        spec.classes.byname["basic"].methods.byname["publish"]
        spec.constants.byname["frame-end"]
    except FileNotFoundError as e:
        raise amqp_support.UsageError(
            "%r is not a spec file: there is no such file (the first argument is the path of"
            " amqp0-8.xml or amqp0-9-1.xml)" % path) from e
    except OSError as e:
        raise amqp_support.UsageError("cannot read spec file %r: %s" % (path, e.strerror or e)) from e
    except Exception as e:
        raise amqp_support.UsageError("%r is not an AMQP spec file that txamqp can load (%s: %s)"
                                      % (path, type(e).__name__, e)) from e
    return spec


def fallback_for(spec: Spec) -> Callable[[], Spec] | None:
    """For an AMQP 0-8 spec, what to load instead once a broker refuses 0-8
    (RabbitMQ 4.0 and later do; 3.x speaks both): the amqp0-9-1.xml beside
    this file, whose Python-facing names are those of amqp0-8.xml, so the
    scripts' calls work with either. None for any other spec."""
    if (spec.major, spec.minor) != (8, 0):
        return None
    return functools.partial(load_spec, FALLBACK_SPEC)


def connection(reactor: IReactorTime, spec: Spec, brokers: list[BrokerURL], *, timeout: float, heartbeat: int,
               tls: ClientTLS | None, reconnect: bool) -> AMQPService:
    """The connections to brokers (BrokerURLs, tried in turn): an
    AMQPService, whose run(conversation) calls conversation(conn) on a new
    connection, and, when reconnect and the failure may pass, on the next."""
    return amqp_support.AMQPService(reactor, spec, brokers, timeout=timeout, heartbeat=heartbeat, tls=tls,
                                    reconnect=reconnect, fallback=fallback_for(spec))


@defer.inlineCallbacks
def open_channel(conn: AMQClient) -> Generator[Deferred[Any], Any, AMQChannel]:
    """Log in on a new connection and open channel 1 on it."""
    # Log in: connection.start-ok carries the credentials, tune-ok agrees on
    # frame size and heartbeat, connection.open picks the virtual host.
    assert conn.broker is not None  # the BrokerURL it connected to
    yield conn.authenticate(conn.broker.username, conn.broker.password, mechanism="PLAIN")
    # A channel: one of many light-weight sessions sharing the connection.
    chan = yield conn.channel(1)
    yield chan.channel_open()
    return chan


@defer.inlineCallbacks
def declare(chan: AMQChannel, exchange: str, exchange_type: str, queue: str, queue_type: str,
            binding: dict[str, Any] | None) -> Generator[Deferred[Any], Any, None]:
    """The exchange, the queue, and the binding between them (binding:
    queue.bind's routing_key and arguments, or None for none)."""
    # Both scripts declare the same exchange, queue and binding (declaring
    # what exists changes nothing), so either can run first. Durable: they
    # survive a broker restart. The default exchange ("") needs neither.
    if exchange:
        yield chan.exchange_declare(exchange=exchange, type=exchange_type, durable=True)
    # A quorum queue is replicated across the nodes of a cluster; a stream is
    # an append-only log that consumers read from any point, consuming nothing.
    arguments = {"x-queue-type": queue_type} if queue_type != "classic" else {}
    yield chan.queue_declare(queue=queue, durable=True, arguments=arguments)
    if exchange and binding is not None:
        yield chan.queue_bind(queue=queue, exchange=exchange, **binding)


def binding(exchange_type: str, routing_key: str, headers: Iterable[tuple[str, str]] = (),
            x_match: str = "all") -> dict[str, Any]:
    """The routing key and arguments of a queue's binding, by exchange type."""
    if exchange_type == "fanout":
        return {"routing_key": ""}  # a fanout exchange ignores keys: one binding is enough
    if exchange_type == "headers":
        # A headers exchange ignores keys too: it compares the message's
        # headers with the binding's arguments, all of them or any one.
        return {"routing_key": "", "arguments": {"x-match": x_match, **dict(headers)}}
    return {"routing_key": routing_key}  # direct: that very key; topic: a pattern


@defer.inlineCallbacks
def close(conn: AMQClient, chan: AMQChannel) -> Generator[Deferred[Any], Any, None]:
    """Close the channel, then the connection."""
    yield chan.channel_close(reply_code=200, reply_text="bye")
    # Channel 0 is the connection's own: closing it ends the whole session.
    chan0 = yield conn.channel(0)
    yield chan0.connection_close(reply_code=200, reply_text="bye")
