"""The benchmark's pika publisher: what producer.py does, written with pika's
BlockingConnection (AMQP 0-9-1).

    python bench/pika_producer.py URL [--confirm] [--exchange X --queue Q --routing-key K] MESSAGE|-

Declares the same durable exchange, queue and binding as producer.py, then
publishes each message (each line of stdin for "-") as a persistent message.
Without --confirm it does not wait for the broker at all (pika's fastest way);
with --confirm it waits for a publisher confirm after every message, so exit
0 means, as for producer.py, that the broker has taken every message.
"""

import pika

from client_cli import bodies, parser, say

cli = parser(__doc__, producer=True)
cli.add_argument("--confirm", action="store_true")


def main():
    args = cli.parse_args()
    conn = pika.BlockingConnection(pika.URLParameters(args.url))
    chan = conn.channel()
    chan.exchange_declare(args.exchange, "direct", durable=True)
    chan.queue_declare(args.queue, durable=True)
    chan.queue_bind(args.queue, args.exchange, args.routing_key)
    if args.confirm:
        chan.confirm_delivery()  # basic_publish now waits for each message's ack
    properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    sent = 0
    for body in bodies(args.message):
        chan.basic_publish(args.exchange, args.routing_key, body, properties)
        sent += 1
    say("Sent %d message(s)." % sent)
    conn.close()


if __name__ == "__main__":
    main()
