"""Faults against a real node: consumers killed, the broker stopped, silenced
or restarted. Every message is delivered at least once (duplicates are
counted and allowed) and the queue ends empty."""

import os
import re
import signal
import time

import pytest

import helpers
from helpers import run_script

QUEUE_TYPES = ["classic", "quorum"]
STREAM = 2000

pytestmark = pytest.mark.slow


def send_stream(broker, args, n=STREAM):
    bodies = [b"message %d" % i for i in range(n)]
    sent = run_script("producer.py", "amqp0-8.xml", "-", *args, url=broker.url,
                      input=b"".join(b + b"\n" for b in bodies))
    assert sent.returncode == 0, sent.stderr
    return bodies


def printed(consumer):
    return [line.removeprefix(b"Received: ").removesuffix(b" from channel #1")
            for line in consumer.stdout.splitlines()]


def wait_until_all_printed(consumers, bodies, timeout=90):
    deadline = time.monotonic() + timeout
    while not set(bodies) <= {b for c in consumers for b in printed(c)}:
        if time.monotonic() > deadline:
            missing = set(bodies) - {b for c in consumers for b in printed(c)}
            raise AssertionError("%d message(s) never printed; last consumer's stderr:\n%s"
                                 % (len(missing), consumers[-1].stderr_text))
        time.sleep(0.1)


def finish(consumer, broker, queue):
    consumer.send_signal(signal.SIGINT)
    assert consumer.wait(timeout=30) == 0, consumer.stderr_text
    assert helpers.queue_depth(broker.url, queue) == 0


@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_consumer_killed_four_times(queue_type, broker, names, spawn):
    args = [*names.args, "--queue-type", queue_type]
    bodies = send_stream(broker, args)
    consumers = []
    for _ in range(4):
        consumer = spawn("consumer.py", "amqp0-8.xml", "--prefetch", "50", *args, url=broker.url)
        consumer.read_stdout_lines(200, timeout=30)
        consumer.send_signal(signal.SIGKILL)
        consumer.wait(timeout=10)
        consumers.append(consumer)
    last = spawn("consumer.py", "amqp0-8.xml", *args, url=broker.url)
    consumers.append(last)
    wait_until_all_printed(consumers, bodies)
    finish(last, broker, names.queue)
    everything = [b for c in consumers for b in printed(c)]
    assert set(everything) == set(bodies)
    # A killed consumer's printed-but-unacked messages come again: at most
    # its prefetch each time.
    assert len(everything) - len(bodies) <= 4 * 50


@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_broker_stopped_and_started_while_consuming(queue_type, broker, names, spawn):
    args = [*names.args, "--queue-type", queue_type]
    bodies = send_stream(broker, args)
    consumer = spawn("consumer.py", "amqp0-8.xml", *args, url=broker.url)
    consumer.read_stdout_lines(300, timeout=30)
    broker.stop()
    consumer.wait_for_stderr("reconnecting", timeout=30)
    broker.start()
    wait_until_all_printed([consumer], bodies)
    assert consumer.returncode is None, "the same process carries on"
    err = consumer.stderr_text
    assert "lost the connection to" in err, err
    assert err.count("Waiting for messages") >= 2, "it consumed again after reconnecting"
    finish(consumer, broker, names.queue)


@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_silent_broker_is_noticed_by_heartbeat(queue_type, broker, names, spawn):
    args = [*names.args, "--queue-type", queue_type]
    bodies = send_stream(broker, args)
    consumer = spawn("consumer.py", "amqp0-8.xml", "--heartbeat", "1", "--timeout", "2", *args,
                     url=broker.url)
    consumer.read_stdout_lines(300, timeout=30)
    pid = broker.os_pid
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        consumer.wait_for_stderr("no heartbeat from the broker for 3 s", timeout=20)
        noticed = time.monotonic() - stopped
        consumer.wait_for_stderr("cannot connect to", timeout=20)  # and keeps trying
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until_all_printed([consumer], bodies)
    assert consumer.returncode is None
    finish(consumer, broker, names.queue)
    print("silence noticed after %.1f s" % noticed)


