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
import threading
from urllib.parse import quote

from txamqp import spec as amqp_spec
from txamqp.connection import Method

from amqp_support.codec import pack_frame
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


class StandIn:
    def __init__(self, script, tls=None):
        self.script = script
        self.tls = tls
        self.tls_errors = []
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

    def close(self):
        self.sock.close()
