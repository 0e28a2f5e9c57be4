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
from txamqp.connection import Body, Header, Heartbeat, Method

from amqp_support.errors import FrameError

FRAME_END = 0xCE
FRAME_HEADER = struct.Struct("!BHI")  # type, channel, payload size
PAYLOADS = {1: Method, 2: Header, 3: Body, 8: Heartbeat}
PAYLOAD_TYPES = {Method: 1, Header: 2, Body: 3, Heartbeat: 8}


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


# A fast path for the frames of every message (basic.publish, basic.deliver,
# basic.ack and their content headers): methods and properties whose fields
# are all numbers, short strings and one run of bits are encoded and decoded
# with struct directly; anything else (tables, long strings, odd values)
# goes through the Codec above, which also reports what is wrong.

NUMBERS = {"octet": struct.Struct("!B"), "short": struct.Struct("!H"),
           "long": struct.Struct("!I"), "longlong": struct.Struct("!Q")}
SIMPLE = set(NUMBERS) | {"shortstr", "bit"}
CLASS_METHOD = struct.Struct("!HH")
HEADER_START = struct.Struct("!HHQH")  # class, weight, body size, first property flags


def simple_types(fields):
    """The field types, if the fast path can handle them, else None."""
    types = [f.type for f in fields]
    bits = [i for i, t in enumerate(types) if t == "bit"]
    if not set(types) <= SIMPLE or len(bits) > 8 or (bits and bits[-1] - bits[0] != len(bits) - 1):
        return None
    return types


def encode_simple(types, values, out):
    bits = nbits = 0
    for t, v in zip(types, values):
        if t == "bit":
            bits |= bool(v) << nbits
            nbits += 1
            continue
        if nbits:
            out.append(bits)
            nbits = 0
        if t == "shortstr":
            if isinstance(v, str):
                v = v.encode("utf-8")
            if len(v) > 255 or not isinstance(v, bytes):
                raise ValueError(v)
            out.append(len(v))
            out += v
        else:
            out += NUMBERS[t].pack(v)
    if nbits:
        out.append(bits)


def decode_simple(types, data, offset):
    values = []
    nbits = 8
    for t in types:
        if t == "bit":
            if nbits == 8:
                bits, nbits = data[offset], 0
                offset += 1
            values.append(bits >> nbits & 1 != 0)
            nbits += 1
            continue
        nbits = 8
        if t == "shortstr":
            end = offset + 1 + data[offset]
            if end > len(data):
                raise codec.EOF()
            value = data[offset + 1:end]
            try:
                value = value.decode()
            except UnicodeDecodeError:
                pass
            values.append(value)
            offset = end
        else:
            number = NUMBERS[t]
            values.append(number.unpack_from(data, offset)[0])
            offset += number.size
    return values, offset


_method_types = {}  # method: its simple field types, or None


def method_types(method):
    try:
        return _method_types[method]
    except KeyError:
        types = _method_types[method] = simple_types(method.fields)
        return types


_header_fields = {}  # (class, property flags): [(name, type) of each present property] or None


def header_fields(klass, flags):
    key = (klass, flags)
    try:
        return _header_fields[key]
    except KeyError:
        present = [f for i, f in enumerate(list(klass.fields)[:15]) if flags >> (15 - i) & 1]
        ok = not flags & 1 and simple_types(present) is not None and all(f.type != "bit" for f in present)
        fields = _header_fields[key] = [(f.name, f.type) for f in present] if ok else None
        return fields


_property_bits = {}  # class: {property name: its flag bit}, for the first 15 properties


def property_bits(klass):
    try:
        return _property_bits[klass]
    except KeyError:
        bits = _property_bits[klass] = {f.name: 1 << (15 - i) for i, f in enumerate(list(klass.fields)[:15])}
        return bits


def fast_payload(payload):
    """The bytes of a method or header payload, or None to take the slow way."""
    out = bytearray()
    try:
        if isinstance(payload, Method):
            types = method_types(payload.method)
            if types is None:
                return None
            out += CLASS_METHOD.pack(payload.method.klass.id, payload.method.id)
            encode_simple(types, payload.args, out)
        else:
            props = payload.properties
            klass = payload.klass
            bit = property_bits(klass)
            if any(props[name] is None or name not in bit for name in props):
                return None
            flags = sum(bit[name] for name in props)
            fields = header_fields(klass, flags)
            if fields is None:
                return None
            out += HEADER_START.pack(klass.id, payload.weight, payload.size, flags)
            encode_simple([t for _, t in fields], [props[name] for name, _ in fields], out)
    except (ValueError, TypeError, AttributeError, struct.error):
        return None
    return bytes(out)


def pack_frame(channel, payload):
    """The bytes of one frame carrying a txamqp payload object."""
    if isinstance(payload, Body):
        data = payload.content
    elif (data := fast_payload(payload)) is not None:
        pass
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
    fast = fast_unpack(spec, kind, data)
    if fast is not None:
        return fast
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


def fast_unpack(spec, kind, data):
    """The payload, or None to take the slow way (which also names errors)."""
    try:
        if kind == 1:
            class_id, method_id = CLASS_METHOD.unpack_from(data)
            method = spec.classes.byid[class_id].methods.byid[method_id]
            types = method_types(method)
            if types is None:
                return None
            args, _ = decode_simple(types, data, 4)
            return Method(method, *args)
        class_id, weight, size, flags = HEADER_START.unpack_from(data)
        klass = spec.classes.byid[class_id]
        fields = header_fields(klass, flags)
        if fields is None:
            return None
        values, _ = decode_simple([t for _, t in fields], data, HEADER_START.size)
        return Header(klass, weight, size, **{name: v for (name, _), v in zip(fields, values)})
    except (KeyError, IndexError, struct.error, codec.EOF):
        return None


def known(table, key, what):
    try:
        return table[key]
    except KeyError:
        raise FrameError("%s (id %d)" % (what, key)) from None


__all__ = ["Codec", "pack_frame", "unpack_payload", "FRAME_END", "FRAME_HEADER", "PAYLOADS"]
