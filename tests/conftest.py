"""Fixtures for the tests.

broker    (session) the RabbitMQ node the tests talk to: a throwaway node on free
          ports, or the broker in AMQP_URL when that is set as pytest starts.
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
import os
import re
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import psutil
import pytest
import trustme
from port_for import get_port
from pytest_rabbitmq.factories.executor import RabbitMqExecutor

import helpers
import standin

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQ_CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
EXTERNAL_URL = os.environ.get("AMQP_URL")
STANDARD_PORTS = [5672, 5671, 15672, 25672, 4369]


class IsolatedRabbitMqExecutor(RabbitMqExecutor):
    """pytest-rabbitmq's executor (its own node name, ports, data and log folders),
    kept apart from the machine's broker in the ways pytest-rabbitmq is not: the
    node reads its own config files instead of /etc/rabbitmq's (Debian's here has
    `listeners.tcp.local = 127.0.0.1:5672`, which a node would add to its own
    listeners), keeps its Erlang cookie in its folder, and listens on 127.0.0.1 only.
    """

    def __init__(self, port, dist_port, node, path, config=""):
        (path / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{port}\n{config}")
        (path / "rabbitmq-env.conf").write_text("")
        super().__init__(RABBITMQ_SERVER, "127.0.0.1", port, dist_port, RABBITMQ_CTL,
                         logpath=path / "log", path=path, plugin_path=path, node_name=node)
        self._envvars.update(
            HOME=str(path),
            RABBITMQ_CONFIG_FILE=str(path / "rabbitmq.conf"),
            RABBITMQ_CONF_ENV_FILE=str(path / "rabbitmq-env.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(path / "advanced.config"),
            RABBITMQ_FEATURE_FLAGS_FILE=str(path / "feature_flags"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_ADDRESS="127.0.0.1",
            LC_ALL="C.UTF-8",
        )
        self.path = path
        self.log_dir = path / "log"
        self._stdin = subprocess.DEVNULL
        self._stdout = open(path / "stdout.log", "ab")  # noqa: SIM115 (lives as long as the node)
        self._stderr = subprocess.STDOUT

    def check_subprocess(self):
        # rabbitmq-server exits 0 when the node fails to boot: say so at once
        # instead of waiting for the port until the timeout.
        if self.process is not None and self.process.poll() is not None:
            self._kill_all_kids(signal.SIGKILL)
            self._clear_process()
            logs = sorted(self.log_dir.rglob("*.log")) + [self.path / "stdout.log"]
            tail = "".join(p.read_text(errors="replace")[-3000:] for p in logs if p.is_file())
            raise RuntimeError(f"RabbitMQ node failed to start; logs in {self.path}:\n{tail}")
        return super().check_subprocess()

    def beam_pid(self):
        """The pid of the node's Erlang VM (a child of the rabbitmq-server script)."""
        if self.process is None:
            return None
        try:
            kids = psutil.Process(self.process.pid).children(recursive=True)
            return next((p.pid for p in kids if p.name() == "beam.smp"), None)
        except psutil.NoSuchProcess:
            return None

    def shut_down(self):
        """Stop the node for good: at the end of the session or module."""
        self.stop()
        self._stdout.close()

    def stop(self, timeout=60):
        """SIGTERM (a clean shutdown that keeps durable data), SIGKILL after timeout."""
        if self.process is None:
            return
        beam = self.beam_pid()
        if beam:
            os.kill(beam, signal.SIGCONT)  # a SIGSTOPped node could not shut down
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self._kill_all_kids(signal.SIGKILL)  # whatever is left of this node
        self.process.wait(10)
        self._clear_process()


