"""What a real RabbitMQ 4 does differently from RabbitMQ 3, seen by the scripts.

The tests marked rabbitmq4 elsewhere run against both versions (conftest.py's
broker fixture); these are about what only RabbitMQ 4 shows. They skip, saying
why and how to get it, where tools/rabbitmq4.py's chroot cannot run.
"""

import secrets

import pika
import pika.exceptions
import pytest

import helpers
from helpers import fails, run_script

MIB = 1024 * 1024


def test_node_is_a_real_rabbitmq_4(rabbitmq4):
    assert rabbitmq4.ctl("version").strip().startswith("4.")
    assert rabbitmq4.port not in (5672, 5671)


# When the scripts fall back to amqp0-9-1.xml on this refusal (design.md, fact 3),
# this test changes to expect the fallback's note, and conftest.py's
# AMQP0_8_RUNS_ON_RABBITMQ4 becomes True.
@pytest.mark.parametrize("script", ["producer.py", "consumer.py"])
def test_amqp_0_8_is_refused_in_one_line(script, rabbitmq4):
    queue = f"q.refused.{script}"
    message = ["x"] if script == "producer.py" else []
    result = run_script(script, "amqp0-8.xml", *message, "--queue", queue, url=rabbitmq4.url)
    fails(result, 1, "refused AMQP 0-8", "AMQP 1.0", "use amqp0-9-1.xml")
    assert not helpers.queue_exists(rabbitmq4.url, queue)  # nothing declared, nothing sent


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
    """conftest.py's RABBITMQ4_CONFIG refuses the deprecated features (here: a
    transient queue that is not exclusive), and the scripts' queue passes."""
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq4.url))
    with pytest.raises(pika.exceptions.AMQPError, match="transient_nonexcl_queues"):
        connection.channel().queue_declare(f"q.transient.{secrets.token_hex(3)}", durable=False)
    if connection.is_open:
        connection.close()
    queue = f"q.durable.{secrets.token_hex(3)}"
    args = ["--queue", queue, "--exchange", "", "--routing-key", queue]
    sent = run_script("producer.py", "amqp0-9-1.xml", "kept", *args, url=rabbitmq4.url)
    assert sent.returncode == 0, sent.stderr
    got = run_script("consumer.py", "amqp0-9-1.xml", "--count", "1", "--prefetch", "5", *args, url=rabbitmq4.url)
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"Received: kept from channel #1\n"
