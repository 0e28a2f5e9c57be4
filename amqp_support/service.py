"""Reconnecting, as a frame around a program's AMQP conversation.

A program writes what it says to the broker on one connection as one
function, conversation(conn): log in, open a channel, declare, publish or
consume, close. AMQPService.run(conversation) calls it with a connection,
and when that connection fails, with the next one, until the conversation
returns: reconnecting stays out of the conversation.

Connections come from Twisted's ClientService, which keeps a connection to an
endpoint and reconnects with exponential backoff and jitter; given several
brokers (the nodes of a cluster), each attempt goes to the next one in turn
(endpoint.FailoverEndpoint). AMQPService adds what ClientService cannot know:

- whether a failure is worth another connection (a lost or refused
  connection, a timeout, a broker shutting down: yes; a refused login, a
  channel error, TLS: no), and to say it in one line;
- with reconnect off, the first failure ends the run, but the first
  connection still tries each broker once;
- a status line (amqp_support.status) for each failure it carries on after
  and for the connection that follows; ConnectionFailed for the one it
  does not;
- a fallback spec, per broker: a broker that refuses the spec's AMQP 0-8
  (RabbitMQ 4.0 and later) and may speak 0-9-1 gets a new connection at
  once with the fallback spec (not a failure, whether or not it reconnects,
  and no backoff), and keeps it for the rest of the run; the conversation
  reads conn.spec to know which it has.

The conversation's own failures (a Failed it raised) end the run as they are.
Cancelling run() cancels the conversation, which may stop cleanly and return.
"""

import os

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, error, task
from twisted.internet.protocol import Factory
from txamqp.message import Message

from amqp_support import status
from amqp_support.client import AMQClient
from amqp_support.endpoint import FailoverEndpoint
from amqp_support.errors import ConnectionFailed, CutMidFrame, Failed, HeartbeatMissed, ProtocolRefused
from amqp_support.explain import channel_closed, explain, protocol_name, reason_of, speaks_0_9_1

TRANSIENT = (error.ConnectionRefusedError, error.DNSLookupError, error.TimeoutError,
             error.ConnectionDone, error.ConnectionLost, error.ConnectionClosed,
             defer.TimeoutError, HeartbeatMissed, CutMidFrame)


def is_transient(e, conn=None):
    """Could another connection help? After a lost or refused connection, a
    timeout, a broker shutting down: yes. After a refusal (login, vhost,
    protocol, TLS) or a channel error: no."""
    e = reason_of(e, conn)
    if isinstance(e, Message):
        return e.reply_code == 320  # CONNECTION_FORCED: the broker is shutting down
    return isinstance(e, TRANSIENT)


class AMQPFactory(Factory):
    """Builds the AMQClient for a connection to the broker the endpoint is
    connecting to (its virtual host, its spec), and marks it with that
    broker: conn.broker. lost(conn) is called as the connection ends, before
    ClientService hears of it."""

    def __init__(self, spec, heartbeat, timeout, reactor, endpoint, lost):
        self.spec = spec
        self.specs = {}  # broker: its spec, where it is not `spec`
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.reactor = reactor
        self.endpoint = endpoint
        self.lost = lost

    def buildProtocol(self, addr):
        broker = self.endpoint.broker
        conn = AMQClient(self.specs.get(broker, self.spec), broker.vhost, self.heartbeat, self.reactor,
                         login_timeout=self.timeout)
        conn.factory = self
        conn.broker = broker
        conn.disconnected.wait().addCallback(lambda _: self.lost(conn))
        return conn


