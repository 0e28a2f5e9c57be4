"""A message is one message, whatever its properties hold (issue 10, item 1).

Real clients publish through the throwaway RabbitMQ node with a header of every
field-table type each writes: pika, py-amqp (`amqp` on PyPI) and Node's amqplib
(tests/node, installed with npm by the amqplib fixture); a raw-socket publisher
here sends what no client writes: tables nested 1,000 and 20,000 deep, an
unknown type letter, a bad length inside a table. consumer.py, with each spec
file, must print every body, report each undecodable property block in one
stderr line with its delivery tag, ack everything and exit 0.
"""

import datetime
import decimal
import shutil
import socket
import struct
import subprocess
from urllib.parse import urlsplit

import amqp
import pika
import pytest

import helpers
import standin
from helpers import ROOT, run_script

NODE_DIR = ROOT / "tests" / "node"
SPECS = ["amqp0-8.xml", "amqp0-9-1.xml"]
PROTOCOL_HEADERS = {"0-8": b"AMQP\x01\x01\x08\x00", "0-9-1": b"AMQP\x00\x00\x09\x01"}


# ---------------------------------------------------------------- a raw publisher

def shortstr(text):
    data = text.encode()
    return bytes([len(data)]) + data


def frame(kind, channel, payload):
    return struct.pack("!BHI", kind, channel, len(payload)) + payload + b"\xce"


