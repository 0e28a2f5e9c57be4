"""Large messages: the producer bounds the bytes in flight (not only the
messages) and still delivers every one, and a message over the broker's
max_message_size ends the run with one line naming the size, nothing lost.

RabbitMQ does not tell a client its max_message_size (it is in neither
connection.start's server properties nor its capabilities), so the producer
cannot refuse such a message before sending it: the broker closes the
channel (406 PRECONDITION_FAILED) and the producer reports that."""

import os
import re

import pytest

import helpers
from helpers import fails, run_script
from rabbitmq_nodes import start_node

SPECS = ["amqp0-8.xml", "amqp0-9-1.xml"]
MIB = 1 << 20


@pytest.fixture(scope="module")
def small_limit_broker(tmp_path_factory):
    """A throwaway node that refuses messages over 1 MiB."""
    if os.environ.get("AMQP_URL"):
        pytest.skip("needs a throwaway node with max_message_size set, but AMQP_URL points the"
                    " tests at an existing broker")
    node, executor = start_node(tmp_path_factory, "maxsize", config=f"max_message_size = {MIB}\n")
    try:
        yield node
    finally:
        executor.shut_down()


def lines_of(size, n):
    """n distinct bodies of size bytes, and stdin holding them one per line."""
    bodies = [b"%06d" % i + b"m" * (size - 6) for i in range(n)]
    return bodies, b"".join(body + b"\n" for body in bodies)


@pytest.mark.parametrize("spec", SPECS)
def test_many_large_messages_all_arrive(spec, broker, names):
    # 12 MiB in 1 MiB messages: several times the producer's byte window,
    # far below its window of 1000 messages.
    bodies, stdin = lines_of(MIB, 12)
    sent = run_script("producer.py", spec, "-", *names.args, url=broker.url, input=stdin)
    assert sent.returncode == 0, sent.stderr
    assert helpers.get_all(broker.url, names.queue) == bodies


@pytest.mark.parametrize("spec", SPECS)
def test_message_over_max_message_size_is_reported(spec, small_limit_broker, names):
    url = small_limit_broker.url
    stdin = b"small\n" + b"b" * (2 * MIB) + b"\n"
    sent = run_script("producer.py", spec, "-", *names.args, url=url, input=stdin)
    line = fails(sent, 1, "406 PRECONDITION_FAILED", "message size 2097152 is larger than configured"
                 " max size 1048576", "in reply to basic.publish")
    # The line says what the broker had taken. On 0-9-1 the small message was
    # taken before the big one was refused, but its confirm may not have come
    # before the channel closed. On 0-8 it is in the queue if its transaction
    # was committed before the big line had come in from stdin (the producer
    # commits when the input pauses), else the closed channel rolled it back
    # with the big one.
    # Either way its commit-ok or confirm may come after the failure.
    queued = helpers.get_all(url, names.queue)
    assert queued == [b"small"] if spec == "amqp0-9-1.xml" else queued in ([], [b"small"])
    said = re.search(r"had taken (\d+) message\(s\); (\d+) more were sent but not confirmed", line)
    assert said, line
    taken, unconfirmed = int(said[1]), int(said[2])
    assert taken + unconfirmed == 2, line
    assert taken <= len(queued), line  # every message counted as taken is in the queue
    helpers.delete(url, names.exchange, names.queue)
