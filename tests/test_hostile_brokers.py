"""A broker that breaks the protocol: stand-in servers send garbage, frames too
long, cut short or badly ended, malformed methods and messages whose body does
not match its header, during login or while the consumer consumes. The client
exits 1 with one line, never a traceback, never hangs (every run has a time
limit), and shows the password nowhere, with or without --verbose."""

import struct

import pytest

import helpers
import standin
from standin import CONNECTION_START, frame, method_frame, play_broker_until

CONSUMER_TAG = "test_consumer_tag"


def during_login(data, then="close"):
    """A broker that sends data instead of (or as) its connection.start, then
    closes, or hangs: reads until the client goes."""
    def script(conn):
        conn.sendall(data)
        if then == "hang":
            while conn.recv(100):
                pass
    return script


def after_start(data):
    """A broker that sends a right connection.start, reads the client's
    credentials, then sends data."""
    def script(conn):
        conn.sendall(CONNECTION_START)
        standin.Frames(conn).next()
        conn.sendall(data)
        while conn.recv(100):
            pass
    return script


def while_consuming(data, then="hang"):
    """A broker that plays along until the consumer consumes, then sends data."""
    def script(conn):
        play_broker_until(conn, "basic.consume")
        conn.sendall(data)
        if then == "hang":
            while conn.recv(100):
                pass
    return script


def nested_table(depth):
    """A field table with one entry: an array in an array ... depth deep."""
    value = b"A" + struct.pack("!I", 0)
    for _ in range(depth - 1):
        value = b"A" + struct.pack("!I", len(value)) + value
    entry = b"\x01k" + value
    return struct.pack("!I", len(entry)) + entry


def header(size, channel=1):
    return frame(2, channel, struct.pack("!HHQH", 60, 0, size, 0))


def deliver(channel=1):
    return method_frame("basic.deliver", channel=channel, consumer_tag=CONSUMER_TAG, delivery_tag=1,
                        exchange="", routing_key="q")


START_FIELDS = struct.pack("!HHBB", 10, 10, 8, 0)

LOGIN_CASES = {
    "garbage": (during_login(b"\x00\x01 garbage \xff\xfe" * 4), ["not AMQP", "unknown frame type 0"]),
    "garbage after connection.start": (after_start(b"\x09garbage!" * 4), ["unknown frame type 9"]),
    "oversized frame length": (during_login(CONNECTION_START[:3] + b"\xff\xff\xff\xf0"),
                               ["frame of 4294967288 bytes, over the agreed maximum of 4096"]),
    "truncated frame, then close": (during_login(CONNECTION_START[:20]),
                                    ["the connection ended in the middle of a frame (20 bytes"]),
    "truncated frame, then hang": (during_login(CONNECTION_START[:20], then="hang"), ["no answer in time"]),
    "wrong frame-end byte": (during_login(CONNECTION_START[:-1] + b"\x00"),
                             ["frame does not end with 0xCE but with 0x00"]),
    "malformed method payload": (during_login(frame(1, 0, START_FIELDS + b"\x00\x00")),
                                 ["connection.start method frame shorter than its fields"]),
    "unknown method": (during_login(frame(1, 0, b"\x00\x0a\x03\xe7")),
                       ["method frame for an unknown method of class connection (id 999)"]),
    "unknown class": (during_login(frame(1, 0, b"\x03\xe7\x00\x0a")),
                      ["method frame for an unknown class (id 999)"]),
    # In a method (unlike a message's properties) a table that cannot be
    # decoded is the broker's failure. Deep nesting alone is not: RabbitMQ
    # delivers such headers, so the codec has no depth limit.
    "unknown field table type": (during_login(frame(1, 0, START_FIELDS + nested_table(100)[:-5] + b"Z"
                                                     + b"\0" * 4 + b"\x00\x00\x00\x05PLAIN"
                                                     + b"\x00\x00\x00\x05en_US")),
                                  ["unknown field table type 'Z'"]),
    "content header during login": (after_start(header(5, channel=0)),
                                    ["content header on channel 0 without a method"]),
}

CONSUMING_CASES = {
    "garbage": (while_consuming(b"HTTP/1.1 400 Bad Request\r\n\r\n"), ["unknown frame type 72"]),
    "oversized frame length": (while_consuming(struct.pack("!BHI", 3, 1, 200000)),
                               ["frame of 200008 bytes, over the agreed maximum of 131072"]),
    # With --no-reconnect (added below): a connection cut mid-frame is a lost
    # connection, which a reconnecting consumer retries.
    "truncated frame, then close": (while_consuming(deliver()[:15], then="close"),
                                    ["lost the connection", "the connection ended in the middle of a frame"]),
    "wrong frame-end byte": (while_consuming(deliver()[:-1] + b"\xcf"), ["0xCF"]),
    "malformed method payload": (while_consuming(frame(1, 1, b"\x00\x3c\x00\x3c\x05ab")),
                                 ["basic.deliver method frame shorter than its fields"]),
    "body longer than its header said": (while_consuming(deliver() + header(5) + frame(3, 1, b"0123456789")),
                                         ["message body on channel 1 longer than its content header said"]),
    "body without a header": (while_consuming(deliver() + frame(3, 1, b"body")),
                              ["message body on channel 1 without a content header"]),
    "method in the middle of a message": (while_consuming(deliver() + header(5) + deliver()),
                                          ["method basic.deliver on channel 1 in the middle of a message"]),
    "frame on a channel never opened": (while_consuming(deliver(channel=7)),
                                        ["frame on channel 7, which the client never opened"]),
}