def test_consumer_waits_for_a_broker_that_is_down(broker, names, spawn):
    broker.stop()
    consumer = spawn("consumer.py", "amqp0-8.xml", *names.args, url=broker.url)
    consumer.wait_for_stderr("connection refused (is RabbitMQ running there?); reconnecting",
                             timeout=30)
    broker.start()
    consumer.wait_for_stderr("Waiting for messages", timeout=60)
    sent = run_script("producer.py", "amqp0-8.xml", "arrived late", *names.args, url=broker.url)
    assert sent.returncode == 0, sent.stderr
    assert consumer.read_stdout_lines(1, timeout=30) == ["Received: arrived late from channel #1"]
    finish(consumer, broker, names.queue)


def test_no_reconnect_ends_on_a_lost_connection(broker, names, spawn):
    consumer = spawn("consumer.py", "amqp0-8.xml", "--no-reconnect", *names.args, url=broker.url)
    consumer.wait_for_stderr("Waiting for messages", timeout=30)
    broker.stop()
    assert consumer.wait(timeout=30) == 1
    lines = consumer.stderr_text.splitlines()
    assert lines[-1].startswith("consumer.py: error: lost the connection to amqp://guest@")
    assert "320 CONNECTION_FORCED" in lines[-1]
    assert "Traceback" not in consumer.stderr_text


def wait_for_depth(broker, queue, at_least, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if helpers.queue_depth(broker.url, queue) >= at_least:
                return
        except Exception:  # noqa: BLE001 (not declared yet)
            pass
        assert time.monotonic() < deadline, "the queue never held %d messages" % at_least
        time.sleep(0.05)


LONG_STREAM = 60000


@pytest.mark.parametrize("spec", ["amqp0-8.xml", "amqp0-9-1.xml"])
@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_producer_with_retry_survives_a_broker_restart(spec, queue_type, broker, names, spawn):
    bodies = [b"%d" % i for i in range(LONG_STREAM)]
    args = [*names.args, "--queue-type", queue_type]
    producer = spawn("producer.py", spec, "-", "--retry", *args, url=broker.url,
                     input=b"".join(b + b"\n" for b in bodies))
    wait_for_depth(broker, names.queue, 2000)
    broker.restart()
    assert producer.wait(timeout=90) == 0, producer.stderr_text
    err = producer.stderr_text
    assert "lost the connection to" in err and "; reconnecting" in err, err
    assert err.endswith("Sent %d message(s) to exchange %r with routing key %r.\n"
                        % (LONG_STREAM, names.exchange, names.routing_key)), err
    got = helpers.get_all(broker.url, names.queue)
    assert set(got) == set(bodies), "lost: %d" % len(set(bodies) - set(got))
    assert helpers.queue_depth(broker.url, names.queue) == 0
    print("%d duplicate(s) after the restart" % (len(got) - len(bodies)))


@pytest.mark.parametrize("spec", ["amqp0-8.xml", "amqp0-9-1.xml"])
def test_producer_without_retry_says_what_the_broker_took(spec, broker, names, spawn):
    bodies = [b"%d" % i for i in range(LONG_STREAM)]
    producer = spawn("producer.py", spec, "-", *names.args, url=broker.url,
                     input=b"".join(b + b"\n" for b in bodies))
    wait_for_depth(broker, names.queue, 2000)
    broker.stop()
    assert producer.wait(timeout=60) == 1, producer.stderr_text
    [line] = producer.stderr_text.splitlines()
    found = re.search(r"\(the broker had taken (\d+) message\(s\); (\d+) more were sent but not"
                      r" confirmed\)$", line)
    assert line.startswith("producer.py: error: lost the connection to amqp://guest@") and found, line
    taken = int(found.group(1))
    broker.start()
    got = set(helpers.get_all(broker.url, names.queue))
    assert set(bodies[:taken]) <= got, "a message counted as taken is missing"


def test_ctrl_c_while_the_producer_retries(broker, names, spawn):
    broker.stop()
    producer = spawn("producer.py", "amqp0-8.xml", "--retry", "x", *names.args, url=broker.url)
    producer.wait_for_stderr("connection refused (is RabbitMQ running there?); reconnecting")
    producer.send_signal(signal.SIGINT)
    assert producer.wait(timeout=30) == 1
    assert producer.stderr_text.splitlines()[-1] == (
        "producer.py: error: interrupted by SIGINT before the end")
