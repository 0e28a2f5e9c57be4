"""Frames in and out of txamqp 0.8.2, byte for byte: its own codec sizes a str
in characters but writes it in UTF-8, decodes any UTF-8 body frame to str and
knows four field-table types. This one reads and writes the same payload
objects (txamqp.connection's Method, Header, Body, Heartbeat), keeps bytes as
bytes and reads every field-table type of AMQP 0-9-1 and RabbitMQ.
"""

import struct
from collections.abc import Iterator, Mapping
from decimal import Decimal
from io import BytesIO
from typing import Any, overload

from txamqp import codec
from txamqp.connection import Body, Header, Heartbeat, Method

from amqp_support._errors import FrameError

# txamqp has no type information: its objects are Any, by these names.
Spec = Any  # txamqp.spec.Spec, a loaded spec file
SpecClass = Any  # txamqp.spec.Class
SpecMethod = Any  # txamqp.spec.Method
Payload = Any  # a frame's: txamqp.connection.Method, Header, Body or Heartbeat, or a ContentHeader
FieldTable = dict[Any, Any]  # decoded names are str (bytes if not UTF-8)

FRAME_END = 0xCE
FRAME_HEADER = struct.Struct("!BHI")  # type, channel, payload size
PAYLOAD_TYPES = {Method: 1, Header: 2, Body: 3, Heartbeat: 8}


class ContentHeader:
    """A content header as received: txamqp's Header's fields, and
    property_error: None, or what of the properties could not be decoded
    (the message is delivered all the same). Not a subclass: txamqp registers
    each subclass of its Payload as the decoder of its frame type, for all."""

    def __init__(self, klass: SpecClass, weight: int, size: int, properties: dict[str, Any],
                 property_error: str | None = None) -> None:
        self.klass, self.weight, self.size = klass, weight, size
        self.properties = properties
        self.property_error = property_error


PAYLOADS = {1: Method, 2: ContentHeader, 3: Body, 8: Heartbeat}  # each frame type, as received


class Codec(codec.Codec):
    """txamqp's Codec, with strings sized in bytes and full field tables."""

    def read(self, n: int) -> bytes:
        # Bits share an octet only with the bits next to them: what is left of the
        # last one is not for a bit after other fields (txamqp's decode_bit takes it).
        self.incoming_bits.clear()
        data = super().read(n)
        if len(data) < n:  # txamqp's returns what is there
            raise codec.EOF()
        return data

    def enc_str(self, fmt: str, s: str | bytes) -> None:
        if isinstance(s, str):
            s = s.encode("utf-8")
        self.enc_bytes(fmt, s)

    def encode_table(self, table: Mapping[str | bytes, Any]) -> None:
        out = bytearray()
        encode_field_table(table, out)
        self.write(bytes(out))

    def decode_table(self) -> FieldTable:
        size = self.unpack("!L")
        data = self.read(size)
        return decode_fields(data, 0, size, {})


# Field tables: a type letter, then the value's bytes. Every letter of AMQP
# 0-9-1's specification and of RabbitMQ's errata is read (clients write both;
# brokers pass headers on as published). Where they disagree, a letter means
# what RabbitMQ, pika, py-amqp and amqplib make of it: 's' a signed 16-bit
# integer (the specification's short string, unused in tables), 'l' signed
# 64-bit (unsigned in the specification). 'L' (signed 64-bit) is the
# specification's and what py-amqp writes for large integers, 'U' (signed
# 16-bit) the specification's, 'x' (bytes) RabbitMQ's.
FIELD_NUMBERS = {ord(letter): struct.Struct(fmt) for letter, fmt in {
    "b": "!b", "B": "!B", "U": "!h", "u": "!H", "s": "!h", "I": "!i", "i": "!I",
    "L": "!q", "l": "!q", "f": "!f", "d": "!d", "T": "!Q",  # T: seconds since 1970, UTC
}.items()}
LONG = struct.Struct("!I")
DECIMAL = struct.Struct("!Bi")  # places, then the digits as a signed 32-bit integer
LONG_STRING, BYTES, TABLE, ARRAY, BOOLEAN, DECIMAL_NUMBER, VOID = b"SxFAtDV"


def text_or_bytes(data: bytes) -> str | bytes:
    """Strings as txamqp gives them: str when they are UTF-8, else bytes."""
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data


