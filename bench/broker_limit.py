"""The broker's own limit for what producer.py does: persistent, mandatory
messages with publisher confirms, from a client that costs almost no CPU.

    python bench/broker_limit.py URL [--exchange X --routing-key K] < lines

Speaks raw AMQP 0-9-1 (raw_amqp.py): reads every stdin line first, encodes
every message before it connects, then writes them in large blocks while a
thread reads the broker's basic.acks, and exits once every message is
confirmed. It declares nothing (bench/run.py does), and exits 1 on a
basic.nack, a basic.return or any other method it did not expect. What it
reaches is what the broker can take with this guarantee; a client with the
guarantee cannot go faster on the same node.
"""

import struct
import sys
import threading

from client_cli import parser, say
from raw_amqp import CLASS_METHOD, TAG, Connection, frame, method, shortstr

BLOCK = 1000  # messages per write


def main():
    args = parser(__doc__).parse_args()  # --queue is not used: it declares nothing
    bodies = sys.stdin.buffer.read().split(b"\n")
    if bodies and not bodies[-1]:
        bodies.pop()
    publish = method(1, 60, 40, b"\0\0" + shortstr(args.exchange) + shortstr(args.routing_key)
                     + b"\x01")  # mandatory
    # Content header: class basic, weight 0, body size, property flags with
    # only delivery-mode set (bit 12), delivery-mode 2: persistent.
    messages = [publish + frame(2, 1, struct.pack("!HHQHB", 60, 0, len(body), 1 << 12, 2)) + frame(3, 1, body)
                for body in bodies]
    conn = Connection(args.url)
    conn.send(method(1, 20, 10, shortstr("")))  # channel.open
    conn.expect(20, 11)
    conn.send(method(1, 85, 10, b"\0"))  # confirm.select
    conn.expect(85, 11)
    confirmed = threading.Event()
    failure = []

    def read_acks():
        upto, singles = 0, set()  # every tag up to upto is confirmed, and these above it
        while upto < len(messages) and not failure:
            for kind, payload in conn.frames():
                if kind != 1:
                    continue
                if CLASS_METHOD.unpack_from(payload) != (60, 80):  # anything but basic.ack: nack, return, close
                    failure.append("broker_limit: the broker sent method %d.%d" % CLASS_METHOD.unpack_from(payload))
                    break
                tag, multiple = TAG.unpack_from(payload, 4)[0], payload[12] & 1
                if multiple:
                    upto = max(upto, tag)
                else:
                    singles.add(tag)
                while upto + 1 in singles:
                    upto += 1
                    singles.discard(upto)
        confirmed.set()

    threading.Thread(target=read_acks, daemon=True).start()
    for start in range(0, len(messages), BLOCK):
        conn.send(b"".join(messages[start:start + BLOCK]))
    confirmed.wait()
    if failure:
        sys.exit(failure[0])
    conn.send(method(0, 10, 50, struct.pack("!H", 200) + shortstr("bye") + b"\0\0\0\0"))
    conn.expect(10, 51)
    say("Sent %d message(s), every one confirmed." % len(messages))


if __name__ == "__main__":
    main()
