"""What RabbitMQ 4.3 changed for AMQP 0-9-1 clients, seen by the scripts.

RabbitMQ 4.3 (4.3.6, Debian sid's package, in tools/rabbitmq4.py's chroot)
denies global QoS by default (RabbitMQ 4.0 deprecated it): basic.qos with global
set is taken as a per-consumer prefetch, and the node logs an error naming the
deprecated feature. Transient non-exclusive queues, deprecated too, are still
permitted by default in 4.3.6; the tests' 4.3 node denies them (conftest.py:
RABBITMQ_CONFIG), so declaring one ends the connection. `x-queue-mode` is
refused for quorum queues (and only kept, without effect, for classic ones).
And a quorum queue's consumer that holds a message unacknowledged longer than
consumer_timeout is cancelled: with basic.cancel when the client said it
understands one (consumer_cancel_notify, as the scripts do), else by closing
the channel.

The tests marked rabbitmq4 elsewhere run on the 4.3 node too: each of them shows
the scripts declare no transient non-exclusive queue. These check that the node
denies what it should, that the scripts use none of it (run as processes, with
both spec files, both queue types and both Pythons), and what a consumer timeout
does to consumer.py. They skip, saying why and how to get it, where the chroot
cannot run (under CI they fail).
"""

import secrets
import signal
import time

import pika
import pika.exceptions
import pytest

import helpers
from conftest import CONSUMER_TIMEOUT_MS
from helpers import run_script

on_rabbitmq43 = pytest.mark.parametrize("broker", ["rabbitmq43"], indirect=True)
DEPRECATED = "Deprecated features: "  # how the node's log starts the line of a use it denied


def version(text):
    """(4, 3, 6) for "4.3.6"."""
    return tuple(int(part) for part in text.strip().split("-")[0].split(".")[:3])


def refused(url, what):
    """Do what(channel) on a connection of its own; the broker's refusal (its
    channel.close or connection.close, as a pika exception), or None if it did it."""
    conn = helpers.connect(url)
    try:
        what(conn.channel())
    except (pika.exceptions.ChannelClosedByBroker, pika.exceptions.ConnectionClosedByBroker) as exc:
        return exc
    finally:
        if conn.is_open:
            conn.close()
    return None


class NodeLog:
    """The node's log from now on: text() is what it wrote since."""

    def __init__(self, node):
        self.folder = node.path / "log"
        self.sizes = {path: path.stat().st_size for path in self._files()}

    def _files(self):
        return [path for path in self.folder.rglob("*.log") if path.is_file()]

    def text(self, wait=1.0):
        time.sleep(wait)  # the node writes its log a moment after it acts
        new = []
        for path in self._files():
            with open(path, "rb") as log:
                log.seek(self.sizes.get(path, 0))
                new.append(log.read().decode("utf-8", "replace"))
        return "".join(new)


def test_node_is_rabbitmq_4_3_denying_what_it_deprecates(rabbitmq43):
    """The tests' 4.3 node is one and denies what 4.3 deprecates, in the ways the
    test below and those marked rabbitmq4 look for: what they show about the
    scripts holds because of this."""
    assert version(rabbitmq43.ctl("version")) >= (4, 3)
    assert rabbitmq43.port not in (5672, 5671)
    queue = f"q.denied.{secrets.token_hex(3)}"

    transient = refused(rabbitmq43.url, lambda ch: ch.queue_declare(queue, durable=False))
    assert isinstance(transient, pika.exceptions.ConnectionClosedByBroker), transient
    assert "transient_nonexcl_queues" in transient.reply_text, transient

    log = NodeLog(rabbitmq43)
    assert refused(rabbitmq43.url, lambda ch: ch.basic_qos(prefetch_count=10, global_qos=True)) is None
    assert DEPRECATED + "`global_qos`" in log.text()

    quorum = {"x-queue-type": "quorum", "x-queue-mode": "lazy"}
    lazy = refused(rabbitmq43.url, lambda ch: ch.queue_declare(queue, durable=True, arguments=quorum))
    assert lazy is not None and lazy.reply_code == 406 and "x-queue-mode" in lazy.reply_text, lazy
    assert not helpers.queue_exists(rabbitmq43.url, queue)

    # What the scripts do instead passes, and leaves no such line.
    log = NodeLog(rabbitmq43)
    assert refused(rabbitmq43.url, lambda ch: (ch.queue_declare(queue, durable=True),
                                               ch.basic_qos(prefetch_count=10))) is None
    assert DEPRECATED not in log.text()
    helpers.delete(rabbitmq43.url, queue=queue)


@on_rabbitmq43
@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
@pytest.mark.parametrize("spec", ["amqp0-8.xml", "amqp0-9-1.xml"])
def test_scripts_need_nothing_rabbitmq_4_3_denies(spec, queue_type, broker, names, python):
    """Both scripts, run as a person would against RabbitMQ 4.3, with each spec
    file (amqp0-8.xml falls back) and queue type: the producer declares and
    sends, the consumer declares, sets its prefetch (basic.qos) and reads. The
    node logs no use of a deprecated feature (global QoS would show there), the
    queue is durable, neither exclusive nor auto-delete, without x-queue-mode."""
    args = [*names.args, "--queue-type", queue_type]
    log = NodeLog(broker)
    sent = run_script("producer.py", spec, "one", "two", *args, url=broker.url, python=python)
    assert sent.returncode == 0, sent.stderr
    got = run_script("consumer.py", spec, "--count", "2", "--prefetch", "1", *args, url=broker.url,
                     python=python)
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"Received: one from channel #1\nReceived: two from channel #1\n"
    assert DEPRECATED not in log.text(), log.text(0)
    listed = broker.ctl("list_queues", "name", "durable", "exclusive", "auto_delete", "type", "arguments")
    [row] = [line.split("\t") for line in listed.splitlines() if line.startswith(names.queue + "\t")]
    assert (row[1], row[3], row[4]) == ("true", "false", queue_type) and row[2] != "true", row
    assert "x-queue-mode" not in row[5], row


