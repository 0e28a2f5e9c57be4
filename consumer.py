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

parser = common.consumer_parser(__doc__)


def ack_printed(chan, delivery_tag):
    """Acknowledge every message up to delivery_tag, once their lines are out."""
    if delivery_tag is not None:
        sys.stdout.flush()
        # Acknowledge once printed: a message that was not printed stays in the
        # queue, and the broker delivers it again. multiple=True acknowledges
        # every message on the channel up to this delivery tag.
        chan.basic_ack(delivery_tag=delivery_tag, multiple=True)


@common.script(parser)
@defer.inlineCallbacks
def main(reactor, args):
    spec = common.load_spec(args.spec)
    printed = 0

    @defer.inlineCallbacks
    def consume(conn):
        """What the consumer says to the broker on one connection; after a
        reconnect, on the next connection again, from the top (a new
        connection starts with no consumer)."""
        nonlocal printed
        # Log in: connection.start-ok carries the credentials, tune-ok agrees
        # on frame size and heartbeat, connection.open picks the virtual host.
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
        if args.exchange:
            yield chan.queue_bind(queue=args.queue, exchange=args.exchange, **common.binding(args))

        # At most --prefetch messages unacknowledged: the broker waits for our acks.
        yield chan.basic_qos(prefetch_count=args.prefetch)
        yield chan.basic_consume(queue=args.queue, consumer_tag=common.CONSUMER_TAG)
        queue = yield conn.queue(common.CONSUMER_TAG)  # txamqp puts the deliveries here
        print("Waiting for messages on queue %r. To exit press CTRL+C" % args.queue,
              file=sys.stderr, flush=True)

        last = None  # the delivery tag of the last message printed and not acknowledged yet
        while args.count is None or printed < args.count:
            try:
                msg = yield queue.get()
            except defer.CancelledError:  # Ctrl-C or SIGTERM: stop here, cleanly
                break
            print("Received: %s from channel #%d" % (common.printable(msg.content.body), chan.id))
            common.report_undecodable_properties(parser.prog, msg)  # acked all the same
            last = msg.delivery_tag
            printed += 1
            if not queue.pending:  # the last of the messages that arrived together
                ack_printed(chan, last)
                last = None
        ack_printed(chan, last)

        # Messages the broker sent ahead that we did not print go back to the queue.
        yield chan.basic_cancel(consumer_tag=common.CONSUMER_TAG)
        yield chan.channel_close(reply_code=200, reply_text="bye")
        # Channel 0 is the connection's own: closing it ends the whole session.
        chan0 = yield conn.channel(0)
        yield chan0.connection_close(reply_code=200, reply_text="bye")

    service = common.service(reactor, spec, args, reconnect=args.reconnect)
    try:
        yield service.run(consume)  # consume() on a connection, again on the next when it fails
    except defer.CancelledError:  # Ctrl-C or SIGTERM while (re)connecting: nothing to close
        pass
    if args.count is None or printed < args.count:
        print("Stopping after %d message(s)." % printed, file=sys.stderr)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
