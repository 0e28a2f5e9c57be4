"""One AMQP connection that comes back when it is lost.

Twisted's ClientService keeps a connection to an endpoint and reconnects with
exponential backoff and jitter; AMQPService adds AMQP's login to connecting
and says on stderr what happens each time. With reconnect off, the first
failure is the end. Given several brokers (the nodes of a cluster), each
attempt goes to the next one in turn (endpoint.FailoverEndpoint).
"""

import sys

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, task
from twisted.internet.protocol import Factory

from amqp_support.client import AMQClient
from amqp_support.endpoint import FailoverEndpoint
from amqp_support.errors import Failed, channel_closed, explain, is_transient


class AMQPFactory(Factory):
    """Builds the AMQClient for a connection to the broker the endpoint is
    connecting to (its virtual host), and marks it with that broker: conn.broker."""

    def __init__(self, spec, heartbeat, reactor, endpoint):
        self.spec = spec
        self.heartbeat = heartbeat
        self.reactor = reactor
        self.endpoint = endpoint

    def buildProtocol(self, addr):
        broker = self.endpoint.broker
        conn = AMQClient(self.spec, broker.vhost, self.heartbeat, self.reactor)
        conn.factory = self
        conn.broker = broker
        return conn


class AMQPService(ClientService):
    def __init__(self, reactor, spec, args, reconnect):
        self.reactor = reactor
        self.timeout = args.timeout
        self.reconnect = reconnect
        self.verbose = args.verbose
        self._logged_in = None
        self._reconnecting = False
        self.endpoint = FailoverEndpoint(reactor, args.url, args.timeout, args.cafile,
                                         args.certfile, args.keyfile)
        factory = AMQPFactory(spec, args.heartbeat, reactor, self.endpoint)
        super().__init__(self.endpoint, factory, clock=reactor,
                         retryPolicy=backoffPolicy(initialDelay=0.5, maxDelay=30.0))
        self.startService()

    @defer.inlineCallbacks
    def connect(self):
        """The logged-in connection: the current one, or the next that works."""
        while True:
            conn = None
            try:
                conn = yield self.whenConnected(failAfterFailures=1)
                if conn.closed:  # closing, and ClientService does not know yet
                    yield conn.disconnected.wait()
                    # Let ClientService hear of it before asking it again.
                    yield task.deferLater(self.reactor, 0)
                    continue
                if conn is not self._logged_in:
                    # connection.start/start-ok carries the credentials,
                    # tune/tune-ok agrees on frame size and heartbeat, then
                    # connection.open picks the virtual host.
                    yield conn.authenticate(conn.broker.username, conn.broker.password,
                                            mechanism="PLAIN").addTimeout(self.timeout, self.reactor)
                    self._logged_in = conn
                    if self._reconnecting:
                        print("connected to %s" % conn.broker, file=sys.stderr, flush=True)
                        self._reconnecting = False
                return conn
            except defer.CancelledError:  # Ctrl-C: not a failure to connect
                raise
            except Exception as e:
                if conn is not None and conn.transport is not None:
                    conn.transport.abortConnection()
                broker = conn.broker if conn is not None else self.endpoint.broker
                # Even without reconnecting, the first connection tries each broker once.
                first_round = (self._logged_in is None
                               and self.endpoint.attempts < len(self.endpoint.endpoints))
                yield self.lost(e, conn, what="cannot connect to %s" % broker, try_next=first_round)

    @defer.inlineCallbacks
    def lost(self, e, conn=None, note=None, what=None, try_next=False):
        """After a failure: carry on if it may pass and we reconnect (or
        try_next: try the next broker anyway), else end.
        note: what the script had done so far, said with the failure."""
        # Out of ClientService's callbacks first: it may not be re-entered.
        yield task.deferLater(self.reactor, 0)
        broker = conn.broker if conn is not None else self.endpoint.broker
        why = channel_closed(e, conn)
        if why and not what:  # the connection was fine: say what did end
            message = "the broker at %s closed the channel: %s" % (broker, why)
        else:
            message = "%s: %s" % (what or "lost the connection to %s" % broker,
                                  explain(e, conn, self.verbose))
        if note:
            message += " (%s)" % note
        if not ((self.reconnect or try_next) and is_transient(e, conn)):
            yield self.stopService()
            raise Failed(message) from e
        print(message + ("; reconnecting" if self.reconnect else "; trying the next URL"),
              file=sys.stderr, flush=True)
        self._reconnecting = True

    @defer.inlineCallbacks
    def close(self, conn=None, chan=None):
        """Close the channel, then the connection, each waiting for its close-ok."""
        if conn is not None and not conn.closed:
            if chan is not None and not chan.closed:
                yield chan.channel_close(reply_code=200, reply_text="bye")
            # Channel 0 is the connection's own: closing it ends the whole session.
            chan0 = yield conn.channel(0)
            yield chan0.connection_close(reply_code=200, reply_text="bye"
                                         ).addTimeout(self.timeout, self.reactor)
        yield self.stopService()
