"""A message body may hold anything; the consumer's line for it must not drive
the terminal, hide anything, or look like the line of another body.
Properties of command_line.text.printable over arbitrary bytes (hypothesis), judged with
unicodedata rather than with printable's own test, a decoder of the README's
escaping rule that reads each line back to the body's bytes, and one run of
the real consumer over a batch of generated bodies."""

import itertools
import re
import unicodedata

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from command_line.text import printable
import helpers

# Bidi controls: the embeddings, overrides and isolates (by their bidi class)
# and the three marks.
BIDI_CLASSES = {"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"}
BIDI_MARKS = {"\u061c", "\u200e", "\u200f"}


def unsafe(char):
    """Could this character move the cursor, start an escape sequence, break
    the line, reorder the text around it, or not show at all (or show as a
    plain space)? Controls, format characters (zero-width, bidi, tags, soft
    hyphen), surrogates, private use, unassigned, separators but the space."""
    return (unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
            or (unicodedata.category(char) == "Zs" and char != " ")
            or unicodedata.bidirectional(char) in BIDI_CLASSES or char in BIDI_MARKS)


ESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8})|([\\nrt]))")
SHORT = {"\\": b"\\", "n": b"\n", "r": b"\r", "t": b"\t"}


def unescape(line):
    """The bytes a printed line stands for, by the README's rule: \\\\, \\n, \\r,
    \\t; \\xNN the byte NN; \\uNNNN and \\UNNNNNNNN a character, in UTF-8;
    any other character, itself in UTF-8. A backslash that starts none of
    these cannot come from printable."""
    body, end = bytearray(), 0
    for m in ESCAPE.finditer(line):
        assert "\\" not in line[end:m.start()], "a lone backslash in %r" % line
        body += line[end:m.start()].encode("utf-8")
        byte, bmp, astral, short = m.groups()
        if byte:
            body.append(int(byte, 16))
        elif short:
            body += SHORT[short]
        else:
            body += chr(int(bmp or astral, 16)).encode("utf-8")
        end = m.end()
    assert "\\" not in line[end:], "a lone backslash in %r" % line
    return bytes(body + line[end:].encode("utf-8"))


def is_subsequence(needle, haystack):
    it = iter(haystack)
    return all(char in it for char in needle)


# Bytes that hit the interesting cases more often than uniform bytes would:
# escape sequences, C1 controls raw and UTF-8 encoded, bidi overrides, line
# separators, broken UTF-8, mixed with arbitrary bytes and text.
NASTY = [b"\x1b[2J", b"\x1b]0;title\x07", b"\x1b]8;;http://x\x1b\\", b"\x9b31m", b"\xc2\x9b6n",
         b"\x1bP", b"\x7f", b"\r", b"\n", b"\x08", b"\x00", "\u202e".encode(), "\u2066".encode(),
         "\u2028".encode(), "\u061c".encode(), b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc3", b"\\x1b",
         b"\\", b"\\\\", b"\\u0085", "\u0085".encode(), b"\x85", "\u200b\ufeff\u00ad\u2060".encode(),
         "\U000e0041\ue000\u0378\u00a0".encode()]
# Controls, format characters (the bidi controls among them, zero-width ones,
# tags), separators, private use and unassigned code points.
invisible = st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Zs", "Co", "Cn"])
bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(lambda t: t.encode("utf-8")),
    st.lists(st.one_of(st.sampled_from(NASTY), st.binary(max_size=8),
                       st.text(max_size=8).map(lambda t: t.encode("utf-8")),
                       st.text(invisible, max_size=4).map(lambda t: t.encode("utf-8"))),
             max_size=20).map(b"".join),
)