class Broker:
    """The broker the tests talk to. url, host, port always; the rest only for
    the throwaway node (under AMQP_URL they skip the test)."""

    def __init__(self, url, executor=None):
        self.url = url
        parts = urlsplit(url)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        self._ex = executor
        self.node = executor._envvars["RABBITMQ_NODENAME"] if executor else None
        self.path = executor.path if executor else None

    @property
    def external(self):
        return self._ex is None

    def _managed(self, what):
        if self._ex is None:
            pytest.skip(f"{what} needs the tests' own throwaway RabbitMQ node, "
                        f"but AMQP_URL points them at an existing broker")
        return self._ex

    def ctl(self, *args, timeout=60):
        """Run `rabbitmqctl -q ARGS` against this node; return its stdout (str)."""
        ex = self._managed("rabbitmqctl")
        done = subprocess.run([RABBITMQ_CTL, "-q", *args], env=ex.envvars,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} exited {done.returncode}: "
                                 f"{done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    @property
    def os_pid(self):
        """The pid of the node's Erlang VM (beam.smp), or None if it is not running."""
        return self._managed("a broker process id").beam_pid()

    def stop(self):
        """Shut the node down cleanly; its data stays for start()."""
        self._managed("stopping the broker").stop()

    def start(self, timeout=60):
        """Start the node if it is not running; return once it accepts AMQP connections."""
        ex = self._managed("starting the broker")
        if ex.process is not None and ex.process.poll() is not None:
            ex.stop()  # it died (killed, say): clean up before starting again
        if ex.process is None:
            ex.start()
        helpers.wait_for_amqp(self.url, timeout)

    def restart(self):
        """Stop and start the node, keeping its data (durable queues, persistent messages)."""
        self._managed("restarting the broker")
        self.stop()
        self.start()

    def ensure_running(self):
        """Undo what a test may have left: resume a SIGSTOPped node, start a stopped one."""
        if self._ex is None:
            return
        beam = self._ex.beam_pid()
        if beam:
            os.kill(beam, signal.SIGCONT)
        if beam is None or self._ex.process.poll() is not None:
            self.start()


def make_node(tmp_path_factory, name, config="", avoid=(), cookie=None):
    """A throwaway RabbitMQ node on free ports (its TCP listener on 127.0.0.1),
    with config added to its rabbitmq.conf, not started yet; returns
    (Broker, executor). cookie: the Erlang cookie, the same for nodes that are
    to form a cluster (by default each node makes its own)."""
    if not os.access(RABBITMQ_SERVER, os.X_OK):
        pytest.fail(f"{RABBITMQ_SERVER} is missing: run the tests with `python3 tools/test.py` "
                    f"(it installs rabbitmq-server), or `apt-get install rabbitmq-server`",
                    pytrace=False)
    port = get_port(None, [*avoid, *STANDARD_PORTS])
    dist_port = get_port(None, [port, *avoid, *STANDARD_PORTS])
    path = tmp_path_factory.mktemp(name)
    if cookie is not None:
        # HOME is the node's folder: Erlang reads the cookie from $HOME/.erlang.cookie.
        (path / ".erlang.cookie").write_text(cookie)
        (path / ".erlang.cookie").chmod(0o400)
    executor = IsolatedRabbitMqExecutor(port, dist_port, f"txamqp-{name}-{port}@localhost", path, config)
    return Broker(f"amqp://guest:guest@127.0.0.1:{port}/%2F", executor), executor


def start_node(tmp_path_factory, name, config="", avoid=()):
    """make_node's node, started; returns (Broker, executor)."""
    node, executor = make_node(tmp_path_factory, name, config, avoid)
    started = time.monotonic()
    try:
        node.start()
    except BaseException:
        executor.shut_down()
        raise
    node.start_seconds = time.monotonic() - started
    return node, executor


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    if EXTERNAL_URL:
        yield Broker(EXTERNAL_URL)
        return
    node, executor = start_node(tmp_path_factory, "test")
    try:
        yield node
    finally:
        executor.shut_down()


@pytest.fixture(scope="session")
def secret_url(broker):
    """amqp:// URL of a user on the throwaway node whose password is
    helpers.PASSWORD (percent-encoded in the URL), allowed everything on "/"."""
    broker._managed("a user with a known password")
    user = "txamqp-secret-user"
    broker.ctl("add_user", user, helpers.PASSWORD)
    broker.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
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
