"""Frames in and out of txamqp 0.8.2, byte for byte.

txamqp's own codec sizes a str in characters but writes it in UTF-8 bytes,
decodes any UTF-8 body frame to str, and knows only four field-table types.
The functions here encode and decode the same payload objects txamqp uses
(txamqp.connection.Method, Header, Body, Heartbeat) with a codec that keeps
bytes as bytes and reads every field-table type of AMQP 0-9-1 and RabbitMQ.
"""

import struct
from decimal import Decimal
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

    def read(self, n):
        # Bits share an octet only with the bits next to them: what is left
        # of the last one is not for a bit after other fields (txamqp's
        # decode_bit would take it).
        self.incoming_bits.clear()
        data = super().read(n)
        if len(data) < n:  # txamqp's returns what is there
            raise codec.EOF()
        return data

    def enc_str(self, fmt, s):
        if isinstance(s, str):
            s = s.encode("utf-8")
        self.enc_bytes(fmt, s)

    def encode_table(self, table):
        out = bytearray()
        encode_field_table(table, out)
        self.write(bytes(out))

    def decode_table(self):
        size = self.unpack("!L")
        data = self.read(size)
        if len(data) < size:
            raise codec.EOF()
        return decode_fields(data, 0, size, {})


# Field tables. Each value is a type letter and its bytes. AMQP 0-9-1's
# specification and RabbitMQ's errata give two lists of letters, and clients
# write letters from both, so every letter of either list is read (brokers
# pass headers on as they were published). Where the lists disagree, the
# letter means what RabbitMQ and the common clients (pika, py-amqp, amqplib)
# make of it: 's' is a signed 16-bit integer (a short string in the
# specification, which nobody writes in tables) and 'l' a signed 64-bit
# integer (unsigned in the specification); 'L' (signed 64-bit, from the
# specification) is what py-amqp writes for large integers, 'U' (signed
# 16-bit) is the specification's, and 'x' (bytes) RabbitMQ's.
FIELD_NUMBERS = {ord(letter): struct.Struct(fmt) for letter, fmt in {
    "b": "!b", "B": "!B", "U": "!h", "u": "!H", "s": "!h", "I": "!i", "i": "!I",
    "L": "!q", "l": "!q", "f": "!f", "d": "!d", "T": "!Q",  # T: seconds since 1970, UTC
}.items()}
LONG = struct.Struct("!I")
DECIMAL = struct.Struct("!Bi")  # places, then the digits as a signed 32-bit integer
LONG_STRING, BYTES, TABLE, ARRAY, BOOLEAN, DECIMAL_NUMBER, VOID = b"SxFAtDV"


def text_or_bytes(data):
    """Strings as txamqp gives them: str when they are UTF-8, else bytes."""
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data


def decode_fields(data, pos, end, container):
    """Fill container (a dict for a field table, a list for an array) with the
    values in data[pos:end]. Iterative, not recursive: a table may nest as deep
    as its frame has room for, and RabbitMQ delivers such tables."""
    root = container
    stack = [(container, end)]
    try:
        while stack:
            container, end = stack[-1]
            if pos >= end:
                if pos > end:
                    raise FrameError("a value in a field table runs past the end of its table")
                stack.pop()
                continue
            if type(container) is dict:
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
            if type(container) is dict:
                container[key] = value
            else:
                container.append(value)
    except (IndexError, struct.error):
        raise FrameError("a field table ends in the middle of a value") from None
    return root


def encode_field_table(table, out):
    """Append the field table (a dict) to out (a bytearray): what
    decode_fields reads back, nesting as deep as the value does."""
    out += b"\0\0\0\0"
    # Per table or array being written: its items, where its bytes start,
    # and whether it is a table (items are name, value pairs).
    stack = [(iter(table.items()), len(out), True)]
    while stack:
        items, start, is_table = stack[-1]
        item = next(items, stack)  # the stack itself marks the end
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


def encode_scalar(value, out):
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
    for t, v in zip(types, values, strict=True):
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
    for field, arg in zip(payload.method.fields, payload.args, strict=False):
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
    for field, is_present in zip(payload.klass.fields, present, strict=False):  # present: 15 a word
        if is_present:
            c.encode(field.type, payload.properties[field.name])
    unknown = set(payload.properties) - {f.name for f in payload.klass.fields}
    if unknown:
        raise ValueError("the spec file has no message property named %s" % ", ".join(sorted(unknown)))


