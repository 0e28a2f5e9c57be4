"""The benchmark's aio-pika consumer: what consumer.py --count N does, written
with aio-pika (asyncio, AMQP 0-9-1).

    python bench/aio_pika_consumer.py URL --count N [--prefetch P] [--exchange X --queue Q --routing-key K]

Declares the same exchange, queue and binding, sets the same prefetch, and for
each message prints the same line as consumer.py (decoded and escaped the same
way, flushed), then acknowledges it; after N messages it cancels and closes.
"""

import argparse
import asyncio
import sys

import aio_pika

from printable import printable

parser = argparse.ArgumentParser()
parser.add_argument("url")
parser.add_argument("--count", type=int, required=True)
parser.add_argument("--prefetch", type=int, default=100)
parser.add_argument("--exchange", default="test_message_exchange")
parser.add_argument("--queue", default="test_message_queue")
parser.add_argument("--routing-key", default="test_routing_key")


async def main(args):
    connection = await aio_pika.connect(args.url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=args.prefetch)
        exchange = await channel.declare_exchange(args.exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        queue = await channel.declare_queue(args.queue, durable=True)
        await queue.bind(exchange, args.routing_key)
        print("Waiting for messages on queue %r." % args.queue, file=sys.stderr)
        received = 0
        async with queue.iterator() as messages:
            async for message in messages:
                print("Received: %s from channel #%d" % (printable(message.body), channel.number), flush=True)
                await message.ack()
                received += 1
                if received >= args.count:
                    break
    print("Stopping after %d message(s)." % received, file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main(parser.parse_args()))
