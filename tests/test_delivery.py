"""End to end: the scripts run as processes, as the README tells a person to,
against the tests' own RabbitMQ node; pika looks at the broker."""

import os
import signal
import subprocess
import sys
import time

import pytest

from command_line.text import printable
import helpers
from helpers import run_script

SPECS = ["amqp0-8.xml", "amqp0-9-1.xml"]
MESSAGE = "producer-to-consumer test message 1"


def shown(text):
    """What the consumer prints for a message, as read_stdout_lines gives it."""
    return "Received: %s from channel #1" % text


def line(text):
    """The same line as bytes on stdout."""
    return (shown(text) + "\n").encode()


@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", SPECS)
def test_two_terminal_walkthrough(spec, vhost_url, spawn, python):
    consumer = spawn("consumer.py", spec, url=vhost_url, python=python)
    consumer.wait_for_stderr("Waiting for messages", timeout=30)
    sent = run_script("producer.py", spec, MESSAGE, url=vhost_url, python=python)
    assert sent.returncode == 0, sent.stderr
    assert consumer.read_stdout_lines(1, timeout=30) == [shown(MESSAGE)]


@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", SPECS)
def test_message_sent_first_waits_in_queue(spec, vhost_url, python):
    # A fresh vhost: neither the exchange nor the queue exists yet.
    sent = run_script("producer.py", spec, MESSAGE, url=vhost_url, python=python)
    assert sent.returncode == 0, sent.stderr
    assert helpers.queue_depth(vhost_url, "test_message_queue") == 1
    got = run_script("consumer.py", spec, "--count", "1", url=vhost_url, python=python)
    assert got.returncode == 0, got.stderr
    assert got.stdout == line(MESSAGE)
    # Acked after printing: nothing left, nothing to redeliver.
    assert helpers.queue_depth(vhost_url, "test_message_queue") == 0


# (body, the line the consumer must print for it)
BODIES = {
    "ascii": (b"hello", "hello"),
    "accents": ("d\u00e9j\u00e0 vu, \u00e7a va".encode(), "d\u00e9j\u00e0 vu, \u00e7a va"),
    # The zero-width joiner is a format character: escaped, like every one.
    "emoji": ("\U0001f389 \U0001f468\u200d\U0001f469\u200d\U0001f467".encode(),
              "\U0001f389 \U0001f468\\u200d\U0001f469\\u200d\U0001f467"),
    "cjk": ("\u6d88\u606f\u961f\u5217 \u30e1\u30c3\u30bb\u30fc\u30b8".encode(),
            "\u6d88\u606f\u961f\u5217 \u30e1\u30c3\u30bb\u30fc\u30b8"),
    "empty": (b"", ""),
    "invalid-utf8": (b"caf\xe9 \xff\xfe\x80", "caf\\xe9 \\xff\\xfe\\x80"),
    "binary": (bytes(range(256)), None),
    "escape-sequences": (b"\x1b[2J\x1b[31mred\x1b]0;title\x07\x9b6n\r\nnext",
                         "\\x1b[2J\\x1b[31mred\\x1b]0;title\\x07\\x9b6n\\r\\nnext"),
}
# All 256 byte values: C0 controls, DEL and invalid UTF-8 escaped, the backslash
# doubled, the rest kept.
BODIES["binary"] = (BODIES["binary"][0], "".join(
    {9: "\\t", 10: "\\n", 13: "\\r", 0x5C: "\\\\"}.get(b, "\\x%02x" % b)
    if b < 0x20 or b >= 0x7F or b == 0x5C else chr(b)
    for b in range(256)))


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("case", sorted(BODIES))
def test_consumer_receives_any_bytes(spec, case, broker, names, python):
    body, text = BODIES[case]
    helpers.declare(broker.url, names.exchange, names.queue, names.routing_key)
    helpers.publish(broker.url, names.exchange, names.routing_key, body)
    got = run_script("consumer.py", spec, "--count", "1", *names.args, url=broker.url, python=python)
    assert got.returncode == 0, got.stderr
    assert got.stdout == line(text)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("case", sorted(set(BODIES) - {"binary", "empty"}))
