"""The benchmark's aio-pika consumer: what consumer.py --count N does, written
with aio-pika (asyncio, AMQP 0-9-1).

    python bench/aio_pika_consumer.py URL --count N [--prefetch P] [--exchange X --queue Q --routing-key K]

Declares the same exchange, queue and binding, sets the same prefetch, and for
each message prints the same line as consumer.py (decoded and escaped the same
way, flushed), then acknowledges it alone; after N messages it cancels and
closes.
"""

import asyncio

import aio_pika

from client_cli import line, parser, say

cli = parser(__doc__, consumer=True)


async def main(args):
    connection = await aio_pika.connect(args.url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=args.prefetch)
        exchange = await channel.declare_exchange(args.exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        queue = await channel.declare_queue(args.queue, durable=True)
        await queue.bind(exchange, args.routing_key)
        say("Waiting for messages on queue %r." % args.queue)
        received = 0
        async with queue.iterator(consumer_tag=args.consumer_tag) as messages:
            async for message in messages:
                print(line(message.body, channel.number), flush=True)
                await message.ack()
                received += 1
                if received >= args.count:
                    break
    say("Stopping after %d message(s)." % received)


if __name__ == "__main__":
    asyncio.run(main(cli.parse_args()))
