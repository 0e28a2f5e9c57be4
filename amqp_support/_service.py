"""Reconnecting, as a frame around a program's AMQP conversation.

A program writes what it says on one connection as one function,
conversation(conn): log in, open a channel, declare, publish or consume,
close. AMQPService.run(conversation) calls it on a connection, and on the
next when that one fails, until it returns: reconnecting stays out of it.

AMQPService is Twisted's ClientService (exponential backoff with jitter)
connecting to each broker in turn (_endpoint.FailoverEndpoint), plus what
ClientService cannot know: whether a failure is worth another connection
(is_transient), a status line for each failure it carries on after,
ConnectionFailed for the one it does not, and the fallback spec.
"""

import os
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, error, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory
from txamqp.message import Message

from amqp_support._client import AMQClient
from amqp_support._codec import Spec
from amqp_support._endpoint import ClientTLS, FailoverEndpoint
from amqp_support._errors import (ConnectionFailed, ConsumerCancelled, CutMidFrame, Failed, HeartbeatMissed,
                                  ProtocolRefused)
from amqp_support._explain import channel_closed, explain, reason_of
from amqp_support._protocol import may_speak_0_9_1, protocol_name
from amqp_support._status import log as status_log
from amqp_support._url import BrokerURL

T = TypeVar("T")

TRANSIENT = (error.ConnectionRefusedError, error.DNSLookupError, error.TimeoutError,
             error.ConnectionDone, error.ConnectionLost, error.ConnectionClosed,
             defer.TimeoutError, HeartbeatMissed, CutMidFrame, ConsumerCancelled)


def is_transient(e: Exception, conn: AMQClient | None = None) -> bool:
    """Could another connection help? After a lost or refused connection, a
    timeout, a broker shutting down or cancelling a consumer: yes. After a refusal (login, vhost,
    protocol, TLS) or a channel error: no."""
    reason = reason_of(e, conn)
    if isinstance(reason, Message):
        return reason.reply_code == 320  # CONNECTION_FORCED: the broker is shutting down
    return isinstance(reason, TRANSIENT)


class AMQPFactory(Factory[AMQClient]):
    """Builds the AMQClient of each connection, with the run's spec;
    lost(conn) is called as the connection ends, before ClientService hears of it."""

    def __init__(self, spec: Spec, heartbeat: int, timeout: float, reactor: IReactorTime,
                 lost: Callable[[AMQClient], None]) -> None:
        self.spec = spec
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.reactor = reactor
        self.lost = lost

    def buildProtocol(self, addr: IAddress | None) -> AMQClient:
        conn = AMQClient(self.spec, self.heartbeat, self.reactor, login_timeout=self.timeout)
        conn.disconnected.wait().addCallback(lambda _: self.lost(conn))
        return conn


