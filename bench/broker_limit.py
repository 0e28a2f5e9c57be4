"""The broker's own limit for what producer.py does: persistent, mandatory
messages with publisher confirms, from a client that costs almost no CPU.

    python bench/broker_limit.py URL --exchange E --routing-key K < lines

Speaks AMQP 0-9-1 over a plain socket: reads every stdin line first, encodes
every message before it connects, then writes them in large blocks while a
thread reads the broker's basic.acks, and exits once every message is
confirmed. It declares nothing (bench/run.py does), and exits 1 on a
basic.nack, a basic.return or any other method it did not expect. What it
reaches is what the broker can take with this guarantee; a client with the
guarantee cannot go faster on the same node.
"""

import argparse
import socket
import struct
import sys
import threading
from urllib.parse import unquote, urlsplit

FRAME = struct.Struct("!BHI")
BLOCK = 1000  # messages per write


def frame(kind, channel, payload):
    return FRAME.pack(kind, channel, len(payload)) + payload + b"\xce"


def method(channel, class_id, method_id, args=b""):
    return frame(1, channel, struct.pack("!HH", class_id, method_id) + args)


def shortstr(text):
    data = text.encode()
    return bytes([len(data)]) + data


class Connection:
    def __init__(self, url):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 5672))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = self.sock.makefile("rb")
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(10, 10)  # connection.start
        login = ("\0%s\0%s" % (unquote(parts.username or "guest"), unquote(parts.password or "guest"))).encode()
        self.sock.sendall(method(0, 10, 11, struct.pack("!I", 0) + shortstr("PLAIN")
                                 + struct.pack("!I", len(login)) + login + shortstr("en_US")))
        channel_max, frame_max, _ = struct.unpack("!HIH", self.expect(10, 30))  # connection.tune
        self.sock.sendall(method(0, 10, 31, struct.pack("!HIH", channel_max, frame_max, 0)))
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self.sock.sendall(method(0, 10, 40, shortstr(vhost) + shortstr("") + b"\0"))
        self.expect(10, 41)
        self.sock.sendall(method(1, 20, 10, shortstr("")))
        self.expect(20, 11)
        self.sock.sendall(method(1, 85, 10, b"\0"))  # confirm.select
        self.expect(85, 11)

    def read_method(self):
        while True:
            kind, _, size = FRAME.unpack(self.stream.read(7))
            payload = self.stream.read(size + 1)[:-1]
            if kind == 1:
                class_id, method_id = struct.unpack_from("!HH", payload)
                return class_id, method_id, payload[4:]
            if kind != 8:  # heartbeats aside, only methods are expected
                sys.exit("broker_limit: unexpected frame of type %d" % kind)

    def expect(self, class_id, method_id):
        got = self.read_method()
        if got[:2] != (class_id, method_id):
            sys.exit("broker_limit: expected method %d.%d, got %d.%d" % (class_id, method_id, *got[:2]))
        return got[2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--routing-key", required=True)
    parser.add_argument("--queue", help="ignored (the other clients take it)")
    args = parser.parse_args()
    bodies = sys.stdin.buffer.read().split(b"\n")
    if bodies and not bodies[-1]:
        bodies.pop()
    publish = method(1, 60, 40, struct.pack("!H", 0) + shortstr(args.exchange) + shortstr(args.routing_key)
                     + b"\x01")  # mandatory
    # Content header: class basic, weight 0, body size, property flags with
    # only delivery-mode set (bit 12), delivery-mode 2: persistent.
    messages = [publish + frame(2, 1, struct.pack("!HHQHB", 60, 0, len(body), 1 << 12, 2)) + frame(3, 1, body)
                for body in bodies]
    conn = Connection(args.url)
    confirmed = threading.Event()
    failure = []

    def read_acks():
        upto, singles = 0, set()  # every tag up to upto is confirmed, and these above it
        while upto < len(messages):
            class_id, method_id, rest = conn.read_method()
            if (class_id, method_id) != (60, 80):  # anything but basic.ack: nack, return, close
                failure.append("broker_limit: the broker sent method %d.%d" % (class_id, method_id))
                break
            tag, multiple = struct.unpack_from("!QB", rest)
            if multiple & 1:
                upto = max(upto, tag)
            else:
                singles.add(tag)
            while upto + 1 in singles:
                upto += 1
                singles.discard(upto)
        confirmed.set()

    threading.Thread(target=read_acks, daemon=True).start()
    for start in range(0, len(messages), BLOCK):
        conn.sock.sendall(b"".join(messages[start:start + BLOCK]))
    confirmed.wait()
    if failure:
        sys.exit(failure[0])
    conn.sock.sendall(method(0, 10, 50, struct.pack("!H", 200) + shortstr("bye") + struct.pack("!HH", 0, 0)))
    conn.expect(10, 51)
    print("Sent %d message(s), every one confirmed." % len(messages), file=sys.stderr)


if __name__ == "__main__":
    main()
