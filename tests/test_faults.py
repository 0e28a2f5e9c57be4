"""Faults against a real node: consumers killed, the broker stopped, silenced
or restarted. Every message is delivered at least once (duplicates are
counted and allowed) and the queue ends empty."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

import helpers
from helpers import run_script

QUEUE_TYPES = ["classic", "quorum"]
STREAM = 2000
PREFETCH = 100
HEARTBEAT = 2  # seconds: --heartbeat in the silent broker test
HEARTBEAT_SLACK = 4  # seconds the machine may add to the three intervals

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


def losses(script):
    """How many times the script said it lost its connection."""
    return script.stderr_text.count("lost the connection to")


def assert_duplicates_within_prefetch(consumers, bodies, prefetch):
    """The README's bound: a consumer that loses its connection (or dies)
    gets again at most --prefetch messages, the ones it had printed but whose
    ack the broker never saw."""
    everything = [b for c in consumers for b in printed(c)]
    assert set(everything) == set(bodies)
    # A killed consumer says nothing, but its death is a loss too.
    lost = sum(losses(c) + (c.returncode == -signal.SIGKILL) for c in consumers)
    assert lost >= 1, "no connection was lost: nothing was tested"
    duplicates = len(everything) - len(bodies)
    assert duplicates <= prefetch * lost, (
        "%d duplicate(s) after %d loss(es), more than --prefetch %d each" % (duplicates, lost, prefetch))


def printed_while_down(consumer, bodies):
    """With the broker down (stopped, or silent and given up on), nothing more
    can come: what the consumer printed so far must not be all of the stream,
    else the loss was not in the middle of it."""
    so_far = set(printed(consumer))
    assert so_far < set(bodies), "every message was printed before the broker went: make the stream longer"
    return so_far


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
        consumer = spawn("consumer.py", "amqp0-8.xml", "--prefetch", str(PREFETCH // 2), *args,
                         url=broker.url)
        consumer.read_stdout_lines(200, timeout=30)
        consumer.send_signal(signal.SIGKILL)
        consumer.wait(timeout=10)
        consumers.append(consumer)
    last = spawn("consumer.py", "amqp0-8.xml", *args, url=broker.url)
    consumers.append(last)
    wait_until_all_printed(consumers, bodies)
    finish(last, broker, names.queue)
    # A killed consumer's printed-but-unacked messages come again: at most
    # its prefetch each time.
    assert_duplicates_within_prefetch(consumers, bodies, PREFETCH // 2)


@pytest.mark.parametrize("spec", ["amqp0-8.xml", "amqp0-9-1.xml"])
def test_consumer_killed_with_its_output_stuck_loses_nothing(spec, broker, names):
    """The consumer acknowledges the messages that arrived together at once
    (multiple), after flushing their lines. Its stdout a pipe that nobody
    reads (and block-buffered, as without PYTHONUNBUFFERED): it blocks once
    the pipe is full, and killed then, every message is in the pipe or still
    in the queue; none was acknowledged with its line in a buffer."""
    bodies = [b"message %05d %s" % (i, b"x" * 200) for i in range(STREAM)]  # ~430 kB, past a pipe's 64 kB
    sent = run_script("producer.py", spec, "-", *names.args, url=broker.url,
                      input=b"".join(b + b"\n" for b in bodies))
    assert sent.returncode == 0, sent.stderr
    read_end, write_end = os.pipe()
    consumer = subprocess.Popen(
        [sys.executable, "consumer.py", spec, *names.args], cwd=helpers.ROOT, stdin=subprocess.DEVNULL,
        stdout=write_end, stderr=subprocess.DEVNULL, env=helpers.script_env(broker.url, {"PYTHONUNBUFFERED": None}))
    os.close(write_end)
    try:
        # Stuck: the queue stops going down (the broker waits for acks).
        depths = [None, None]
        deadline = time.monotonic() + 60
        while depths[-1] is None or depths[-1] != depths[-2] or depths[-1] == len(bodies):
            assert time.monotonic() < deadline, "the consumer never got stuck: depths %s" % depths[-5:]
            time.sleep(0.5)
            depths.append(helpers.queue_depth(broker.url, names.queue))
    finally:
        consumer.kill()
        consumer.wait(timeout=10)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read()
    out = out[:out.rfind(b"\n") + 1]  # a line the kill cut short was not printed (nor acknowledged)
    printed = [line.removeprefix(b"Received: ").removesuffix(b" from channel #1") for line in out.splitlines()]
    assert 0 < len(printed) < len(bodies), "not mid-stream: %d printed" % len(printed)
    left = helpers.get_all(broker.url, names.queue)
    assert set(printed) | set(left) == set(bodies), "lost: %d" % len(set(bodies) - set(printed) - set(left))


@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_broker_stopped_and_started_while_consuming(queue_type, broker, names, spawn):
    args = [*names.args, "--queue-type", queue_type]
    bodies = send_stream(broker, args)
    consumer = spawn("consumer.py", "amqp0-8.xml", "--prefetch", PREFETCH, *args, url=broker.url)
    consumer.read_stdout_lines(300, timeout=30)
    broker.stop()
    consumer.wait_for_stderr("reconnecting", timeout=30)
    printed_while_down(consumer, bodies)
    broker.start()
    wait_until_all_printed([consumer], bodies)
    assert consumer.returncode is None, "the same process carries on"
    err = consumer.stderr_text
    assert "lost the connection to" in err, err
    assert err.count("Waiting for messages") >= 2, "it consumed again after reconnecting"
    finish(consumer, broker, names.queue)
    assert_duplicates_within_prefetch([consumer], bodies, PREFETCH)


@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_silent_broker_is_noticed_by_heartbeat(queue_type, broker, names, spawn):
    args = [*names.args, "--queue-type", queue_type]
    bodies = send_stream(broker, args)
    consumer = spawn("consumer.py", "amqp0-8.xml", "--heartbeat", HEARTBEAT, "--timeout", "2",
                     "--prefetch", PREFETCH, *args, url=broker.url)
    consumer.read_stdout_lines(300, timeout=30)
    pid = broker.os_pid
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        consumer.wait_for_stderr("no heartbeat from the broker for %d s" % (3 * HEARTBEAT), timeout=60)
        noticed = time.monotonic() - stopped
        consumer.wait_for_stderr("cannot connect to", timeout=20)  # and keeps trying
        printed_while_down(consumer, bodies)
    finally:
        os.kill(pid, signal.SIGCONT)
    # The README's promise: a silent broker is noticed after at most three
    # heartbeat intervals of silence. The last frame came at or before the
    # SIGSTOP, so the consumer must say so within three intervals of it, plus
    # slack for this loaded 2-core machine (a late timer, the wait above
    # polling). A check that counted its own heartbeats, or waited for more
    # intervals than it says, fails this; a slow machine does not.
    assert noticed <= 3 * HEARTBEAT + HEARTBEAT_SLACK, (
        "the silence was noticed after %.1f s, not within 3 x %d s (+ %d s slack)"
        % (noticed, HEARTBEAT, HEARTBEAT_SLACK))
    wait_until_all_printed([consumer], bodies)
    assert consumer.returncode is None
    finish(consumer, broker, names.queue)
    assert_duplicates_within_prefetch([consumer], bodies, PREFETCH)
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



@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_queue_deleted_under_the_consumer(queue_type, broker, names, spawn):
    """The queue is deleted while consumer.py reads it: the broker cancels the
    consumer with basic.cancel (the scripts ask for consumer_cancel_notify).
    consumer.py says so in one line, not as a lost connection, declares the
    queue again and goes on consuming, without being started again."""
    args = [*names.args, "--queue-type", queue_type]
    consumer = spawn("consumer.py", "amqp0-9-1.xml", *args, url=broker.url)
    consumer.wait_for_stderr("Waiting for messages", timeout=30)
    helpers.delete(broker.url, queue=names.queue)
    consumer.wait_for_stderr("connected to", timeout=30)
    said = [line for line in consumer.stderr_text.splitlines() if "cancel" in line]
    assert len(said) == 1 and "basic.cancel" in said[0], consumer.stderr_text
    assert "lost the connection" not in consumer.stderr_text
    deadline = time.monotonic() + 30
    while consumer.stderr_text.count("Waiting for messages") < 2:
        assert time.monotonic() < deadline, "not consuming again: " + consumer.stderr_text
        time.sleep(0.2)
    sent = run_script("producer.py", "amqp0-9-1.xml", "after the delete", *args, url=broker.url)
    assert sent.returncode == 0, sent.stderr
    assert consumer.read_stdout_lines(1, timeout=30) == ["Received: after the delete from channel #1"]
    finish(consumer, broker, names.queue)


LONG_STREAM = 60000
# With amqp0-8.xml, a loss during a commit adds that some of the transaction may have been stored.
PROGRESS = re.compile(r"\(the broker had taken (\d+) message\(s\); (\d+) more were sent but not"
                      r" confirmed(?:; some of the \d+ in transactions being committed may have been stored)?\)")


def progress_at_losses(producer):
    """(taken, sent but not confirmed) for each loss the producer reported."""
    return [(int(taken), int(unconfirmed)) for taken, unconfirmed in PROGRESS.findall(producer.stderr_text)]


def assert_mid_stream(taken, unconfirmed, total):
    """The connection went while the producer was still sending: the broker
    had taken some messages, and the producer had not yet sent them all
    (else the test would not have tested a loss in the middle of a stream)."""
    assert taken > 0, "the broker had taken nothing: the loss came before the stream"
    assert taken + unconfirmed < total, (
        "all %d messages were sent before the loss: make the stream longer" % total)


@pytest.mark.parametrize("spec", ["amqp0-8.xml", "amqp0-9-1.xml"])
@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_producer_with_retry_survives_a_broker_restart(spec, queue_type, broker, names, spawn):
    bodies = [b"%d" % i for i in range(LONG_STREAM)]
    args = [*names.args, "--queue-type", queue_type]
    producer = spawn("producer.py", spec, "-", "--retry", *args, url=broker.url,
                     input=b"".join(b + b"\n" for b in bodies))
    helpers.wait_for_depth(broker.url, names.queue, 2000)
    broker.restart()
    assert producer.wait(timeout=90) == 0, producer.stderr_text
    err = producer.stderr_text
    assert "lost the connection to" in err and "; reconnecting" in err, err
    assert err.endswith("Sent %d message(s) to exchange %r with routing key %r.\n"
                        % (LONG_STREAM, names.exchange, names.routing_key)), err
    losses = progress_at_losses(producer)
    assert losses, err
    assert_mid_stream(*losses[0], LONG_STREAM)
    got = helpers.get_all(broker.url, names.queue)
    assert set(got) == set(bodies), "lost: %d" % len(set(bodies) - set(got))
    assert helpers.queue_depth(broker.url, names.queue) == 0
    # Only what was sent but not confirmed when a connection went is sent
    # again, so only that can arrive twice.
    resent = sum(unconfirmed for _, unconfirmed in losses)
    assert len(got) - len(bodies) <= resent, (
        "%d duplicate(s), but only %d message(s) were sent again" % (len(got) - len(bodies), resent))
    print("%d duplicate(s) after the restart; progress at each loss: %s" % (len(got) - len(bodies), losses))


@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", ["amqp0-8.xml", "amqp0-9-1.xml"])
def test_producer_without_retry_says_what_the_broker_took(spec, broker, names, spawn):
    bodies = [b"%d" % i for i in range(LONG_STREAM)]
    producer = spawn("producer.py", spec, "-", *names.args, url=broker.url,
                     input=b"".join(b + b"\n" for b in bodies))
    helpers.wait_for_depth(broker.url, names.queue, 2000)
    broker.stop()
    assert producer.wait(timeout=60) == 1, producer.stderr_text
    [line] = helpers.without_fallback_note(producer.stderr_text).splitlines()
    assert line.startswith("producer.py: error: lost the connection to amqp://guest@"), line
    [(taken, unconfirmed)] = progress_at_losses(producer)
    assert PROGRESS.search(line).end() == len(line), line
    assert_mid_stream(taken, unconfirmed, LONG_STREAM)
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
        "producer.py: error: interrupted by SIGINT before the end"
        " (the broker had taken 0 message(s); 0 more were sent but not confirmed)")
