#!/usr/bin/env python3
"""Show the example working: python3 tools/demo.py

Does what the README's two terminals do, and prints what each one showed:

    terminal 1$ python consumer.py amqp0-8.xml
    terminal 2$ python producer.py amqp0-8.xml "producer-to-consumer test message 1"

The scripts run in .venv (created from requirements.txt if missing). The broker
is the first that answers of the URLs in AMQP_URL, else the one on
localhost:5672, else a throwaway RabbitMQ node on free ports that the demo
starts and stops (--throwaway: always that one). The spec file is amqp0-8.xml,
as in the README; with a broker that refuses AMQP 0-8 (RabbitMQ 4.0 and later)
the scripts say so and use amqp0-9-1.xml themselves.
Standard library only: it runs before any virtualenv exists.
"""

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from amqp_support import BadURL, BrokerURL  # noqa: E402 (standard library only, like this file)
from amqp_support._protocol import AMQP_0_8 as HEADER_0_8  # noqa: E402
from amqp_support._protocol import AMQP_0_9_1 as HEADER_0_9_1  # noqa: E402

VENV = ROOT / ".venv"
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
APT_INSTALL = ["apt-get", "install", "-y", "rabbitmq-server"]
DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"  # the scripts' default
MESSAGE = "producer-to-consumer test message 1"
SPEC = "amqp0-8.xml"  # the README's; the scripts fall back to amqp0-9-1.xml where it is refused
EXCHANGE, QUEUE = "test_message_exchange", "test_message_queue"  # the scripts' defaults



class DemoError(Exception):
    """A one-line reason the demo stopped, and its exit status."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM."""

    def __init__(self, signum):
        self.signum = signum


def say(text):
    print(f"demo: {text}", flush=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="tools/demo.py", description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 the message went through; 1 it did not (one line on stderr says why); "
               "2 bad usage; 130 interrupted by Ctrl-C (143 by SIGTERM).")
    parser.add_argument("--throwaway", action="store_true",
                        help="use a throwaway RabbitMQ node of the demo's own (started and stopped"
                             " by the demo), not AMQP_URL's broker or the one on localhost:5672")
    parser.add_argument("--install", action="store_true",
                        help="when RabbitMQ is not installed and no broker answers: install"
                             " rabbitmq-server with apt-get (as root). On a systemd host the package"
                             " also starts a system broker on localhost:5672 that stays")
    parser.add_argument("--rabbitmq-server", metavar="PATH", type=Path, default=RABBITMQ_SERVER,
                        help="the rabbitmq-server script that starts the throwaway node (default:"
                             " Debian's, which does not switch to the rabbitmq user as /usr/sbin's does)")
    parser.add_argument("--python", metavar="PATH",
                        help="run the scripts with this Python (with requirements.txt installed)"
                             " instead of creating or updating .venv")
    return parser.parse_args(argv)


def venv_python():
    python = VENV / "bin" / "python"
    if not python.exists():
        say(f"creating {VENV}")
        if subprocess.run([sys.executable, "-m", "venv", str(VENV)]).returncode:
            raise DemoError(f"could not create {VENV}; on Debian or Ubuntu: apt-get install python3-venv")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if subprocess.run([*pip, "-r", str(ROOT / "requirements.txt")]).returncode:
        raise DemoError("could not install requirements.txt into .venv (see pip's message above)")
    return python


# --- the broker -----------------------------------------------------------------

def read_answer(broker, header, timeout=5):
    """The first bytes a broker answers to an AMQP protocol header (b"" if it
    hangs up). Raises OSError when it cannot be reached. For amqps:// the TLS
    handshake does not check the certificate: this only asks which protocol
    the broker speaks, and sends no credentials; the scripts verify it."""
    with socket.create_connection((broker.host, broker.port), timeout) as raw:
        sock = raw
        if broker.tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(raw, server_hostname=broker.host)
        with sock:
            sock.sendall(header)
            answer = b""
            while len(answer) < 8 and (chunk := sock.recv(8 - len(answer))):
                answer += chunk
            return answer


