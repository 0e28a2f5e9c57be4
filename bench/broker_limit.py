"""The broker's own limit for what producer.py does: persistent, mandatory
messages with publisher confirms, from a client that costs almost no CPU.

    python bench/broker_limit.py URL [--window W] [--connections C] [--exchange X --routing-key K] < lines

Speaks raw AMQP 0-9-1 (raw_amqp.py): reads every stdin line first and
encodes every message before it connects. Then, on each of C connections
(one channel each, in confirm mode; 1 by default) it publishes its share of
the messages (the first C-th to the first connection, and so on), from a
thread of its own, while another thread reads that connection's basic.acks;
it exits once every message is confirmed. With no --window (or 0) a
connection writes its messages in blocks of 1,000 without waiting for any
confirm; with --window W it keeps at most W messages unconfirmed, as
producer.py does with its window of 1,000: it writes what the window allows
in one write, then waits for confirms to free places. It declares nothing
(bench/run.py does), and exits 1 on a basic.nack, a basic.return or any other
method it did not expect. What it reaches is what the broker took from it
with this guarantee, in this form (connections, window) on this node.
"""

import struct
import sys
import threading

from client_cli import parser, say
from raw_amqp import CLASS_METHOD, TAG, Connection, frame, method, shortstr

BLOCK = 1000  # messages per write without a window

cli = parser(__doc__)  # --queue is not used: it declares nothing
cli.add_argument("--window", type=int, default=0, help="at most this many messages unconfirmed (0: no window)")
cli.add_argument("--connections", type=int, default=1, help="connections publishing in parallel, a channel each")


class Publisher:
    """One connection publishing its messages with confirms on channel 1."""

    def __init__(self, url, messages, window):
        self.messages, self.window = messages, window
        self.conn = Connection(url)
        self.conn.send(method(1, 20, 10, shortstr("")))  # channel.open
        self.conn.expect(20, 11)
        self.conn.send(method(1, 85, 10, b"\0"))  # confirm.select
        self.conn.expect(85, 11)
        self.upto = 0  # every tag up to this one is confirmed
        self.changed = threading.Condition()
        self.failure = None

    def read_acks(self):
        singles = set()  # tags confirmed above self.upto
        upto = 0
        try:
            while upto < len(self.messages) and not self.failure:
                for kind, payload in self.conn.frames():
                    if kind != 1:
                        continue
                    if CLASS_METHOD.unpack_from(payload) != (60, 80):  # not basic.ack: a nack, a return, a close
                        self.failure = "broker_limit: the broker sent method %d.%d" % CLASS_METHOD.unpack_from(payload)
                        break
                    tag, multiple = TAG.unpack_from(payload, 4)[0], payload[12] & 1
                    if multiple:
                        upto = max(upto, tag)
                    else:
                        singles.add(tag)
                    while upto + 1 in singles:
                        upto += 1
                        singles.discard(upto)
                with self.changed:
                    self.upto = upto
                    self.changed.notify()
        except (SystemExit, OSError) as e:  # the connection lost (raw_amqp raises SystemExit)
            self.failure = str(e) or repr(e)
        finally:
            with self.changed:
                self.changed.notify()

    def publish(self):
        reader = threading.Thread(target=self.read_acks, daemon=True)
        reader.start()
        n, sent = len(self.messages), 0
        while sent < n and not self.failure:
            if self.window:
                with self.changed:
                    while self.upto + self.window <= sent and not self.failure:
                        self.changed.wait()
                    end = min(n, self.upto + self.window)
            else:
                end = min(n, sent + BLOCK)
            self.conn.send(b"".join(self.messages[sent:end]))
            sent = end
        reader.join()

    def close(self):
        self.conn.send(method(0, 10, 50, struct.pack("!H", 200) + shortstr("bye") + b"\0\0\0\0"))
        self.conn.expect(10, 51)


def main():
    args = cli.parse_args()
    bodies = sys.stdin.buffer.read().split(b"\n")
    if bodies and not bodies[-1]:
        bodies.pop()
    publish = method(1, 60, 40, b"\0\0" + shortstr(args.exchange) + shortstr(args.routing_key)
                     + b"\x01")  # mandatory
    # Content header: class basic, weight 0, body size, property flags with
    # only delivery-mode set (bit 12), delivery-mode 2: persistent.
    messages = [publish + frame(2, 1, struct.pack("!HHQHB", 60, 0, len(body), 1 << 12, 2)) + frame(3, 1, body)
                for body in bodies]
    share = max(1, -(-len(messages) // args.connections))  # ceiling
    publishers = [Publisher(args.url, messages[i:i + share], args.window) for i in range(0, len(messages), share)]
    threads = [threading.Thread(target=p.publish) for p in publishers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failures = [p.failure for p in publishers if p.failure]
    if failures:
        sys.exit(failures[0])
    for p in publishers:
        p.close()
    say("Sent %d message(s) on %d connection(s), every one confirmed." % (len(messages), len(publishers)))


if __name__ == "__main__":
    main()
