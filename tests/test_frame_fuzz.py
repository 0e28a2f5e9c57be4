"""Fuzz the client's frame reader in-process: after a valid connection.start,
feed AMQClient.dataReceived arbitrary bytes in arbitrary chunks (hypothesis).
It must never raise, never log an error, and either keep going or end the
connection with a reason that explain() words in one line; once the
connection is lost, everything that waited on it has its answer (nothing hangs)."""

import gc
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import error, task
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from txamqp import spec as amqp_spec
from txamqp.connection import Header, Method
from txamqp.queue import Closed, TimeoutDeferredQueue

from amqp_support import _codec
from amqp_support._client import AMQClient
from amqp_support._codec import pack_frame
from amqp_support._errors import FrameError
from amqp_support import explain
from helpers import PASSWORD, ROOT
from frames import unpack_payload

SPECS = {name: amqp_spec.load(str(ROOT / name)) for name in ("amqp0-8.xml", "amqp0-9-1.xml")}


def frame(kind, channel, payload, end=0xCE):
    return struct.pack("!BHI", kind, channel, len(payload)) + payload + bytes([end])


def start_frame(spec):
    major, minor = (8, 0) if spec.major == 8 else (0, 9)
    payload = struct.pack("!HHBB", 10, 10, major, minor)
    payload += struct.pack("!I", 0)  # server properties: an empty table
    payload += struct.pack("!I", 5) + b"PLAIN" + struct.pack("!I", 5) + b"en_US"
    return frame(1, 0, payload)


def methods(spec):
    return [m for klass in spec.classes for m in klass.methods]


FIELD_VALUES = {
    "bit": st.booleans(),
    "octet": st.integers(0, 2**8 - 1),
    "short": st.integers(0, 2**16 - 1),
    "long": st.integers(0, 2**32 - 1),
    "longlong": st.integers(0, 2**64 - 1),
    "timestamp": st.integers(0, 2**64 - 1),
    "shortstr": st.text(max_size=10),
    "longstr": st.binary(max_size=20),
    "table": st.dictionaries(st.text(max_size=5), st.one_of(st.integers(-5, 5), st.text(max_size=5),
                                                            st.booleans()), max_size=3),
}


@st.composite
def frames(draw, spec):
    """One chunk of what a hostile broker may send: garbage, a frame of any
    type with any payload, a method with arbitrary argument bytes, a content
    header with any size, or a body."""
    channel = draw(st.sampled_from([0, 1, 1, 2, 65535]))
    kind = draw(st.sampled_from(["garbage", "any", "method", "good method", "header", "body",
                                 "heartbeat"]))
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=40))
    if kind == "any":
        end = draw(st.sampled_from([0xCE, 0xCE, 0xCE, 0x00, 0xFF]))
        return frame(draw(st.integers(0, 255)), channel, draw(st.binary(max_size=60)), end)
    if kind == "method":
        method = draw(st.sampled_from(methods(spec)))
        return frame(1, channel, struct.pack("!HH", method.klass.id, method.id) + draw(st.binary(max_size=60)))
    if kind == "good method":
        method = draw(st.sampled_from(methods(spec)))
        args = [draw(FIELD_VALUES[f.type]) for f in method.fields]
        return pack_frame(channel, Method(method, *args))
    if kind == "header":
        size = draw(st.sampled_from([0, 1, 5, 2**63, 2**64 - 1]))
        flags = draw(st.sampled_from([0, 0x8000, 0xFFFF, 0x0001]))
        payload = struct.pack("!HHQH", 60, 0, size, flags) + draw(st.binary(max_size=20))
        return frame(2, channel, payload)
    if kind == "body":
        return frame(3, channel, draw(st.binary(max_size=20)))
    return frame(8, channel, b"")


