"""What a real RabbitMQ 4 does differently from RabbitMQ 3, seen by the scripts.

The tests marked rabbitmq4 elsewhere run against both versions (conftest.py's
broker fixture); these are about what only RabbitMQ 4 shows. They skip, saying
why and how to get it, where tools/rabbitmq4.py's chroot cannot run.
"""

import secrets
import signal

import pytest

import helpers
from amqp_support import BrokerURL
from helpers import fails, run_script

MIB = 1024 * 1024


@pytest.mark.not_ours
def test_node_is_a_real_rabbitmq_4(rabbitmq4):
    assert rabbitmq4.ctl("version").strip().startswith("4.")
    assert rabbitmq4.port not in (5672, 5671)


MESSAGE = "producer-to-consumer test message 1"
FELL_BACK = "refused AMQP 0-8 (RabbitMQ 4.0 and later); using amqp0-9-1.xml"
on_rabbitmq4 = pytest.mark.parametrize("broker", ["rabbitmq40", "rabbitmq43"], indirect=True)


def fell_back(url):
    """The status line of a script that falls back to amqp0-9-1.xml on the broker at url."""
    return "the broker at %s %s" % (BrokerURL(url), FELL_BACK)


@on_rabbitmq4
def test_walkthrough_with_amqp_0_8_falls_back_to_0_9_1(broker, vhost_url, spawn, python):
    """The README's two commands, as given, on RabbitMQ 4: each script says once
    that it uses amqp0-9-1.xml, and the message goes through."""
    consumer = spawn("consumer.py", "amqp0-8.xml", url=vhost_url, python=python)
    consumer.wait_for_stderr("Waiting for messages", timeout=30)
    sent = run_script("producer.py", "amqp0-8.xml", MESSAGE, url=vhost_url, python=python)
    assert sent.returncode == 0, sent.stderr
    assert sent.stderr.decode().splitlines() == [
        fell_back(vhost_url),
        "Sent 1 message(s) to exchange 'test_message_exchange' with routing key 'test_routing_key'."]
    assert consumer.read_stdout_lines(1, timeout=30) == ["Received: %s from channel #1" % MESSAGE]
    consumer.send_signal(signal.SIGINT)
    assert consumer.wait() == 0, consumer.stderr_text
    assert consumer.stderr_text.splitlines() == [
        fell_back(vhost_url), "Waiting for messages on queue 'test_message_queue'. To exit press CTRL+C",
        "Stopping after 1 message(s)."]
    assert helpers.queue_depth(vhost_url, "test_message_queue") == 0


@on_rabbitmq4
def test_copy_of_the_projects_amqp0_8_falls_back_too(broker, names, tmp_path):
    # The project's amqp0-8.xml is known by its content, wherever it is and
    # whatever its name.
    copy = tmp_path / "my-spec.xml"
    copy.write_bytes((helpers.ROOT / "amqp0-8.xml").read_bytes())
    sent = run_script("producer.py", copy, "x", *names.args, url=broker.url)
    assert sent.returncode == 0, sent.stderr
    assert sent.stderr.decode().splitlines()[0] == fell_back(broker.url)
    assert helpers.get_all(broker.url, names.queue) == [b"x"]


@pytest.mark.parametrize("script", ["producer.py", "consumer.py"])
def test_any_amqp_0_8_spec_file_falls_back(script, rabbitmq4, tmp_path):
    # The fallback is decided by the spec's protocol, not by its bytes or its
    # place: an edited copy of amqp0-8.xml elsewhere gets the project's
    # amqp0-9-1.xml (common.FALLBACK_SPEC) too, said once, and works.
    edited = tmp_path / "amqp0-8.xml"
    edited.write_bytes((helpers.ROOT / "amqp0-8.xml").read_bytes() + b"<!-- edited -->\n")
    queue = f"q.edited.{script}.{secrets.token_hex(3)}"
    if script == "producer.py":
        result = run_script(script, edited, "x", "--queue", queue, url=rabbitmq4.url)
        assert helpers.get_all(rabbitmq4.url, queue) == [b"x"]
    else:
        sent = run_script("producer.py", "amqp0-9-1.xml", "x", "--queue", queue, url=rabbitmq4.url)
        assert sent.returncode == 0, sent.stderr
        result = run_script(script, edited, "--queue", queue, "--count", "1", url=rabbitmq4.url)
        assert result.stdout == b"Received: x from channel #1\n"
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert err.count("refused AMQP 0-8 (RabbitMQ 4.0 and later); using amqp0-9-1.xml") == 1, err


@pytest.mark.rabbitmq4
def test_message_over_16_mib(broker, names):
    """RabbitMQ 4's default max_message_size is 16 MiB (3.10's: 128 MiB). A bigger
    message is refused in one line on 4 and nothing is lost; 3.10 takes it."""
    body = b"x" * (20 * MIB)
    sent = run_script("producer.py", "amqp0-9-1.xml", "-", *names.args, url=broker.url, input=body + b"\n")
    if broker.major == 4:
        fails(sent, 1, "406 PRECONDITION_FAILED", "larger than configured max size 16777216",
              "the broker had taken 0 message(s)")
        assert helpers.queue_depth(broker.url, names.queue) == 0
    else:
        assert sent.returncode == 0, sent.stderr
        assert helpers.get_all(broker.url, names.queue) == [body]


