"""The same escaping as common.printable, for the benchmark's other consumers
(pika, aio-pika), so that every consumer does the same work per message
(common itself is not imported: it would import Twisted)."""

SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(char):
    code = ord(char)
    if char in SHORT_ESCAPES:
        return SHORT_ESCAPES[char]
    if char.isprintable():
        return char
    if code < 0x80 or 0xDC80 <= code <= 0xDCFF:
        return "\\x%02x" % (code & 0xFF)
    return "\\u%04x" % code if code <= 0xFFFF else "\\U%08x" % code


class Escapes(dict):
    def __missing__(self, code):
        self[code] = escaped = escape(chr(code))
        return escaped


def printable(body):
    text = body.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text
    return text.translate(Escapes())
