"""tools/demo.py, the README Quick start's first command, run as a process as
the README says: `python3 tools/demo.py`.

It runs with -S (no site-packages: the standard library only, as before any
virtualenv exists) and --python naming this Python for the scripts, so that
no test builds .venv except the one that tests building it (in a copy of the
project). Every test sets AMQP_URL, with --throwaway to a dead URL: neither
this demo nor an older one that lacks an option may go near the machine's
broker on 127.0.0.1:5672. A test that runs the demo's own throwaway node gives it a
TMPDIR of its own; the node's processes carry that path in their environment,
which is how the test finds any the demo left behind.
"""

import os
import random
import secrets
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from urllib.parse import quote, urlsplit

import psutil
import pytest
import trustme
from port_for import get_port

import standin
from helpers import ROOT, SECRET, assert_no_secret, queue_depth, script_env

DEMO = ROOT / "tools" / "demo.py"
RECEIVED = "Received: producer-to-consumer test message 1 from channel #1"
REFUSED_0_8 = b"AMQP\x03\x01\x00\x00"  # what RabbitMQ 4.0.5 answers to AMQP 0-8's header
HEADER_0_8 = b"AMQP\x01\x01\x08\x00"
HEADER_0_9_1 = b"AMQP\x00\x00\x09\x01"
FELL_BACK = "refused AMQP 0-8 (RabbitMQ 4.0 and later); using amqp0-9-1.xml"


def demo_command(*args, demo=DEMO, python=sys.executable):
    command = [sys.executable, "-S", str(demo), *map(str, args)]
    return command + ["--python", python] if python else command


def demo_env(url, **extra):
    """The demo's environment: AMQP_URL=url, and for the scripts
    it runs, DeprecationWarning from our code as an error (helpers.script_env)."""
    return script_env(url, {"AMQP_URL": url, **extra})


