"""RabbitMQ streams (--queue-type stream): the producer appends, consumer.py reads
from --offset (first, last, next, an offset, a time, an interval), reading
consumes nothing, and after a lost connection it reads on from the message
after the last one it printed: none twice, none skipped. On RabbitMQ 3.10, 4.0
and 4.3; the option parsing needs no broker."""

import datetime
import signal
import struct
import time

import pytest

import helpers
from amqp_support import LongLong, Timestamp
from amqp_support._codec import encode_field_table
from command_line import options
from helpers import fails, run_script

SPEC = "amqp0-9-1.xml"
STREAM = ["--queue-type", "stream"]


def parse(*argv):
    return options.parse_args(options.consumer_parser("Tests."), ["amqp0-9-1.xml", "--url", "amqp://h", *argv])


# ---------------------------------------------------------------- --offset, no broker

def local(*fields):
    """Seconds since 1970 of a naive date-time, taken as local time."""
    return int(datetime.datetime(*fields).timestamp())


@pytest.mark.parametrize("text, expected, letter", [
    ("first", "first", b"S"), ("last", "last", b"S"), ("next", "next", b"S"),
    ("0", 0, b"l"), ("12345", 12345, b"l"), (str(2**63 - 1), 2**63 - 1, b"l"),
    ("1h", "1h", b"S"), ("30m", "30m", b"S"), ("2D", "2D", b"S"), ("1Y", "1Y", b"S"), ("6M", "6M", b"S"),
    ("45s", "45s", b"S"),
    ("2024-05-01T12:00:00+02:00", 1714557600, b"T"), ("2024-05-01T10:00:00Z", 1714557600, b"T"),
    ("2024-05-01T10:00:00.900Z", 1714557600, b"T"),  # whole seconds: the fraction is dropped
    ("2024-05-01T12:00:00", local(2024, 5, 1, 12), b"T"), ("2024-05-01 12:00", local(2024, 5, 1, 12), b"T"),
    ("2024-05-01", local(2024, 5, 1), b"T"),
])
def test_offset_value_and_its_field_type(text, expected, letter):
    offset = parse("--queue-type", "stream", "--offset", text).offset
    assert offset == expected and type(offset) is {b"S": str, b"l": LongLong, b"T": Timestamp}[letter]
    out = bytearray()
    encode_field_table({"x-stream-offset": offset}, out)
    name = b"\x0fx-stream-offset"
    assert out[4:4 + len(name) + 1] == name + letter
    if letter != b"S":
        assert struct.unpack("!q" if letter == b"l" else "!Q", out[4 + len(name) + 1:]) == (expected,)


def test_offset_defaults_to_next_on_a_stream_only():
    assert parse("--queue-type", "stream").offset == "next"
    assert parse().offset is None


def test_small_offsets_and_timestamps_keep_their_letter():
    """RabbitMQ reads a timestamp ('T') as a time, any integer as an offset:
    a marked value keeps its letter whatever its size."""
    for value, letter in [(LongLong(5), b"l"), (Timestamp(5), b"T"), (5, b"I")]:
        out = bytearray()
        encode_field_table({"v": value}, out)
        assert out[6:7] == letter


BAD_OFFSETS = ["", "-1", "1.5", "1x", "0h", "1h30m", "h", "yesterday", "2024-13-01T00:00:00",
               "1969-12-31T00:00:00Z", str(2**63), "FIRST", "١٢"]


@pytest.mark.parametrize("text", BAD_OFFSETS)
def test_bad_offset_exits_2_before_connecting(text):
    # A URL where nothing listens: a usage error must come before any connection.
    result = run_script("consumer.py", SPEC, *STREAM, "--offset", text, url="amqp://guest:guest@127.0.0.1:9/")
    line = fails(result, 2, "consumer.py: error: argument --offset: must be first, last, next")
    assert "cannot connect" not in line


@pytest.mark.parametrize("argv, words", [
    (["--offset", "first"], "--offset is for --queue-type stream"),
    (["--offset", "first", "--queue-type", "quorum"], "--offset is for --queue-type stream"),
    ([*STREAM, "--prefetch", "0"], "a stream needs a prefetch"),
])
def test_stream_options_that_do_not_go_together_exit_2(argv, words):
    result = run_script("consumer.py", SPEC, *argv, url="amqp://guest:guest@127.0.0.1:9/")
    fails(result, 2, words)


# ---------------------------------------------------------------- on real brokers

def printed(stdout):
    return [line.removeprefix(b"Received: ").removesuffix(b" from channel #1") for line in stdout.splitlines()]


def append(broker, names, bodies, spec=SPEC):
    sent = run_script("producer.py", spec, "-", *names.args, *STREAM, url=broker.url,
                      input=b"".join(b + b"\n" for b in bodies))
    assert sent.returncode == 0, sent.stderr


