"""amqps://: TLS against throwaway RabbitMQ nodes with a TLS listener and
certificates made by trustme. The broker's certificate and host name are
always verified, a broker may require a client certificate, and a connection
refused by the client sends no AMQP byte (so no credential) at all.

Every refusal runs twice, as is and with --verbose, with helpers.PASSWORD in
its URL: one line and exit status 1, and the password shown by neither run."""

import ssl
import time
from urllib.parse import quote

import pytest
import trustme

import helpers
from helpers import PASSWORD

SPECS = ["amqp0-8.xml", "amqp0-9-1.xml"]
MESSAGE = "over TLS \u2713"


def refused(*argv, url, words):
    """Exit 1 with one line naming words, as is and with --verbose, and the
    password shown by neither run."""
    return helpers.fails(helpers.run_failing(*argv, url=url), 1, *words)


def usage_error(*argv, url, words):
    result = helpers.run_script(*argv, url=url)
    err = result.stderr.decode("utf-8", "backslashreplace")
    assert result.returncode == 2, err
    assert err.count("\n") == 1, "not one line: %r" % err
    for word in words:
        assert word in err, "%r not in %r" % (word, err)
    helpers.assert_no_secret(result)
    return err


@pytest.fixture
def queue(request):
    """A queue name of this test's own, on the default exchange."""
    return "q.tls.%s.%d" % (request.node.name.replace("[", ".").rstrip("]"), time.monotonic_ns())


def round_trip(node, queue, spec, *tls_args, python=None):
    """Send a message with the producer and read it with the consumer, both
    over amqps://, with the default exchange and the given queue (and Python)."""
    url = node.url()
    options = ["--exchange", "", "--queue", queue, *tls_args]
    sent = helpers.run_script("producer.py", spec, MESSAGE, *options, url=url, python=python)
    assert sent.returncode == 0, sent.stderr
    got = helpers.run_script("consumer.py", spec, "--count", "1", *options, url=url, python=python)
    assert got.returncode == 0, got.stderr
    assert got.stdout.decode() == "Received: %s from channel #1\n" % MESSAGE
    helpers.delete(node.broker.url, queue=queue)


# --- the broker's certificate --------------------------------------------------

@pytest.mark.parametrize("spec", SPECS)
def test_round_trip_over_amqps(spec, tls_broker, queue, python):
    # The URL's port is the node's TLS listener, which speaks nothing but TLS.
    round_trip(tls_broker, queue, spec, "--cafile", tls_broker.cafile, python=python)


def test_certificate_from_an_untrusted_ca_is_refused(tls_broker, tmp_path):
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(other)
    url = tls_broker.url(password=PASSWORD)
    refused("producer.py", "amqp0-8.xml", "x", "--cafile", other, url=url,
            words=["cannot connect to amqps://guest@localhost:%d/%%2F" % tls_broker.tls_port,
                   "TLS failed: certificate verify failed", "--cafile"])


def test_system_trust_store_does_not_trust_a_private_ca(tls_broker):
    # No --cafile: the system's CAs, none of which signed the node's certificate.
    refused("consumer.py", "amqp0-8.xml", url=tls_broker.url(password=PASSWORD),
            words=["TLS failed: certificate verify failed"])


def test_wrong_host_name_is_refused(tls_broker):
    # The certificate names "localhost"; 127.0.0.1 is the same node, but not its name.
    refused("consumer.py", "amqp0-8.xml", "--cafile", tls_broker.cafile,
            url=tls_broker.url(host="127.0.0.1", password=PASSWORD),
            words=["TLS failed", "does not name the host"])


def test_amqps_to_a_plain_amqp_port_is_refused(tls_broker):
    url = "amqps://guest:%s@localhost:%d/%%2F" % (quote(PASSWORD, safe=""),
                                                  tls_broker.broker.port)
    refused("producer.py", "amqp0-8.xml", "x", "--cafile", tls_broker.cafile, url=url,
            words=["TLS failed", "amqps:// port"])


# --- a broker that requires a client certificate ---------------------------------

@pytest.mark.parametrize("spec", SPECS)
def test_client_certificate_given(spec, mtls_broker, queue, python):
    round_trip(mtls_broker, queue, spec, "--cafile", mtls_broker.cafile,
               "--certfile", mtls_broker.client_cert, "--keyfile", mtls_broker.client_key, python=python)


def test_client_certificate_and_key_in_one_file(mtls_broker, queue, tmp_path):
    both = tmp_path / "client.pem"
    both.write_bytes(mtls_broker.client_key.read_bytes() + mtls_broker.client_cert.read_bytes())
    round_trip(mtls_broker, queue, "amqp0-9-1.xml", "--cafile", mtls_broker.cafile, "--certfile", both)


def test_client_certificate_with_its_chain(mtls_broker, queue, tmp_path):
    # A certificate from an intermediate CA: the broker trusts only the root,
    # so the intermediate must go along, after the certificate in --certfile.
    client = mtls_broker.ca.create_child_ca().issue_cert("txamqp-test-client")
    chain, leaf_only, key = tmp_path / "chain.pem", tmp_path / "leaf.pem", tmp_path / "key.pem"
    chain.write_bytes(b"".join(pem.bytes() for pem in client.cert_chain_pems[:2]))
    client.cert_chain_pems[0].write_to_path(leaf_only)
    client.private_key_pem.write_to_path(key)
    round_trip(mtls_broker, queue, "amqp0-8.xml", "--cafile", mtls_broker.cafile,
               "--certfile", chain, "--keyfile", key)
    refused("consumer.py", "amqp0-8.xml", "--cafile", mtls_broker.cafile, "--certfile", leaf_only,
            "--keyfile", key, url=mtls_broker.url(password=PASSWORD), words=["TLS failed", "unknown ca"])


