"""The benchmark's aio-pika publisher: what producer.py does, written with
aio-pika (asyncio, AMQP 0-9-1), with publisher confirms.

    python bench/aio_pika_producer.py URL [--in-flight N] [--exchange X --queue Q --routing-key K] MESSAGE|-

Declares the same durable exchange, queue and binding as producer.py, then
publishes each message (each line of stdin for "-") as a persistent, mandatory
message on a channel in confirm mode, with at most --in-flight messages
awaiting their confirm at a time (a semaphore: a publish waits for a place,
and each confirm frees one in a done callback, so the window costs the same
per message however large it is); exit 0 means, as for producer.py, that the
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
        window = asyncio.Semaphore(args.in_flight)  # a place in the window per message awaiting its confirm
        waiting, failures = set(), []

        def confirmed(task):  # a done callback: O(1) per message, however many are in flight
            waiting.discard(task)
            window.release()
            if not task.cancelled() and task.exception() is not None:
                failures.append(task.exception())  # the broker refused or returned it

        sent = 0
        for body in bodies(args.message):
            await window.acquire()
            if failures:
                raise failures[0]
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            task = asyncio.ensure_future(exchange.publish(message, routing_key=args.routing_key))
            task.add_done_callback(confirmed)
            waiting.add(task)
            sent += 1
        await asyncio.gather(*waiting, return_exceptions=True)
        if failures:
            raise failures[0]
    say("Sent %d message(s)." % sent)


if __name__ == "__main__":
    asyncio.run(main(cli.parse_args()))
