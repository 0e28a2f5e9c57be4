"""Message text made safe to show on one line: a body as the consumer prints
it (printable), and any text as an error message quotes it (shorten)."""

import re


def printable(body: bytes) -> str:
    """A message body as one line of text that cannot drive a terminal nor
    hide anything: UTF-8 decoded, with every character that str.isprintable()
    rejects escaped, and the backslash too, so the line reads back to the
    exact bytes (the rule is in the README, "What each script does")."""
    # Bytes that are not UTF-8 become U+DC80..U+DCFF, written \xNN below.
    text = body.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:  # the common case, at C speed
        return text
    return text.translate(Escapes())


class Escapes(dict[int, str]):
    """str.translate's table for one body: each character's escape, worked out the first time it occurs."""

    def __missing__(self, code: int) -> str:
        self[code] = escaped = escape(chr(code))
        return escaped


SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(char: str) -> str:
    if char in SHORT_ESCAPES:
        return SHORT_ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x80:  # an ASCII control: the same byte in UTF-8
        return "\\x%02x" % code
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
        return "\\x%02x" % (code - 0xDC00)
    return "\\u%04x" % code if code <= 0xFFFF else "\\U%08x" % code


def shorten(text: str, limit: int = 300, word: int = 60) -> str:
    """text made one short line for an error message: characters that are not
    printable shown as Python escapes, each word and the whole cut to a limit."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    text = re.sub(r"\S{%d,}" % (word + 1), lambda m: m.group()[:word - 3] + "...", text)
    return text if len(text) <= limit else text[:limit - 3] + "..."
