"""Print the messages that arrive in a queue, one line each.

    python consumer.py amqp0-8.xml

declares the exchange test_message_exchange, the queue test_message_queue and
the binding between them (routing key test_routing_key), then prints every
message the queue holds or receives until Ctrl-C:

    Received: producer-to-consumer test message 1 from channel #1

When the connection is lost it reconnects, declares and consumes again.
"""

import sys

from twisted.internet import defer, task

import common

parser = common.make_parser(__doc__)
parser.add_argument("--count", type=common.count,
                    help="exit after this many messages (default: run until stopped)")
# basic.qos carries prefetch-count in a short: 0 to 65535, where 0 means no limit.
parser.add_argument("--prefetch", type=common.short, default=100,
                    help="how many unacknowledged messages the broker may send ahead,"
                         " 0 to 65535 (0: no limit)")
parser.add_argument("--header", metavar="KEY=VALUE", dest="headers", type=common.header, action="append",
                    default=[], help="with --exchange-type headers: bind for messages that have this"
                                     " header (repeatable; the value is compared as a string)")
parser.add_argument("--x-match", choices=["all", "any"], default="all",
                    help="with --exchange-type headers: a message needs all the --header pairs, or any one")
parser.add_argument("--no-reconnect", dest="reconnect", action="store_false",
                    help="exit when the connection is lost instead of reconnecting")


@common.script(parser)
@defer.inlineCallbacks
def main(reactor, args):
    if args.headers and args.exchange_type != "headers":
        raise common.UsageError("--header binds only with --exchange-type headers")
    if args.exchange_type == "headers" and not args.headers:
        raise common.UsageError("--exchange-type headers needs a --header KEY=VALUE to bind with"
                                " (without one, every message matches)")
    spec = common.load_spec(args.spec)
    service = common.AMQPService(reactor, spec, args, reconnect=args.reconnect)
    conn = chan = None
    printed = 0
    try:
        while args.count is None or printed < args.count:
            conn = yield service.connect()
            try:
                chan = yield common.get_channel(conn)
                yield common.declare(chan, args)
                # At most --prefetch messages in flight: the broker waits for our acks.
                yield chan.basic_qos(prefetch_count=args.prefetch)
                # After a reconnect too: a new connection starts with no consumer.
                yield chan.basic_consume(queue=args.queue, consumer_tag=common.CONSUMER_TAG)
                queue = yield conn.queue(common.CONSUMER_TAG)  # txamqp puts deliveries here
                print("Waiting for messages on queue %r. To exit press CTRL+C" % args.queue,
                      file=sys.stderr, flush=True)

                while args.count is None or printed < args.count:
                    msg = yield queue.get()
                    text = common.printable(msg.content.body)
                    print("Received: %s from channel #%d" % (text, chan.id), flush=True)
                    common.report_undecodable_properties(parser.prog, msg)
                    # Acknowledge once printed: a message that was not printed
                    # stays in the queue, and the broker delivers it again.
                    # (Also one whose properties could not be decoded: its
                    # body is all this consumer needs.)
                    chan.basic_ack(delivery_tag=msg.delivery_tag)
                    printed += 1
            except common.Disconnected as e:
                yield service.lost(e, conn)
    except defer.CancelledError:  # Ctrl-C or SIGTERM
        print("Stopping after %d message(s)." % printed, file=sys.stderr)

    if chan is not None and not chan.closed:
        # Messages the broker sent ahead that we did not print go back to the queue.
        yield chan.basic_cancel(consumer_tag=common.CONSUMER_TAG)
    yield service.close(conn, chan)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