@given(bodies)
@example(bytes(range(256)))
@example("\u202eevil\u202c \U0001f600 caf\u00e9".encode() + b"\xff")
@settings(max_examples=1000)
def test_printable_is_one_safe_line_keeping_the_text(body):
    text = printable(body)
    assert isinstance(text, str)
    text.encode("utf-8")  # printable to a UTF-8 terminal: no lone surrogates
    assert len(text.splitlines()) <= 1 and "\n" not in text
    assert not [c for c in text if unsafe(c)]
    # Every character of the valid UTF-8 in the body that is safe to show is
    # shown, in order (invalid bytes and unsafe characters become escapes).
    kept = [c for c in body.decode("utf-8", "ignore") if not unsafe(c)]
    assert is_subsequence(kept, text)
    # Reversible, hence two bodies never print as the same line.
    assert unescape(text) == body


@given(st.text())
@settings(max_examples=500)
def test_safe_text_is_shown_unchanged(text):
    # Text with nothing unsafe in it and no backslash is printed exactly as it is.
    safe = "".join(c for c in text if not unsafe(c) and c != "\\")
    assert printable(safe.encode("utf-8")) == safe


# --- the real consumer ---------------------------------------------------------

_batches = itertools.count(1)


@given(st.lists(bodies, min_size=20, max_size=40))
@settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow])
@example([bytes(range(256)), b"\x1b[2J\x1b[H", "\u202eabc".encode(), b"a\rb\nc", b""])
def test_consumer_prints_one_safe_line_per_body(broker, batch):
    queue = "q.hostile-bodies.%d" % next(_batches)
    helpers.declare(broker.url, "", queue, queue)
    try:
        for body in batch:
            helpers.publish(broker.url, "", queue, body)
        got = helpers.run_script("consumer.py", "amqp0-9-1.xml", "--exchange", "", "--queue", queue,
                                 "--count", len(batch), url=broker.url)
        assert got.returncode == 0, got.stderr
        # No byte on stdout below 0x20 except the line ends, no DEL.
        assert not [b for b in got.stdout if (b < 0x20 and b != 0x0A) or b == 0x7F]
        lines = got.stdout.decode("utf-8").split("\n")
        assert lines.pop() == ""
        assert len(lines) == len(batch)  # one line per message, in order
        for body, line in zip(batch, lines, strict=True):
            assert not [c for c in line if unsafe(c)]
            assert line == "Received: %s from channel #1" % printable(body)
            assert unescape(line[len("Received: "):-len(" from channel #1")]) == body
    finally:
        helpers.delete(broker.url, queue=queue)


@pytest.mark.parametrize("body, shown", [
    (b"\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    ("\u202egnp.exe".encode(), "\\u202egnp.exe"),
    (b"one\r\ntwo", "one\\r\\ntwo"),
    ("\u2028".encode(), "\\u2028"),
    (b"\xc2\x9b2J", "\\u009b2J"),  # C1 CSI, encoded in UTF-8: a character
    (b"\x9b2J", "\\x9b2J"),  # the same byte raw: invalid UTF-8
    (b"\xed\xa0\x80", "\\xed\\xa0\\x80"),  # a UTF-8 encoded surrogate: invalid
    (b"\\x1b[31m", "\\\\x1b[31m"),  # the text, not the ESC
    (b"C:\\dir", "C:\\\\dir"),
    ("\u0085".encode(), "\\u0085"),  # NEL, the character
    (b"\x85", "\\x85"),  # the byte alone: invalid UTF-8
    ("a\u200bb".encode(), "a\\u200bb"),  # zero-width space
    ("\ufeffbom".encode(), "\\ufeffbom"),
    ("soft\u00adhyphen".encode(), "soft\\u00adhyphen"),
    ("\u2060\u206a\u206f".encode(), "\\u2060\\u206a\\u206f"),
    ("\U000e0041\U000e007f".encode(), "\\U000e0041\\U000e007f"),  # tag characters
    ("\ue000\U0010fffd".encode(), "\\ue000\\U0010fffd"),  # private use
    ("\u0378\uffff".encode(), "\\u0378\\uffff"),  # unassigned, a noncharacter
    ("no\u00a0break".encode(), "no\\u00a0break"),  # looks like a space
    ("caf\u00e9 \u6d88\u606f \U0001f389".encode(), "caf\u00e9 \u6d88\u606f \U0001f389"),
])
def test_printable_examples(body, shown):
    assert printable(body) == shown
