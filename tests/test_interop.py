"""Interoperability with pika, a widely used AMQP 0-9-1 client: pika publishes
and consumer.py reads, consumer.py running with each spec file; producer.py
publishes with each spec file and a pika consumer gets the exact bytes, as
persistent messages (delivery mode 2)."""

import decimal
from datetime import datetime, UTC

import pika
import pytest

import helpers
from helpers import run_script

SPECS = ["amqp0-8.xml", "amqp0-9-1.xml"]

BODIES = [
    b"producer-to-consumer test message 1",
    "d\u00e9j\u00e0 vu \u6d88\u606f \U0001f389".encode(),
    b"caf\xe9 \xff\xfe\x80",  # not UTF-8
    bytes(b for b in range(256) if b != 0x0A),  # every byte but the newline stdin splits on
    b"",
]
PRINTED = [
    "producer-to-consumer test message 1",
    "d\u00e9j\u00e0 vu \u6d88\u606f \U0001f389",
    "caf\\xe9 \\xff\\xfe\\x80",
    # Every byte: printable ASCII as itself but the backslash, doubled; tab and
    # CR as \t and \r; every other control character, DEL and each byte of
    # 0x80-0xFF (none of them valid UTF-8 alone) as \xNN.
    "".join({0x09: "\\t", 0x0D: "\\r", 0x5C: "\\\\"}.get(b, chr(b) if 0x20 <= b < 0x7F else "\\x%02x" % b)
            for b in range(256) if b != 0x0A),
    "",
]

# Every property, with a header of every field type pika writes.
PROPERTIES = pika.BasicProperties(
    content_type="application/octet-stream", content_encoding="identity",
    headers={"text": "\u00e9t\u00e9", "bytes": b"\x00\xff", "true": True, "int": -7,
             "long": 2**40, "decimal": decimal.Decimal("3.14"),
             "time": datetime(2009, 6, 18, tzinfo=UTC), "table": {"nested": [1, "two", None]},
             "void": None},
    delivery_mode=pika.DeliveryMode.Persistent, priority=3, correlation_id="corr-1",
    reply_to="reply-queue", expiration="600000", message_id="msg-1", timestamp=1245283200,
    type="example", user_id="guest", app_id="pika")


def assert_properties_as_published(properties):
    """properties (pika's, as a consumer received them) are PROPERTIES, every
    header value of the type it was published with (True, not 1)."""
    assert vars(properties) == vars(PROPERTIES)
    for key, value in PROPERTIES.headers.items():
        got = properties.headers[key]
        assert isinstance(got, type(value)), (key, got)
    assert properties.headers["table"]["nested"] == [1, "two", None]


def pika_publish_all(url, names):
    """Publish BODIES with PROPERTIES through pika, with confirms."""
    helpers.declare(url, names.exchange, names.queue, names.routing_key)
    with helpers.connect(url) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        for body in BODIES:
            ch.basic_publish(names.exchange, names.routing_key, body, PROPERTIES, mandatory=True)


@pytest.mark.not_ours
@pytest.mark.rabbitmq4
def test_pika_reads_back_what_it_published(broker, names):
    # What consumer.py is given in the test below: each message with every
    # property and header as published (pika writes them and reads them
    # back, in order, through RabbitMQ). A check of pika and RabbitMQ only.
    pika_publish_all(broker.url, names)
    queued = helpers.get_all(broker.url, names.queue, with_properties=True)
    assert [body for body, _ in queued] == BODIES
    for _, properties in queued:
        assert_properties_as_published(properties)


@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", SPECS)
def test_pika_publishes_consumer_reads(spec, broker, names, python):
    # consumer.py prints no property, so that it is not derailed by them
    # (every one pika writes, see the test above) is what it can show.
    pika_publish_all(broker.url, names)
    got = run_script("consumer.py", spec, "--count", str(len(BODIES)), *names.args, url=broker.url, python=python)
    assert got.returncode == 0, got.stderr
    lines = got.stdout.decode().split("\n")
    assert lines == ["Received: %s from channel #1" % text for text in PRINTED] + [""]
    assert helpers.queue_depth(broker.url, names.queue) == 0  # each one acked


def pika_consume(url, queue, count):
    """count messages from queue, read by a pika consumer: (method, properties, body) each."""
    got = []
    with helpers.connect(url) as conn:
        ch = conn.channel()
        for method, properties, body in ch.consume(queue, inactivity_timeout=10):
            assert method is not None, "only %d of %d message(s) came" % (len(got), count)
            got.append((method, properties, body))
            ch.basic_ack(method.delivery_tag)
            if len(got) == count:
                break
        ch.cancel()
    return got


@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", SPECS)
def test_producer_publishes_pika_reads(spec, broker, names, python):
    stdin = b"".join(body + b"\n" for body in BODIES)
    sent = run_script("producer.py", spec, "-", *names.args, url=broker.url, input=stdin, python=python)
    assert sent.returncode == 0, sent.stderr
    got = pika_consume(broker.url, names.queue, len(BODIES))
    assert [body for _, _, body in got] == BODIES
    for method, properties, _ in got:
        assert (method.exchange, method.routing_key, method.redelivered) == (
            names.exchange, names.routing_key, False)
        assert properties.delivery_mode == 2
        # Nothing else was set.
        assert {k: v for k, v in vars(properties).items() if v is not None} == {"delivery_mode": 2}