def test_producer_sends_exact_bytes(spec, case, broker, names, python):
    body = BODIES[case][0]  # argv cannot hold NUL, so not the binary case
    # os.fsdecode: the str that makes the child's argv these exact bytes
    sent = run_script("producer.py", spec, os.fsdecode(body), *names.args, url=broker.url, python=python)
    assert sent.returncode == 0, sent.stderr
    assert helpers.get_all(broker.url, names.queue) == [body]


@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", SPECS)
def test_one_mebibyte_body_both_ways(spec, broker, names):
    big = bytes(range(256)).replace(b"\n", b"") * 4200  # over 1 MiB: many frames
    sent = run_script("producer.py", spec, "-", *names.args, url=broker.url, input=big + b"\n")
    assert sent.returncode == 0, sent.stderr
    [got] = helpers.get_all(broker.url, names.queue)
    assert got == big
    helpers.publish(broker.url, names.exchange, names.routing_key, big)
    printed = run_script("consumer.py", spec, "--count", "1", *names.args, url=broker.url)
    assert printed.returncode == 0, printed.stderr
    # The whole line, every byte of the body escaped as the consumer escapes it.
    assert printed.stdout == line(printable(big))


@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", SPECS)
def test_utf8_message_is_not_a_poison_message(spec, broker, names, spawn):
    # txamqp 0.8.2 decoded this body to str, lost count of its bytes and
    # dropped the connection; the broker then redelivered it forever.
    helpers.declare(broker.url, names.exchange, names.queue, names.routing_key)
    bodies = ["na\u00efve caf\u00e9".encode(), b"one", "\u00fcber".encode(), b"two", b"three"]
    for body in bodies:
        helpers.publish(broker.url, names.exchange, names.routing_key, body)
    consumer = spawn("consumer.py", spec, *names.args, url=broker.url)
    lines = consumer.read_stdout_lines(5, timeout=30)
    assert lines == [shown(b.decode()) for b in bodies]
    assert consumer.returncode is None, "the consumer must stay up"
    sent = run_script("producer.py", spec, "encore \u00e0 vous", *names.args, url=broker.url)
    assert sent.returncode == 0, sent.stderr
    assert consumer.read_stdout_lines(1, timeout=30) == [shown("encore \u00e0 vous")]


@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", SPECS)
def test_messages_are_persistent_unless_transient(spec, broker, names):
    assert run_script("producer.py", spec, "kept", *names.args, url=broker.url).returncode == 0
    assert run_script("producer.py", spec, "--transient", "not kept", *names.args,
                      url=broker.url).returncode == 0
    got = helpers.get_all(broker.url, names.queue, with_properties=True)
    assert [(body, props.delivery_mode) for body, props in got] == [(b"kept", 2), (b"not kept", 1)]


@pytest.mark.rabbitmq4
@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS)
def test_persistent_message_survives_broker_restart(spec, broker, names, python):
    sent = run_script("producer.py", spec, "still here", *names.args, url=broker.url, python=python)
    assert sent.returncode == 0, sent.stderr
    broker.restart()
    got = run_script("consumer.py", spec, "--count", "1", *names.args, url=broker.url, python=python)
    assert got.returncode == 0, got.stderr
    assert got.stdout == line("still here")


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS)
def test_stdin_stream_of_100000_lines(spec, broker, names):
    lines = b"".join(b"%d\n" % i for i in range(1, 100001))
    sent = run_script("producer.py", spec, "-", *names.args, url=broker.url,
                      input=lines, timeout=110)
    assert sent.returncode == 0, sent.stderr
    assert b"Sent 100000 message(s)" in sent.stderr
    assert helpers.queue_depth(broker.url, names.queue) == 100000


