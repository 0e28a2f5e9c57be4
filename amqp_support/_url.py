"""Where to connect: the broker in an amqp:// or amqps:// URL, and how to
show it without its password."""

import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from amqp_support._errors import BadURL


class BrokerURL:
    """Where to connect, from an amqp:// or amqps:// URL: host, port, tls,
    username, password, vhost, and query (its parameters by name). str()
    shows it without the password. A URL that names no broker raises BadURL."""

    def __init__(self, url: str) -> None:
        # The user info ends at the last "@"; RFC 3986 allows none of these in it.
        if re.search(r"[@/?#\[\]]|:.*:|%(?![0-9A-Fa-f]{2})", url.partition("//")[2].rpartition("@")[0]):
            raise BadURL("%r: percent-encode @ : / ? # %% in the user name and password"
                         " as %%40 %%3A %%2F %%3F %%23 %%25" % self.mask(url))
        try:
            parts = urlsplit(url)
        except ValueError:  # a bad [IPv6] address, say
            raise BadURL("%r is not a valid URL" % self.mask(url)) from None
        if parts.scheme not in ("amqp", "amqps") or not url.partition(":")[2].startswith("//"):
            raise BadURL("%r is not an amqp:// or amqps:// URL" % self.mask(url))
        try:
            self.port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        except ValueError:
            raise BadURL("the port in %r is not a port number" % self.mask(url)) from None
        self.tls = parts.scheme == "amqps"
        self.host = parts.hostname or "localhost"
        self.username = unquote(parts.username or "guest")
        self.password = unquote(parts.password or "guest")
        # The path is the virtual host, percent-encoded: %2F is "/".
        self.vhost = unquote(parts.path[1:]) or "/"
        # RabbitMQ's query parameters (heartbeat=5): what to do with them is the caller's.
        self.query: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in self.query:
                raise BadURL("%r: the query parameter %r is given twice" % (self.mask(url), name))
            self.query[name] = value

    @staticmethod
    def mask(url: str) -> str:
        """url for an error message: anything between the user name and the
        last "@" may be a password (passwords hold "/" and "@" too): ***."""
        if "@" not in url:
            return url
        found = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://[^:@/?#]*", url)
        user = found.group(0) if found else ""
        if url[len(user):].startswith("@"):
            return url  # a user name and no password
        return "%s***@%s" % (user + ":" if user else "", url.rpartition("@")[2])

    def __repr__(self) -> str:
        return "BrokerURL(%r)" % str(self)

    def __str__(self) -> str:
        # Never the password: this string goes into messages and logs.
        scheme = "amqps" if self.tls else "amqp"
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s@%s:%d/%s" % (scheme, quote(self.username, safe=""), host, self.port,
                                     quote(self.vhost, safe=""))
