"""Speed only: the frames of ordinary messages without txamqp's codec.

Each function gives exactly what amqp_support._codec gives, or None, and the caller then
takes _codec's general way (which also says what is wrong with a bad frame); tests/test_frame_fuzz.py
checks both agree. The fields of every message's methods and properties (basic.publish,
basic.deliver, basic.ack, content headers) are numbers, short strings and one run of bits:
struct does those directly; tables, long strings, odd values go the general way.
"""

import struct
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from txamqp import codec
from txamqp.connection import Body, Header, Method
from txamqp.content import Content

from amqp_support._codec import FRAME_HEADER, PAYLOAD_TYPES, ContentHeader, Payload, Spec, SpecClass, SpecMethod
from amqp_support._codec import pack_frame as pack_frame_slowly
from amqp_support._codec import unpack_payload as unpack_payload_slowly

NUMBERS = {"octet": struct.Struct("!B"), "short": struct.Struct("!H"),
           "long": struct.Struct("!I"), "longlong": struct.Struct("!Q")}
SIMPLE = set(NUMBERS) | {"shortstr", "bit"}
CLASS_METHOD = struct.Struct("!HH")
HEADER_START = struct.Struct("!HHQH")  # class, weight, body size, first property flags
Step = struct.Struct | int | None  # how decode_fast reads fields: see decode_steps
_T = TypeVar("_T")


def simple_types(fields: Iterable[Any]) -> list[str] | None:
    """The field types, if the fast path can handle them, else None."""
    types = [f.type for f in fields]
    bits = [i for i, t in enumerate(types) if t == "bit"]
    if not set(types) <= SIMPLE or len(bits) > 8 or (bits and bits[-1] - bits[0] != len(bits) - 1):
        return None
    return types


def encode_simple(types: list[str], values: Sequence[Any], out: bytearray) -> None:
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


_method_types: dict[SpecMethod, list[str] | None] = {}  # method: its simple field types, or None


def method_types(method: SpecMethod) -> list[str] | None:
    try:
        return _method_types[method]
    except KeyError:
        types = _method_types[method] = simple_types(method.fields)
        return types


# (class, property flags): [(name, type) of each present property], or None
_header_fields: dict[tuple[SpecClass, int], list[tuple[str, str]] | None] = {}


def header_fields(klass: SpecClass, flags: int) -> list[tuple[str, str]] | None:
    key = (klass, flags)
    try:
        return _header_fields[key]
    except KeyError:
        present = [f for i, f in enumerate(list(klass.fields)[:15]) if flags >> (15 - i) & 1]
        ok = not flags & 1 and simple_types(present) is not None and all(f.type != "bit" for f in present)
        fields = _header_fields[key] = [(f.name, f.type) for f in present] if ok else None
        return fields


_property_bits: dict[SpecClass, dict[str, int]] = {}  # class: {property name: its flag bit}, of the first 15


def property_bits(klass: SpecClass) -> dict[str, int]:
    try:
        return _property_bits[klass]
    except KeyError:
        bits = _property_bits[klass] = {f.name: 1 << (15 - i) for i, f in enumerate(list(klass.fields)[:15])}
        return bits


def fast_payload(payload: Payload) -> bytes | None:
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


class MessageFrames:
    """Published messages' frames, the quick way: a run of messages to the same
    exchange and routing key, with the same properties, differs only in its
    bodies, so the method frame is encoded once and the content header once
    but for its body size. Anything else (a field table among the properties,
    a body over one frame) gives None: the caller then takes pack_frame."""

    LIMIT = 64  # kinds of message remembered at most (a program rarely has more than one)

    def __init__(self, frame_max: int) -> None:
        self.body_max = frame_max - 8  # a frame's payload: its size less 7 header bytes and the end byte
        self.methods: dict[tuple[int, SpecMethod, tuple[Any, ...]], bytes] = {}  # (channel, method, args): its frame
        # (channel, class, properties): (the header frame up to the body size, after it)
        self.headers: dict[tuple[int, SpecClass, tuple[tuple[str, Any], ...]], tuple[bytes, bytes]] = {}

    def message(self, channel: int, method: SpecMethod, args: tuple[Any, ...], content: Content) -> bytes | None:
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

    def remember(self, cache: dict[Any, _T], key: object, value: _T) -> _T:
        if len(cache) >= self.LIMIT:
            cache.clear()
        cache[key] = value
        return value


BODY_SIZE = struct.Struct("!Q")


# The steps that decode a method's fields, by class id << 16 | method id, and a
# header's properties (by names of those present), by property flags.
_fast_methods: dict[tuple[Spec, int], tuple[SpecMethod, list[Step]]] = {}
_fast_headers: dict[tuple[SpecClass, int], tuple[list[str], list[Step]]] = {}
METHOD_KEY = struct.Struct("!I")  # class id and method id, as one number


def decode_steps(types: list[str]) -> list[Step]:
    """How decode_fast reads fields of these (simple) types: a Struct for a
    run of numbers (read at once), None for a short string, an int for that
    many bits in one octet."""
    steps: list[Step] = []
    for t in types:
        last = steps[-1] if steps else None
        if t == "shortstr":
            steps.append(None)
        elif t == "bit":
            if type(last) is int:
                steps[-1] = last + 1
            else:
                steps.append(1)
        elif isinstance(last, struct.Struct):
            steps[-1] = struct.Struct(last.format + NUMBERS[t].format[1:])
        else:
            steps.append(NUMBERS[t])
    return steps


def decode_fast(steps: list[Step], data: bytes, offset: int) -> tuple[list[Any], int]:
    """The values of the fields that decode_steps made steps for, and the offset after them."""
    values: list[Any] = []
    value: str | bytes  # a short string: str if it is UTF-8
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
        elif isinstance(step, int):
            bits = data[offset]
            offset += 1
            for i in range(step):
                values.append(bits >> i & 1 != 0)
        else:
            values += step.unpack_from(data, offset)
            offset += step.size
    return values, offset


def fast_unpack(spec: Spec, kind: int, data: bytes) -> Payload | None:
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
        return ContentHeader(klass, weight, size, dict(zip(names, values, strict=True)))
    except (KeyError, IndexError, struct.error, codec.EOF):
        return None


def pack_frame(channel: int, payload: Payload) -> bytes:
    """The bytes of one frame carrying a txamqp payload object."""
    if type(payload) is Body or (data := fast_payload(payload)) is None:
        return pack_frame_slowly(channel, payload)
    return b"".join((FRAME_HEADER.pack(PAYLOAD_TYPES[type(payload)], channel, len(data)), data, b"\xce"))


def unpack_payload(spec: Spec, kind: int, data: bytes) -> Payload:
    """A txamqp payload object from the bytes of one frame's payload."""
    if kind in (1, 2) and (payload := fast_unpack(spec, kind, data)) is not None:
        return payload
    return unpack_payload_slowly(spec, kind, data)
