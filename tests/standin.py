"""A stand-in for a broker, for the few client behaviours no real RabbitMQ
node here can show: a broker that speaks another protocol version (RabbitMQ
4), one that hangs up during login without saying why, one that sends a
method the client has no handler for, or bytes that are not AMQP.

StandIn(script) listens on 127.0.0.1; for each connection it reads the
8-byte protocol header, then plays script(conn): a function that sends and
reads on the accepted socket. Frames are built with txamqp's payload types.
StandIn(script, tls=context) speaks TLS with that ssl.SSLContext first; a
handshake that fails is kept in tls_errors, and the connection plays nothing.
"""

import socket
import struct
import threading
from urllib.parse import quote

from txamqp import spec as amqp_spec
from txamqp.connection import Method

from amqp_support._codec import pack_frame
from helpers import PASSWORD, ROOT

SPEC_08 = amqp_spec.load(str(ROOT / "amqp0-8.xml"))


def method_frame(name, channel=0, spec=SPEC_08, **fields):
    klass, method = name.split(".")
    m = spec.classes.byname[klass].methods.byname[method]
    args = [fields.get(f.name.replace("-", "_"), {"bit": False, "table": {}}.get(f.type, 0)
                       if f.type not in ("shortstr", "longstr") else "") for f in m.fields]
    return pack_frame(channel, Method(m, *args))


CONNECTION_START = method_frame("connection.start", version_major=8, version_minor=0,
                                mechanisms="PLAIN AMQPLAIN", locales="en_US")
CONNECTION_TUNE = method_frame("connection.tune", channel_max=0, frame_max=131072, heartbeat=0)


def read_frame(conn):
    """Read one whole frame (or what comes before the peer closes)."""
    data = b""
    while len(data) < 7 or len(data) < 8 + int.from_bytes(data[3:7], "big"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def frame(kind, channel, payload, end=b"\xce"):
    """Any frame, right or wrong: type, channel, payload and frame-end byte."""
    return struct.pack("!BHI", kind, channel, len(payload)) + payload + end


class Frames:
    """The client's frames, one at a time, read from the socket."""

    def __init__(self, conn):
        self.conn = conn
        self.buf = b""

    def next(self):
        """The next whole frame (bytes), or None when the client has closed."""
        while True:
            if len(self.buf) >= 7:
                end = 8 + int.from_bytes(self.buf[3:7], "big")
                if len(self.buf) >= end:
                    data, self.buf = self.buf[:end], self.buf[end:]
                    return data
            chunk = self.conn.recv(65536)
            if not chunk:
                return None
            self.buf += chunk


def play_broker_until(conn, last, spec=SPEC_08):
    """Answer an AMQP 0-8 client as a broker would, each method with its -ok
    (connection.start-ok with connection.tune), up to and including the
    answer to the method named last ("basic.consume", say)."""
    frames = Frames(conn)
    conn.sendall(CONNECTION_START)
    while (data := frames.next()) is not None:
        if data[0] != 1:
            continue  # a content header or body of a publish
        class_id, method_id = struct.unpack("!HH", data[7:11])
        method = spec.classes.byid[class_id].methods.byid[method_id]
        name = "%s.%s" % (method.klass.name, method.name)
        channel = int.from_bytes(data[1:3], "big")
        if name == "connection.start-ok":
            conn.sendall(CONNECTION_TUNE)
        elif method.name + "-ok" in method.klass.methods.byname:
            conn.sendall(method_frame("%s-ok" % name, channel=channel, spec=spec))
        if name == last:
            return frames
    raise AssertionError("the client closed before %s" % last)


class StandIn:
    def __init__(self, script, tls=None):
        self.script = script
        self.tls = tls
        self.tls_errors = []
        self.script_errors = []
        self.headers = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.url = "amqp://guest:%s@127.0.0.1:%d/%%2F" % (quote(PASSWORD, safe=""), self.port)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(10)
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except OSError as e:
                    self.tls_errors.append(e)
                    conn.close()
                    continue
            with conn:
                try:
                    header = b""
                    while len(header) < 8:
                        chunk = conn.recv(8 - len(header))
                        if not chunk:
                            break
                        header += chunk
                    self.headers.append(header)
                    self.script(conn)
                except OSError:
                    pass
                except Exception as e:  # noqa: BLE001 (the script's own failure: for the test to see)
                    self.script_errors.append(e)

    def close(self):
        self.sock.close()
