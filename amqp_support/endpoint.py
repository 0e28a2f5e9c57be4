"""Where the bytes go: a Twisted client endpoint for an amqp:// or amqps:// broker."""

from twisted.internet import ssl
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

from amqp_support.errors import UsageError, explain


def client_endpoint(reactor, broker, timeout, cafile=None):
    """TCP to the broker, wrapped in TLS for amqps://: the server's certificate
    must chain to a trusted CA (cafile, else the system's) and name the host."""
    endpoint = HostnameEndpoint(reactor, broker.host, broker.port, timeout=timeout)
    if not broker.tls:
        return endpoint
    trust = ssl.platformTrust()
    if cafile:
        try:
            with open(cafile, "rb") as f:
                trust = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(f.read())])
        except Exception as e:
            raise UsageError("cannot use --cafile %r: %s" % (cafile, explain(e)))
    return wrapClientTLS(ssl.optionsForClientTLS(broker.host, trust), endpoint)
