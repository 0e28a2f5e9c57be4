"""The raw AMQP 0-9-1 the benchmark's limit clients speak (broker_limit.py,
raw_consumer.py): frames built by hand and a connection that logs in over a
plain socket. Not an example of anything: it trusts the broker and checks
almost nothing, so that it costs almost no CPU.
"""

import os
import socket
import struct
import sys
from urllib.parse import unquote, urlparse

PROG = os.path.basename(sys.argv[0])

FRAME = struct.Struct("!BHI")
CLASS_METHOD = struct.Struct("!HH")
TAG = struct.Struct("!Q")


def shortstr(text):
    data = text.encode("utf-8")
    return bytes([len(data)]) + data


def longstr(data):
    return struct.pack("!I", len(data)) + data


def frame(kind, channel, payload):
    return FRAME.pack(kind, channel, len(payload)) + payload + b"\xce"


def method(channel, class_id, method_id, args=b""):
    return frame(1, channel, CLASS_METHOD.pack(class_id, method_id) + args)


class Connection:
    """A logged-in AMQP 0-9-1 connection to the broker at url (channel 0 only)."""

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
            raise SystemExit("%s: the broker closed the connection" % PROG)
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
                        raise SystemExit("%s: the broker closed: %r" % (PROG, payload[4:]))