def spec_for(broker):
    """The spec file the broker speaks: amqp0-8.xml when it accepts AMQP 0-8;
    amqp0-9-1.xml when it refuses 0-8 (answering with a protocol header of its
    own, as RabbitMQ 4.0 and later do) and takes 0-9-1. Raises DemoError (the
    broker masked) when it speaks neither."""
    where = f"{broker.host}:{broker.port}"
    try:
        if read_answer(broker, HEADER_0_8)[:1] == b"\x01":  # a frame: connection.start
            return "amqp0-8.xml"
        if read_answer(broker, HEADER_0_9_1)[:1] == b"\x01":
            return "amqp0-9-1.xml"
    except ssl.SSLError as e:
        raise DemoError(f"{broker}: no TLS at {where} ({e.reason or e})") from None
    except OSError as e:
        raise DemoError(f"{broker}: nothing answers at {where} ({e.strerror or e})") from None
    raise DemoError(f"{broker}: what answers at {where} speaks neither AMQP 0-8 nor 0-9-1")


def say_spec(spec):
    if spec != SPEC:
        say(f"the broker refuses AMQP 0-8 (RabbitMQ 4.0 or later): given {SPEC}, the scripts"
            f" say so and use {spec}")


def say_what_stays(broker):
    say(f"the scripts declare the durable exchange {EXCHANGE!r} and queue {QUEUE!r} on {broker};"
        f" they stay there after the demo, as after the README's commands (`rabbitmqctl delete_queue"
        f" {QUEUE}` removes the queue), and a message already waiting in the queue is printed"
        f" and taken by the consumer")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_epmd():
    found = shutil.which("epmd") or sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))
    if not found:
        raise DemoError("epmd (Erlang's port mapper, part of RabbitMQ's Erlang) is missing")
    return str(found if isinstance(found, str) else found[-1])


