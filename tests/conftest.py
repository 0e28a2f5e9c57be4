"""Fixtures for the tests.

broker    (session) the RabbitMQ node the tests talk to: rabbitmq3, or in tests
          marked rabbitmq4, rabbitmq3, rabbitmq40 and rabbitmq43 in turn (parametrized).
rabbitmq3 (session) a throwaway RabbitMQ 3 node on free ports (rabbitmq_nodes.py),
          or the broker in AMQP_URL when that is set as pytest starts.
rabbitmq40, rabbitmq43 (session) throwaway real RabbitMQ 4.0 and 4.3 nodes (the
          chroots of tools/rabbitmq4.py); each skips, in one line saying why and how
          to get it, where it cannot run. rabbitmq4 is rabbitmq40 (one RabbitMQ 4).
rabbitmq43_consumer_timeout (session) a RabbitMQ 4.3 node with consumer_timeout
          set low (CONSUMER_TIMEOUT_MS).
python    (session) the Python the scripts run with, in the tests that ask for it:
          the tests' own (.venv's) and the newest (Python 3.14, in the RabbitMQ 4.3
          chroot) in turn (parametrized); pass it to run_script and spawn.
secret_url (session) an amqp:// URL on the throwaway node for a user whose password
          is helpers.PASSWORD, the secret no output may show.
tls_broker, mtls_broker (session) throwaway nodes with a TLS listener and
          certificates made by trustme; mtls_broker requires a client certificate.
names     (function) an exchange, queue and routing key of this test's own.
vhost_url (function) the URL of a fresh, empty vhost on the throwaway node.
spawn     (function) starts a script in the background; kills it at test end.
stand_in  (function) stand_in(script, tls=None) starts a standin.StandIn; closed at test end.

The plain helpers (run_script, queue_depth, ...) are in helpers.py.

With CI set in the environment, a test that needs RabbitMQ 4.0 or 4.3, the
newest Python or Node's amqplib fails instead of skipping: a green CI ran them.
"""

import itertools
import os
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


BROKERS = ["rabbitmq3", "rabbitmq40", "rabbitmq43"]  # the broker fixture's versions, in turn
PYTHONS = [helpers.VENV_PYTHON, helpers.NEWEST_PYTHON]  # the python fixture's


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "rabbitmq4: run this test against real RabbitMQ 4.0 and 4.3 nodes as well as RabbitMQ 3 "
        "(the broker fixture is parametrized; see tools/rabbitmq4.py)")


def pytest_generate_tests(metafunc):
    """Tests marked rabbitmq4 that use the broker run once per RabbitMQ version;
    tests that take the python fixture, once per Python."""
    if metafunc.definition.get_closest_marker("rabbitmq4") and "broker" in metafunc.fixturenames:
        metafunc.parametrize("broker", BROKERS, indirect=True)
    if "python" in metafunc.fixturenames:
        metafunc.parametrize("python", PYTHONS, indirect=True, ids=[p.name for p in PYTHONS])


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


# Global QoS, which RabbitMQ 4 deprecates, is denied on the tests' RabbitMQ 4.0 node,
# as 4.3 denies it by default (basic.qos with global set is then taken as a
# per-consumer prefetch, and the node logs an error: test_rabbitmq43.py looks for
# it). Not so transient non-exclusive queues on 4.0: RabbitMQ 4.0.5 counts every
# queue as one when it checks at boot (rabbitmq-server issue 12802), so a node
# that denies them fails to restart once it holds a durable queue. RabbitMQ 4.3.6
# still permits them by default, but restarts fine when they are denied: its node
# denies them, so every test that runs there shows the scripts declare none.
RABBITMQ_CONFIG = {"4.0": "deprecated_features.permit.global_qos = false\n",
                   "4.3": "deprecated_features.permit.transient_nonexcl_queues = false\n"}
# rabbitmq43_consumer_timeout's: a consumer that holds a message unacknowledged
# longer is cancelled (quorum queues: with basic.cancel, as the client asks).
CONSUMER_TIMEOUT_MS = 3000

_skipped_at = {}  # a skip's message -> the fixture that skips with it (its file and line)


def skip_at_fixture(function, message):
    """Skip the test with message, reported at function (a fixture) rather than
    at each test, so that pytest -ra folds every such skip into one line."""
    _skipped_at[f"Skipped: {message}"] = (__file__, function.__code__.co_firstlineno)
    pytest.skip(message)


