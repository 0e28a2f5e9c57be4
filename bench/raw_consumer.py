"""The broker's own limit for the consumer benchmark: a raw-socket AMQP 0-9-1
consumer that costs almost no CPU, so that its rate is what the broker gives.

    python bench/raw_consumer.py URL --count N [--prefetch P] [--ack multiple|each]
                                 [--exchange X --queue Q --routing-key K]

Does what consumer.py --count N does on the wire (declares the same
exchange, queue and binding, basic.qos, basic.consume, then cancels and
closes) and prints the same line per message (the bench counts them); the
body is printed as it is, with no escaping. Frames are parsed with one
struct call each, and all that came in one read is answered at once: its
lines are written to stdout, then acknowledged with one basic.ack
(multiple, the default) or with one basic.ack per message, all in one
write (--ack each: what pika's consumer asks of the broker). Not an example
of anything: it trusts the broker and checks almost nothing.
"""

import struct
import sys

from client_cli import parser, say
from raw_amqp import TAG, Connection, method, shortstr

cli = parser(__doc__, consumer=True, ack="multiple")


def main():
    args = cli.parse_args()
    c = Connection(args.url)
    c.send(method(1, 20, 10, shortstr("")))
    c.expect(20, 11)
    c.send(method(1, 40, 10, b"\0\0" + shortstr(args.exchange) + shortstr("direct") + b"\x02\0\0\0\0"))
    c.expect(40, 11)
    c.send(method(1, 50, 10, b"\0\0" + shortstr(args.queue) + b"\x02\0\0\0\0"))
    c.expect(50, 11)
    c.send(method(1, 50, 20, b"\0\0" + shortstr(args.queue) + shortstr(args.exchange)
                  + shortstr(args.routing_key) + b"\0\0\0\0\0"))
    c.expect(50, 21)
    c.send(method(1, 60, 10, struct.pack("!IHB", 0, args.prefetch, 0)))
    c.expect(60, 11)
    c.send(method(1, 60, 20, b"\0\0" + shortstr(args.queue) + shortstr(args.consumer_tag) + b"\0\0\0\0\0"))
    c.expect(60, 21)
    say("Waiting for messages on queue %r." % args.queue)

    out = sys.stdout.buffer
    ack_each = args.ack == "each"
    received = 0
    tag = 0
    while received < args.count:
        lines, acks = [], []
        for kind, payload in c.frames():
            if kind == 1 and payload[:4] == b"\0\x3c\0\x3c":  # basic.deliver
                # consumer-tag (shortstr), then the delivery tag
                tag = TAG.unpack_from(payload, 5 + payload[4])[0]
                if ack_each:
                    acks.append(method(1, 60, 80, TAG.pack(tag) + b"\0"))
            elif kind == 3:  # the body (16 bytes: always one frame)
                lines.append(b"Received: %s from channel #1\n" % payload)
                received += 1
        if lines:
            out.write(b"".join(lines))
            out.flush()
            c.send(b"".join(acks) if ack_each else method(1, 60, 80, TAG.pack(tag) + b"\x01"))
    c.send(method(1, 60, 30, shortstr(args.consumer_tag) + b"\0"))
    c.expect(60, 31)
    c.send(method(1, 20, 40, struct.pack("!H", 200) + shortstr("bye") + b"\0\0\0\0"))
    c.expect(20, 41)
    c.send(method(0, 10, 50, struct.pack("!H", 200) + shortstr("bye") + b"\0\0\0\0"))
    c.expect(10, 51)
    say("Stopping after %d message(s)." % received)


if __name__ == "__main__":
    main()