@pytest.mark.parametrize("case", sorted(LOGIN_CASES))
def test_hostile_broker_during_login(case, stand_in):
    script, words = LOGIN_CASES[case]
    server = stand_in(script)
    result = helpers.run_failing("producer.py", "amqp0-8.xml", "x", "--timeout", "2",
                                 url=server.url, timeout=30)
    helpers.fails(result, 1, "cannot connect to", *words)
    assert not server.script_errors


@pytest.mark.parametrize("case", sorted(CONSUMING_CASES))
def test_hostile_broker_while_consuming(case, stand_in):
    script, words = CONSUMING_CASES[case]
    server = stand_in(script)
    options = ["--no-reconnect"] if case == "truncated frame, then close" else []
    result = helpers.run_failing("consumer.py", "amqp0-8.xml", "--timeout", "2", *options,
                                 url=server.url, timeout=30)
    err = result.stderr.decode("utf-8", "backslashreplace")
    # The consumer said it was waiting; then one line for the failure.
    assert err.startswith("Waiting for messages on queue 'test_message_queue'."), err
    result.stderr = err.split("\n", 1)[1].encode()
    helpers.fails(result, 1, "consumer.py: error: ", *words)
    assert result.stdout == b""
    assert not server.script_errors


def tuned_with(frame_max, seen):
    """A broker that proposes frame_max in connection.tune and records the
    client's tune-ok, then plays along while the producer publishes."""
    def script(conn):
        frames = standin.Frames(conn)
        conn.sendall(CONNECTION_START)
        frames.next()  # start-ok
        conn.sendall(method_frame("connection.tune", channel_max=0, frame_max=frame_max, heartbeat=0))
        tune_ok = frames.next()
        seen.append(struct.unpack("!HIH", tune_ok[11:19]))  # channel-max, frame-max, heartbeat
        while conn.recv(65536):
            pass
    return script


@pytest.mark.parametrize("proposed, agreed", [(0, 131072), (2**32 - 1, 131072), (8192, 8192)])
def test_frame_size_is_the_smaller_of_the_brokers_and_ours(proposed, agreed, stand_in):
    # 0 is AMQP's "no limit": txamqp took it as is, then cut bodies into
    # frames of -8 bytes and sent none; a huge value let a broker make the
    # client buffer gigabytes of one frame.
    seen = []
    server = stand_in(tuned_with(proposed, seen))
    helpers.run_script("producer.py", "amqp0-8.xml", "x", "--timeout", "2", url=server.url)
    assert [frame_max for _, frame_max, _ in seen] == [agreed]


def test_frame_size_below_amqps_minimum_is_refused(stand_in):
    server = stand_in(tuned_with(1024, []))
    helpers.fails(helpers.run_script("producer.py", "amqp0-8.xml", "x", url=server.url), 1,
                  "frame size of 1024 bytes", "below AMQP's minimum of 4096")


def answer_until(frames, conn, last, spec=standin.SPEC_08):
    """Go on answering the client's methods with their -ok, up to last."""
    while (data := frames.next()) is not None:
        class_id, method_id = struct.unpack("!HH", data[7:11])
        method = spec.classes.byid[class_id].methods.byid[method_id]
        channel = int.from_bytes(data[1:3], "big")
        if method.name + "-ok" in method.klass.methods.byname:
            conn.sendall(standin.method_frame("%s.%s-ok" % (method.klass.name, method.name),
                                              channel=channel, spec=spec))
        if "%s.%s" % (method.klass.name, method.name) == last:
            return


def test_connection_cut_mid_frame_is_a_lost_connection(stand_in):
    """A broker that goes away while it sends (RabbitMQ shutting down with
    deliveries on their way, a network cut) leaves part of a frame behind.
    That is a lost connection like any other: the consumer reconnects and
    goes on, it does not give up as if the broker spoke something else."""
    connections = []

    def script(conn):
        connections.append(conn)
        frames = play_broker_until(conn, "basic.consume")
        if len(connections) == 1:
            conn.sendall(deliver()[:15])  # then close, mid-frame
            return
        conn.sendall(deliver() + frame(2, 1, struct.pack("!HHQH", 60, 0, 5, 0)) + frame(3, 1, b"hello"))
        answer_until(frames, conn, "connection.close")

    server = stand_in(script)
    result = helpers.run_script("consumer.py", "amqp0-8.xml", "--count", "1", "--timeout", "5",
                                url=server.url, timeout=60)
    err = result.stderr.decode("utf-8", "backslashreplace")
    assert result.returncode == 0, err
    assert result.stdout == b"Received: hello from channel #1\n"
    assert "the connection ended in the middle of a frame" in err and "reconnecting" in err, err
    assert len(connections) == 2
    assert not server.script_errors