@pytest.mark.parametrize("spec", SPECS)
def test_a_stream_of_several_batches_arrives_in_order(spec, broker, names):
    # With amqp0-8.xml the producer commits every 1,000 messages, and
    # publishes the next batch once the commit before it is done.
    lines = [b"%d" % i for i in range(1, 4502)]
    sent = run_script("producer.py", spec, "-", *names.args, url=broker.url, input=b"\n".join(lines) + b"\n")
    assert sent.returncode == 0, sent.stderr
    assert helpers.get_all(broker.url, names.queue) == lines


@pytest.mark.parametrize("spec", SPECS)
def test_stdin_line_is_sent_while_more_may_come(spec, broker, names):
    """`tail -f log | producer.py SPEC -`: each line goes out when it comes,
    and the producer stays connected while it waits for the next one (it
    must not block the reactor in a read, or heartbeats and confirms stop)."""
    helpers.declare(broker.url, names.exchange, names.queue, names.routing_key)  # to count in
    # The producer sends a frame after at most one interval of silence, and
    # the broker drops it after two to three; the broker sends one after one
    # to two intervals, and the producer gives up after three. At 3 s each
    # side may be held up 3 s (a loaded 2-core machine) and stay connected.
    heartbeat = 3
    proc = subprocess.Popen([sys.executable, "producer.py", spec, "-", "--heartbeat", str(heartbeat),
                             *names.args],
                            cwd=helpers.ROOT, env=helpers.script_env(broker.url), stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        for n, line in enumerate([b"first", b"second"], 1):
            proc.stdin.write(line + b"\n")
            proc.stdin.flush()
            # With amqp0-8.xml the line reaches the queue with its commit.
            deadline = time.monotonic() + 30
            while helpers.queue_depth(broker.url, names.queue) < n:
                assert time.monotonic() < deadline, "line %d not in the queue while stdin stays open" % n
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.05)
        # No input for four heartbeat intervals: a producer blocked in a read
        # sends no heartbeat, and the broker drops it after two or three.
        time.sleep(4 * heartbeat)
        assert proc.poll() is None, proc.stderr.read()
        proc.stdin.write(b"third\n")
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert helpers.get_all(broker.url, names.queue) == [b"first", b"second", b"third"]


@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", SPECS)
def test_count_and_several_messages(spec, broker, names):
    sent = run_script("producer.py", spec, "--count", "3", "a", "b", *names.args, url=broker.url)
    assert sent.returncode == 0, sent.stderr
    got = run_script("consumer.py", spec, "--count", "4", *names.args, url=broker.url)
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"".join(line(t) for t in "aaabbb"[:4])
    assert helpers.queue_depth(broker.url, names.queue) == 2


@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("exchange_type", ["direct", "fanout"])
def test_exchange_types(exchange_type, spec, broker, names):
    # Publish first: the producer binds as the consumer does. Topic and
    # headers, where only the consumer binds, are in test_routing.py.
    args = [*names.args, "--exchange-type", exchange_type]
    sent = run_script("producer.py", spec, "typed", *args, url=broker.url)
    assert sent.returncode == 0, sent.stderr
    got = run_script("consumer.py", spec, "--count", "1", *args, url=broker.url)
    assert got.stdout == line("typed"), got.stderr


@pytest.mark.parametrize("spec", SPECS)
def test_default_exchange_routes_by_queue_name(spec, broker, names):
    args = ["--exchange", "", "--queue", names.queue]
    sent = run_script("producer.py", spec, "direct to queue", *args, url=broker.url)
    assert sent.returncode == 0, sent.stderr
    assert helpers.get_all(broker.url, names.queue) == [b"direct to queue"]


@pytest.mark.parametrize("spec", SPECS)
def test_consumer_acks_with_its_prefetch(spec, broker, names, spawn):
    consumer = spawn("consumer.py", spec, "--prefetch", "7", *names.args, url=broker.url)
    consumer.wait_for_stderr("Waiting for messages", timeout=30)
    consumers = broker.ctl("list_consumers", "queue_name", "consumer_tag", "ack_required",
                           "prefetch_count")
    assert "%s\ttest_consumer_tag\ttrue\t7" % names.queue in consumers.splitlines()