class RawPublisher:
    """Just enough AMQP (0-8 or 0-9-1) to publish a message whose property
    bytes are given as they are, in a transaction: tx.commit-ok means the
    broker has the message. Anything else the broker answers is raised."""

    def __init__(self, url, protocol="0-9-1"):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 5672), timeout=30)
        self.sock.sendall(PROTOCOL_HEADERS[protocol])
        self.expect(10, 10)  # connection.start
        response = b"\x00" + parts.username.encode() + b"\x00" + parts.password.encode()
        self.send(0, 10, 11, b"\x00\x00\x00\x00" + shortstr("PLAIN")
                  + struct.pack("!I", len(response)) + response + shortstr("en_US"))
        channel_max, frame_max, _ = struct.unpack_from("!HIH", self.expect(10, 30), 4)  # connection.tune
        self.send(0, 10, 31, struct.pack("!HIH", channel_max, frame_max, 0))
        self.send(0, 10, 40, shortstr("/") + shortstr("") + b"\x00")
        self.expect(10, 41)
        self.send(1, 20, 10, shortstr(""))
        self.expect(20, 11)
        self.send(1, 90, 10, b"")  # tx.select
        self.expect(90, 11)

    def send(self, channel, class_id, method_id, args):
        self.sock.sendall(frame(1, channel, struct.pack("!HH", class_id, method_id) + args))

    def read_exactly(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise AssertionError("the broker closed the connection")
            data += chunk
        return data

    def expect(self, class_id, method_id):
        while True:
            kind, _, size = struct.unpack("!BHI", self.read_exactly(7))
            payload = self.read_exactly(size + 1)[:-1]
            if kind == 1:
                break
        got = struct.unpack_from("!HH", payload)
        if got != (class_id, method_id):
            code, = struct.unpack_from("!H", payload, 4)
            text = payload[7:7 + payload[6]].decode(errors="replace")
            raise AssertionError("the broker answered %s: %d %s" % (got, code, text))
        return payload

    def publish(self, exchange, routing_key, body, properties):
        """properties: the property flags and properties, as bytes."""
        self.send(1, 60, 40, b"\x00\x00" + shortstr(exchange) + shortstr(routing_key) + b"\x00")
        self.sock.sendall(frame(2, 1, struct.pack("!HHQ", 60, 0, len(body)) + properties)
                          + frame(3, 1, body))
        self.send(1, 90, 20, b"")  # tx.commit
        try:
            self.expect(90, 21)
        except AssertionError as e:
            raise AssertionError("publishing %r: %s" % (body, e)) from None

    def close(self):
        self.sock.close()


HEADERS_FLAG = struct.pack("!H", 1 << 13)  # the headers property alone (both versions)


def raw_table(body):
    return struct.pack("!I", len(body)) + body


def nested(depth, letter):
    """Properties: headers = {"k": a table (F) or array (A) nested depth deep}."""
    value = b"\x00\x00\x00\x00"
    for _ in range(depth - 1):
        inner = (b"\x01k" if letter == "F" else b"") + letter.encode() + value
        value = struct.pack("!I", len(inner)) + inner
    return HEADERS_FLAG + raw_table(b"\x01k" + letter.encode() + value)


GOOD_RAW = {
    "raw: tables 1,000 deep": nested(1000, "F"),
    "raw: arrays 20,000 deep": nested(20000, "A"),
    # py-amqp's letter for large integers, from the specification's list.
    "raw: letter L": HEADERS_FLAG + raw_table(b"\x01lL" + b"\xff" * 8),
}
# Property blocks the codec cannot decode, and neither can RabbitMQ 3.10:
# it decodes the properties of every message published to it, and a table
# it cannot parse crashes the channel (INTERNAL_ERROR closes the connection),
# over 0-9-1 as over 0-8, so such a message never reaches a queue. 'U' (the
# specification's signed 16-bit) is missing from RabbitMQ's parser too; this
# codec reads it. A stand-in broker delivers the undecodable ones below.
REFUSED_BY_RABBITMQ = {
    "raw: letter U": HEADERS_FLAG + raw_table(b"\x01uU\xff\xfe"),
}
BAD_RAW = {
    "raw: unknown type letter": HEADERS_FLAG + raw_table(b"\x01zZ\x00\x00\x00\x00"),
    "raw: string longer than its table": HEADERS_FLAG + raw_table(b"\x01sS\x00\x00\x01\x00abc"),
}


# ---------------------------------------------------------------- the clients

def pika_publish(url, exchange, routing_key, body):
    headers = {"text": "\u00e9t\u00e9", "bytes": b"\x00\xff", "true": True, "int": -7,
               "long": 2**40, "decimal": decimal.Decimal("3.14"),
               "time": datetime.datetime(2009, 6, 18, tzinfo=datetime.UTC),
               "table": {"nested": [1, "two", None]}, "void": None}
    with helpers.connect(url) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(exchange, routing_key, body, pika.BasicProperties(headers=headers, delivery_mode=2),
                         mandatory=True)


def py_amqp_publish(url, exchange, routing_key, body):
    parts = urlsplit(url)
    headers = {"text": "\u00e9t\u00e9", "bytes": b"\x00\xff", "true": True, "float": 0.25, "int": -7,
               "long": -(2**40), "decimal": decimal.Decimal("-2.5"),
               "time": datetime.datetime(2009, 6, 18), "table": {"nested": [1, "two", None]}, "void": None}
    with amqp.Connection("%s:%d" % (parts.hostname, parts.port), userid=parts.username,
                         password=parts.password, confirm_publish=True) as conn:
        ch = conn.channel()
        ch.basic_publish(amqp.Message(body, application_headers=headers, delivery_mode=2),
                         exchange=exchange, routing_key=routing_key, mandatory=True)


@pytest.fixture(scope="session")
def amqplib():
    """node with amqplib installed in tests/node (npm ci, from package-lock.json)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to publish with Node's amqplib; neither is optional"
                    " where they are installed")
    if not (NODE_DIR / "node_modules" / "amqplib").is_dir():
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, "npm ci in tests/node failed:\n" + done.stderr
    return node


def amqplib_publisher(node):
    def publish(url, exchange, routing_key, body):
        done = subprocess.run([node, "publish.js", url, exchange, routing_key, body.decode()],
                              cwd=NODE_DIR, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    return publish


def publish_all(url, names, node, protocol="0-9-1"):
    """Publish every case; return the bodies in order."""
    bodies = []
    for client, publish in [("pika", pika_publish), ("py-amqp", py_amqp_publish),
                            ("amqplib", amqplib_publisher(node))]:
        body = ("%s: every header type it writes" % client).encode()
        publish(url, names.exchange, names.routing_key, body)
        bodies.append(body)
    raw = RawPublisher(url, protocol)
    try:
        for name, properties in GOOD_RAW.items():
            raw.publish(names.exchange, names.routing_key, name.encode(), properties)
            bodies.append(name.encode())
    finally:
        raw.close()
    return bodies


@pytest.mark.timeout(420)  # the first one may run npm ci (its own limit: 300 s)
@pytest.mark.parametrize("spec", SPECS)
def test_every_message_is_printed_and_acked(spec, broker, names, amqplib):
    helpers.declare(broker.url, names.exchange, names.queue, names.routing_key)
    bodies = publish_all(broker.url, names, amqplib)
    got = run_script("consumer.py", spec, "--count", str(len(bodies)), *names.args, url=broker.url)
    assert got.returncode == 0, got.stderr
    lines = got.stdout.decode().splitlines()
    assert lines == ["Received: %s from channel #1" % body.decode() for body in bodies]
    assert "warning" not in got.stderr.decode()  # every one of them decodes
    assert helpers.queue_depth(broker.url, names.queue) == 0


@pytest.mark.not_ours
@pytest.mark.parametrize("protocol", sorted(PROTOCOL_HEADERS))
@pytest.mark.parametrize("case", sorted({**REFUSED_BY_RABBITMQ, **BAD_RAW}))
def test_rabbitmq_refuses_headers_it_cannot_parse(case, protocol, broker, names):
    # What RabbitMQ 3.10 does with an unknown type letter or a bad length in
    # a table: see REFUSED_BY_RABBITMQ. If a broker ever takes them, the
    # consumer copes (test_consumer_prints_and_acks_undecodable_properties).
    helpers.declare(broker.url, names.exchange, names.queue, names.routing_key)
    raw = RawPublisher(broker.url, protocol)
    try:
        with pytest.raises(AssertionError, match="INTERNAL_ERROR"):
            raw.publish(names.exchange, names.routing_key, b"x", {**REFUSED_BY_RABBITMQ, **BAD_RAW}[case])
    finally:
        raw.close()
    assert helpers.queue_depth(broker.url, names.queue) == 0


def delivering(messages, acked):
    """A stand-in broker that delivers messages ((properties, body) each) to
    the consumer, records the delivery tags it acks and plays along to the end."""
    def script(conn):
        frames = standin.play_broker_until(conn, "basic.consume")
        for tag, (properties, body) in enumerate(messages, 1):
            conn.sendall(standin.method_frame("basic.deliver", channel=1, consumer_tag=CONSUMER_TAG,
                                              delivery_tag=tag, exchange="", routing_key="q")
                         + frame(2, 1, struct.pack("!HHQ", 60, 0, len(body)) + properties)
                         + frame(3, 1, body))
        while (data := frames.next()) is not None:
            class_id, method_id = struct.unpack("!HH", data[7:11])
            method = standin.SPEC_08.classes.byid[class_id].methods.byid[method_id]
            channel = int.from_bytes(data[1:3], "big")
            if method.name == "ack":
                tag, bits = struct.unpack("!QB", data[11:20])
                # multiple (bit 0): every message up to this one
                acked.extend(range(acked[-1] + 1 if acked else 1, tag + 1) if bits & 1 else [tag])
            elif method.name + "-ok" in method.klass.methods.byname:
                conn.sendall(standin.method_frame("%s.%s-ok" % (method.klass.name, method.name),
                                                  channel=channel))
    return script


CONSUMER_TAG = "test_consumer_tag"


def test_consumer_prints_and_acks_undecodable_properties(stand_in):
    # No RabbitMQ here delivers them (see REFUSED_BY_RABBITMQ); a broker
    # that does must not make them poison messages.
    messages = [(HEADERS_FLAG + raw_table(b""), b"good one")]
    messages += [(properties, name.encode()) for name, properties in BAD_RAW.items()]
    # A property block cut short: a delivery mode announced, no byte for it.
    messages.append((struct.pack("!H", 1 << 12), b"cut short"))
    acked = []
    server = stand_in(delivering(messages, acked))
    got = run_script("consumer.py", "amqp0-8.xml", "--count", str(len(messages)), url=server.url)
    assert got.returncode == 0, got.stderr
    assert got.stdout.decode().splitlines() == ["Received: %s from channel #1" % body.decode()
                                                for _, body in messages]
    warnings = [line for line in got.stderr.decode().splitlines() if "warning" in line]
    assert len(warnings) == 3, got.stderr
    for tag, line in zip([2, 3, 4], warnings, strict=True):
        assert line.startswith("consumer.py: warning: message with delivery tag %d: cannot decode"
                               " its properties (" % tag), line
        assert line.endswith("); printed and acked anyway"), line
    assert "headers: unknown field table type 'Z'" in warnings[0]
    assert "headers: a value in a field table runs past the end of its table" in warnings[1]
    assert "ends inside property delivery-mode" in warnings[2]
    assert "Traceback" not in got.stderr.decode()
    assert acked == [1, 2, 3, 4]
    assert not server.script_errors
