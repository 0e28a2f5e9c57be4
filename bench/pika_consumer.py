"""The benchmark's pika consumer: what consumer.py --count N does, written with
pika's BlockingConnection (AMQP 0-9-1).

    python bench/pika_consumer.py URL --count N [--prefetch P] [--exchange X --queue Q --routing-key K]

Declares the same exchange, queue and binding, sets the same prefetch, and for
each message prints the same line as consumer.py (decoded and escaped the same
way, flushed), then acknowledges it alone; after N messages it cancels and
closes.
"""

import pika

from client_cli import line, parser, say

cli = parser(__doc__, consumer=True)


def main():
    args = cli.parse_args()
    conn = pika.BlockingConnection(pika.URLParameters(args.url))
    chan = conn.channel()
    chan.exchange_declare(args.exchange, "direct", durable=True)
    chan.queue_declare(args.queue, durable=True)
    chan.queue_bind(args.queue, args.exchange, args.routing_key)
    chan.basic_qos(prefetch_count=args.prefetch)
    received = 0

    def on_message(chan, method, properties, body):
        nonlocal received
        print(line(body, chan.channel_number), flush=True)
        chan.basic_ack(delivery_tag=method.delivery_tag)
        received += 1
        if received >= args.count:
            chan.stop_consuming(args.consumer_tag)

    chan.basic_consume(args.queue, on_message, consumer_tag=args.consumer_tag)
    say("Waiting for messages on queue %r." % args.queue)
    chan.start_consuming()
    say("Stopping after %d message(s)." % received)
    conn.close()


if __name__ == "__main__":
    main()