class ThrowawayNode:
    """A RabbitMQ node of our own, on free ports with its data in a temporary
    folder, and none of /etc/rabbitmq's settings (which name port 5672). Its
    epmd (the Erlang port mapper every node registers with) is ours too, on a
    port of its own: an epmd that Erlang starts by itself outlives the node."""

    def __init__(self, server):
        self.server = server
        self.procs = []
        self.dir = tempfile.TemporaryDirectory(prefix="txamqp-demo-rabbitmq-")
        path = Path(self.dir.name)
        self.port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.broker = BrokerURL(self.url)
        (path / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")
        (path / "rabbitmq-env.conf").write_text("")
        self.env = dict(
            os.environ,
            HOME=str(path),  # the Erlang cookie goes there
            RABBITMQ_NODENAME=f"txamqp-demo-{self.port}@localhost",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_MNESIA_BASE=str(path / "mnesia"),
            RABBITMQ_LOG_BASE=str(path / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(path / "enabled_plugins"),
            RABBITMQ_FEATURE_FLAGS_FILE=str(path / "feature_flags"),
            RABBITMQ_CONFIG_FILE=str(path / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(path / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(path / "rabbitmq-env.conf"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_EPMD_PORT=str(free_port()),
        )
        self.log = path / "server.log"

    def start(self, timeout=60):
        """Start epmd, then the node; return once the node answers AMQP."""
        epmd_port = int(self.env["ERL_EPMD_PORT"])
        self._spawn([find_epmd()], self.dir.name + "/epmd.log")
        # The node must find our epmd listening, or it starts one of its own.
        self._wait(lambda: socket.create_connection(("127.0.0.1", epmd_port), 1).close(), 10, "epmd")
        self._spawn([str(self.server)], self.log)
        return self._wait(lambda: spec_for(self.broker), timeout, "the RabbitMQ node")

    def _spawn(self, command, log):
        # Blocked while Popen runs, Ctrl-C cannot leave a process we do not know of.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            with open(log, "wb") as out:
                self.procs.append(subprocess.Popen(
                    command, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True))  # not hit by the terminal's Ctrl-C
        except OSError as e:
            raise DemoError(f"cannot run {command[0]}: {e.strerror or e}") from None
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})

    def _wait(self, ready, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return ready()
            except (OSError, DemoError):
                pass
            if any(proc.poll() is not None for proc in self.procs):
                tail = self.log.read_text(errors="replace")[-300:].strip() if self.log.exists() else ""
                raise DemoError(f"{what} did not start: {' '.join(tail.split()) or 'no output'}")
            if time.monotonic() > deadline:
                raise DemoError(f"{what} did not start within {timeout} s")
            time.sleep(0.3)

    def stop(self):
        """Kill the node and its epmd, each with its process group, and delete
        the folder: the node's data is thrown away, so no clean shutdown."""
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            wait_for_group_gone(proc.pid)
        self.dir.cleanup()


def wait_for_group_gone(pgid, timeout=10):
    """Return once no process is left in the group (SIGKILL takes a moment to
    land on each: the VM's erl_child_setup outlives the group's leader)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        except PermissionError:  # only zombies left, or a pgid reused: nothing of ours runs
            return
        time.sleep(0.02)


def install_rabbitmq(server, install):
    """Install rabbitmq-server with apt-get, only when asked to (--install),
    saying first what it leaves behind."""
    where = f"RabbitMQ is not installed ({server} is missing)"
    if shutil.which("apt-get") is None:
        raise DemoError(f"{where}: install RabbitMQ, or set AMQP_URL to a broker's amqp:// URL")
    if os.geteuid() != 0:
        raise DemoError(f"{where}: install it (`sudo {shlex.join(APT_INSTALL)}`; on a systemd host that"
                        f" also starts a system broker on localhost:5672), or set AMQP_URL to a broker")
    if not install:
        raise DemoError(f"{where}: run again with --install to install rabbitmq-server with apt-get"
                        f" (on a systemd host that also starts a system broker on localhost:5672,"
                        f" which stays), or set AMQP_URL to a broker")
    say(f"--install: running `apt-get update` and `{shlex.join(APT_INSTALL)}`. The package stays"
        " installed, and on a systemd host it also starts RabbitMQ as a system service on"
        " localhost:5672 that keeps running and starts at boot")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update"], APT_INSTALL):
        if subprocess.run(command, env=env).returncode:
            raise DemoError(f"`{shlex.join(command)}` failed (see its messages above)")
    if not server.exists():
        raise DemoError(f"rabbitmq-server was installed but {server} is still missing")
    with contextlib.suppress(DemoError):
        time.sleep(2)  # the package may have started its service
        spec_for(BrokerURL(DEFAULT_URL))
        say("the package started a system RabbitMQ on localhost:5672; it stays"
            " (`systemctl disable --now rabbitmq-server` stops it for good)")


def start_throwaway_node(args, cleanup):
    if not args.rabbitmq_server.exists():
        install_rabbitmq(args.rabbitmq_server, args.install)
    say("starting a throwaway RabbitMQ node (about 5 s); the demo stops it and deletes its data at the end")
    node = ThrowawayNode(args.rabbitmq_server)
    cleanup.callback(say, "stopped the throwaway RabbitMQ node")
    cleanup.callback(node.stop)
    say_spec(node.start())
    say(f"throwaway node ready: {node.broker}")
    return node.url


def find_broker(args, cleanup):
    """The AMQP_URL the scripts get."""
    if args.throwaway:
        return start_throwaway_node(args, cleanup)
    urls = os.environ.get("AMQP_URL", DEFAULT_URL).split()
    if not urls:  # as the scripts say: whoever set it meant a broker, not localhost
        raise DemoError(f"AMQP_URL is set but empty: give a URL, or unset it for {DEFAULT_URL}", status=2)
    if "AMQP_URL" in os.environ:
        try:
            brokers = [BrokerURL(url) for url in urls]
        except BadURL as e:
            raise DemoError(f"AMQP_URL: {e}", status=2) from None
        failures = []
        for broker in brokers:  # the scripts try them in this order too
            try:
                spec = spec_for(broker)
            except DemoError as e:
                failures.append(str(e))
                say(f"{e}; trying the next URL in AMQP_URL" if broker is not brokers[-1] else str(e))
                continue
            say(f"using {broker} (from AMQP_URL)")
            say_spec(spec)
            say_what_stays(broker)
            return os.environ["AMQP_URL"]
        raise DemoError("no broker in AMQP_URL answers: " + "; ".join(failures))
    local = BrokerURL(DEFAULT_URL)
    try:
        spec = spec_for(local)
    except DemoError:
        say("no broker answers on localhost:5672")
        return start_throwaway_node(args, cleanup)
    say(f"using the broker answering on localhost:5672 ({local})")
    say_spec(spec)
    say_what_stays(local)
    return DEFAULT_URL


# --- the two terminals ----------------------------------------------------------

class Terminal:
    """A script running in the background; each line it prints is shown at once,
    prefixed with the terminal's name, and kept."""

    def __init__(self, label, python, args, env):
        self.label = label
        self.lines = []  # (stream, text)
        self.changed = threading.Condition()
        print(f"[{label}]$ python {shlex.join(args)}", flush=True)
        self.proc = subprocess.Popen([str(python), *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.readers = [threading.Thread(target=self._read, args=(stream, name), daemon=True)
                        for stream, name in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr"))]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, name):
        for raw in stream:
            text = raw.decode("utf-8", "backslashreplace").rstrip("\n")
            print(f"[{self.label}] {text}", flush=True)
            with self.changed:
                self.lines.append((name, text))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, stream, substring, timeout, what):
        deadline = time.monotonic() + timeout
        with self.changed:
            while not any(s == stream and substring in t for s, t in self.lines):
                if self.proc.poll() is not None and not any(r.is_alive() for r in self.readers):
                    raise DemoError(f"{self.label} exited with status {self.proc.returncode} before {what}")
                if time.monotonic() > deadline:
                    raise DemoError(f"{self.label} did not show {what} within {timeout} s")
                self.changed.wait(0.2)

    def finish(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise DemoError(f"{self.label} was still running after {timeout} s, so it was killed") from None
        for reader in self.readers:
            reader.join(5)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def run_demo(python, url, cleanup):
    env = dict(os.environ, PYTHONUNBUFFERED="1", AMQP_URL=url)  # unbuffered: each line shows at once
    # --no-reconnect: a broker problem is one line from the consumer, not retries.
    consumer = Terminal("terminal 1: consumer", python, ["consumer.py", SPEC, "--no-reconnect"], env)
    cleanup.callback(consumer.kill)
    consumer.wait_for("stderr", "Waiting for messages", 60, "'Waiting for messages'")
    producer = Terminal("terminal 2: producer", python, ["producer.py", SPEC, MESSAGE], env)
    cleanup.callback(producer.kill)
    status = producer.finish(60)
    print(f"[terminal 2: producer] (exit status {status})", flush=True)
    if status:
        raise DemoError(f"the producer failed with exit status {status}")
    consumer.wait_for("stdout", f"Received: {MESSAGE} from channel #", 30, "the message")
    print("[terminal 1: consumer] ^C", flush=True)
    consumer.proc.send_signal(signal.SIGINT)
    status = consumer.finish(30)
    print(f"[terminal 1: consumer] (exit status {status})", flush=True)
    if status:
        raise DemoError(f"the consumer exited with status {status} after Ctrl-C")


def interrupt(signum, frame):
    raise Interrupted(signum)


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    cleanup = contextlib.ExitStack()
    status = 1
    try:
        python = args.python or venv_python()
        url = find_broker(args, cleanup)
        run_demo(python, url, cleanup)
        say("the message went from the producer to the consumer")
        status = 0
    except DemoError as e:
        print(f"demo: error: {e}", file=sys.stderr, flush=True)
        status = e.status
    except Interrupted as e:
        print(f"demo: interrupted by {signal.Signals(e.signum).name}; cleaning up", file=sys.stderr, flush=True)
        status = 128 + e.signum
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
