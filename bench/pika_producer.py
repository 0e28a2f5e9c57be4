"""The benchmark's pika publisher: what producer.py does, written with pika's
BlockingConnection (AMQP 0-9-1).

    python bench/pika_producer.py URL [--confirm] [--exchange X --queue Q --routing-key K] MESSAGE|-

Declares the same durable exchange, queue and binding as producer.py, then
publishes each message (each line of stdin for "-") as a persistent message.
Without --confirm it does not wait for the broker at all (pika's fastest way);
with --confirm it waits for a publisher confirm after every message, so exit
0 means, as for producer.py, that the broker has taken every message.
"""

import argparse
import sys

import pika

parser = argparse.ArgumentParser()
parser.add_argument("url")
parser.add_argument("message")
parser.add_argument("--confirm", action="store_true")
parser.add_argument("--exchange", default="test_message_exchange")
parser.add_argument("--queue", default="test_message_queue")
parser.add_argument("--routing-key", default="test_routing_key")


def main():
    args = parser.parse_args()
    conn = pika.BlockingConnection(pika.URLParameters(args.url))
    chan = conn.channel()
    chan.exchange_declare(args.exchange, "direct", durable=True)
    chan.queue_declare(args.queue, durable=True)
    chan.queue_bind(args.queue, args.exchange, args.routing_key)
    if args.confirm:
        chan.confirm_delivery()  # basic_publish now waits for each message's ack
    properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    if args.message == "-":
        bodies = (line.rstrip(b"\n") for line in sys.stdin.buffer)
    else:
        bodies = [args.message.encode()]
    sent = 0
    for body in bodies:
        chan.basic_publish(args.exchange, args.routing_key, body, properties)
        sent += 1
    print("Sent %d message(s)." % sent, file=sys.stderr)
    conn.close()


if __name__ == "__main__":
    main()