@st.composite
def sessions(draw):
    """(spec, how far the client got, the chunks the broker sends then)."""
    spec = SPECS[draw(st.sampled_from(sorted(SPECS)))]
    stage = draw(st.sampled_from(["logging in", "channel open"]))
    data = b"".join(draw(st.lists(frames(spec), max_size=12)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return spec, stage, chunks


@pytest.fixture
def logged_errors():
    """Twisted log events that carry a failure (unhandled errors in Deferreds
    among them, logged when the Deferred is collected: gc.collect() finds them,
    and is quick with everything older than the test frozen out of its way)."""
    events = []

    def observe(event):
        if "log_failure" in event:
            events.append(event)
    gc.collect()
    gc.freeze()
    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)
    gc.unfreeze()


def method(spec, name, channel=0, **fields):
    klass, name = name.split(".")
    m = spec.classes.byname[klass].methods.byname[name]
    default = {"shortstr": "", "longstr": b"", "table": {}, "bit": False}
    return pack_frame(channel, Method(m, *[fields.get(f.name.replace("-", "_"), default.get(f.type, 0))
                                           for f in m.fields]))


def connected_client(spec, stage="logging in"):
    """A client that has sent its protocol header and its credentials in reply to
    a valid connection.start, waiting for connection.tune; or, at stage "channel
    open", logged in with channel 1 open. Returns (client, transport, outcome):
    outcome holds the result of the login, or of opening the channel, once it has one."""
    client = AMQClient(spec, clock=task.Clock())
    transport = StringTransport()
    client.makeConnection(transport)
    waiting = client.authenticate("guest", PASSWORD, mechanism="PLAIN")
    outcome = []
    client.dataReceived(start_frame(spec))
    assert not transport.disconnecting and client.reason is None
    assert b"PLAIN" in transport.value()  # connection.start-ok went out
    if stage == "channel open":
        client.dataReceived(method(spec, "connection.tune", frame_max=131072))
        client.dataReceived(method(spec, "connection.open-ok"))
        assert waiting.called
        waiting = client.channel(1).addCallback(lambda ch: ch.channel_open())
        client.dataReceived(method(spec, "channel.open-ok", channel=1))
        assert waiting.called and 1 in client.channels
        waiting = client.channels[1].basic_consume(queue="q", consumer_tag="t")
    waiting.addBoth(outcome.append)
    return client, transport, outcome


@given(sessions())
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_frame_reader_never_raises(logged_errors, session):
    spec, stage, chunks = session
    gc.collect()  # what an earlier example left is not this one's
    logged_errors.clear()
    client, transport, waiting = connected_client(spec, stage)
    for chunk in chunks:
        client.dataReceived(chunk)  # must not raise
        if transport.disconnecting:
            # Ended: with a reason a person can read, in one line.
            assert client.reason is not None
            text = explain(client.reason)
            assert text and "\n" not in text
            break
    # The socket closes, as it would after an abort or when the broker hangs up.
    client.connectionLost(Failure(error.ConnectionDone()))
    assert waiting, "still waiting for the broker after the connection was lost"
    gc.collect()  # unhandled errors in Deferreds are logged when collected
    assert not logged_errors, [e.get("log_failure") for e in logged_errors]


def test_fuzz_can_see_a_frame_error(logged_errors):
    # The checks above can fail: a wrong frame-end ends the connection with a FrameError.
    client, transport, login = connected_client(SPECS["amqp0-8.xml"])
    client.dataReceived(frame(8, 0, b"", end=0x00))
    assert transport.disconnecting and client.reason.check(FrameError)


def test_deeply_nested_headers_table_is_delivered(logged_errors):
    # After tune (frame_max 131072) a content header can hold a field table
    # nested thousands deep, which RabbitMQ delivers: decoding it must not
    # blow the stack (a RecursionError out of dataReceived) nor end the
    # connection; the message reaches the consumer, headers and all.
    spec = SPECS["amqp0-8.xml"]
    client, transport, waiting = connected_client(spec, "channel open")
    value = b"A" + struct.pack("!I", 0)
    for _ in range(5000):
        value = b"A" + struct.pack("!I", len(value)) + value
    table = struct.pack("!I", len(value) + 2) + b"\x01k" + value
    headers_bit = 1 << (15 - [f.name for f in spec.classes.byname["basic"].fields].index("headers"))
    header = frame(2, 1, struct.pack("!HHQH", 60, 0, 1, headers_bit) + table)
    deliver = method(spec, "basic.deliver", channel=1, consumer_tag="t", delivery_tag=1)
    client.dataReceived(deliver + header + frame(3, 1, b"x"))
    assert not transport.disconnecting and client.reason is None
    got = []
    client.consumer_queue("t").get().addCallback(got.append)
    [msg] = got
    assert msg.content.body == b"x" and msg.content.property_error is None
    depth, array = 0, msg.content.properties["headers"]["k"]
    while array:
        depth, [array] = depth + 1, array
    assert depth == 5000


# amqp_support._codec against txamqp's own codec, where txamqp's is right
# (ASCII text, tables of ASCII text and small integers), and against itself:
# whatever it writes it reads back.

def txamqp_encoding(types, values):
    """What txamqp's own codec writes for these fields."""
    from io import BytesIO

    from txamqp import codec
    buf = BytesIO()
    c = codec.Codec(buf)
    for t, v in zip(types, values, strict=True):
        c.encode(t, v)
    c.flush()
    return buf.getvalue()


def txamqp_is_right(value):
    if isinstance(value, dict):
        return all(txamqp_is_right(k) and not isinstance(v, bool) and txamqp_is_right(v) for k, v in value.items())
    return not isinstance(value, str) or value.isascii()


def as_decoded(value):
    """value as the codec gives it back: strings as str when they are UTF-8."""
    return _codec.text_or_bytes(value) if isinstance(value, bytes) else value


@st.composite
def headers(draw, spec):
    """A basic content header with some of its properties."""
    from txamqp.connection import Header
    klass = spec.classes.byname["basic"]
    fields = draw(st.lists(st.sampled_from(list(klass.fields)), unique=True, max_size=4))
    return Header(klass, 0, draw(st.integers(0, 2**64 - 1)),
                  **{f.name: draw(FIELD_VALUES[f.type]) for f in fields})


@pytest.mark.parametrize("name", sorted(SPECS))
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_codec_writes_what_txamqp_writes_and_reads_it_back(name, data):
    """Every method of the spec with every argument (a field type FIELD_VALUES
    lacks is a KeyError here, not an example skipped), and content headers."""
    spec = SPECS[name]
    method = data.draw(st.sampled_from(methods(spec)))
    values = [data.draw(FIELD_VALUES[f.type]) for f in method.fields]
    types = [f.type for f in method.fields]
    frame = pack_frame(1, Method(method, *values))
    if all(map(txamqp_is_right, values)):
        assert frame[11:-1] == txamqp_encoding(types, values)
    decoded = unpack_payload(spec, 1, frame[7:-1])
    assert decoded.method is method and list(decoded.args) == [as_decoded(v) for v in values]
    header = data.draw(headers(spec))
    _codec._received.clear()  # decoded, not remembered (read_header, speed only)
    payload = pack_frame(1, header)[7:-1]
    decoded = unpack_payload(spec, 2, payload)
    assert decoded.properties == {k: as_decoded(v) for k, v in header.properties.items()}
    assert decoded.size == header.size and decoded.property_error is None
    # Again, and with another body size: from what read_header remembers, if it does, the same.
    size = data.draw(st.integers(0, 2**64 - 1))
    for again in (payload, payload[:4] + struct.pack("!Q", size) + payload[12:]):
        got = unpack_payload(spec, 2, again)
        assert vars(got) == {**vars(decoded), "size": struct.unpack_from("!Q", again, 4)[0]}
        assert got.properties is not decoded.properties



@pytest.mark.parametrize("cut", [1, 2, 5])
def test_a_field_cut_short_at_the_end_of_a_frame_is_a_frame_error(cut):
    """txamqp's codec reads what is there of a last string cut short and gives a
    short string (row 4 of docs/how-it-is-built.md)."""
    spec = SPECS["amqp0-9-1.xml"]
    deliver = spec.classes.byname["basic"].methods.byname["deliver"]
    payload = pack_frame(1, Method(deliver, "tag", 1, False, "exchange", "a routing key"))[7:-1]
    with pytest.raises(FrameError, match="basic.deliver method frame shorter than its fields"):
        unpack_payload(spec, 1, payload[:-cut])

DELIVERY_TEXT = st.sampled_from(["", "t", "amq.ctag-1", "é", b"\xff", "x" * 255])


@pytest.mark.parametrize("name", sorted(SPECS))
@settings(max_examples=300, deadline=None)
@given(deliveries=st.lists(st.tuples(DELIVERY_TEXT, st.integers(0, 2**64 - 1), st.integers(0, 255),
                                     DELIVERY_TEXT, DELIVERY_TEXT, st.integers(-3, 3)), min_size=1, max_size=12))
def test_delivery_fields_read_what_fields_read(name, deliveries):
    """DeliveryFields (speed only: the consumer tag, exchange and routing key of a
    delivery kept by their bytes) gives what Fields gives for the same bytes, from
    the first delivery of a connection on; None where the fields run past their frame
    (cut > 0: the frame ends that many bytes early, the read goes on after it)."""
    deliver = SPECS[name].classes.byname["basic"].methods.byname["deliver"]
    fields = _codec.Fields([f.type for f in deliver.fields])
    reader = _codec.DeliveryFields([f.type for f in deliver.fields])
    assert reader.same_shape
    for tag, number, octet, exchange, key, cut in deliveries:
        payload = bytearray(pack_frame(1, Method(deliver, tag, number, False, exchange, key))[11:-1])
        payload[len(payload) - len(exchange.encode() if isinstance(exchange, str) else exchange)
                - len(key.encode() if isinstance(key, str) else key) - 3] = octet  # redelivered, and bits unused
        data = bytes(payload) + b"\xce" + bytes(range(40))  # the frame end, then the next frames of the read
        end = len(payload) - max(cut, 0)
        values, after = fields.decode(data, 0)
        assert reader.decode(data, 0, end) == (values if after <= end else None)
        assert values[2] == bool(octet & 1)


# No method of our two spec files has more than eight bits in a row (AMQP
# packs eight to an octet, then starts the next): a spec file of a user's may.
MANY_BITS = b"""<?xml version="1.0"?>
<amqp major="0" minor="9" revision="1">
  <constant name="frame-end" value="206"/>
  <class name="test" index="90" handler="channel">
    <method name="flags" index="10">%s<field name="name" type="shortstr"/>
      <field name="last" type="bit"/></method>
  </class>
</amqp>
""" % b"".join(b'<field name="f%d" type="bit"/>' % i for i in range(10))


@pytest.mark.parametrize("values", [[True] * 10, [False] * 10, [i % 3 == 0 for i in range(10)]])
def test_more_than_eight_bits_in_a_row_take_two_octets(values):
    from amqp_support._spec import load_spec as load
    spec = load(MANY_BITS, "many-bits.xml")
    method = spec.classes.byname["test"].methods.byname["flags"]
    payload = pack_frame(0, Method(method, *values, "q", True))[7:-1]
    assert len(payload) == 4 + 2 + 2 + 1  # class and method ids, two octets of bits, "q", one more octet
    assert payload[4:] == txamqp_encoding([f.type for f in method.fields], [*values, "q", True])
    # Read back as written (txamqp's decoder takes the last bit from the second octet of bits).
    assert list(unpack_payload(spec, 1, payload).args) == [*values, "q", True]


PROPERTIES = {"delivery-mode": st.integers(1, 2), "content-type": st.text(max_size=10),
              "priority": st.integers(0, 9), "timestamp": st.integers(0, 2**64 - 1),
              "headers": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2)}