def _chroot_node(tmp_path_factory, version, config, fixture, name=None):
    """A started throwaway node in tools/rabbitmq4.py's chroot for version;
    yields its Broker, or skips (see skip_at_fixture) where it cannot run."""
    chroot = rabbitmq4_module.CHROOTS[version]
    problem = (f"RabbitMQ {version} cases need the tests' own throwaway node, but AMQP_URL points "
               "the tests at an existing broker") if EXTERNAL_URL else chroot.unavailable()
    if problem:
        skip_at_fixture(fixture, f"RabbitMQ {version} cases skipped: {problem}")
    node, executor = start_node(tmp_path_factory, name or f"rabbitmq{version.replace('.', '')}",
                                config, version=version)
    try:
        yield node
    finally:
        executor.shut_down()


@pytest.fixture(scope="session")
def rabbitmq40(tmp_path_factory):
    """A real RabbitMQ 4.0 node (Debian 13's package, from tools/rabbitmq4.py's
    chroot); skips the test, saying why and how to get it, where it cannot run."""
    yield from _chroot_node(tmp_path_factory, "4.0", RABBITMQ_CONFIG["4.0"], rabbitmq40.__wrapped__)


@pytest.fixture(scope="session")
def rabbitmq43(tmp_path_factory):
    """A real RabbitMQ 4.3 node (Debian sid's package, from tools/rabbitmq4.py's
    chroot) denying transient non-exclusive queues too; skips like rabbitmq40."""
    yield from _chroot_node(tmp_path_factory, "4.3", RABBITMQ_CONFIG["4.3"], rabbitmq43.__wrapped__)


@pytest.fixture(scope="session")
def rabbitmq4(rabbitmq40):
    """One real RabbitMQ 4 node, for tests that need one and not each version: 4.0's."""
    return rabbitmq40


@pytest.fixture(scope="session")
def rabbitmq43_consumer_timeout(tmp_path_factory):
    """A RabbitMQ 4.3 node whose consumer_timeout is CONSUMER_TIMEOUT_MS."""
    yield from _chroot_node(tmp_path_factory, "4.3",
                            RABBITMQ_CONFIG["4.3"] + f"consumer_timeout = {CONSUMER_TIMEOUT_MS}\n",
                            rabbitmq43_consumer_timeout.__wrapped__, name="rabbitmq43-timeout")


# What a test run under CI must not skip: tests that use these fixtures, or the
# broker fixture as one of these nodes, or the python fixture as the newest Python.
MUST_RUN_FIXTURES = {"rabbitmq40", "rabbitmq43", "rabbitmq43_consumer_timeout", "amqplib"}
MUST_RUN_PARAMS = {"broker": {"rabbitmq40", "rabbitmq43"}, "python": {helpers.NEWEST_PYTHON}}


def must_run(item):
    """Whether item is a test that CI must run, not skip."""
    params = item.callspec.params if hasattr(item, "callspec") else {}
    return bool(MUST_RUN_FIXTURES & set(item.fixturenames)) or any(
        params.get(name) in values for name, values in MUST_RUN_PARAMS.items())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Report a skip for want of RabbitMQ 4 (or the newest Python) at its fixture,
    not at each test, so that pytest -ra folds them into one line; under CI, such
    a test fails instead: a green CI must have run it."""
    report = yield
    if not (report.skipped and isinstance(report.longrepr, tuple)) or hasattr(report, "wasxfail"):
        return report
    reason = report.longrepr[2]
    if os.environ.get("CI") and must_run(item):
        report.outcome = "failed"
        report.longrepr = (f"CI is set, and this test must run there, but it was skipped: "
                           f"{reason.removeprefix('Skipped: ')}")
    elif reason in _skipped_at:
        report.longrepr = (*_skipped_at[reason], reason)
    return report


@pytest.fixture(scope="session")
def broker(request):
    """rabbitmq3's node; in tests marked rabbitmq4, rabbitmq3's, rabbitmq40's and rabbitmq43's."""
    return request.getfixturevalue(getattr(request, "param", "rabbitmq3"))


@pytest.fixture(scope="session")
def python(request):
    """The Python the scripts run with (helpers.Python): request.param, one of
    PYTHONS. The newest skips, in one line saying why, where it cannot run."""
    chosen = request.param
    problem = chosen.unavailable()
    if problem:
        skip_at_fixture(python.__wrapped__, f"Python {chosen.version} cases skipped: {problem}")
    return chosen


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
    """spawn(name, *args, url, input=None, env=None, python=None) -> helpers.RunningScript,
    killed (with its process group) when the test ends."""
    started = []

    def spawn(name, *args, url, input=None, env=None, python=None):
        script = helpers.start_script(name, *args, url=url, input=input, env=env, python=python)
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
