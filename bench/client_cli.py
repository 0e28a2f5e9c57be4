"""What the benchmark's own clients share (pika_*.py, aio_pika_*.py,
broker_limit.py, raw_consumer.py): producer.py's and consumer.py's command
line (the options the bench passes), the bodies a producer sends, and the
line a consumer prints for a message.

Standard library only, and nothing of the project: each client stands for
what a user would write instead of our scripts, and the project's modules
may change names under it. The line printed for a body follows the rule
docs/exchanges-and-messages.md gives ("Message bodies"), written out here.
"""

import argparse
import sys


def parser(doc, producer=False, consumer=False, ack=None):
    """URL, then MESSAGE|- for a producer, --count and --prefetch for a
    consumer, --ack multiple|each if ack names its default, and the names
    (producer.py's and consumer.py's defaults)."""
    out = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    out.add_argument("url")
    if producer:
        out.add_argument("message", help='the body, or "-": each line of stdin is one')
    if consumer:
        out.add_argument("--count", type=int, required=True, help="stop after this many messages")
        out.add_argument("--prefetch", type=int, default=100)
        out.add_argument("--consumer-tag", default="test_consumer_tag")
    if ack:
        out.add_argument("--ack", choices=["multiple", "each"], default=ack,
                         help="one basic.ack (multiple) for the messages that came together, or one per message")
    out.add_argument("--exchange", default="test_message_exchange")
    out.add_argument("--queue", default="test_message_queue")
    out.add_argument("--routing-key", default="test_routing_key")
    return out


def bodies(message):
    """The bodies to send: each stdin line (without its newline) for "-", else message."""
    if message == "-":
        return (line.rstrip(b"\n") for line in sys.stdin.buffer)
    return [message.encode()]


def say(text):
    print(text, file=sys.stderr, flush=True)


def line(body, channel):
    """What consumer.py prints for a message."""
    return "Received: %s from channel #%d" % (printable(body), channel)


# --- a body as one line of text: the rule of docs/exchanges-and-messages.md ---

SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(body):
    """UTF-8 decoded; the backslash, and every character str.isprintable()
    rejects, escaped (undecodable bytes as \\xNN)."""
    text = body.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text
    return text.translate(_Escapes())


class _Escapes(dict):
    def __missing__(self, code):
        self[code] = escaped = _escape(chr(code))
        return escaped


def _escape(char):
    code = ord(char)
    if char in SHORT_ESCAPES:
        return SHORT_ESCAPES[char]
    if char.isprintable():
        return char
    if code < 0x80 or 0xDC80 <= code <= 0xDCFF:  # a control character, or a byte that is not UTF-8
        return "\\x%02x" % (code & 0xFF)
    return "\\u%04x" % code if code <= 0xFFFF else "\\U%08x" % code
