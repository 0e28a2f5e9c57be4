"""The benchmark's pika consumer: what consumer.py --count N does, written with
pika's BlockingConnection (AMQP 0-9-1).

    python bench/pika_consumer.py URL --count N [--prefetch P] [--ack each|multiple]
                                  [--exchange X --queue Q --routing-key K]

Declares the same exchange, queue and binding, sets the same prefetch, and for
each message prints the same line as consumer.py (decoded and escaped the same
way). With --ack each (the default: pika's tutorials' way) it flushes each
line and acknowledges each message alone. With --ack multiple (what
consumer.py does, pika's best form of it) it prints without flushing and, at
the end of each process_data_events (the messages pika read together) and
every prefetch/2 messages within one, flushes stdout and then acknowledges
all of them with one basic.ack (multiple) of the last delivery tag, so that
the broker's window never runs dry. After N messages it cancels and closes.
"""

import sys

import pika

from client_cli import line, parser, say

cli = parser(__doc__, consumer=True, ack="each")


def main():
    args = cli.parse_args()
    conn = pika.BlockingConnection(pika.URLParameters(args.url))
    chan = conn.channel()
    chan.exchange_declare(args.exchange, "direct", durable=True)
    chan.queue_declare(args.queue, durable=True)
    chan.queue_bind(args.queue, args.exchange, args.routing_key)
    chan.basic_qos(prefetch_count=args.prefetch)
    each = args.ack == "each"
    batch = max(1, args.prefetch // 2) if args.prefetch else args.count
    received = pending = last = 0

    def ack_pending():
        nonlocal pending
        sys.stdout.flush()
        chan.basic_ack(delivery_tag=last, multiple=True)
        pending = 0

    def on_message(chan, method, properties, body):
        nonlocal received, pending, last
        received += 1
        if each:
            print(line(body, chan.channel_number), flush=True)
            chan.basic_ack(delivery_tag=method.delivery_tag)
            return
        print(line(body, chan.channel_number))
        last = method.delivery_tag
        pending += 1
        if pending >= batch:
            ack_pending()

    chan.basic_consume(args.queue, on_message, consumer_tag=args.consumer_tag)
    say("Waiting for messages on queue %r." % args.queue)
    while received < args.count:
        conn.process_data_events(time_limit=None)  # what start_consuming() does, a turn at a time
        if pending:
            ack_pending()
    chan.basic_cancel(args.consumer_tag)
    say("Stopping after %d message(s)." % received)
    conn.close()


if __name__ == "__main__":
    main()
