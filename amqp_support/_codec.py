"""Frames in and out, byte for byte, in place of txamqp 0.8.2's codec: its own
sizes a str in characters but writes it in UTF-8, decodes any UTF-8 body frame
to str, knows four field-table types and reads a bit after other fields from
an octet it read before. This one writes txamqp.connection's payload objects
(Method, Header, Body, Heartbeat) and reads a method frame into its method and
arguments (read_method), a content header into a ContentHeader (read_header);
it keeps bodies as bytes and reads every field-table type of AMQP 0-9-1 and RabbitMQ.

Each list of field types (a method's arguments, the properties a content header
has) is compiled once into steps that struct reads and writes at once: a run
of numbers, a run of bits, a string, a table. MessageFrames, speed only, also
keeps the frames of the last messages published, which differ from the next
only in the body; DeliveryFields, speed only, the parts of basic.deliver that
repeat from one delivery to the next.
"""

import struct
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar, overload

from txamqp.connection import Body, Header, Heartbeat, Method
from txamqp.content import Content

from amqp_support._errors import FrameError

# txamqp has no type information: its objects are Any, by these names.
Spec = Any  # txamqp.spec.Spec, a loaded spec file
SpecClass = Any  # txamqp.spec.Class
SpecMethod = Any  # txamqp.spec.Method
Payload = Any  # a frame's: txamqp.connection.Method, Header, Body or Heartbeat, or a ContentHeader
FieldTable = dict[Any, Any]  # decoded names are str (bytes if not UTF-8)
_T = TypeVar("_T")

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

NUMBERS = {"octet": "B", "short": "H", "long": "I", "longlong": "Q", "timestamp": "Q"}
SHORTSTR = None  # the step of a short string (the commonest, so the cheapest test)
Step = struct.Struct | int | str | None  # numbers | that many bits | "longstr" or "table" | SHORTSTR


class Fields:
    """How to write and read fields of these types, compiled into steps: a
    Struct for a run of numbers, an int for a run of bits (eight to an
    octet; a bit after other fields starts a new one), SHORTSTR, "longstr"
    or "table". merge=False: numbers one by one (to say which failed)."""

    def __init__(self, types: Sequence[str], merge: bool = True) -> None:
        self.steps: list[Step] = []
        self.counts: list[int] = []  # how many fields each step covers
        for t in types:
            last = self.steps[-1] if self.steps else SHORTSTR
            if t == "bit" and type(last) is int:
                self.steps[-1] = last + 1
            elif t in NUMBERS and merge and isinstance(last, struct.Struct):
                self.steps[-1] = struct.Struct(last.format + NUMBERS[t])
            else:
                if t not in NUMBERS and t not in ("bit", "shortstr", "longstr", "table"):
                    raise FrameError("a field of type %r, which AMQP does not have" % t)
                self.steps.append(1 if t == "bit" else struct.Struct("!" + NUMBERS[t]) if t in NUMBERS
                                  else SHORTSTR if t == "shortstr" else t)
                self.counts.append(0)
            self.counts[-1] += 1
        self.plan = list(zip(self.steps, self.counts, strict=True))

    def encode(self, values: Sequence[Any], out: bytearray) -> None:
        i = 0
        for step, count in self.plan:
            if isinstance(step, struct.Struct):
                out += step.pack(*values[i:i + count])
            elif type(step) is int:
                for start in range(i, i + count, 8):
                    out.append(sum(1 << n for n, bit in enumerate(values[start:min(start + 8, i + count)]) if bit))
            elif step == "table" or isinstance(values[i], dict):  # txamqp takes a table for a longstr too
                encode_field_table(values[i], out)
            else:
                value = values[i].encode("utf-8") if isinstance(values[i], str) else values[i]
                if step is SHORTSTR:
                    if len(value) > 255:
                        raise ValueError("a short string over 255 bytes: %r" % value[:20])
                    out.append(len(value))
                else:
                    out += LONG.pack(len(value))
                out += value
            i += count

    def decode(self, data: bytes, pos: int) -> tuple[list[Any], int]:
        """The values of the fields in data from pos, and the position after
        them; IndexError or struct.error if data ends first."""
        values: list[Any] = []
        for step, count in self.plan:
            if step is None:  # SHORTSTR
                end = pos + 1 + data[pos]
                if end > len(data):
                    raise IndexError(end)
                value = data[pos + 1:end]
                try:
                    values.append(value.decode())
                except UnicodeDecodeError:
                    values.append(value)
                pos = end
            elif type(step) is int:
                for n in range(count):
                    if not n % 8:
                        octet = data[pos]
                        pos += 1
                    values.append(octet >> n % 8 & 1 != 0)
            elif type(step) is str:
                end = pos + 4 + LONG.unpack_from(data, pos)[0]
                if end > len(data):
                    raise IndexError(end)
                values.append(text_or_bytes(data[pos + 4:end]) if step == "longstr"
                              else decode_fields(data, pos + 4, end, {}))
                pos = end
            else:  # a Struct
                values += step.unpack_from(data, pos)  # type: ignore[union-attr]
                pos += step.size  # type: ignore[union-attr]
        return values, pos