@overload
def decode_fields(data: bytes, pos: int, end: int, container: FieldTable) -> FieldTable: ...
@overload
def decode_fields(data: bytes, pos: int, end: int, container: list[Any]) -> list[Any]: ...
def decode_fields(data: bytes, pos: int, end: int, container: FieldTable | list[Any]) -> FieldTable | list[Any]:
    """Fill container (a table or an array) with the values in data[pos:end].
    Iterative, not recursive: RabbitMQ delivers tables nested as deep as a frame allows."""
    root = container
    stack: list[tuple[FieldTable | list[Any], int]] = [(container, end)]
    try:
        while stack:
            container, end = stack[-1]
            if pos >= end:
                if pos > end:
                    raise FrameError("a value in a field table runs past the end of its table")
                stack.pop()
                continue
            if isinstance(container, dict):
                key_end = pos + 1 + data[pos]
                key = text_or_bytes(data[pos + 1:key_end])
                pos = key_end
            kind = data[pos]
            pos += 1
            number = FIELD_NUMBERS.get(kind)
            if number is not None:
                value = number.unpack_from(data, pos)[0]
                pos += number.size
            elif kind == LONG_STRING or kind == BYTES:
                size = LONG.unpack_from(data, pos)[0]
                value = data[pos + 4:pos + 4 + size]
                pos += 4 + size
                if kind == LONG_STRING:
                    value = text_or_bytes(value)
            elif kind == TABLE or kind == ARRAY:
                size = LONG.unpack_from(data, pos)[0]
                pos += 4
                if pos + size > end:
                    raise FrameError("a field table or array inside a table is longer than that table")
                value = {} if kind == TABLE else []
                stack.append((value, pos + size))
            elif kind == BOOLEAN:
                value = data[pos] != 0
                pos += 1
            elif kind == DECIMAL_NUMBER:
                places, digits = DECIMAL.unpack_from(data, pos)
                value = Decimal(digits).scaleb(-places)
                pos += DECIMAL.size
            elif kind == VOID:
                value = None
            else:
                raise FrameError("unknown field table type %r" % chr(kind))
            if pos > end:
                raise FrameError("a value in a field table runs past the end of its table")
            if isinstance(container, dict):
                container[key] = value
            else:
                container.append(value)
    except (IndexError, struct.error):
        raise FrameError("a field table ends in the middle of a value") from None
    return root


def encode_field_table(table: Mapping[str | bytes, Any], out: bytearray) -> None:
    """Append table to out as decode_fields reads it back, nested as deep as it is."""
    out += b"\0\0\0\0"
    # Per table or array being written: its items, where its bytes start,
    # and whether it is a table (items are name, value pairs).
    stack: list[tuple[Iterator[Any], int, bool]] = [(iter(table.items()), len(out), True)]
    while stack:
        items, start, is_table = stack[-1]
        item: Any = next(items, stack)  # the stack itself marks the end
        if item is stack:
            LONG.pack_into(out, start - 4, len(out) - start)
            stack.pop()
            continue
        if is_table:
            key, value = item
            key = key.encode("utf-8") if isinstance(key, str) else key
            if len(key) > 255:
                raise ValueError("field table name longer than 255 bytes: %r" % key[:20])
            out.append(len(key))
            out += key
        else:
            value = item
        if isinstance(value, dict):
            out += b"F\0\0\0\0"
            stack.append((iter(value.items()), len(out), True))
        elif isinstance(value, (list, tuple)):
            out += b"A\0\0\0\0"
            stack.append((iter(value), len(out), False))
        else:
            encode_scalar(value, out)


def encode_scalar(value: object, out: bytearray) -> None:
    if isinstance(value, bool):
        out += b"t\1" if value else b"t\0"
    elif isinstance(value, int):
        if -(2**31) <= value < 2**31:
            out += b"I" + FIELD_NUMBERS[ord("I")].pack(value)
        else:
            out += b"l" + FIELD_NUMBERS[ord("l")].pack(value)  # struct.error past 64 bits
    elif isinstance(value, float):
        out += b"d" + FIELD_NUMBERS[ord("d")].pack(value)
    elif isinstance(value, Decimal):
        sign, digits, exponent = value.as_tuple()
        if not isinstance(exponent, int):
            raise ValueError("cannot put %s in an AMQP field table" % value)
        number = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
        if exponent > 0:  # 1E+3: no negative places in AMQP, so 1000 with none
            number, exponent = number * 10**exponent, 0
        out += b"D" + DECIMAL.pack(-exponent, number)  # struct.error if it does not fit
    elif isinstance(value, (str, bytes)):
        if isinstance(value, str):
            value = value.encode("utf-8")
        out += b"S" + LONG.pack(len(value)) + value
    elif value is None:
        out += b"V"
    else:
        raise TypeError("cannot put %r in an AMQP field table" % (value,))


