"""The benchmark's aio-pika publisher: what producer.py does, written with
aio-pika (asyncio, AMQP 0-9-1), with publisher confirms.

    python bench/aio_pika_producer.py URL [--in-flight N] [--exchange X --queue Q --routing-key K] MESSAGE|-

Declares the same durable exchange, queue and binding as producer.py, then
publishes each message (each line of stdin for "-") as a persistent, mandatory
message on a channel in confirm mode, with at most --in-flight messages
awaiting their confirm at a time; exit 0 means, as for producer.py, that the
broker has taken every message.
"""

import asyncio

import aio_pika

from client_cli import bodies, parser, say

cli = parser(__doc__, producer=True)
cli.add_argument("--in-flight", type=int, default=1000)


async def main(args):
    connection = await aio_pika.connect(args.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(args.exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        queue = await channel.declare_queue(args.queue, durable=True)
        await queue.bind(exchange, args.routing_key)
        waiting = set()
        sent = 0
        for body in bodies(args.message):
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            confirm = asyncio.ensure_future(exchange.publish(message, routing_key=args.routing_key))
            waiting.add(confirm)
            sent += 1
            if len(waiting) >= args.in_flight:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for confirm in done:
                    confirm.result()  # raises if the broker refused or returned it
        for confirm in asyncio.as_completed(waiting):
            await confirm
    say("Sent %d message(s)." % sent)


if __name__ == "__main__":
    asyncio.run(main(cli.parse_args()))