def run_demo(*args, url, timeout=110, **kwargs):
    env = demo_env(url, **kwargs.pop("env", {}))
    return subprocess.run(demo_command(*args, **kwargs), cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def text(data):
    return data.decode("utf-8", "backslashreplace")


def passed(result):
    """The demo exited 0 with the message shown as the consumer printed it, and
    said nothing on stderr. Returns stdout."""
    out = text(result.stdout)
    assert result.returncode == 0, out + text(result.stderr)
    assert f"[terminal 1: consumer] {RECEIVED}" in out, out
    assert "Traceback" not in out and result.stderr == b"", out + text(result.stderr)
    assert_no_secret(result)
    return out


def failed(result, status, *words):
    """The demo exited with status and one line on stderr holding words, no
    traceback, no password. Returns the line."""
    err = text(result.stderr)
    assert result.returncode == status, text(result.stdout) + err
    assert err.count("\n") == 1 and err.endswith("\n"), "not one line: %r" % err
    assert err.startswith("demo: ") and "Traceback" not in text(result.stdout) + err
    for word in words:
        assert word in err, "%r not in %r" % (word, err)
    assert_no_secret(result)
    return err


def own_processes(marker):
    """Processes whose environment mentions marker (the demo's TMPDIR)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if any(str(marker) in value for value in proc.environ().values()):
                found.append(f"{proc.pid} {proc.info['name']}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def assert_nothing_left(tmp_path):
    assert own_processes(tmp_path) == []
    assert list(tmp_path.glob("txamqp-demo-*")) == []


@pytest.fixture
def demo_url(broker, secret_url):
    """The secret user's URL (password helpers.PASSWORD) for a fresh vhost on
    the tests' node: the demo's default exchange and queue are its own there."""
    vhost = f"demo.{secrets.token_hex(4)}"
    user = urlsplit(secret_url).username
    broker.ctl("add_vhost", vhost)
    broker.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    yield f"amqp://{user}:{SECRET}@{broker.host}:{broker.port}/{quote(vhost, safe='')}"
    broker.ensure_running()
    broker.ctl("delete_vhost", vhost)


def dead_url():
    """A URL with the password where nothing listens."""
    return f"amqp://guest:{SECRET}@127.0.0.1:{get_port(None)}/%2F"


class Proxy:
    """Listens on host:port (TLS with tls, an ssl.SSLContext); for each
    connection reads AMQP's 8-byte protocol header, keeps it in headers, and
    either sends answer(header) and hangs up, or (answer returns None) passes
    the connection on to the broker at 127.0.0.1:target_port."""

    def __init__(self, target_port=None, host="127.0.0.1", port=0, tls=None, answer=lambda header: None):
        self.target_port = target_port
        self.tls = tls
        self.answer = answer
        self.connections = 0
        self.headers = []
        self.sock = socket.create_server((host, port))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        upstream = None
        try:
            if self.tls:
                conn = self.tls.wrap_socket(conn, server_side=True)
            header = b""
            while len(header) < 8 and (chunk := conn.recv(8 - len(header))):
                header += chunk
            self.headers.append(header)
            reply = self.answer(header)
            if reply is not None:
                conn.sendall(reply)
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            upstream.sendall(header)
            self._pump(conn, upstream)
        except OSError:
            pass
        finally:
            conn.close()
            if upstream:
                upstream.close()

    @staticmethod
    def _pump(a, b):
        while True:
            pending = [s for s in (a, b) if isinstance(s, ssl.SSLSocket) and s.pending()]
            for sock in pending or select.select([a, b], [], [])[0]:
                data = sock.recv(65536)
                if not data:
                    return
                (b if sock is a else a).sendall(data)

    def close(self):
        self.sock.close()


@pytest.fixture
def proxies():
    started = []

    def start(*args, **kwargs):
        started.append(Proxy(*args, **kwargs))
        return started[-1]
    yield start
    for proxy in started:
        proxy.close()


def test_help_needs_only_the_standard_library():
    result = run_demo("--help", url=dead_url(), python=None, timeout=30)
    assert result.returncode == 0, text(result.stderr)
    for option in ("--throwaway", "--install", "--python"):
        assert option in text(result.stdout)


@pytest.mark.rabbitmq4
def test_demo_with_amqp_url(demo_url, broker):
    out = passed(run_demo(url=demo_url))
    # The README's commands, as given, on RabbitMQ 3.10 and on a real RabbitMQ 4.
    assert "consumer.py amqp0-8.xml --no-reconnect" in out and "producer.py amqp0-8.xml" in out
    for terminal in ("terminal 1: consumer", "terminal 2: producer"):
        notes = [line for line in out.splitlines()
                 if line.startswith(f"[{terminal}] the broker at ") and line.endswith(FELL_BACK)]
        assert len(notes) == (1 if broker.major == 4 else 0), out
    assert ("refuses AMQP 0-8" in out) is (broker.major == 4), out
    # It says what it leaves on the user's broker, and it leaves no message.
    assert "'test_message_exchange' and queue 'test_message_queue'" in out and "stay there" in out
    assert queue_depth(demo_url, "test_message_queue") == 0


def test_demo_tries_each_url_in_amqp_url(demo_url):
    dead = dead_url()
    out = passed(run_demo(url=f"{dead} {demo_url}"))
    port = urlsplit(dead).port
    assert f"nothing answers at 127.0.0.1:{port}" in out
    assert "using amqp://txamqp-secret-user@" in out


def test_no_url_in_amqp_url_answers():
    first, second = dead_url(), dead_url()
    failed(run_demo(url=f"{first} {second}"), 1, "no broker in AMQP_URL answers",
           f"127.0.0.1:{urlsplit(first).port}", f"127.0.0.1:{urlsplit(second).port}")


def test_bad_amqp_url_is_bad_usage():
    failed(run_demo(url=f"amqp://guest:{SECRET}@127.0.0.1:notaport/"), 2, "AMQP_URL", "port")


@pytest.mark.parametrize("url", ["", "  "])
def test_empty_amqp_url_is_bad_usage_as_for_the_scripts(url):
    # As producer.py and consumer.py say: whoever set it meant a broker, not localhost.
    failed(run_demo(url=url), 2, "AMQP_URL is set but empty")


def test_a_broker_problem_is_one_line_not_retries(stand_in):
    # The probe's connection is answered; every later one (the consumer's) is
    # hung up on without a word: a lost connection, which a reconnecting
    # consumer would retry for as long as the demo waited.
    calls = []

    def script(conn):
        calls.append(1)
        if len(calls) == 1:
            conn.sendall(standin.CONNECTION_START)
    server = stand_in(script)
    err = failed(run_demo(url=server.url), 1, "terminal 1: consumer exited with status 1",
                 "before 'Waiting for messages'")
    assert len(calls) == 2, err  # the probe, then the consumer once


def test_broker_refusing_amqp_0_8_gets_amqp_0_9_1(demo_url, proxies):
    # A stand-in for RabbitMQ 4.0 and later in front of the tests' RabbitMQ 3
    # node: it refuses AMQP 0-8 as they do, and passes any other protocol on.
    # (test_demo_with_amqp_url runs the demo against a real RabbitMQ 4 too.)
    parts = urlsplit(demo_url)
    proxy = proxies(parts.port, answer=lambda header: REFUSED_0_8 if header == HEADER_0_8 else None)
    url = demo_url.replace(f":{parts.port}/", f":{proxy.port}/")
    out = passed(run_demo(url=url))
    assert "refuses AMQP 0-8" in out and "the scripts say so and use amqp0-9-1.xml" in out
    assert "consumer.py amqp0-8.xml --no-reconnect" in out and "producer.py amqp0-8.xml" in out
    assert out.count(FELL_BACK) == 2, out  # once from each script
    # The probe's, then each script's first connection: refused, then 0-9-1.
    assert proxy.headers.count(HEADER_0_8) == 3 and proxy.headers.count(HEADER_0_9_1) == 3


@pytest.fixture
def fake_apt_get(tmp_path):
    """An apt-get, first on PATH, that notes its arguments and fails: the demo's
    installing is seen without installing anything. Returns (env, log)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "apt-get.log"
    (folder / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexit 100\n')
    (folder / "apt-get").chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}, log


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the demo offers to install RabbitMQ as root only")


@root_only
def test_no_install_without_install_option(tmp_path, fake_apt_get):
    env, log = fake_apt_get
    failed(run_demo("--throwaway", "--rabbitmq-server", tmp_path / "missing", url=dead_url(), env=env),
           1, "RabbitMQ is not installed", "--install", "system broker on localhost:5672")
    assert not log.exists()


@root_only
def test_install_says_first_what_stays(tmp_path, fake_apt_get):
    env, log = fake_apt_get
    result = run_demo("--throwaway", "--install", "--rabbitmq-server", tmp_path / "missing",
                      url=dead_url(), env=env)
    failed(result, 1, "`apt-get update` failed")
    out = text(result.stdout)
    assert "stays installed" in out and "system service on localhost:5672" in out, out
    assert log.read_text() == "update\n"


@pytest.fixture
def loopback_host():
    """An address of the loopback network other than 127.0.0.1, where this
    test may listen on the standard ports 5671 and 5672 (the machine's broker
    listens on 127.0.0.1 only)."""
    return f"127.{random.randrange(1, 255)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def test_amqps_url_without_port_goes_to_5671(demo_url, proxies, loopback_host, tmp_path):
    # amqps:// without a port is 5671 for the scripts, so for the demo too:
    # nothing may go to 5672. The TLS listener on 5671 passes the connection
    # on to the tests' node; the scripts trust its CA through SSL_CERT_FILE.
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(loopback_host).configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    parts = urlsplit(demo_url)
    plain = proxies(host=loopback_host, port=5672, answer=lambda header: b"")
    tls = proxies(parts.port, host=loopback_host, port=5671, tls=context)
    url = f"amqps://{parts.username}:{SECRET}@{loopback_host}{parts.path}"
    out = passed(run_demo(url=url, env={"SSL_CERT_FILE": str(tmp_path / "ca.pem")}))
    assert f"using amqps://txamqp-secret-user@{loopback_host}:5671/" in out
    assert plain.connections == 0
    assert tls.headers and tls.headers[0] == HEADER_0_8  # the demo's probe, in TLS


@pytest.mark.slow
def test_throwaway_node_leaves_nothing(tmp_path):
    # AMQP_URL is ignored with --throwaway. ERL_EPMD_PORT: as on a machine
    # with no epmd running yet, where Erlang would start one that stays.
    result = run_demo("--throwaway", url=dead_url(),
                      env={"TMPDIR": str(tmp_path), "ERL_EPMD_PORT": str(get_port(None))})
    out = passed(result)
    assert "throwaway node ready" in out and "stopped the throwaway RabbitMQ node" in out
    assert "stay there" not in out
    assert_nothing_left(tmp_path)


@pytest.mark.slow
def test_ctrl_c_while_the_node_starts(tmp_path):
    proc = subprocess.Popen(demo_command("--throwaway"), cwd=ROOT,
                            env=demo_env(dead_url(), TMPDIR=str(tmp_path)),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not any("beam" in p for p in own_processes(tmp_path)):
            assert proc.poll() is None and time.monotonic() < deadline, "the node did not start"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    failed(result, 128 + signal.SIGINT, "interrupted")
    assert_nothing_left(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_creates_the_venv(tmp_path):
    # In a copy of the project, so that the .venv made is the test's own.
    copy = tmp_path / "project"
    files = subprocess.run(["git", "ls-files", "tools/demo.py", "*.py", "*.xml", "requirements.txt",
                            "amqp_support"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in files.stdout.split():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, copy / name)
    (tmp_path / "tmp").mkdir()
    result = run_demo("--throwaway", url=dead_url(), demo=copy / "tools" / "demo.py", python=None,
                      env={"TMPDIR": str(tmp_path / "tmp")}, timeout=800)
    out = text(result.stdout)  # pip's own warnings may go to stderr: not checked
    assert result.returncode == 0 and f"[terminal 1: consumer] {RECEIVED}" in out, out + text(result.stderr)
    assert f"creating {copy / '.venv'}" in out
    assert os.access(copy / ".venv" / "bin" / "python", os.X_OK)
    assert_nothing_left(tmp_path / "tmp")