def pack_frame(channel: int, payload: Payload) -> bytes:
    """The bytes of one frame carrying a txamqp payload object."""
    if isinstance(payload, Body):
        data = payload.content
    else:
        buf = BytesIO()
        c = Codec(buf)
        if isinstance(payload, Method):
            encode_method(c, payload)
        elif isinstance(payload, Header):
            encode_header(c, payload)
        c.flush()
        data = buf.getvalue()
    kind = PAYLOAD_TYPES[type(payload)]
    return b"".join((FRAME_HEADER.pack(kind, channel, len(data)), data, b"\xce"))


def encode_method(c: Codec, payload: Payload) -> None:
    c.encode_short(payload.method.klass.id)
    c.encode_short(payload.method.id)
    for field, arg in zip(payload.method.fields, payload.args, strict=False):
        c.encode(field.type, arg)


def encode_header(c: Codec, payload: Payload) -> None:
    c.encode_short(payload.klass.id)
    c.encode_short(payload.weight)
    c.encode_longlong(payload.size)
    # One bit per property, 15 to a 16-bit word; its lowest bit: another word follows.
    present = [payload.properties.get(f.name) is not None for f in payload.klass.fields]
    words = [present[i:i + 15] for i in range(0, max(len(present), 1), 15)]
    for n, bits in enumerate(words):
        word = sum(1 << (15 - i) for i, bit in enumerate(bits) if bit)
        c.encode_short(word | (n < len(words) - 1))
    for field, is_present in zip(payload.klass.fields, present, strict=False):  # present: 15 a word
        if is_present:
            c.encode(field.type, payload.properties[field.name])
    unknown = set(payload.properties) - {f.name for f in payload.klass.fields}
    if unknown:
        raise ValueError("the spec file has no message property named %s" % ", ".join(sorted(unknown)))


def unpack_payload(spec: Spec, kind: int, data: bytes) -> Payload:
    """A txamqp payload object from the bytes of one frame's payload."""
    if kind == 3:
        return Body(data)  # bytes, always
    if kind == 8:
        return Heartbeat()
    c = Codec(BytesIO(data))
    what = "method frame" if kind == 1 else "content header"
    try:
        klass = known(spec.classes.byid, c.decode_short(), "%s for an unknown class" % what)
        if kind == 1:
            method = known(klass.methods.byid, c.decode_short(),
                           "method frame for an unknown method of class %s" % klass.name)
            what = "%s.%s method frame" % (klass.name, method.name)
            return Method(method, *[c.decode(f.type) for f in method.fields])
        header = ContentHeader(klass, c.decode_short(), c.decode_longlong(), {})
    except (codec.EOF, struct.error):
        raise FrameError("%s shorter than its fields" % what) from None
    # The body size is known: the message is delivered whatever its properties
    # hold; what cannot be decoded is left out and said in property_error.
    header.property_error = decode_properties(c, klass, header.properties)
    return header


def decode_properties(c: Codec, klass: SpecClass, properties: dict[str, Any]) -> str | None:
    """Read the property flags and the properties they announce into
    properties; return what could not be decoded, if anything."""
    problems = []
    name = "flags"
    try:
        present = []
        while True:
            # One bit per property, 15 to a 16-bit word; its lowest bit: another word follows.
            word = c.decode_short()
            present += [bool(word >> (15 - i) & 1) for i in range(15)]
            if not word & 1:
                break
        for field, is_present in zip(klass.fields, present, strict=False):  # present: 15 a word
            if not is_present:
                continue
            name = field.name
            if field.type == "table":
                # Its size comes first: a table that cannot be decoded is
                # skipped, and the properties after it are read.
                data = c.dec_bytes("!L")
                try:
                    properties[name] = decode_fields(data, 0, len(data), {})
                except FrameError as e:
                    problems.append("%s: %s" % (name, e))
            else:
                properties[name] = c.decode(field.type)
    except (codec.EOF, struct.error):
        problems.append("the content header ends inside property %s" % name)
    return "; ".join(problems) or None


def known(table: Mapping[int, Any], key: int, what: str) -> Any:
    try:
        return table[key]
    except KeyError:
        raise FrameError("%s (id %d)" % (what, key)) from None


