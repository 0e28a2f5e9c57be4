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

import argparse
import socket
import struct
import sys
from urllib.parse import unquote, urlparse

parser = argparse.ArgumentParser()
parser.add_argument("url")
parser.add_argument("--count", type=int, required=True)
parser.add_argument("--prefetch", type=int, default=100)
parser.add_argument("--ack", choices=["multiple", "each"], default="multiple")
parser.add_argument("--exchange", default="test_message_exchange")
parser.add_argument("--queue", default="test_message_queue")
parser.add_argument("--routing-key", default="test_routing_key")
parser.add_argument("--consumer-tag", default="test_consumer_tag")

FRAME = struct.Struct("!BHI")
CLASS_METHOD = struct.Struct("!HH")
TAG = struct.Struct("!Q")


def shortstr(text):
    data = text.encode("utf-8")
    return bytes([len(data)]) + data


def longstr(data):
    return struct.pack("!I", len(data)) + data


def method(channel, class_id, method_id, args=b""):
    payload = CLASS_METHOD.pack(class_id, method_id) + args
    return FRAME.pack(1, channel, len(payload)) + payload + b"\xce"


class Connection:
    def __init__(self, url):
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname or "localhost", u.port or 5672))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.pos = 0
        self.early = []  # frames that came with the one expect() waited for (the first deliveries)
        self.send(b"AMQP\x00\x00\x09\x01")
        self.expect(10, 10)  # connection.start
        user, password = unquote(u.username or "guest"), unquote(u.password or "guest")
        self.send(method(0, 10, 11, b"\0\0\0\0" + shortstr("PLAIN")
                         + longstr(b"\0" + user.encode() + b"\0" + password.encode()) + shortstr("en_US")))
        tune = self.expect(10, 30)
        channel_max, frame_max, _ = struct.unpack_from("!HIH", tune, 4)
        self.send(method(0, 10, 31, struct.pack("!HIH", channel_max, frame_max, 0)))
        vhost = unquote(u.path[1:]) if len(u.path) > 1 else "/"
        self.send(method(0, 10, 40, shortstr(vhost) + shortstr("") + b"\0"))
        self.expect(10, 41)

    def send(self, data):
        self.sock.sendall(data)

    def fill(self):
        data = self.sock.recv(1 << 18)
        if not data:
            raise SystemExit("raw_consumer: the broker closed the connection")
        self.buf = self.buf[self.pos:] + data
        self.pos = 0

    def frames(self):
        """The whole frames that are in the buffer now (reads once if there are none)."""
        if self.early:
            out, self.early = self.early, []
            return out
        if len(self.buf) - self.pos < 8:
            self.fill()
        buf, pos, out = self.buf, self.pos, []
        while True:
            if len(buf) - pos < 7:
                break
            kind, channel, size = FRAME.unpack_from(buf, pos)
            end = pos + 7 + size
            if len(buf) <= end:
                if not out:
                    self.buf, self.pos = buf, pos
                    self.fill()
                    buf, pos = self.buf, self.pos
                    continue
                break
            out.append((kind, buf[pos + 7:end]))
            pos = end + 1
        self.pos = pos
        return out

    def expect(self, class_id, method_id):
        while True:
            frames = self.frames()
            for i, (kind, payload) in enumerate(frames):
                if kind == 1 and CLASS_METHOD.unpack_from(payload) == (class_id, method_id):
                    self.early = frames[i + 1:]
                    return payload
                if kind == 1:
                    got = CLASS_METHOD.unpack_from(payload)
                    if got in ((10, 50), (20, 40)):
                        raise SystemExit("raw_consumer: the broker closed: %r" % payload[4:])


def main():
    args = parser.parse_args()
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
    print("Waiting for messages on queue %r." % args.queue, file=sys.stderr, flush=True)

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
    print("Stopping after %d message(s)." % received, file=sys.stderr)


if __name__ == "__main__":
    main()
