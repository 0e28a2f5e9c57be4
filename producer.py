"""Send the messages given on the command line, or one per line of stdin.

    python producer.py amqp0-8.xml "producer-to-consumer test message 1"
    seq 1 100000 | python producer.py amqp0-8.xml -

declares the same exchange, queue and binding as consumer.py, so a message
sent before any consumer runs waits in the queue. Exit status 0 means the
broker has taken every message and routed it to a queue. On a terminal, a
long run shows a line on stderr counting the messages as they go.
"""

import sys

from twisted.internet import defer, task
from txamqp.content import Content

import common
from amqp_support.publish import Outbox, has_confirms

WINDOW = 1000  # messages on their way at most: unconfirmed, or in one transaction
WINDOW_BYTES = 4 << 20  # and at most 4 MiB of their bodies (but always one message)

parser = common.producer_parser(__doc__)


@defer.inlineCallbacks
def send(conn, args, outbox):
    """What the producer says to the broker on one connection; with --retry,
    on the next connection again, from the top."""
    # Log in: connection.start-ok carries the credentials, tune-ok agrees on
    # frame size and heartbeat, connection.open picks the virtual host.
    yield conn.authenticate(conn.broker.username, conn.broker.password, mechanism="PLAIN")
    # A channel: one of many light-weight sessions sharing the connection.
    chan = yield conn.channel(1)
    yield chan.channel_open()

    # Both scripts declare the same exchange, queue and binding (declaring
    # what exists changes nothing), so either can run first. Durable: they
    # survive a broker restart. The default exchange ("") needs neither.
    if args.exchange:
        yield chan.exchange_declare(exchange=args.exchange, type=args.exchange_type, durable=True)
    yield chan.queue_declare(queue=args.queue, durable=True, arguments=common.queue_arguments(args))
    # A direct (or fanout) binding is the consumer's too, so a message sent
    # before any consumer ran waits in the queue; a topic or headers binding is
    # the consumer's pattern or header match, which the producer does not know.
    if args.exchange and args.exchange_type in ("direct", "fanout"):
        yield chan.queue_bind(queue=args.queue, exchange=args.exchange, **common.binding(args))

    # Per connection: a broker that refused AMQP 0-8 gets amqp0-9-1.xml (common.py).
    confirms = has_confirms(conn.spec)
    # Publisher confirms (RabbitMQ's 0-9-1 extension): the broker answers each
    # message with basic.ack once it has taken it, basic.nack if not. AMQP 0-8
    # has none: tx.commit-ok says it has taken what was published on the
    # channel since its last commit. Nothing may be sent on a channel while its
    # commit is on its way: a second channel publishes the next batch meanwhile.
    if confirms:
        chans = [chan]
        yield chan.confirm_select()
    else:
        chans = [chan, (yield conn.channel(2))]
        yield chans[1].channel_open()
        yield chans[0].tx_select()
        yield chans[1].tx_select()
    outbox.watch(*chans, confirms=confirms)  # counts those answers and basic.return

    commit = None  # with tx: the commit on its way, on the other channel
    # The next message: first what a lost connection left unconfirmed; it
    # waits while the window is full, or for the next line of stdin.
    while (content := (yield outbox.next_message())) is not None:
        # mandatory: a message that no queue takes comes back (basic.return)
        # instead of being dropped without a word.
        chans[0].basic_publish(exchange=args.exchange, routing_key=args.routing_key,
                               mandatory=True, content=content)
        # A transaction's messages reach their queue at its commit: commit when
        # it is full, and when stdin is quiet (the next line has not come).
        if not confirms and (outbox.full() or outbox.idle()):
            yield commit  # the batch before first: they reach their queues in order
            commit = outbox.committing(chans[0].tx_commit())
            chans.reverse()
    if not confirms:
        yield commit
        yield outbox.committing(chans[0].tx_commit())
    yield outbox.wait_for_all()
    sent = outbox.sent()  # fails if a message was returned or refused

    for chan in chans:
        yield chan.channel_close(reply_code=200, reply_text="bye")
    # Channel 0 is the connection's own: closing it ends the whole session.
    chan0 = yield conn.channel(0)
    yield chan0.connection_close(reply_code=200, reply_text="bye")
    return sent


@common.script(parser)
@defer.inlineCallbacks
def main(reactor, args):
    spec = common.load_spec(args.spec)  # first: in "producer.py 'hello'", 'hello' is no spec file
    if not args.messages:
        parser.error('no message given: give a MESSAGE, or "-" to read stdin')
    # A persistent message is written to disk, so it survives a broker restart.
    properties = {"delivery-mode": common.NON_PERSISTENT if args.transient else common.PERSISTENT}
    if args.headers:
        properties["headers"] = dict(args.headers)
    # The bodies, stdin's lines as they come (a thread reads them, so the
    # reactor never waits in a read: heartbeats and confirms go on).
    bodies = common.MessageBodies(reactor, args)
    contents = (Content(body, properties=properties) for body in bodies)
    outbox = Outbox(contents, ready=bodies.ready, window=WINDOW, window_bytes=WINDOW_BYTES)
    service = common.service(reactor, spec, args, reconnect=args.retry)
    # send() on a connection; with --retry on the next one when it fails.
    # On a terminal, a progress line shows meanwhile.
    with common.Progress(reactor, args.stderr, outbox):
        sent = yield service.run(lambda conn: send(conn, args, outbox), note=outbox.progress)
    print("Sent %d message(s) to exchange %r with routing key %r."
          % (sent, args.exchange, args.routing_key), file=sys.stderr)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
