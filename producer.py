"""Send the messages given on the command line, or one per line of stdin.

    python producer.py amqp0-8.xml "producer-to-consumer test message 1"
    seq 1 100000 | python producer.py amqp0-8.xml -

declares the same exchange, queue and binding as consumer.py, so a message
sent before any consumer runs waits in the queue. Exit status 0 means the
broker has taken every message and routed it to a queue.
"""

import os
import sys

from twisted.internet import defer, task
from txamqp.content import Content

import common
from amqp_support import publish

WINDOW = 1000  # messages on their way at most: unconfirmed, or in one transaction
WINDOW_BYTES = 4 << 20  # and at most 4 MiB of their bodies (but always one message)

parser = common.make_parser(__doc__)
parser.add_argument("messages", metavar="MESSAGE", nargs="*",
                    help='a message to send; "-" sends each line of stdin as a message')
parser.add_argument("--count", type=common.count, default=1, help="send each message this many times")
parser.add_argument("--header", metavar="KEY=VALUE", dest="headers", type=common.header, action="append",
                    default=[], help="set this header on every message (repeatable); the value is sent"
                                     " as a string, so a consumer's --header must give it as the same string")
parser.add_argument("--transient", action="store_true",
                    help="do not ask the broker to write the messages to disk")
parser.add_argument("--retry", action="store_true",
                    help="when the connection fails, reconnect and send again what the broker"
                         " had not taken (a message may then arrive twice)")


def bodies(args):
    """Each message as bytes, exactly as given, --count times."""
    for message in args.messages:
        if message == "-":
            lines = map(without_newline, sys.stdin.buffer)
        else:
            lines = [os.fsencode(message)]  # the bytes the shell passed
        for body in lines:
            for _ in range(args.count):
                yield body


def without_newline(line):
    # A view of the line, not a copy of it: a line may be hundreds of MiB.
    return memoryview(line)[:-1] if line.endswith(b"\n") else line


def producer_binds(args):
    """Whether the producer binds the queue too. A direct exchange routes by the
    very key the producer publishes with (a fanout by none): binding it is what
    the consumer does as well, and a message sent before any consumer ran waits
    in the queue. A topic or headers binding is the consumer's pattern or
    header match, which the producer does not know: it binds nothing."""
    return args.exchange_type in ("direct", "fanout")


@common.script(parser)
@defer.inlineCallbacks
def main(reactor, args):
    spec = common.load_spec(args.spec)  # first: "producer.py 'a message'" has no spec
    if not args.messages:
        raise common.UsageError('no message given: give a MESSAGE, or "-" to read stdin')
    service = common.AMQPService(reactor, spec, args, reconnect=args.retry)
    # The broker says it has taken each message with a publisher confirm
    # where the spec has them (0-9-1), else by committing a transaction (0-8).
    Publisher = publish.Confirms if publish.has_confirms(spec) else publish.Transactions
    # A persistent message is written to disk, so it survives a broker restart.
    delivery_mode = common.NON_PERSISTENT if args.transient else common.PERSISTENT
    properties = {"delivery-mode": delivery_mode}
    if args.headers:
        properties["headers"] = dict(args.headers)
    messages = (Content(body, properties=properties) for body in bodies(args))
    publisher = None
    while True:
        conn = yield service.connect()
        try:
            chan = yield common.get_channel(conn)
            yield common.declare(chan, args, bind=producer_binds(args))
            # After a reconnect, this first sends again what was not taken.
            publisher = yield Publisher.start(chan, WINDOW, WINDOW_BYTES, previous=publisher)
            for content in messages:
                # mandatory: a message that no queue takes comes back
                # (basic.return) instead of being dropped without a word.
                yield publisher.publish(exchange=args.exchange, routing_key=args.routing_key,
                                        mandatory=True, content=content)
            sent = yield publisher.finish()  # fails if a message was returned or refused
            break
        except common.Disconnected as e:
            yield service.lost(e, conn, publisher and publisher.progress())
    print("Sent %d message(s) to exchange %r with routing key %r."
          % (sent, args.exchange, args.routing_key), file=sys.stderr)
    yield service.close(conn, chan)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