@pytest.mark.parametrize("name", sorted(SPECS))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_published_frames_the_quick_way_are_the_frames_of_the_general_way(name, data):
    """MessageFrames (basic.publish's quick way) writes exactly what pack_frame
    writes for the method, header and body frames of the same messages, or
    gives None and leaves them to it."""
    from txamqp.connection import Body, Header
    from txamqp.content import Content

    spec = SPECS[name]
    publish = spec.classes.byname["basic"].methods.byname["publish"]
    frame_max = data.draw(st.sampled_from([4096, 131072]))
    quick = _codec.MessageFrames(frame_max)
    for _ in range(data.draw(st.integers(1, 4))):  # several: the second and later from its memory
        args = (0, data.draw(st.sampled_from(["", "x", "test_message_exchange"])),
                data.draw(st.text(max_size=8)), data.draw(st.booleans()), False)
        props = data.draw(st.fixed_dictionaries({}, optional=PROPERTIES))
        body = data.draw(st.sampled_from([b"", b"a", bytes(range(256)) * 16, b"z" * (frame_max - 8),
                                          b"y" * (frame_max - 7)]))
        channel = data.draw(st.integers(1, 3))
        got = quick.message(channel, publish, args, Content(body, properties=props))
        header = Header(publish.klass, 0, len(body), **props)
        general = (pack_frame(channel, Method(publish, *args)) + pack_frame(channel, header)
                   + (pack_frame(channel, Body(body)) if body else b""))
        if got is None:  # only for what the quick way leaves alone: a table, a big body
            assert "headers" in props or len(body) > frame_max - 8
        else:
            assert got == general


