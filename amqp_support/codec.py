"""Frames in and out of txamqp 0.8.2, byte for byte.

txamqp's own codec sizes a str in characters but writes it in UTF-8 bytes,
decodes any UTF-8 body frame to str, and knows only four field-table types.
The functions here encode and decode the same payload objects txamqp uses
(txamqp.connection.Method, Header, Body, Heartbeat) with a codec that keeps
bytes as bytes and knows every field-table type RabbitMQ sends.
"""

import struct
from io import BytesIO

from txamqp import codec
from txamqp.connection import Body, Frame, Header, Heartbeat, Method

FRAME_END = 0xCE
FRAME_HEADER = struct.Struct("!BHI")  # type, channel, payload size
PAYLOADS = {1: Method, 2: Header, 3: Body, 8: Heartbeat}
PAYLOAD_TYPES = {Method: 1, Header: 2, Body: 3, Heartbeat: 8}


class FrameError(Exception):
    """The peer sent bytes that are not a valid AMQP frame."""


class Codec(codec.Codec):
    """txamqp's Codec, with strings sized in bytes and full field tables."""

    MAX_DEPTH = 64  # tables and arrays in tables: deeper is an attack, not data
    depth = 0

    def nested(self, data):
        """A codec for a table or array inside this one."""
        if self.depth >= self.MAX_DEPTH:
            raise FrameError("field tables nested more than %d deep" % self.MAX_DEPTH)
        inner = Codec(BytesIO(data))
        inner.depth = self.depth + 1
        return inner

    def enc_str(self, fmt, s):
        if isinstance(s, str):
            s = s.encode("utf-8")
        self.enc_bytes(fmt, s)

    def encode_table(self, table):
        buf = BytesIO()
        inner = Codec(buf)
        for key, value in table.items():
            inner.encode_shortstr(key)
            inner.encode_field_value(value)
        self.enc_bytes("!L", buf.getvalue())

    def encode_field_value(self, value):
        if isinstance(value, bool):
            self.write(b"t")
            self.encode_octet(int(value))
        elif isinstance(value, int):
            if -(2**31) <= value < 2**31:
                self.write(b"I")
                self.pack("!i", value)
            else:
                self.write(b"l")
                self.pack("!q", value)
        elif isinstance(value, float):
            self.write(b"d")
            self.pack("!d", value)
        elif isinstance(value, (str, bytes)):
            self.write(b"S")
            self.enc_str("!L", value)
        elif isinstance(value, dict):
            self.write(b"F")
            self.encode_table(value)
        elif isinstance(value, (list, tuple)):
            buf = BytesIO()
            inner = Codec(buf)
            for item in value:
                inner.encode_field_value(item)
            self.write(b"A")
            self.enc_bytes("!L", buf.getvalue())
        elif value is None:
            self.write(b"V")
        else:
            raise TypeError("cannot put %r in an AMQP field table" % (value,))

    def decode_table(self):
        data = self.dec_bytes("!L")
        inner = self.nested(data)
        table = {}
        while inner.nread < len(data):
            key = inner.decode_shortstr()
            table[key] = inner.decode_field_value()
        return table

    # The field types of AMQP 0-9-1 as RabbitMQ sends them (its errata).
    FIELD_FORMATS = {
        b"b": "!b", b"B": "!B", b"s": "!h", b"u": "!H", b"I": "!i", b"i": "!I",
        b"l": "!q", b"f": "!f", b"d": "!d", b"T": "!Q",
    }

    def decode_field_value(self):
        kind = self.read(1)
        if kind in self.FIELD_FORMATS:
            return self.unpack(self.FIELD_FORMATS[kind])
        if kind == b"t":
            return self.decode_octet() != 0
        if kind == b"S":
            return self.dec_str("!L")
        if kind == b"x":
            return self.dec_bytes("!L")
        if kind == b"F":
            return self.decode_table()
        if kind == b"A":
            data = self.dec_bytes("!L")
            inner = self.nested(data)
            items = []
            while inner.nread < len(data):
                items.append(inner.decode_field_value())
            return items
        if kind == b"D":
            places, digits = self.unpack("!Bi")
            return digits / 10**places
        if kind == b"V":
            return None
        raise FrameError("unknown field table type %r" % (kind,))


def pack_frame(channel, payload):
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


def encode_method(c, payload):
    c.encode_short(payload.method.klass.id)
    c.encode_short(payload.method.id)
    for field, arg in zip(payload.method.fields, payload.args):
        c.encode(field.type, arg)


def encode_header(c, payload):
    c.encode_short(payload.klass.id)
    c.encode_short(payload.weight)
    c.encode_longlong(payload.size)
    # One bit per property, 15 to a 16-bit word, whose lowest bit says
    # "another word follows".
    present = [payload.properties.get(f.name) is not None for f in payload.klass.fields]
    words = [present[i:i + 15] for i in range(0, max(len(present), 1), 15)]
    for n, bits in enumerate(words):
        word = sum(1 << (15 - i) for i, bit in enumerate(bits) if bit)
        c.encode_short(word | (n < len(words) - 1))
    for field, is_present in zip(payload.klass.fields, present):
        if is_present:
            c.encode(field.type, payload.properties[field.name])
    unknown = set(payload.properties) - {f.name for f in payload.klass.fields}
    if unknown:
        raise ValueError("the spec file has no message property named %s" % ", ".join(sorted(unknown)))


def unpack_payload(spec, kind, data):
    """A txamqp payload object from the bytes of one frame's payload."""
    if kind == 3:
        return Body(data)  # bytes, always
    if kind == 8:
        return Heartbeat()
    if kind not in (1, 2):
        raise FrameError("unknown frame type %d" % kind)
    c = Codec(BytesIO(data))
    what = "method frame" if kind == 1 else "content header"
    try:
        klass = known(spec.classes.byid, c.decode_short(), "%s for an unknown class" % what)
        if kind == 1:
            method = known(klass.methods.byid, c.decode_short(),
                           "method frame for an unknown method of class %s" % klass.name)
            what = "%s.%s method frame" % (klass.name, method.name)
            return Method(method, *[c.decode(f.type) for f in method.fields])
        weight, size = c.decode_short(), c.decode_longlong()
        present = []
        while True:
            word = c.decode_short()
            present += [bool(word >> (15 - i) & 1) for i in range(15)]
            if not word & 1:
                break
        properties = {f.name: c.decode(f.type)
                      for f, is_present in zip(klass.fields, present) if is_present}
        return Header(klass, weight, size, **properties)
    except (codec.EOF, struct.error):
        raise FrameError("%s shorter than its fields" % what) from None


def known(table, key, what):
    try:
        return table[key]
    except KeyError:
        raise FrameError("%s (id %d)" % (what, key)) from None


__all__ = ["Codec", "Frame", "FrameError", "pack_frame", "unpack_payload", "FRAME_END", "FRAME_HEADER", "PAYLOADS"]