def cancelled(url, queue, timeout):
    """Consume from queue with pika (which, like the scripts, announces
    consumer_cancel_notify) without acknowledging; return the seconds until the
    broker cancels the consumer with basic.cancel, or None if it does not."""
    with helpers.connect(url) as conn:
        ch = conn.channel()
        when = []
        ch.add_on_cancel_callback(lambda frame: when.append(time.monotonic()))
        ch.basic_consume(queue, lambda *delivery: None, auto_ack=False)
        started = time.monotonic()
        while not when and time.monotonic() - started < timeout:
            conn.process_data_events(time_limit=0.2)
        assert ch.is_open, "the broker closed the channel instead of cancelling the consumer"
        return when[0] - started if when else None


def test_node_cancels_a_quorum_consumer_past_consumer_timeout(rabbitmq43_consumer_timeout):
    """What the consumer.py test below relies on: the node with consumer_timeout
    set low cancels a consumer holding a message with basic.cancel, and the
    channel stays open."""
    url = rabbitmq43_consumer_timeout.url
    queue = f"q.held.{secrets.token_hex(3)}"
    try:
        helpers.declare(url, "", queue, queue, arguments={"x-queue-type": "quorum"})
        helpers.publish(url, "", queue, b"held")
        seconds = cancelled(url, queue, timeout=60)
        assert seconds is not None, "the consumer was not cancelled within 60 s"
        assert seconds >= CONSUMER_TIMEOUT_MS / 1000 - 0.5, seconds
        assert helpers.get_all(url, queue) == [b"held"]  # the broker took it back
    finally:
        helpers.delete(url, queue=queue)


def timed_out(node, queue):
    """Whether the node has timed out a consumer on queue (rabbitmqctl
    list_consumers: RabbitMQ 4.3 shows such a quorum queue consumer as
    {timeout, up} once it sent the basic.cancel)."""
    listed = node.ctl("list_consumers", "queue_name", "activity_status")
    return any(name == queue and "timeout" in status
               for name, _, status in (line.partition("\t") for line in listed.splitlines()))


@pytest.mark.slow
def test_consumer_timeout_cancels_consumer_py_which_says_so_and_consumes_again(
        rabbitmq43_consumer_timeout, spawn):
    """consumer.py on a quorum queue, stopped (SIGSTOP) while it holds messages
    past consumer_timeout: the broker cancels its consumer with basic.cancel.
    Resumed, it says so in one line that names the consumer timeout as a likely
    cause, consumes again (without being started again), and nothing is lost: every message is printed (those
    it held may be printed twice: the broker took them back) and the queue ends
    empty once it stops at Ctrl-C, with exit status 0.

    What the node does here is checked above; a failure to set the scene (the
    node does not time the consumer out) says so (pytest.fail)."""
    node = rabbitmq43_consumer_timeout
    queue = f"q.held.consumer.{secrets.token_hex(3)}"
    args = ["--exchange", "", "--queue", queue, "--queue-type", "quorum"]
    held = [b"held %d" % i for i in range(3)]
    later = [b"later %d" % i for i in range(3)]
    consumer = spawn("consumer.py", "amqp0-9-1.xml", *args, url=node.url)
    try:
        consumer.wait_for_stderr("Waiting for messages", timeout=30)
        consumer.send_signal(signal.SIGSTOP)
        sent = run_script("producer.py", "amqp0-9-1.xml", "-", *args, url=node.url,
                          input=b"".join(b + b"\n" for b in held))
        if sent.returncode:
            pytest.fail(f"the producer failed: {sent.stderr!r}")
        deadline = time.monotonic() + 60
        while not timed_out(node, queue):
            if time.monotonic() > deadline:
                pytest.fail("the broker did not time out the stopped consumer within 60 s")
            time.sleep(0.5)
    finally:
        consumer.send_signal(signal.SIGCONT)

    printed = consumer.read_stdout_lines(len(held), timeout=30)
    deadline = time.monotonic() + 30  # the basic.cancel comes within seconds
    while consumer.returncode is None and "cancel" not in consumer.stderr_text.lower():
        assert time.monotonic() < deadline, f"no word of the basic.cancel after 30 s: {consumer.stderr_text}"
        time.sleep(0.2)
    time.sleep(2)  # a consumer that ends at the basic.cancel has ended by now
    assert consumer.returncode is None, f"consumer.py ended at the basic.cancel: {consumer.stderr_text}"
    # One line: the broker cancelled the consumer, maybe for its consumer
    # timeout (basic.cancel gives no reason); the connection was not lost.
    said = [line for line in consumer.stderr_text.splitlines() if "cancel" in line.lower()]
    assert len(said) == 1 and "timeout" in said[0].lower(), consumer.stderr_text
    assert "lost the connection" not in consumer.stderr_text, consumer.stderr_text
    sent = run_script("producer.py", "amqp0-9-1.xml", "-", *args, url=node.url,
                      input=b"".join(b + b"\n" for b in later))
    assert sent.returncode == 0, sent.stderr
    expected = {"Received: %s from channel #1" % b.decode() for b in held + later}
    deadline = time.monotonic() + 60
    while not expected <= set(printed):
        printed += consumer.read_stdout_lines(1, timeout=max(0.1, deadline - time.monotonic()))
    assert set(printed) == expected, printed
    consumer.send_signal(signal.SIGINT)
    assert consumer.wait() == 0, consumer.stderr_text
    assert helpers.queue_depth(node.url, queue) == 0
