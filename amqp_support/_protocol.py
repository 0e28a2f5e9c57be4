"""The protocol headers: the 8 bytes a client sends first, naming the
protocol it speaks, and a broker sends back when it speaks another one.
Standard library only (tools/demo.py uses it before any virtualenv exists).
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amqp_support._codec import Spec

AMQP_0_8 = b"AMQP\x01\x01\x08\x00"
AMQP_0_9_1 = b"AMQP\x00\x00\x09\x01"

# Every header a broker may answer with, by the protocol it names.
NAMES = {
    AMQP_0_9_1: "AMQP 0-9-1", AMQP_0_8: "AMQP 0-8", b"AMQP\x01\x01\x00\x09": "AMQP 0-9",
    b"AMQP\x00\x01\x00\x00": "AMQP 1.0", b"AMQP\x02\x01\x00\x00": "AMQP 1.0 (TLS)",
    b"AMQP\x03\x01\x00\x00": "AMQP 1.0 (SASL)",
}


def protocol_header(spec: "Spec") -> bytes:
    """AMQP 0-8's header or AMQP 0-9-1's."""
    return AMQP_0_8 if (spec.major, spec.minor) == (8, 0) else AMQP_0_9_1


def protocol_name(spec: "Spec") -> str:
    """"AMQP 0-8" or "AMQP 0-9-1"."""
    return NAMES[protocol_header(spec)]


def may_speak_0_9_1(header: bytes) -> bool:
    """Whether a broker that refused our protocol with this header may speak
    AMQP 0-9-1: it names neither 0-8 nor 0-9. (RabbitMQ 4 answers 0-8's
    header with AMQP 1.0's, and speaks 0-9-1.)"""
    return NAMES.get(bytes(header)) not in ("AMQP 0-8", "AMQP 0-9")