class AMQPService(ClientService):
    """Connections to brokers (BrokerURLs, tried in turn) for spec, for run().
    timeout: seconds for a connection and for its login; heartbeat: seconds
    between heartbeats (0: off); tls: a ClientTLS for amqps:// brokers;
    reconnect: carry on after a failure that may pass. fallback: None (a
    refusal of spec is a failure like any other), or a function that returns
    an AMQP 0-9-1 spec, called the first time a broker refuses spec's AMQP
    0-8 and may speak 0-9-1 (RabbitMQ 4.0 and later): every later connection
    uses it (3.x speaks both), at once and without counting a failure.
    conn.spec says which a connection has."""

    def __init__(self, reactor: IReactorTime, spec: Spec, brokers: Sequence[BrokerURL], *, timeout: float,
                 heartbeat: int, tls: ClientTLS | None = None, reconnect: bool,
                 fallback: Callable[[], Spec] | None = None) -> None:
        self.reactor = reactor
        self.reconnect = reconnect
        self.spec = spec
        self.fallback = fallback
        self._ever_logged_in = False
        self._reconnecting = False
        self._at_once = False  # the next attempt: no delay
        self._backoff = backoffPolicy(initialDelay=0.5, maxDelay=30.0)
        self.endpoint = FailoverEndpoint(reactor, brokers, timeout, tls)
        self.factory = AMQPFactory(spec, heartbeat, timeout, reactor, self._lost)
        super().__init__(self.endpoint, self.factory, clock=reactor, retryPolicy=self._delay)

    @defer.inlineCallbacks
    def run(self, conversation: Callable[[AMQClient], Deferred[T]],
            note: Callable[[], str] | None = None) -> Generator[Deferred[Any], Any, T]:
        """conversation(conn) on each new connection until it returns; its
        result. note(): what had been done when a connection failed, said
        with the failure (and as a note of the CancelledError when run() is
        cancelled). Cancelling run() cancels the conversation, which may stop
        cleanly and return."""
        self.startService()
        try:
            while True:
                conn = yield self._next_connection()
                if conn is None:
                    continue
                try:
                    return (yield conversation(conn))
                except defer.CancelledError:
                    raise
                except Failed:
                    raise  # the conversation's own, already said
                except Exception as e:  # noqa: BLE001 (any failure: explained, maybe retried)
                    if self._refused_for_fallback(conn):
                        # _lost() has switched to the fallback: no failure.
                        yield task.deferLater(self.reactor, 0)  # out of ClientService's callbacks
                        continue
                    yield self._failed(e, conn, note() if note and conn.logged_in else None)
        except defer.CancelledError as e:  # Ctrl-C: said with what had been done by then
            if note:
                e.add_note(note())
            raise
        finally:
            yield self.stopService()

    @defer.inlineCallbacks
    def _next_connection(self) -> Generator[Deferred[Any], Any, AMQClient | None]:
        """The next connection, or None after a failure to try again after."""
        conn = None
        try:
            conn = yield self.whenConnected(failAfterFailures=1)
        except defer.CancelledError:  # Ctrl-C: not a failure to connect
            raise
        except Exception as e:  # noqa: BLE001 (any failure to connect: explained, maybe retried)
            yield self._failed(e, conn)
            return None
        if conn.closed:  # closing, and ClientService does not know yet
            yield conn.disconnected.wait()
            # Let ClientService hear of it before asking it again.
            yield task.deferLater(self.reactor, 0)
            return None
        conn.opened.addCallback(self._logged_in)
        return conn

    def _refused_for_fallback(self, conn: AMQClient) -> bool:
        """Whether conn ended because its broker refused the spec's protocol
        and may speak the fallback's (RabbitMQ 4 refusing AMQP 0-8)."""
        e = reason_of(conn.reason) if conn.reason is not None else None
        return (self.fallback is not None and conn.spec is self.spec and isinstance(e, ProtocolRefused)
                and may_speak_0_9_1(e.header))

    def _lost(self, conn: AMQClient) -> None:
        """As a connection ends, before ClientService picks the next attempt:
        after a refusal of the spec for the fallback, the fallback from now
        on, and the next attempt at once."""
        if self.fallback is None or not self._refused_for_fallback(conn) or self.factory.spec is not self.spec:
            return
        refused = protocol_name(conn.spec)
        self.factory.spec = fallback = self.fallback()
        status_log.info("the broker at {broker} refused {refused}; using {spec}", broker=conn.broker,
                        refused=refused + (" (RabbitMQ 4.0 and later)" if refused == "AMQP 0-8" else ""),
                        spec=os.path.basename(fallback.file or "") or protocol_name(fallback))
        self._at_once = True  # to the same broker

    def _delay(self, attempt: int) -> float:
        """ClientService's retryPolicy: backoff, but none right after a switch to the fallback."""
        if self._at_once:
            self._at_once = False
            return 0
        return self._backoff(attempt)

    def _logged_in(self, conn: AMQClient) -> AMQClient:
        self._ever_logged_in = True
        if self._reconnecting:
            status_log.info("connected to {broker}", broker=conn.broker)
            self._reconnecting = False
        return conn  # for whatever else waits on conn.opened

    @defer.inlineCallbacks
    def _failed(self, e: Exception, conn: AMQClient | None = None,
                note: str | None = None) -> Generator[Deferred[Any], Any, None]:
        """After a failure: carry on (return) if it may pass and we reconnect,
        or while the first connection still has brokers to try; else end
        with ConnectionFailed."""
        # Out of ClientService's callbacks first: it may not be re-entered.
        yield task.deferLater(self.reactor, 0)
        if conn is not None:
            conn.abort()  # a failed login leaves it open, a cancelled consumer too
            yield conn.disconnected.wait()  # before ClientService is asked for the next
        broker = conn.broker if conn is not None else self.endpoint.broker
        logged_in = conn is not None and conn.logged_in
        why = channel_closed(e, conn) if logged_in else None
        if why:  # the connection was fine: say what did end
            what = "the broker at %s closed the channel" % broker
        elif isinstance(reason_of(e, conn), ConsumerCancelled):
            what, why = "the broker at %s cancelled the consumer" % broker, explain(e, conn)
        else:
            what = ("lost the connection to %s" if logged_in else "cannot connect to %s") % broker
            why = explain(e, conn)
        line = "%s: %s" % (what, why) + (" (%s)" % note if note else "")
        first_round = not self._ever_logged_in and self.endpoint.moves < len(self.endpoint.endpoints) - 1
        if not ((self.reconnect or first_round) and is_transient(e, conn)):
            raise ConnectionFailed(line, what, reason_of(e, conn), note) from e
        self.endpoint.move_on()  # before ClientService's next attempt, which waits for its backoff
        status_log.info("{line}; {then}", line=line,
                        then="reconnecting" if self.reconnect else "trying the next URL")
        self._reconnecting = True
