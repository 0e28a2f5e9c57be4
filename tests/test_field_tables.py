"""Field tables and message properties as amqp_support._codec decodes them: every
value-type letter of AMQP 0-9-1's specification and of RabbitMQ's errata,
decimals, tables nested thousands deep, and property blocks that cannot be
decoded, which must still give the message (its body size comes before them).
No broker is needed; test_poison_headers.py sends such messages through one."""

import struct
from decimal import Decimal

import pytest
from txamqp import spec as amqp_spec

from amqp_support._codec import Fields, FrameError, decode_fields, encode_field_table
from frames import unpack_payload
from helpers import ROOT

SPECS = {name: amqp_spec.load(str(ROOT / name)) for name in ("amqp0-8.xml", "amqp0-9-1.xml")}


def table(*entries):
    """A field table's bytes (its size first) from (name, type letter, value bytes)."""
    body = b"".join(bytes([len(name)]) + name.encode() + letter.encode() + value
                    for name, letter, value in entries)
    return struct.pack("!I", len(body)) + body


def decode(data):
    return decode_fields(data, 4, len(data), {})


# Each letter, the bytes of a value and what it decodes to. 's' and 'l' as
# RabbitMQ and the clients read them (signed 16 and signed 64 bits).
LETTERS = {
    "t": (b"\x01", True),
    "b": (b"\xff", -1),
    "B": (b"\xff", 255),
    "U": (b"\xff\xfe", -2),
    "u": (b"\xff\xfe", 65534),
    "s": (b"\xff\xfe", -2),
    "I": (b"\xff\xff\xff\xfe", -2),
    "i": (b"\xff\xff\xff\xfe", 2**32 - 2),
    "L": (b"\xff" * 7 + b"\xfe", -2),
    "l": (b"\xff" * 7 + b"\xfe", -2),
    "f": (struct.pack("!f", 1.5), 1.5),
    "d": (struct.pack("!d", -2.25), -2.25),
    "D": (b"\x02" + struct.pack("!i", -314), Decimal("-3.14")),
    "S": (b"\x00\x00\x00\x04caf\xc3", b"caf\xc3"),  # not UTF-8: bytes
    "x": (b"\x00\x00\x00\x02\x00\xff", b"\x00\xff"),
    "A": (b"\x00\x00\x00\x06I\x00\x00\x00\x07V", [7, None]),
    "T": (struct.pack("!Q", 1245283200), 1245283200),
    "F": (table(("k", "S", b"\x00\x00\x00\x01v")), {"k": "v"}),
    "V": (b"", None),
}

SPEC_LETTERS = set("tbBUuIiLlfdDsSATFV")  # AMQP 0-9-1's list
RABBITMQ_LETTERS = set("tbBsuIilfdDSATFVx")  # RabbitMQ's errata


@pytest.mark.not_ours
def test_every_letter_of_both_lists_is_tested():
    assert set(LETTERS) == SPEC_LETTERS | RABBITMQ_LETTERS


@pytest.mark.parametrize("letter", sorted(LETTERS))
def test_each_letter_decodes(letter):
    value, expected = LETTERS[letter]
    got = decode(table(("v", letter, value), ("after", "I", b"\x00\x00\x00\x2a")))
    assert got == {"v": expected, "after": 42}
    assert type(got["v"]) is type(expected)


def test_decimal_is_exact():
    got = decode(table(("d", "D", b"\x0a" + struct.pack("!i", 1))))["d"]
    assert got == Decimal("1E-10") and isinstance(got, Decimal)


def nested_arrays(depth):
    """A table {"k": [[[...]]]} with arrays depth deep, as bytes."""
    value = b"A\x00\x00\x00\x00"
    for _ in range(depth - 1):
        value = b"A" + struct.pack("!I", len(value)) + value
    return table(("k", "A", value[1:]))


def nested_tables(depth):
    value = b"\x00\x00\x00\x00"
    for _ in range(depth - 1):
        value = struct.pack("!I", len(value) + 3) + b"\x01kF" + value
    return table(("k", "F", value))


def depth_of(value):
    depth = 0
    while value:
        depth += 1
        value = value[0] if isinstance(value, list) else value["k"]
    return depth + 1


@pytest.mark.parametrize("depth", [65, 1000, 20000])
@pytest.mark.parametrize("make", [nested_arrays, nested_tables])
def test_deep_nesting_decodes(make, depth):
    assert depth_of(decode(make(depth))["k"]) == depth


@pytest.mark.parametrize("depth", [1, 1000, 20000])
def test_deep_nesting_round_trips(depth):
    data = nested_arrays(depth)
    out = bytearray()
    encode_field_table(decode(data), out)
    assert bytes(out) == data