def read(broker, names, count, *argv, spec=SPEC):
    got = run_script("consumer.py", spec, *names.args, *STREAM, "--count", count, *argv, url=broker.url)
    assert got.returncode == 0, got.stderr
    return printed(got.stdout)


@pytest.mark.rabbitmq4
def test_replay_from_first_twice_gives_the_same_messages(broker, names):
    bodies = [b"replayed %d" % i for i in range(500)]
    append(broker, names, bodies)
    assert read(broker, names, 500, "--offset", "first") == bodies
    # Reading consumed nothing: a second reader sees them all again.
    assert read(broker, names, 500, "--offset", "first") == bodies
    # An offset reads from that message on.
    assert read(broker, names, 10, "--offset", "490") == bodies[490:]


@pytest.mark.rabbitmq4
def test_a_time_between_two_batches_gives_exactly_the_second(broker, names):
    first = [b"early %d" % i for i in range(50)]
    second = [b"late %d" % i for i in range(50)]
    append(broker, names, first)
    # A timestamp is whole seconds: one that comes a second after the first
    # batch, and three before the second (for the interval below).
    between = int(time.time()) + 2
    time.sleep(between + 3 - time.time())
    append(broker, names, second)
    stamp = datetime.datetime.fromtimestamp(between).isoformat()  # naive: local time
    assert read(broker, names, 50, "--offset", stamp) == second
    utc = datetime.datetime.fromtimestamp(between, datetime.UTC).isoformat()
    assert read(broker, names, 50, "--offset", utc) == second
    # An interval back from now that reaches back to `between`, give or take
    # half a second and the time the consumer takes to start (under 2.5 s).
    assert read(broker, names, 50, "--offset", "%ds" % (time.time() - between + 0.5)) == second


@pytest.mark.rabbitmq4
def test_next_gives_only_what_was_published_after_the_consumer_started(broker, names, spawn):
    before = [b"before %d" % i for i in range(100)]
    after = [b"after %d" % i for i in range(100)]
    append(broker, names, before)
    consumer = spawn("consumer.py", SPEC, *names.args, *STREAM, "--count", 100, url=broker.url)  # next: the default
    consumer.wait_for_stderr("Waiting for messages", timeout=30)
    append(broker, names, after)
    assert consumer.wait(timeout=30) == 0, consumer.stderr_text
    assert printed(consumer.stdout) == after


CUT = 20000


@pytest.mark.rabbitmq4
@pytest.mark.slow
def test_a_connection_cut_mid_stream_prints_every_message_once_in_order(broker, names, spawn):
    bodies = [b"message %05d" % i for i in range(CUT)]
    append(broker, names, bodies)
    consumer = spawn("consumer.py", SPEC, *names.args, *STREAM, "--offset", "first", "--prefetch", 50,
                     "--count", CUT, url=broker.url)
    consumer.read_stdout_lines(1000, timeout=60)
    # Stopped, with deliveries on their way to it, while the broker closes its connection.
    consumer.send_signal(signal.SIGSTOP)
    try:
        broker.ctl("close_all_connections", "cut by the test")
        time.sleep(0.5)
        so_far = len(printed(consumer.stdout))
    finally:
        consumer.send_signal(signal.SIGCONT)
    assert so_far < CUT, "every message was printed before the cut: make the stream longer"
    assert consumer.wait(timeout=120) == 0, consumer.stderr_text
    err = consumer.stderr_text
    assert "lost the connection to" in err and err.count("Waiting for messages") == 2, err
    got = printed(consumer.stdout)
    assert len(got) == len(set(got)) == CUT, "%d printed, %d of them twice" % (len(got), len(got) - len(set(got)))
    assert got == bodies


@pytest.mark.rabbitmq4
def test_with_amqp0_8_the_stream_is_read_with_amqp0_9_1(broker, names):
    """AMQP 0-8's basic.consume has no arguments (RabbitMQ's own 0-8 framing
    neither): the consumer says once that it uses amqp0-9-1.xml, and reads."""
    bodies = [b"eight %d" % i for i in range(20)]
    append(broker, names, bodies, spec="amqp0-8.xml")
    got = run_script("consumer.py", "amqp0-8.xml", *names.args, *STREAM, "--count", 20, "--offset", "first",
                     url=broker.url)
    assert got.returncode == 0, got.stderr
    assert printed(got.stdout) == bodies
    lines = got.stderr.decode().splitlines()
    assert [line for line in lines if "amqp0-9-1.xml" in line] == [
        "amqp0-8.xml: AMQP 0-8's basic.consume has no arguments, where a stream consumer says where to start"
        " reading; using amqp0-9-1.xml"], lines
    assert helpers.queue_exists(broker.url, names.queue)