def test_scripts_use_no_feature_rabbitmq_4_deprecates(rabbitmq4):
    """RabbitMQ 4 deprecates transient non-exclusive queues (the tests' 4.3 node
    denies them; 4.3.6 still permits them by default) and global QoS: the
    scripts' queue is durable and not exclusive (test_rabbitmq43.py checks
    that their basic.qos leaves global off)."""
    queue = f"q.durable.{secrets.token_hex(3)}"
    args = ["--queue", queue, "--exchange", "", "--routing-key", queue]
    sent = run_script("producer.py", "amqp0-9-1.xml", "kept", *args, url=rabbitmq4.url)
    assert sent.returncode == 0, sent.stderr
    got = run_script("consumer.py", "amqp0-9-1.xml", "--count", "1", "--prefetch", "5", *args, url=rabbitmq4.url)
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"Received: kept from channel #1\n"
    listed = rabbitmq4.ctl("list_queues", "name", "durable", "exclusive")
    assert "%s\ttrue\tfalse" % queue in listed.splitlines(), listed


# --- failover between a RabbitMQ 3 node and a RabbitMQ 4 node ---------------------
# As in a rolling upgrade from 3.13 to 4.x: the scripts are given amqp0-8.xml and
# both nodes' URLs; the node they are on stops, and they carry on on the other,
# with the spec that node speaks (amqp0-8.xml on 3, amqp0-9-1.xml on 4).

ORDERS = ["3-then-4", "4-then-3"]
STREAM = 60000


def nodes(order, rabbitmq3, rabbitmq4):
    return (rabbitmq3, rabbitmq4) if order == "3-then-4" else (rabbitmq4, rabbitmq3)


def default_exchange(queue):
    return ["--exchange", "", "--queue", queue, "--routing-key", queue]


def assert_fell_back_once_on_rabbitmq4(stderr, first, second):
    node4 = first if first.major == 4 else second
    lines = stderr.splitlines()
    assert lines.count(fell_back(node4.url)) == 1, stderr
    assert not any(FELL_BACK in line for line in lines if line != fell_back(node4.url)), stderr


@pytest.mark.slow
@pytest.mark.timeout(300)  # the producer's own wait (120 s) must end first, after the node stops
@pytest.mark.parametrize("order", ORDERS)
def test_producer_fails_over_between_rabbitmq_3_and_4(order, rabbitmq3, rabbitmq4, spawn):
    first, second = nodes(order, rabbitmq3, rabbitmq4)
    queue = f"q.failover.producer.{order}.{secrets.token_hex(3)}"
    bodies = [b"%d" % i for i in range(STREAM)]
    try:
        producer = spawn("producer.py", "amqp0-8.xml", "-", "--retry", *default_exchange(queue),
                         "--url", first.url, "--url", second.url, url="",
                         input=b"".join(b + b"\n" for b in bodies))
        helpers.wait_for_depth(first.url, queue, 2000)
        first.stop()
        assert producer.wait(timeout=120) == 0, producer.stderr_text
        err = producer.stderr_text
        assert "lost the connection to %s" % BrokerURL(first.url) in err, err
        assert_fell_back_once_on_rabbitmq4(err, first, second)
        assert err.endswith("Sent %d message(s) to exchange '' with routing key %r.\n" % (STREAM, queue)), err
        first.start()
        on_second = helpers.get_all(second.url, queue)
        assert on_second, "the producer never sent to the second node"
        got = helpers.get_all(first.url, queue) + on_second
        assert set(got) == set(bodies), "lost: %d" % len(set(bodies) - set(got))
    finally:
        first.ensure_running()
        for node in (first, second):
            helpers.delete(node.url, queue=queue)


@pytest.mark.slow
@pytest.mark.parametrize("order", ORDERS)
def test_consumer_fails_over_between_rabbitmq_3_and_4(order, rabbitmq3, rabbitmq4, spawn):
    first, second = nodes(order, rabbitmq3, rabbitmq4)
    queue = f"q.failover.consumer.{order}.{secrets.token_hex(3)}"
    args = default_exchange(queue)
    before = [b"before %d" % i for i in range(100)]
    after = [b"after %d" % i for i in range(100)]
    try:
        helpers.declare(second.url, "", queue, queue)  # (declared on the first by the producer)
        sent = run_script("producer.py", "amqp0-9-1.xml", "-", *args, url=first.url,
                          input=b"".join(b + b"\n" for b in before))
        assert sent.returncode == 0, sent.stderr
        consumer = spawn("consumer.py", "amqp0-8.xml", *args, "--url", first.url, "--url", second.url,
                         url="")
        printed = consumer.read_stdout_lines(len(before), timeout=60)
        first.stop()
        consumer.wait_for_stderr("connected to %s" % BrokerURL(second.url), timeout=60)
        sent = run_script("producer.py", "amqp0-9-1.xml", "-", *args, url=second.url,
                          input=b"".join(b + b"\n" for b in after))
        assert sent.returncode == 0, sent.stderr
        printed += consumer.read_stdout_lines(len(after), timeout=60)
        consumer.send_signal(signal.SIGINT)
        assert consumer.wait() == 0, consumer.stderr_text
        assert_fell_back_once_on_rabbitmq4(consumer.stderr_text, first, second)
        assert printed == ["Received: %s from channel #1" % b.decode() for b in before + after]
        assert helpers.queue_depth(second.url, queue) == 0
    finally:
        first.ensure_running()
        for node in (first, second):
            helpers.delete(node.url, queue=queue)