class DeliveryFields:
    """Speed only: basic.deliver's fields (consumer-tag, delivery-tag, redelivered,
    exchange, routing-key in both spec files). The consumer tag, exchange and routing
    key repeat from one delivery to the next: once decoded they are kept by their
    bytes, and only the delivery tag and redelivered are read anew. Fields of other
    types, or bytes not seen before: Fields.decode."""

    SHAPE = ["shortstr", "longlong", "bit", "shortstr", "shortstr"]
    KEEP = 64  # the most kept: forgotten all at once past it (a routing key per message, say)

    def __init__(self, types: Sequence[str]) -> None:
        self.fields = Fields(types)
        self.same_shape = list(types) == self.SHAPE
        self._seen: dict[tuple[bytes, bytes], tuple[str | bytes, str | bytes, str | bytes]] = {}

    def decode(self, data: bytes, pos: int, end: int) -> list[Any] | None:
        """The values of the fields in data from pos, which end by end; None if they do not fit."""
        if self.same_shape:
            tag = pos + 1 + data[pos]  # after the consumer tag, the delivery tag
            key = data[pos:tag], data[tag + 9:end]  # the consumer tag; the exchange and the routing key
            seen = self._seen.get(key)
            if seen is not None:  # the same bytes as a delivery before: all but the delivery tag fits
                return [seen[0], LONGLONG.unpack_from(data, tag)[0], data[tag + 8] & 1 != 0, seen[1], seen[2]]
        try:
            values, after = self.fields.decode(data, pos)
        except (IndexError, struct.error):
            return None
        if after > end:
            return None
        if self.same_shape:
            if len(self._seen) >= self.KEEP:
                self._seen.clear()
            self._seen[key] = (values[0], values[3], values[4])
        return values


Properties = tuple[list[str], list[str], Fields]  # the names and types of properties present, their Fields
_methods: dict[tuple[Spec, int], tuple[SpecMethod, Fields]] = {}  # by (spec, class id << 16 | method id)
_encoders: dict[SpecMethod, tuple[bytes, Fields]] = {}  # a method's class and method ids, and its Fields
_properties: dict[tuple[SpecClass, tuple[int, ...]], Properties] = {}  # by (class, flag words)
_flags: dict[tuple[SpecClass, tuple[str, ...]], tuple[bytes, Properties]] = {}  # by (class, names given)
# Speed only: received properties without a table (nothing a program can change in place),
# by (spec, the header's bytes but its weight and body size): the class and the properties.
_received: dict[tuple[Spec, bytes, bytes], tuple[SpecClass, dict[str, Any]]] = {}
CLASS_METHOD = struct.Struct("!I")  # class id << 16 | method id
HEADER_START = struct.Struct("!HHQH")  # class, weight, body size, the first property flags
SHORT = struct.Struct("!H")
BODY_SIZE = struct.Struct("!Q")