class MessageFrames:
    """The frames of published messages, as bytes, the quick way: a run of
    messages to the same exchange and routing key, with the same properties,
    differs only in its bodies. So the method frame is encoded once, and the
    content header once but for its body size; per message, only the body
    frame's 7 bytes and the size are new. Anything out of the ordinary (a
    field table among the properties, a body longer than one frame) gives
    None: the caller takes the general way, pack_frame."""

    LIMIT = 64  # kinds of message remembered at most (a program rarely has more than one)

    def __init__(self, frame_max):
        self.body_max = frame_max - 8  # a frame's payload: its size less 7 header bytes and the end byte
        self.methods = {}  # (channel, method, args): the method frame
        self.headers = {}  # (channel, class, properties): (the header frame up to the body size, after it)

    def message(self, channel, method, args, content):
        """The bytes of the method, header and body frames of one message, or None."""
        body = content.body
        size = len(body)
        if size > self.body_max or content.children or isinstance(body, str):
            return None
        try:
            key = (channel, method, args)
            method_frame = self.methods.get(key)
            props = content.properties
            props_key = (channel, method.klass, tuple(props.items()))
            header = self.headers.get(props_key)
        except TypeError:  # a value that cannot be a key: a field table, a list
            return None
        if method_frame is None:
            data = fast_payload(Method(method, *args))
            if data is None:
                return None
            method_frame = self.remember(self.methods, key, FRAME_HEADER.pack(1, channel, len(data)) + data + b"\xce")
        if header is None:
            data = fast_payload(Header(method.klass, 0, 0, **props))
            if data is None:
                return None
            start = FRAME_HEADER.pack(2, channel, len(data)) + data[:4]  # class id, weight
            header = self.remember(self.headers, props_key, (start, data[12:] + b"\xce"))
        start, rest = header
        if not size:
            return b"".join((method_frame, start, BODY_SIZE.pack(0), rest))
        return b"".join((method_frame, start, BODY_SIZE.pack(size), rest,
                         FRAME_HEADER.pack(3, channel, size), body, b"\xce"))

    def remember(self, cache, key, value):
        if len(cache) >= self.LIMIT:
            cache.clear()
        cache[key] = value
        return value


BODY_SIZE = struct.Struct("!Q")


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
        header = Header(klass, c.decode_short(), c.decode_longlong())
    except (codec.EOF, struct.error):
        raise FrameError("%s shorter than its fields" % what) from None
    # The body size is known: whatever the properties hold, the message can
    # be delivered. What cannot be decoded is left out and said in
    # header.property_error, for the consumer to report.
    header.property_error = decode_properties(c, klass, header.properties)
    return header


def decode_properties(c, klass, properties):
    """Read the property flags and the properties they announce into
    properties; return None, or what could not be decoded."""
    problems = []
    name = "flags"
    try:
        present = []
        while True:
            # One bit per property, 15 to a 16-bit word, whose lowest bit
            # says "another word follows".
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


_fast_methods = {}  # (spec, class id << 16 | method id): (method, the steps that decode its fields)
_fast_headers = {}  # (class, property flags): (names of the present properties, the steps that decode them)
METHOD_KEY = struct.Struct("!I")  # class id and method id, as one number


def decode_steps(types):
    """How decode_fast reads fields of these (simple) types: a Struct for a
    run of numbers (read at once), None for a short string, an int for that
    many bits in one octet."""
    steps = []
    for t in types:
        last = steps[-1] if steps else None
        if t == "shortstr":
            steps.append(None)
        elif t == "bit":
            if type(last) is int:
                steps[-1] += 1
            else:
                steps.append(1)
        elif isinstance(last, struct.Struct):
            steps[-1] = struct.Struct(last.format + NUMBERS[t].format[1:])
        else:
            steps.append(NUMBERS[t])
    return steps


def decode_fast(steps, data, offset):
    """The values of the fields that decode_steps made steps for, and the offset after them."""
    values = []
    for step in steps:
        if step is None:
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
        elif type(step) is int:
            bits = data[offset]
            offset += 1
            for i in range(step):
                values.append(bits >> i & 1 != 0)
        else:
            values += step.unpack_from(data, offset)
            offset += step.size
    return values, offset


def fast_unpack(spec, kind, data):
    """The payload, or None to take the slow way (which also names errors)."""
    try:
        if kind == 1:
            key = (spec, METHOD_KEY.unpack_from(data)[0])
            found = _fast_methods.get(key)
            if found is None:
                method = spec.classes.byid[key[1] >> 16].methods.byid[key[1] & 0xFFFF]
                types = method_types(method)
                if types is None:
                    return None
                found = _fast_methods[key] = (method, decode_steps(types))
            method, steps = found
            args, _ = decode_fast(steps, data, 4)
            return Method(method, *args)
        class_id, weight, size, flags = HEADER_START.unpack_from(data)
        klass = spec.classes.byid[class_id]
        found = _fast_headers.get((klass, flags))
        if found is None:
            fields = header_fields(klass, flags)
            if fields is None:
                return None
            found = _fast_headers[klass, flags] = ([n for n, _ in fields], decode_steps([t for _, t in fields]))
        names, steps = found
        values, _ = decode_fast(steps, data, HEADER_START.size)
        header = Header(klass, weight, size)
        header.properties = dict(zip(names, values, strict=True))
        header.property_error = None
        return header
    except (KeyError, IndexError, struct.error, codec.EOF):
        return None


def known(table, key, what):
    try:
        return table[key]
    except KeyError:
        raise FrameError("%s (id %d)" % (what, key)) from None


__all__ = ["Codec", "MessageFrames", "pack_frame", "unpack_payload", "FRAME_END", "FRAME_HEADER", "PAYLOADS"]