@pytest.mark.parametrize("name", sorted(SPECS))
def test_deliveries_of_one_read_reach_the_consumer_together(name, logged_errors):
    # Three messages in one read: the consumer waiting on its queue gets the
    # first while the other two are in its queue already, so that it can tell
    # the last of them, flush their lines and acknowledge them at once
    # (consumer.py: basic.ack multiple). A method after them that is not a
    # delivery (here basic.cancel) reaches the queue after them.
    spec = SPECS[name]
    client, transport, waiting = connected_client(spec, "channel open")
    client.dataReceived(method(spec, "basic.consume-ok", channel=1, consumer_tag="t"))
    queue = client.consumer_queue("t")
    seen = []
    queue.get().addCallback(lambda msg: seen.append((msg.delivery_tag, len(queue.pending))))
    header = frame(2, 1, struct.pack("!HHQH", 60, 0, 1, 0))
    client.dataReceived(b"".join(method(spec, "basic.deliver", channel=1, consumer_tag="t", delivery_tag=tag)
                                 + header + frame(3, 1, b"x") for tag in (1, 2, 3))
                        + method(spec, "basic.cancel", channel=1, consumer_tag="t"))
    assert seen == [(1, 2)]
    rest = []
    for _ in range(3):
        queue.get().addBoth(rest.append)
    assert [msg.delivery_tag for msg in rest[:2]] == [2, 3] and rest[2].check(Closed)


