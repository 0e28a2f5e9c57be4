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
    if confirms:
        # Publisher confirms (RabbitMQ's 0-9-1 extension): the broker answers
        # each message with basic.ack once it has taken it, basic.nack if not.
        yield chan.confirm_select()
    else:
        # AMQP 0-8 has no confirms: tx.commit-ok says the broker has taken
        # every message published since the last commit.
        yield chan.tx_select()
    outbox.watch(chan, confirms)  # counts those answers and basic.return

    for content in outbox.messages():  # first what a lost connection left unconfirmed
        # mandatory: a message that no queue takes comes back (basic.return)
        # instead of being dropped without a word.
        chan.basic_publish(exchange=args.exchange, routing_key=args.routing_key,
                           mandatory=True, content=content)
        if not confirms and outbox.full():
            yield chan.tx_commit()
            outbox.committed()
        yield outbox.wait_for_room()
    if not confirms:
        yield chan.tx_commit()
        outbox.committed()
    yield outbox.wait_for_all()
    sent = outbox.sent()  # fails if a message was returned or refused

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
    contents = (Content(body, properties=properties) for body in common.message_bodies(args))
    outbox = Outbox(contents, window=WINDOW, window_bytes=WINDOW_BYTES)
    service = common.service(reactor, spec, args, reconnect=args.retry)
    # send() on a connection; with --retry on the next one when it fails.
    # On a terminal, a progress line shows meanwhile.
    with common.Progress(reactor, args.stderr, outbox):
        sent = yield service.run(lambda conn: send(conn, args, outbox), note=outbox.progress)
    print("Sent %d message(s) to exchange %r with routing key %r."
          % (sent, args.exchange, args.routing_key), file=sys.stderr)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
