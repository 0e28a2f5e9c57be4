"""Where the bytes go: a Twisted client endpoint for an amqp:// or amqps:// broker.

For amqps:// the connection is TLS, and it is verified before any AMQP byte
(and so any credential) goes out: the broker's certificate must chain to a
trusted CA (ClientTLS's cafile, else the system's trust store) and name the host
in the URL. A broker that asks for a client certificate gets ClientTLS's.
"""

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (IOpenSSLClientConnectionCreator, IProtocol, IProtocolFactory,
                                         IReactorTime, IStreamClientEndpoint)
from zope.interface import implementer

from amqp_support._errors import BadTLSFile
from amqp_support._url import BrokerURL

if TYPE_CHECKING:
    from amqp_support._client import AMQClient

T = TypeVar("T")
StrPath = str | os.PathLike[str]


@implementer(IStreamClientEndpoint)
class FailoverEndpoint:
    """The brokers of a cluster, in turn: connect() goes to the same broker
    until move_on() (AMQPService calls it after a failure), then to the next
    (the first after the last). Each connection is told its broker
    (connected_to) as it is made; `broker` is the one the last attempt went to."""

    def __init__(self, reactor: IReactorTime, brokers: Sequence[BrokerURL], timeout: float,
                 tls: "ClientTLS | None" = None) -> None:
        self.endpoints = [(broker, client_endpoint(reactor, broker, timeout, tls)) for broker in brokers]
        self.moves = 0
        self.broker = brokers[0]

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        broker, endpoint = self.endpoints[self.moves % len(self.endpoints)]
        self.broker = broker

        def connected(conn: IProtocol) -> IProtocol:
            cast("AMQClient", conn).connected_to(broker)  # AMQPFactory built it
            return conn
        return endpoint.connect(factory).addCallback(connected)


    def move_on(self) -> None:
        """The next connect() goes to the next broker."""
        self.moves += 1


def client_endpoint(reactor: IReactorTime, broker: BrokerURL, timeout: float,
                    tls: "ClientTLS | None" = None) -> IStreamClientEndpoint:
    """TCP to the broker, wrapped in TLS for amqps:// (tls: a ClientTLS; by
    default the system's trust store and no client certificate)."""
    endpoint = HostnameEndpoint(reactor, broker.host, broker.port, timeout=timeout)
    if not broker.tls:
        return endpoint
    return wrapClientTLS((tls or ClientTLS()).options(broker.host), endpoint)


class ClientTLS:
    """What a TLS connection trusts and shows: the CA certificates of cafile
    (PEM; default: the system's trust store), and the client certificate of
    certfile with the key in keyfile (default: in certfile), if the broker
    asks for one. Files that cannot be used raise BadTLSFile."""

    def __init__(self, cafile: StrPath | None = None, certfile: StrPath | None = None,
                 keyfile: StrPath | None = None) -> None:
        self.trust = ssl.platformTrust()
        if cafile:
            # Every certificate in the file is trusted, so a bundle of CAs works.
            certs = load(cafile, "cafile", "certificates", x509.load_pem_x509_certificates)
            self.trust = ssl.trustRootFromCertificates([ssl.Certificate(crypto.X509.from_cryptography(c))
                                                        for c in certs])
        self.client, self.chain = None, []
        if certfile:
            # The first certificate is ours, any after it the intermediates to the CA
            # the broker trusts; the key may be in certfile too, as Python's ssl allows.
            certs = load(certfile, "certfile", "certificate", x509.load_pem_x509_certificates)
            key = load(keyfile or certfile, "keyfile" if keyfile else "certfile", "private key",
                       lambda data: serialization.load_pem_private_key(data, password=None))
            if public_bytes(certs[0].public_key()) != public_bytes(key.public_key()):
                raise BadTLSFile("keyfile" if keyfile else "certfile", keyfile or certfile,
                                 "the key in {file} does not belong to the certificate in %r" % str(certfile))
            try:  # pyOpenSSL takes the keys TLS signs with: RSA, DSA, EC, EdDSA
                pkey = crypto.PKey.from_cryptography_key(key)  # type: ignore[arg-type]
            except TypeError:
                raise BadTLSFile("keyfile" if keyfile else "certfile", keyfile or certfile,
                                 "the key in {file} is an %s key, which cannot sign in TLS: use an RSA, EC or"
                                 " Ed25519 key" % type(key).__name__.removesuffix("PrivateKey")) from None
            self.client = ssl.PrivateCertificate.fromCertificateAndKeyPair(
                ssl.Certificate(crypto.X509.from_cryptography(certs[0])), ssl.KeyPair(pkey))
            self.chain = [crypto.X509.from_cryptography(c) for c in certs[1:]]
        elif keyfile:
            raise BadTLSFile("keyfile", keyfile, "{file} is a key without a certificate")

    def options(self, host: str) -> IOpenSSLClientConnectionCreator:
        """Twisted's client TLS options: verify the server as `host`, and show
        the client certificate if there is one."""
        return ssl.optionsForClientTLS(host, self.trust, clientCertificate=self.client,
                                       extraCertificateOptions={"extraCertChain": self.chain}
                                       if self.chain else None)


def public_bytes(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def load(path: StrPath, parameter: str, what: str, parse: Callable[[bytes], T]) -> T:
    """parse(the bytes of path), or BadTLSFile naming the parameter it came in."""
    try:
        with open(path, "rb") as f:
            return parse(f.read())
    except OSError as e:
        raise BadTLSFile(parameter, path, "cannot read {file}: %s" % (e.strerror or e)) from None
    except TypeError:  # cryptography's word for an encrypted key
        raise BadTLSFile(parameter, path, "the key in {file} is encrypted: give one without a"
                         " passphrase") from None
    except ValueError:
        raise BadTLSFile(parameter, path, "{file} holds no %s in PEM form" % what) from None