@st.composite
def deliveries(draw, spec):
    """The bytes of a few basic.deliver messages as a broker sends them, now and then
    with something unusual about them: a body in several frames or none, properties
    that cannot be decoded, a heartbeat or another method in the middle, another
    channel, the method, its content header or its body on a channel of their own,
    a message that is not a delivery (basic.return), a body frame longer or a
    header weightier than announced, a method frame shorter than its fields, a
    frame cut."""
    basic = spec.classes.byname["basic"]
    headers_bit = 1 << (15 - [f.name for f in basic.fields].index("headers"))
    stream = b""
    for tag in range(1, draw(st.integers(1, 5)) + 1):
        channel = draw(st.sampled_from([1, 1, 1, 1, 2]))
        body = draw(st.sampled_from([b"", b"x", b"a body of a few bytes", bytes(range(256)) * 3]))
        props = draw(st.sampled_from([{}, {"delivery-mode": 2}, {"delivery-mode": 2, "content-type": "text/plain"},
                                      {"headers": {"k": "v", "n": 1}}, {"priority": 9, "message-id": "\xe9"}]))
        odd = draw(st.sampled_from(["none"] * 6 + ["split body", "bad properties", "heartbeat", "method",
                                                   "long body", "weight", "short method", "return",
                                                   "method elsewhere", "header elsewhere", "body elsewhere"]))
        other = 3 - channel  # the other of channels 1 and 2
        header = pack_frame(other if odd == "header elsewhere" else channel,
                            Header(basic, odd == "weight", len(body), **props))
        if odd == "bad properties":  # a headers table with a type letter AMQP does not have
            header = frame(2, channel, struct.pack("!HHQH", 60, 0, len(body), headers_bit)
                           + struct.pack("!I", 3) + b"\x01kZ")
        cuts = sorted(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=2))) if odd == "split body" else []
        chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if body[a:b]]
        if odd == "long body":
            chunks = [body + b"!"]
        deliver = method(spec, "basic.deliver", channel=other if odd == "method elsewhere" else channel,
                         consumer_tag="t", delivery_tag=tag, exchange="x", routing_key="\xe9" * tag)
        if odd == "return":  # a message of another kind (basic.return) with fields that pass for a delivery's
            returned = spec.classes.byname["basic"].methods.byname["return"]
            deliver = frame(1, channel, struct.pack("!HH", basic.id, returned.id) + deliver[11:-1])
        if odd == "short method":  # its routing key runs past the end of its frame, into the next
            deliver = frame(1, channel, deliver[7:-2])
        stream += deliver
        stream += frame(8, 0, b"") if odd == "heartbeat" else b""
        stream += method(spec, "basic.deliver", channel=channel, consumer_tag="t") if odd == "method" else b""
        stream += header + b"".join(frame(3, other if odd == "body elsewhere" else channel, chunk)
                                    for chunk in chunks)
    return stream[:-draw(st.integers(0, 3))] or stream  # now and then the last frame cut