ROUND_TRIP = {
    "bool": True, "int": -7, "big": -(2**40), "float": 0.5, "decimal": Decimal("3.14"),
    "big decimal": Decimal("1E+3"), "text": "\u00e9t\u00e9", "raw": b"\xff\x00",
    "none": None, "table": {"nested": [1, "two", None, {"deeper": Decimal("-0.001")}]}, "empty": [],
}


def test_encoder_round_trips_what_the_decoder_gives():
    out = bytearray()
    encode_field_table(ROUND_TRIP, out)
    assert decode(bytes(out)) == ROUND_TRIP
    # As a method argument or property of type table, beside others.
    fields = Fields(["shortstr", "table", "octet"])
    out = bytearray()
    fields.encode(["before", ROUND_TRIP, 9], out)
    assert fields.decode(bytes(out), 0) == (["before", ROUND_TRIP, 9], len(out))


def test_every_decoded_letter_encodes_back_to_the_same_value():
    entries = [("v" + letter, letter, value) for letter, (value, _) in sorted(LETTERS.items())]
    once = decode(table(*entries))
    out = bytearray()
    encode_field_table(once, out)
    assert decode(bytes(out)) == once


BAD = {
    "unknown letter": (table(("v", "Z", b"\x00")), "unknown field table type 'Z'"),
    "string longer than its table": (table(("v", "S", b"\x00\x00\x01\x00abc")), "runs past the end"),
    "nested table longer than its table": (table(("v", "F", b"\x00\x00\x01\x00")), "longer than that table"),
    "number cut short": (table(("v", "I", b"\x00\x00")), None),
    "name cut short": (struct.pack("!I", 3) + b"\x09ab", None),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_undecodable_tables_are_a_frame_error(case):
    data, words = BAD[case]
    with pytest.raises(FrameError, match=words):
        decode(data)


# ---------------------------------------------------------------- content headers

def header_payload(spec, size, properties):
    """A basic content header's payload: properties are (name, bytes) in order."""
    basic = spec.classes.byname["basic"]
    names = [f.name for f in basic.fields]
    flags = sum(1 << (15 - names.index(name)) for name, _ in properties)
    return struct.pack("!HHQH", 60, 0, size, flags) + b"".join(value for _, value in properties)


def headers_name(spec):
    return next(f.name for f in spec.classes.byname["basic"].fields if f.type == "table")


def mode_name(spec):
    return next(f.name for f in spec.classes.byname["basic"].fields if f.name.startswith("delivery"))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_good_properties_decode(name):
    spec = SPECS[name]
    data = header_payload(spec, 5, [(headers_name(spec), table(("n", "L", b"\x00" * 7 + b"\x05"))),
                                    (mode_name(spec), b"\x02")])
    header = unpack_payload(spec, 2, data)
    assert header.size == 5 and header.property_error is None
    assert header.properties == {headers_name(spec): {"n": 5}, mode_name(spec): 2}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_undecodable_headers_table_is_skipped_not_fatal(name):
    spec = SPECS[name]
    data = header_payload(spec, 5, [(headers_name(spec), table(("v", "Z", b"\x00\x00"))),
                                    (mode_name(spec), b"\x02")])
    header = unpack_payload(spec, 2, data)
    assert header.size == 5
    # The table's size let the properties after it be read.
    assert header.properties == {mode_name(spec): 2}
    assert "unknown field table type 'Z'" in header.property_error
    assert headers_name(spec) in header.property_error


@pytest.mark.parametrize("name", sorted(SPECS))
def test_property_block_cut_short_still_gives_the_header(name):
    spec = SPECS[name]
    # The table says 256 bytes; the frame ends after 3.
    data = header_payload(spec, 9, [(headers_name(spec), b"\x00\x00\x01\x00abc")])
    header = unpack_payload(spec, 2, data)
    assert header.size == 9 and header.properties == {}
    assert "ends inside property %s" % headers_name(spec) in header.property_error


@pytest.mark.parametrize("name", sorted(SPECS))
def test_content_header_without_its_body_size_is_still_fatal(name):
    with pytest.raises(FrameError, match="content header shorter than its fields"):
        unpack_payload(SPECS[name], 2, struct.pack("!HH", 60, 0) + b"\x00" * 5)


def test_method_frame_with_undecodable_table_is_still_fatal():
    spec = SPECS["amqp0-9-1.xml"]
    payload = (struct.pack("!HHBB", 10, 10, 0, 9) + table(("v", "Z", b""))
               + b"\x00\x00\x00\x05PLAIN\x00\x00\x00\x05en_US")
    with pytest.raises(FrameError, match="unknown field table type"):
        unpack_payload(spec, 1, payload)
