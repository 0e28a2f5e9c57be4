"""Throwaway RabbitMQ nodes for the tests (conftest.py) and the benchmark (bench/).

A node gets free ports (its AMQP listener on 127.0.0.1 only), a folder of its own
for its data, logs, config and Erlang cookie, and never touches the machine's
broker on the standard ports.

RabbitMQ 3 is Debian's rabbitmq-server package on this machine. RabbitMQ 4.0 and
4.3 run from the chroots that tools/rabbitmq4.py builds and caches: the node's
folder is inside its chroot, the node runs there as the chroot's rabbitmq user,
with an epmd of its own on a free port; the chroot's unavailable() says when it
cannot run.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from port_for import get_port
from pytest_rabbitmq.factories.executor import RabbitMqExecutor

import helpers
from tools import rabbitmq4

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the same path inside the chroot
RABBITMQ_CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
EXTERNAL_URL = os.environ.get("AMQP_URL")
STANDARD_PORTS = [5672, 5671, 15672, 25672, 4369]


class IsolatedRabbitMqExecutor(RabbitMqExecutor):
    """pytest-rabbitmq's executor (its own node name, ports, data and log folders),
    kept apart from the machine's broker in the ways pytest-rabbitmq is not: the
    node reads its own config files instead of /etc/rabbitmq's (Debian's here has
    `listeners.tcp.local = 127.0.0.1:5672`, which a node would add to its own
    listeners), keeps its Erlang cookie in its folder, and listens on 127.0.0.1 only.

    chroot: a tools/rabbitmq4.Chroot to run the node in (path must be inside it),
    as its rabbitmq user, with an epmd of its own on a free port; None: the
    machine's RabbitMQ 3.
    """

    def __init__(self, port, dist_port, node, path, config="", chroot=None):
        (path / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{port}\n{config}")
        (path / "rabbitmq-env.conf").write_text("")
        here = Path(chroot.inside(path) if chroot else path)  # the folder as the node sees it
        server = chroot.command([RABBITMQ_SERVER]) if chroot else RABBITMQ_SERVER
        super().__init__(server, "127.0.0.1", port, dist_port, RABBITMQ_CTL,
                         logpath=here / "log", path=here, plugin_path=here, node_name=node)
        self._envvars.update(
            HOME=str(here),
            RABBITMQ_CONFIG_FILE=str(here / "rabbitmq.conf"),
            RABBITMQ_CONF_ENV_FILE=str(here / "rabbitmq-env.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(here / "advanced.config"),
            RABBITMQ_FEATURE_FLAGS_FILE=str(here / "feature_flags"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_ADDRESS="127.0.0.1",
            LC_ALL="C.UTF-8",
        )
        self.chroot = chroot
        self.chrooted = chroot is not None
        if chroot:
            # An epmd of its own (the chroot's Erlang, not the system's), which
            # stop() ends with the node: it carries the node's environment.
            epmd_port = get_port(None, [port, dist_port, *STANDARD_PORTS])
            self._envvars.update(ERL_EPMD_PORT=str(epmd_port), PATH="/usr/sbin:/usr/bin:/sbin:/bin")
            uid, gid = chroot.user_ids()
            for folder, _, files in os.walk(path):
                for name in [folder, *(os.path.join(folder, f) for f in files)]:
                    os.chown(name, uid, gid)
        self.path = path
        self.log_dir = path / "log"
        self._stdin = subprocess.DEVNULL
        self._stdout = open(path / "stdout.log", "ab")  # noqa: SIM115 (lives as long as the node)
        self._stderr = subprocess.STDOUT

    def ctl_command(self, *args):
        """The command line of `rabbitmqctl ARGS` for this node (run it with env=self.envvars)."""
        return self.chroot.command([RABBITMQ_CTL, *args]) if self.chroot else [RABBITMQ_CTL, *args]

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
        """Stop the node for good: at the end of the session or module. A chrooted
        node's folder goes too (it is in the cache that later runs reuse)."""
        self.stop()
        self._stdout.close()
        if self.chrooted:
            shutil.rmtree(self.path, ignore_errors=True)

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
    a throwaway node (under AMQP_URL they skip the test). major: 3 or 4 for a
    throwaway node, None for the broker in AMQP_URL; version: "3", "4.0" or
    "4.3" for a throwaway node (the chroot's name), None for AMQP_URL's."""

    def __init__(self, url, executor=None):
        self.url = url
        parts = urlsplit(url)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        self._ex = executor
        self.node = executor._envvars["RABBITMQ_NODENAME"] if executor else None
        self.path = executor.path if executor else None
        self.version = None if executor is None else executor.chroot.name if executor.chroot else "3"
        self.major = None if executor is None else int(self.version.split(".")[0])

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
        done = subprocess.run(ex.ctl_command("-q", *args), env=ex.envvars,
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


def _chroot_folder(chroot, name):
    """A new folder for a RabbitMQ 4 node inside its chroot; folders that
    interrupted runs left there over a day ago are removed."""
    base = chroot.rootfs / "tmp" / "txamqp-nodes"
    base.mkdir(mode=0o755, exist_ok=True)
    for old in base.iterdir():
        if old.stat().st_mtime < time.time() - 86400:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))


def make_node(folders, name, config="", avoid=(), cookie=None, version="3"):
    """A throwaway RabbitMQ node on free ports, with config added to its
    rabbitmq.conf, not started yet; returns (Broker, executor). version: "3"
    (the machine's rabbitmq-server) or a chroot of tools/rabbitmq4.py ("4.0", "4.3").

    folders: something whose mktemp(name) makes a new folder, like pytest's
    tmp_path_factory (a RabbitMQ 4 node's folder is in the chroot instead).
    cookie: the Erlang cookie, the same for nodes that are to form a cluster
    (by default each node makes its own)."""
    chroot = None if version == "3" else rabbitmq4.CHROOTS[version]
    if chroot:
        problem = chroot.unavailable()
        if problem:
            pytest.skip(problem)
        path = _chroot_folder(chroot, name)
    else:
        if not os.access(RABBITMQ_SERVER, os.X_OK):
            pytest.fail(f"{RABBITMQ_SERVER} is missing: run the tests with `python3 tools/test.py` "
                        f"(it installs rabbitmq-server), or `apt-get install rabbitmq-server`",
                        pytrace=False)
        path = folders.mktemp(name)
    port = get_port(None, [*avoid, *STANDARD_PORTS])
    dist_port = get_port(None, [port, *avoid, *STANDARD_PORTS])
    if cookie is not None:
        # HOME is the node's folder: Erlang reads the cookie from $HOME/.erlang.cookie.
        (path / ".erlang.cookie").write_text(cookie)
        (path / ".erlang.cookie").chmod(0o400)
    executor = IsolatedRabbitMqExecutor(port, dist_port, f"txamqp-{name}-{port}@localhost", path, config,
                                        chroot=chroot)
    return Broker(f"amqp://guest:guest@127.0.0.1:{port}/%2F", executor), executor


def start_node(folders, name, config="", avoid=(), version="3"):
    """make_node's node, started; returns (Broker, executor)."""
    node, executor = make_node(folders, name, config, avoid, version=version)
    started = time.monotonic()
    try:
        node.start()
    except BaseException:
        executor.shut_down()
        raise
    node.start_seconds = time.monotonic() - started
    return node, executor