def present_properties(klass: SpecClass, words: tuple[int, ...]) -> Properties:
    """The names, types and Fields of the properties these flag words announce:
    one bit per property, 15 to a 16-bit word, whose lowest bit says another follows."""
    found = _properties.get((klass, words))
    if found is None:
        present = [f for i, f in enumerate(klass.fields)
                   if i // 15 < len(words) and words[i // 15] >> (15 - i % 15) & 1]
        types = [f.type for f in present]
        found = _properties[klass, words] = [f.name for f in present], types, Fields(types)
    return found


def property_flags(klass: SpecClass, names: tuple[str, ...]) -> tuple[bytes, Properties]:
    """The flag words for properties of these names, and what present_properties gives for them."""
    found = _flags.get((klass, names))
    if found is None:
        known = [f.name for f in klass.fields]
        unknown = set(names) - set(known)
        if unknown:
            raise ValueError("the spec file has no message property named %s" % ", ".join(sorted(unknown)))
        words = [0] * max(1, -(-len(known) // 15))
        for name in names:
            i = known.index(name)
            words[i // 15] |= 1 << (15 - i % 15)
        words = [word | (n < len(words) - 1) for n, word in enumerate(words)]
        found = _flags[klass, names] = (b"".join(SHORT.pack(w) for w in words),
                                        present_properties(klass, tuple(words)))
    return found


def pack_frame(channel: int, payload: Payload) -> bytes:
    """The bytes of one frame carrying a txamqp payload object."""
    kind = type(payload)
    if kind is Method:
        found = _encoders.get(payload.method)
        if found is None:
            method = payload.method
            found = _encoders[method] = (CLASS_METHOD.pack(method.klass.id << 16 | method.id),
                                         Fields([f.type for f in method.fields]))
        out = bytearray(found[0])
        found[1].encode(payload.args, out)
        data = bytes(out)
    elif kind is Header:
        props = payload.properties
        flags, (names, _, fields) = property_flags(payload.klass, tuple(n for n, v in props.items() if v is not None))
        out = bytearray(HEADER_START.pack(payload.klass.id, payload.weight, payload.size, 0)[:-2] + flags)
        fields.encode([props[name] for name in names], out)
        data = bytes(out)
    else:
        data = payload.content if kind is Body else b""  # Heartbeat: nothing
    return b"".join((FRAME_HEADER.pack(PAYLOAD_TYPES[kind], channel, len(data)), data, b"\xce"))


def read_method(spec: Spec, data: bytes) -> tuple[SpecMethod, list[Any]]:
    """The method and arguments of a method frame's payload."""
    method = None
    try:
        key = (spec, CLASS_METHOD.unpack_from(data)[0])
        found = _methods.get(key)
        if found is None:
            klass = known(spec.classes.byid, key[1] >> 16, "method frame for an unknown class")
            method = known(klass.methods.byid, key[1] & 0xFFFF,
                           "method frame for an unknown method of class %s" % klass.name)
            found = _methods[key] = (method, Fields([f.type for f in method.fields]))
        method = found[0]
        return method, found[1].decode(data, 4)[0]
    except (IndexError, struct.error):
        what = "method frame" if method is None else "%s.%s method frame" % (method.klass.name, method.name)
        raise FrameError("%s shorter than its fields" % what) from None


def read_header(spec: Spec, data: bytes) -> ContentHeader:
    """A content header frame's payload; its properties as far as they can be decoded."""
    key = (spec, data[:2], data[12:])  # the class, the properties' flags and values
    seen = _received.get(key)
    try:
        class_id, weight, size, word = HEADER_START.unpack_from(data)
        if seen is not None:  # Speed only: as a message's before (its own dict all the same)
            return ContentHeader(seen[0], weight, size, dict(seen[1]))
        klass = known(spec.classes.byid, class_id, "content header for an unknown class")
        words, pos = [word], HEADER_START.size
        while words[-1] & 1:
            words.append(SHORT.unpack_from(data, pos)[0])
            pos += 2
    except (IndexError, struct.error):
        raise FrameError("content header shorter than its fields") from None
    names, types, fields = present_properties(klass, tuple(words))
    header = ContentHeader(klass, weight, size, {})
    try:
        header.properties = dict(zip(names, fields.decode(data, pos)[0], strict=False))
    except (FrameError, IndexError, struct.error):
        # The body size is known: the message is delivered whatever its properties
        # hold; what cannot be decoded is left out and said in property_error.
        header.property_error = decode_properties(data, pos, names, types, header.properties)
    if header.property_error is None and "table" not in types and len(data) <= 512:  # no value that can change
        if len(_received) >= 64:
            _received.clear()
        _received[key] = (klass, dict(header.properties))
    return header


def decode_properties(data: bytes, pos: int, names: list[str], types: list[str],
                      properties: dict[str, Any]) -> str:
    """Decode what can be of these properties, one at a time (a run of bits
    at once), into properties; say what could not be."""
    problems, i = [], 0
    for step, count in Fields(types, merge=False).plan:
        try:
            if step == "table":  # its size comes first: skip it, read on
                end = pos + 4 + LONG.unpack_from(data, pos)[0]
                if end > len(data):
                    raise IndexError(end)
                try:
                    properties[names[i]] = decode_fields(data, pos + 4, end, {})
                except FrameError as e:
                    problems.append("%s: %s" % (names[i], e))
                pos = end
            else:
                values, pos = Fields(types[i:i + count]).decode(data, pos)
                properties.update(zip(names[i:i + count], values, strict=True))
        except (IndexError, struct.error):
            problems.append("the content header ends inside property %s" % names[i])
            break
        i += count
    return "; ".join(problems)


def known(table: Mapping[int, Any], key: int, what: str) -> Any:
    try:
        return table[key]
    except KeyError:
        raise FrameError("%s (id %d)" % (what, key)) from None


class MessageFrames:
    """Speed only: published messages' frames. A run of messages to the same
    exchange and routing key, with the same properties, differs only in its
    bodies, so the method frame is encoded once and the content header once
    but for its body size. A message with a field table among its properties,
    or a body over one frame, gives None: the caller then takes pack_frame."""

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
        try:
            if method_frame is None:
                method_frame = self.remember(self.methods, key, pack_frame(channel, Method(method, *args)))
            if header is None:
                frame = pack_frame(channel, Header(method.klass, 0, 0, **props))
                header = self.remember(self.headers, props_key, (frame[:11], frame[19:]))  # less the body size
        except (ValueError, TypeError, struct.error):  # said by the general way, when it fails too
            return None
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
LONGLONG = struct.Struct("!Q")
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


class LongLong(int):
    """An integer a field table carries as a signed 64-bit 'l', whatever its size (a stream offset)."""

    letter = b"l"


class Timestamp(int):
    """Whole seconds since 1970, UTC, that a field table carries as an AMQP timestamp, 'T'."""

    letter = b"T"


def encode_scalar(value: object, out: bytearray) -> None:
    if isinstance(value, bool):
        out += b"t\1" if value else b"t\0"
    elif isinstance(value, (LongLong, Timestamp)):  # the letter the value asks for
        out += value.letter + FIELD_NUMBERS[value.letter[0]].pack(value)
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
