"""Print the messages that arrive in a queue, one line each.

    python consumer.py amqp0-8.xml

declares the exchange test_message_exchange, the queue test_message_queue and
the binding between them (routing key test_routing_key), then prints every
message the queue holds or receives until Ctrl-C:

    Received: producer-to-consumer test message 1 from channel #1

When the connection is lost it reconnects, declares and consumes again.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, task

from command_line import options, running  # first: it checks the txamqp release
from command_line.output import Lines
from command_line.text import printable
from amqp_support import LongLong

import common

if TYPE_CHECKING:  # names only the annotations use: not imported when the script runs
    import argparse
    from collections.abc import Generator

    from twisted.internet.defer import Deferred

    from amqp_support import AMQChannel, AMQClient
    from command_line.running import IScriptReactor

parser = options.consumer_parser(__doc__)


def ack_printed(chan: AMQChannel, stdout: Lines, delivery_tag: int | None) -> None:
    """Acknowledge every message up to delivery_tag, once their lines are out."""
    if delivery_tag is not None:
        stdout.flush()
        # Acknowledge once printed: a message that was not printed stays in the
        # queue, and the broker delivers it again. multiple=True acknowledges
        # every message on the channel up to this delivery tag.
        chan.basic_ack(delivery_tag=delivery_tag, multiple=True)


@running.script(parser)
@defer.inlineCallbacks
def main(reactor: IScriptReactor, args: argparse.Namespace) -> Generator[Deferred[Any], Any, None]:
    spec = common.load_spec(args.spec)
    if args.queue_type == "stream" and (fallback := common.fallback_for(spec)):  # AMQP 0-8
        running.say("%s: AMQP 0-8's basic.consume has no arguments, where a stream consumer says"
                    " where to start reading; using amqp0-9-1.xml" % args.spec)
        spec = fallback()
    stdout = Lines(sys.stdout)  # a closed or full stdout ends the run, saying so
    printed = 0
    resume = None  # a stream: the offset after the last message printed

    @defer.inlineCallbacks
    def consume(conn: AMQClient) -> Generator[Deferred[Any], Any, None]:
        """What the consumer says to the broker on one connection; after a
        reconnect, on the next connection again, from the top (a new
        connection starts with no consumer)."""
        nonlocal printed, resume
        chan = yield common.open_channel(conn)
        yield common.declare(chan, args.exchange, args.exchange_type, args.queue, args.queue_type,
                             common.binding(args.exchange_type, args.routing_key, args.headers, args.x_match))

        # At most --prefetch messages unacknowledged: the broker waits for our acks.
        yield chan.basic_qos(prefetch_count=args.prefetch)
        # A stream keeps its messages: x-stream-offset says where to start reading
        # (--offset; after a lost connection, the message after the last one printed).
        if args.queue_type == "stream":
            offset = args.offset if resume is None else LongLong(resume)  # a long-long: an offset, not a time
            yield chan.basic_consume(queue=args.queue, consumer_tag=common.CONSUMER_TAG,
                                     arguments={"x-stream-offset": offset})
        else:
            yield chan.basic_consume(queue=args.queue, consumer_tag=common.CONSUMER_TAG)
        queue = yield conn.queue(common.CONSUMER_TAG)  # txamqp puts the deliveries here
        running.say("Waiting for messages on queue %r. To exit press CTRL+C" % args.queue)

        last = None  # the delivery tag of the last message printed and not acknowledged yet
        while args.count is None or printed < args.count:
            try:
                msg = yield queue.get()
            except defer.CancelledError:  # Ctrl-C, SIGTERM or SIGHUP: stop here, cleanly
                break
            stdout.write("Received: %s from channel #%d" % (printable(msg.content.body), chan.id))
            if msg.content.property_error:  # a headers table that cannot be decoded, say
                running.warn("message with delivery tag %d: cannot decode its properties (%s);"
                             " printed and acked anyway" % (msg.delivery_tag, msg.content.property_error))
            if args.queue_type == "stream":  # each of its messages carries its offset
                resume = msg.content.properties["headers"]["x-stream-offset"] + 1
            last = msg.delivery_tag
            printed += 1
            if not queue.pending:  # the last of the messages that arrived together
                ack_printed(chan, stdout, last)
                last = None
        ack_printed(chan, stdout, last)

        # Messages the broker sent ahead that we did not print go back to the queue (a stream keeps all).
        yield chan.basic_cancel(consumer_tag=common.CONSUMER_TAG)
        yield common.close(conn, chan)

    service = common.connection(reactor, spec, args.url, timeout=args.timeout, heartbeat=args.heartbeat,
                                tls=options.tls(args), reconnect=args.reconnect)
    try:
        yield service.run(consume)  # consume() on a connection, again on the next when it fails
    except defer.CancelledError:  # a signal while (re)connecting: nothing to close
        pass
    if args.count is None or printed < args.count:
        running.say("Stopping after %d message(s)." % printed)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