class AMQPService(ClientService):
    """Connections to brokers (amqp_support.url.BrokerURL each, tried in
    turn) for spec. timeout: seconds for a connection and for its login;
    heartbeat: seconds between heartbeats (0: off); tls: endpoint.ClientTLS
    for amqps:// brokers; reconnect: carry on after a failure that may pass.
    hints: what explain() appends for the failures it has hints for.
    fallback: a function that returns an AMQP 0-9-1 spec for the brokers that
    refuse spec's AMQP 0-8, called the first time one does (parsing a spec
    file takes a while: a run that needs none pays nothing), or None (their
    refusal is then a failure like any other)."""

    def __init__(self, reactor, spec, brokers, *, timeout, heartbeat, tls=None, reconnect, hints=None,
                 fallback=None):
        self.reactor = reactor
        self.reconnect = reconnect
        self.hints = hints
        self.spec = spec
        self.fallback = fallback
        self._fallback_spec = None
        self._ever_logged_in = False
        self._reconnecting = False
        self._at_once = False  # the next attempt: no delay
        self._uncounted = 0  # attempts since the last connection that backoff does not count
        self._backoff = backoffPolicy(initialDelay=0.5, maxDelay=30.0)
        self.endpoint = FailoverEndpoint(reactor, brokers, timeout, tls)
        self.factory = AMQPFactory(spec, heartbeat, timeout, reactor, self.endpoint, self._lost)
        super().__init__(self.endpoint, self.factory, clock=reactor, retryPolicy=self._delay)

    @defer.inlineCallbacks
    def run(self, conversation, note=None):
        """conversation(conn) on each new connection until it returns; its
        result. note(): what had been done when a connection failed, said
        with the failure."""
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
                        # _lost() has switched the broker: no failure.
                        yield task.deferLater(self.reactor, 0)  # out of ClientService's callbacks
                        continue
                    yield self._failed(e, conn, note() if note and conn.logged_in else None)
        finally:
            yield self.stopService()

    @defer.inlineCallbacks
    def _next_connection(self):
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

    def _refused_for_fallback(self, conn):
        """Whether conn ended because its broker refused spec's protocol and
        may speak the fallback's (RabbitMQ 4 refusing AMQP 0-8)."""
        e = reason_of(conn.reason) if conn.reason is not None else None
        return (self.fallback is not None and conn.spec is self.spec
                and isinstance(e, ProtocolRefused) and speaks_0_9_1(e.header))

    def _lost(self, conn):
        """As a connection ends, before ClientService picks the next attempt:
        a broker that refused spec for the fallback gets the fallback from
        now on, and the next attempt goes to it again, at once."""
        if not self._refused_for_fallback(conn):
            self._uncounted = 0  # ClientService counts afresh after a connection
            return
        if self._fallback_spec is None:  # loaded once, the first time a broker needs it
            self._fallback_spec = self.fallback()
        fallback = self.factory.specs[conn.broker] = self._fallback_spec
        refused = protocol_name(self.spec)
        if refused == "AMQP 0-8":
            refused += " (RabbitMQ 4.0 and later)"
        status.log.info("the broker at {broker} refused {refused}; using {spec}", broker=conn.broker,
                        refused=refused, spec=os.path.basename(fallback.file or "")
                        or protocol_name(fallback))
        self.endpoint.repeat()
        self._at_once = True

    def _delay(self, attempt):
        """ClientService's retry policy: backoff with jitter, but none before
        the attempt that follows a switch to the fallback, and that attempt
        not counted."""
        if self._at_once:
            self._at_once = False
            self._uncounted = attempt
            return 0
        return self._backoff(max(1, attempt - self._uncounted))

    def _logged_in(self, conn):
        self._ever_logged_in = True
        if self._reconnecting:
            status.log.info("connected to {broker}", broker=conn.broker)
            self._reconnecting = False

    @defer.inlineCallbacks
    def _failed(self, e, conn=None, note=None):
        """After a failure: carry on (return) if it may pass and we reconnect,
        or while the first connection still has brokers to try; else end
        with ConnectionFailed."""
        # Out of ClientService's callbacks first: it may not be re-entered.
        yield task.deferLater(self.reactor, 0)
        if conn is not None:
            conn.abort()  # a failed login leaves it open
        broker = conn.broker if conn is not None else self.endpoint.broker
        logged_in = conn is not None and conn.logged_in
        why = channel_closed(e, conn) if logged_in else None
        if why:  # the connection was fine: say what did end
            what = "the broker at %s closed the channel" % broker
        else:
            what = ("lost the connection to %s" if logged_in else "cannot connect to %s") % broker
            why = explain(e, conn, self.hints)
        line = "%s: %s" % (what, why) + (" (%s)" % note if note else "")
        # Even without reconnecting, the first connection tries each broker once.
        first_round = (not self._ever_logged_in
                       and self.endpoint.attempts < len(self.endpoint.endpoints))
        if not ((self.reconnect or first_round) and is_transient(e, conn)):
            raise ConnectionFailed(line, what, reason_of(e, conn), note) from e
        status.log.info("{line}; {then}", line=line,
                        then="reconnecting" if self.reconnect else "trying the next URL")
        self._reconnecting = True