def delivered(spec, chunks, closed=False):
    """What a consumer gets from the chunks read one after the other, and how the connection
    ended; closed: with channel 1 closed on our side first."""
    client, transport, waiting = connected_client(spec, "channel open")
    client.dataReceived(method(spec, "basic.consume-ok", channel=1, consumer_tag="t"))
    if closed:
        client.channels[1].close(None)
    for chunk in chunks:
        client.dataReceived(chunk)
    got = [(msg.method.name, msg.fields, msg.content.body, msg.content.properties, msg.content.property_error)
           for msg in client.consumer_queue("t").pending if msg is not TimeoutDeferredQueue.END]
    return got, transport.disconnecting, client.reason and explain(client.reason), client._buffer


@pytest.mark.parametrize("name", sorted(SPECS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_deliveries_read_whole_are_deliveries_read_frame_by_frame(name, data):
    """AMQClient.read_deliveries (speed only: messages whose frames are all in one read,
    at once) gives what receive() gives frame by frame: the same messages, the same
    failure. Fed a byte at a time, no read holds more than one frame."""
    spec = SPECS[name]
    stream = data.draw(deliveries(spec))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    some_reads = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    by_frame = delivered(spec, [stream[i:i + 1] for i in range(len(stream))])
    assert delivered(spec, [stream]) == by_frame
    assert delivered(spec, some_reads) == by_frame


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_delivery_on_a_closed_channel_read_whole_is_as_read_frame_by_frame(name, logged_errors):
    # As txamqp: a delivery on a channel the client has closed is a failed dispatch,
    # which ends the connection, however the delivery's frames came.
    spec = SPECS[name]
    basic = spec.classes.byname["basic"]
    stream = (method(spec, "basic.deliver", channel=1, consumer_tag="t", delivery_tag=1)
              + pack_frame(1, Header(basic, 0, 1)) + frame(3, 1, b"x"))
    whole = delivered(spec, [stream], closed=True)
    assert whole == delivered(spec, [stream[i:i + 1] for i in range(len(stream))], closed=True)
    assert whole[0] == [] and whole[1]  # nothing delivered, the connection ended
    logged_errors.clear()
