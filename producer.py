"""Send the messages given on the command line, or one per line of stdin.

    python producer.py amqp0-8.xml "producer-to-consumer test message 1"
    seq 1 100000 | python producer.py amqp0-8.xml -

declares the same exchange, queue and binding as consumer.py, so a message
sent before any consumer runs waits in the queue. Exit status 0 means the
broker has taken every message and routed it to a queue. On a terminal, a
long run shows a line on stderr counting the messages as they go.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, task
from txamqp.content import Content

from command_line import options, running  # first: it checks the txamqp release
from command_line.progress import Progress
from command_line.stdin import MessageBodies

import common
from amqp_support import Outbox, has_confirms

if TYPE_CHECKING:  # names only the annotations use: not imported when the script runs
    import argparse
    from collections.abc import Generator

    from twisted.internet.defer import Deferred

    from amqp_support import AMQClient
    from command_line.running import IScriptReactor

WINDOW = 1000  # messages on their way at most: unconfirmed, or in one transaction
WINDOW_BYTES = 4 << 20  # and at most 4 MiB of their bodies (but always one message)

parser = options.producer_parser(__doc__)


@defer.inlineCallbacks
def send(conn: AMQClient, args: argparse.Namespace, outbox: Outbox) -> Generator[Any, Any, int]:
    """What the producer says to the broker on one connection; with --retry,
    on the next connection again, from the top."""
    chan = yield common.open_channel(conn)
    # A direct (or fanout) binding is the consumer's too, so a message sent
    # before any consumer ran waits in the queue; a topic or headers binding is
    # the consumer's pattern or header match, which the producer does not know.
    bind = args.exchange_type in ("direct", "fanout")
    yield common.declare(chan, args.exchange, args.exchange_type, args.queue, args.queue_type,
                         common.binding(args.exchange_type, args.routing_key) if bind else None)

    # Per connection: a broker that refused AMQP 0-8 gets amqp0-9-1.xml (common.py).
    confirms = has_confirms(conn.spec)
    # Publisher confirms (RabbitMQ's 0-9-1 extension): the broker answers each message
    # with basic.ack once it has taken it, basic.nack if not. AMQP 0-8 has none:
    # tx.commit-ok says it has taken what was published on the channel since its last
    # commit. While a commit is on its way, a second channel publishes the next batch.
    if confirms:
        chans = [chan]
        yield chan.confirm_select()
    else:
        chans = [chan, (yield conn.channel(2))]
        yield chans[1].channel_open()
        for each in chans:
            yield each.tx_select()
    outbox.watch(confirms, *chans)  # counts those answers and basic.return

    commit = None  # with tx: the commit on its way, on the other channel

    # The next message: first what a lost connection left unconfirmed; it
    # waits while the window is full, or for the next line of stdin.
    while (content := (yield outbox.next_message())) is not None:
        # mandatory: a message that no queue takes comes back (basic.return)
        # instead of being dropped without a word.
        chans[0].basic_publish(exchange=args.exchange, routing_key=args.routing_key,
                               mandatory=True, content=content)
        # A transaction's messages reach their queue at its commit: commit when
        # it is full, and when stdin is quiet (the next line has not come).
        if not confirms and (outbox.full() or outbox.idle()):
            yield commit  # the batch before first: they reach their queues in order
            commit = outbox.committing(chans[0].tx_commit())
            chans.reverse()
    if not confirms:
        yield commit
        yield outbox.committing(chans[0].tx_commit())
    yield outbox.wait_for_all()
    sent = outbox.sent()  # fails if a message was returned or refused
    yield common.close(conn, chan)
    return sent


@running.script(parser)
@defer.inlineCallbacks
def main(reactor: IScriptReactor, args: argparse.Namespace) -> Generator[Deferred[Any], Any, None]:
    spec = common.load_spec(args.spec)  # first: in "producer.py 'hello'", 'hello' is no spec file
    if not args.messages:
        parser.error('no message given: give a MESSAGE, or "-" to read stdin')
    # A persistent message is written to disk, so it survives a broker restart.
    properties: dict[str, object] = {"delivery-mode": common.NON_PERSISTENT if args.transient else common.PERSISTENT}
    if args.headers:
        properties["headers"] = dict(args.headers)
    # The bodies, stdin's lines as they come (a thread reads them, so the
    # reactor never waits in a read: heartbeats and confirms go on).
    bodies = MessageBodies(reactor, args.messages, args.count)
    contents = (Content(body, properties=properties) for body in bodies)
    outbox = Outbox(contents, ready=bodies.ready, window=WINDOW, window_bytes=WINDOW_BYTES)
    service = common.connection(reactor, spec, args.url, timeout=args.timeout, heartbeat=args.heartbeat,
                                tls=options.tls(args), reconnect=args.retry)
    # send() on a connection; with --retry on the next one when it fails.
    # On a terminal, a progress line shows meanwhile.
    with Progress(reactor, outbox):
        sent = yield service.run(lambda conn: send(conn, args, outbox), note=outbox.progress)
    bodies.check(sent)  # a stdin that could not be read: after what was read is sent, exit 1
    running.say("Sent %d message(s) to exchange %r with routing key %r."
                % (sent, args.exchange, args.routing_key))


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
