"""Fixtures for the tests.

broker    (session) the RabbitMQ node the tests talk to: rabbitmq3, or in tests
          marked rabbitmq4, rabbitmq3 and rabbitmq4 in turn (parametrized).
rabbitmq3 (session) a throwaway RabbitMQ 3 node on free ports (rabbitmq_nodes.py),
          or the broker in AMQP_URL when that is set as pytest starts.
rabbitmq4 (session) a throwaway real RabbitMQ 4 node (tools/rabbitmq4.py's chroot);
          skips, in one line saying why and how to get it, where it cannot run.
secret_url (session) an amqp:// URL on the throwaway node for a user whose password
          is helpers.PASSWORD, the secret no output may show.
tls_broker, mtls_broker (session) throwaway nodes with a TLS listener and
          certificates made by trustme; mtls_broker requires a client certificate.
names     (function) an exchange, queue and routing key of this test's own.
vhost_url (function) the URL of a fresh, empty vhost on the throwaway node.
spawn     (function) starts a script in the background; kills it at test end.
stand_in  (function) stand_in(script, tls=None) starts a standin.StandIn; closed at test end.

The plain helpers (run_script, queue_depth, ...) are in helpers.py.
"""

import itertools
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import trustme
from port_for import get_port

import helpers
import standin
from rabbitmq_nodes import EXTERNAL_URL, STANDARD_PORTS, Broker, start_node
from tools import rabbitmq4 as rabbitmq4_module


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "rabbitmq4: run this test against a real RabbitMQ 4 node as well as RabbitMQ 3 "
        "(the broker fixture is parametrized; see tools/rabbitmq4.py)")


def pytest_generate_tests(metafunc):
    """Tests marked rabbitmq4 that use the broker run once per RabbitMQ version."""
    if metafunc.definition.get_closest_marker("rabbitmq4") and "broker" in metafunc.fixturenames:
        metafunc.parametrize("broker", ["rabbitmq3", "rabbitmq4"], indirect=True)


@pytest.fixture(scope="session")
def rabbitmq3(tmp_path_factory):
    """The RabbitMQ 3 node (Debian 12's package), or the broker in AMQP_URL."""
    if EXTERNAL_URL:
        yield Broker(EXTERNAL_URL)
        return
    node, executor = start_node(tmp_path_factory, "test")
    try:
        yield node
    finally:
        executor.shut_down()


# Global QoS, which RabbitMQ 4 deprecates, is refused on the tests' RabbitMQ 4 node,
# as later releases will refuse it. Not so transient non-exclusive queues: RabbitMQ
# 4.0.5 counts every queue as one when it checks at boot (rabbitmq-server issue
# 12802), so a node that refuses them fails to restart once it holds a durable
# queue. test_rabbitmq4.py checks that the scripts' queues are durable instead.
RABBITMQ4_CONFIG = "deprecated_features.permit.global_qos = false\n"

_rabbitmq4_missing = []  # why the rabbitmq4 fixture skipped, if it did


@pytest.fixture(scope="session")
def rabbitmq4(tmp_path_factory):
    """A real RabbitMQ 4 node (Debian 13's package, from tools/rabbitmq4.py's
    chroot); skips the test, saying why and how to get it, where it cannot run."""
    problem = ("RabbitMQ 4 cases need the tests' own throwaway node, but AMQP_URL points "
               "the tests at an existing broker") if EXTERNAL_URL else rabbitmq4_module.unavailable()
    if problem:
        _rabbitmq4_missing.append(f"RabbitMQ 4 cases skipped: {problem}")
        pytest.skip(_rabbitmq4_missing[-1])
    node, executor = start_node(tmp_path_factory, "rabbitmq4", RABBITMQ4_CONFIG, major=4)
    try:
        yield node
    finally:
        executor.shut_down()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Report every skip for want of RabbitMQ 4 at the rabbitmq4 fixture, not at
    each test, so that pytest -ra folds them into one line."""
    report = yield
    if report.skipped and isinstance(report.longrepr, tuple) and _rabbitmq4_missing \
            and report.longrepr[2].endswith(_rabbitmq4_missing[-1]):
        report.longrepr = (__file__, rabbitmq4.__wrapped__.__code__.co_firstlineno, report.longrepr[2])
    return report


@pytest.fixture(scope="session")
def broker(request):
    """rabbitmq3's node; in tests marked rabbitmq4, rabbitmq3's and then rabbitmq4's."""
    return request.getfixturevalue(getattr(request, "param", "rabbitmq3"))


@pytest.fixture(scope="session")
def secret_url(broker):
    """amqp:// URL of a user on the throwaway node whose password is
    helpers.PASSWORD (percent-encoded in the URL), allowed everything on "/"."""
    broker._managed("a user with a known password")
    user = "txamqp-secret-user"
    if not getattr(broker, "secret_user", False):  # once per node (broker is parametrized)
        broker.ctl("add_user", user, helpers.PASSWORD)
        broker.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        broker.secret_user = True
    return f"amqp://{user}:{quote(helpers.PASSWORD, safe='')}@{broker.host}:{broker.port}/%2F"