def test_client_certificate_not_given(mtls_broker):
    refused("consumer.py", "amqp0-8.xml", "--cafile", mtls_broker.cafile,
            url=mtls_broker.url(password=PASSWORD),
            words=["TLS failed", "requires a client certificate", "--certfile"])


def test_client_certificate_from_another_ca(mtls_broker, tmp_path):
    stranger = trustme.CA().issue_cert("stranger")
    stranger.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    stranger.private_key_pem.write_to_path(tmp_path / "key.pem")
    refused("consumer.py", "amqp0-8.xml", "--cafile", mtls_broker.cafile,
            "--certfile", tmp_path / "cert.pem", "--keyfile", tmp_path / "key.pem",
            url=mtls_broker.url(password=PASSWORD),
            words=["TLS failed", "client certificate"])


# --- a refused connection sends nothing --------------------------------------------

@pytest.fixture
def tls_stand_in(stand_in):
    """A stand-in broker that speaks TLS with a certificate for "localhost" made
    by its own CA, and keeps every byte a client sends it after its protocol
    header in server.received (the header goes to server.headers)."""
    def start():
        ca = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(context)
        received = []

        def keep_everything(conn):
            while chunk := conn.recv(65536):
                received.append(chunk)
        server = stand_in(keep_everything, tls=context)
        server.ca, server.received = ca, received
        return server
    return start


def wait_for(condition, timeout=10):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("case", ["untrusted CA", "wrong host name"])
def test_refused_connection_sends_nothing(case, tls_stand_in, tmp_path):
    server = tls_stand_in()
    if case == "untrusted CA":
        cafile = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(cafile)
        host = "localhost"
    else:
        cafile = tmp_path / "ca.pem"
        server.ca.cert_pem.write_to_path(cafile)
        host = "127.0.0.1"
    url = "amqps://guest:%s@%s:%d/%%2F" % (quote(PASSWORD, safe=""), host, server.port)
    refused("producer.py", "amqp0-8.xml", "x", "--cafile", cafile, url=url, words=["TLS failed"])
    # The client ended both handshakes (the plain and the --verbose run) itself...
    wait_for(lambda: len(server.tls_errors) == 2)
    # ...before a single byte of AMQP: no protocol header, no credentials.
    assert server.headers == [] and server.received == []


def test_accepted_connection_does_send(tls_stand_in, tmp_path):
    # The same stand-in, trusted and named right: it receives the protocol
    # header (then the client waits for a connection.start that never comes).
    # This is what the test above would see if the client sent before verifying.
    server = tls_stand_in()
    cafile = tmp_path / "ca.pem"
    server.ca.cert_pem.write_to_path(cafile)
    url = "amqps://guest:%s@localhost:%d/%%2F" % (quote(PASSWORD, safe=""), server.port)
    refused("producer.py", "amqp0-8.xml", "x", "--cafile", cafile, "--timeout", "1", url=url,
            words=["no answer in time"])
    assert server.tls_errors == []
    assert server.headers == [b"AMQP\x01\x01\x08\x00"] * 2


# --- bad TLS options: status 2, before any connection --------------------------------

NOWHERE = "amqps://guest:%s@localhost:1/%%2F" % quote(PASSWORD, safe="")


def certificate_for_an_x25519_key(folder):
    """A certificate and its key, an X25519 key (for key agreement only: TLS cannot sign with it)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, x25519
    from cryptography.x509.oid import NameOID
    key = x25519.X25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x25519")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()))
    cert_path, key_path = folder / "x25519-cert.pem", folder / "x25519-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_option_errors(tls_broker, tmp_path):
    cafile, cert, key = tls_broker.cafile, tls_broker.client_cert, tls_broker.client_key
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(tls_broker.ca.issue_cert("x").private_key_pem.bytes())
    from cryptography.hazmat.primitives import serialization
    loaded = serialization.load_pem_private_key(encrypted.read_bytes(), None)
    encrypted.write_bytes(loaded.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    other_key = tmp_path / "other-key.pem"
    other_key.write_bytes(tls_broker.ca.issue_cert("y").private_key_pem.bytes())
    x25519_cert, x25519_key = certificate_for_an_x25519_key(tmp_path)
    cases = [
        (["--cafile", tmp_path / "missing.pem"], ["cannot read --cafile", "No such file"]),
        (["--cafile", "README.md"], ["--cafile 'README.md' holds no certificates"]),
        (["--cafile", cafile, "--certfile", cert], ["--certfile", "holds no private key"]),
        (["--cafile", cafile, "--certfile", cert, "--keyfile", other_key],
         ["does not belong to the certificate"]),
        (["--cafile", cafile, "--certfile", cert, "--keyfile", encrypted], ["is encrypted"]),
        (["--cafile", cafile, "--keyfile", key], ["--keyfile needs --certfile"]),
        (["--cafile", cafile, "--certfile", x25519_cert, "--keyfile", x25519_key],
         ["the key in --keyfile", "X25519", "cannot sign"]),
    ]
    for options, words in cases:
        usage_error("consumer.py", "amqp0-8.xml", *options, url=NOWHERE, words=words)
    # TLS options with an amqp:// URL: the user meant TLS; nothing goes out in the clear.
    usage_error("consumer.py", "amqp0-8.xml", "--cafile", cafile,
                url=NOWHERE.replace("amqps://", "amqp://"), words=["are for amqps:// URLs"])