@dataclass
class TlsNode:
    """A throwaway node with a TLS listener on 127.0.0.1:tls_port, whose
    certificate (made by trustme's CA `ca`) names "localhost" only.

    broker: the node itself (its plain TCP listener, for pika and rabbitmqctl);
    cafile: the CA's certificate; client_cert/client_key: a client certificate
    from the same CA."""

    broker: Broker
    tls_port: int
    ca: trustme.CA
    cafile: Path
    client_cert: Path
    client_key: Path

    def url(self, host="localhost", user="guest", password="guest"):
        return f"amqps://{user}:{quote(password, safe='')}@{host}:{self.tls_port}/%2F"


def start_tls_node(tmp_path_factory, name, verify):
    """A throwaway node with a TLS listener; verify: "verify_none" (any client)
    or "verify_peer" (the client must show a certificate from the node's CA)."""
    if EXTERNAL_URL:
        pytest.skip("TLS tests need a throwaway RabbitMQ node with a TLS listener and certificates "
                    "of their own, but AMQP_URL points the tests at an existing broker")
    files = tmp_path_factory.mktemp(f"{name}-certs")
    ca = trustme.CA()
    server = ca.issue_cert("localhost")
    client = ca.issue_cert("txamqp-test-client")
    paths = {what: files / f"{what}.pem" for what in
             ("ca", "server-cert", "server-key", "client-cert", "client-key")}
    ca.cert_pem.write_to_path(paths["ca"])
    server.cert_chain_pems[0].write_to_path(paths["server-cert"])
    server.private_key_pem.write_to_path(paths["server-key"])
    client.cert_chain_pems[0].write_to_path(paths["client-cert"])
    client.private_key_pem.write_to_path(paths["client-key"])
    tls_port = get_port(None, STANDARD_PORTS)
    config = (f"listeners.ssl.1 = 127.0.0.1:{tls_port}\n"
              f"ssl_options.cacertfile = {paths['ca']}\n"
              f"ssl_options.certfile = {paths['server-cert']}\n"
              f"ssl_options.keyfile = {paths['server-key']}\n"
              f"ssl_options.verify = {verify}\n"
              f"ssl_options.fail_if_no_peer_cert = {'true' if verify == 'verify_peer' else 'false'}\n")
    node, executor = start_node(tmp_path_factory, name, config, avoid=[tls_port])
    helpers.wait_for_port("127.0.0.1", tls_port)
    return TlsNode(node, tls_port, ca, paths["ca"], paths["client-cert"], paths["client-key"]), executor


@pytest.fixture(scope="session")
def tls_broker(tmp_path_factory):
    node, executor = start_tls_node(tmp_path_factory, "tls", "verify_none")
    try:
        yield node
    finally:
        executor.shut_down()


@pytest.fixture(scope="session")
def mtls_broker(tmp_path_factory):
    node, executor = start_tls_node(tmp_path_factory, "mtls", "verify_peer")
    try:
        yield node
    finally:
        executor.shut_down()


@pytest.fixture(autouse=True)
def _broker_left_running(request):
    """After a test that used the broker, make sure the next one finds it running."""
    yield
    if "broker" in request.fixturenames:
        request.getfixturevalue("broker").ensure_running()


_counter = itertools.count(1)
_SESSION = secrets.token_hex(3)  # new names each run, also on a broker that keeps old ones


def _unique(request):
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    return f"{test}.{_SESSION}.{next(_counter)}"


@dataclass(frozen=True)
class Names:
    exchange: str
    queue: str
    routing_key: str

    @property
    def args(self):
        return ["--exchange", self.exchange, "--queue", self.queue, "--routing-key", self.routing_key]


@pytest.fixture
def names(request, broker):
    """Names of this test's own; the exchange and queue are deleted afterwards."""
    base = _unique(request)
    result = Names(f"x.{base}", f"q.{base}", f"k.{base}")
    yield result
    broker.ensure_running()
    try:
        helpers.delete(broker.url, result.exchange, result.queue)
    except Exception as exc:  # noqa: BLE001 (cleanup only)
        print(f"could not delete {result}: {exc!r}")


@pytest.fixture
def vhost_url(request, broker):
    """The amqp:// URL (vhost percent-encoded) of a new, empty vhost where guest
    may do anything; for tests that need the default names on a clean broker."""
    broker._managed("a fresh vhost")
    vhost = f"vhost.{_unique(request)}"
    broker.ctl("add_vhost", vhost)
    broker.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@{broker.host}:{broker.port}/{quote(vhost, safe='')}"
    broker.ensure_running()
    broker.ctl("delete_vhost", vhost)


@pytest.fixture
def spawn():
    """spawn(name, *args, url, input=None, env=None) -> helpers.RunningScript,
    killed (with its process group) when the test ends."""
    started = []

    def spawn(name, *args, url, input=None, env=None):
        script = helpers.start_script(name, *args, url=url, input=input, env=env)
        started.append(script)
        return script

    yield spawn
    for script in started:
        script.kill()


@pytest.fixture
def stand_in():
    """stand_in(script, tls=None) -> a standin.StandIn, closed when the test ends."""
    started = []

    def start(script, tls=None):
        server = standin.StandIn(script, tls=tls)
        started.append(server)
        return server
    yield start
    for server in started:
        server.close()
