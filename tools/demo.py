#!/usr/bin/env python3
"""Show the example working: python3 tools/demo.py

Does what the README's two terminals do, and prints what each one showed:

    terminal 1$ python consumer.py amqp0-8.xml
    terminal 2$ python producer.py amqp0-8.xml "producer-to-consumer test message 1"

The scripts run in .venv (created from requirements.txt if missing). The broker
is the one in AMQP_URL, else the one answering on localhost:5672, else a
throwaway RabbitMQ node on free ports that the demo starts and stops (installing
RabbitMQ with apt-get first when it is missing and we are root). Standard library only.
"""

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
APT_INSTALL = "apt-get update && apt-get install -y rabbitmq-server"
MESSAGE = "producer-to-consumer test message 1"


class DemoError(Exception):
    """A one-line reason the demo stopped."""


def say(text):
    print(f"demo: {text}", flush=True)


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

def answers_amqp(host, port, timeout=3):
    """True if host:port speaks AMQP: it answers a protocol header with a frame
    (connection.start) or with the protocol header it prefers."""
    try:
        with socket.create_connection((host, port), timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            reply = sock.recv(8)
    except OSError:
        return False
    return reply[:1] == b"\x01" or reply[:4] == b"AMQP"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThrowawayNode:
    """A RabbitMQ node of our own, on free ports with its data in a temporary
    folder, and none of /etc/rabbitmq's settings (which name port 5672)."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="txamqp-demo-rabbitmq-")
        path = Path(self.dir.name)
        self.port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        (path / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")
        (path / "rabbitmq-env.conf").write_text("")
        env = dict(
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
        )
        self.log = path / "server.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([str(RABBITMQ_SERVER)], env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while not answers_amqp("127.0.0.1", self.port):
            if self.proc.poll() is not None:
                raise DemoError(f"the RabbitMQ node did not start: {self.log.read_text()[-500:].strip()}")
            if time.monotonic() > deadline:
                raise DemoError(f"the RabbitMQ node did not accept connections within {timeout} s")
            time.sleep(0.3)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # a clean shutdown
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass
        self.dir.cleanup()


def find_broker():
    """(url or None for the scripts' default, ThrowawayNode or None)."""
    url = os.environ.get("AMQP_URL")
    if url:
        parts = urlsplit(url)
        host, port = parts.hostname or "localhost", parts.port or 5672
        if not answers_amqp(host, port):
            raise DemoError(f"AMQP_URL is set to {url}, but nothing speaks AMQP at {host}:{port}")
        say(f"using the broker in AMQP_URL ({host}:{port})")
        return url, None
    if answers_amqp("localhost", 5672):
        say("using the broker answering on localhost:5672")
        return None, None
    if not RABBITMQ_SERVER.exists():
        if os.geteuid() != 0:
            raise DemoError(f"no broker on localhost:5672 and RabbitMQ is not installed; install it with: "
                            f"sudo sh -c '{APT_INSTALL}'")
        say(f"no broker on localhost:5672; installing RabbitMQ: {APT_INSTALL}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "rabbitmq-server"]):
            if subprocess.run(command, env=env).returncode:
                raise DemoError(f"`{' '.join(command)}` failed")
        time.sleep(2)  # the package may have started its service
        if answers_amqp("localhost", 5672):
            say("using the broker the rabbitmq-server package started on localhost:5672")
            return None, None
    say("no broker on localhost:5672; starting a throwaway RabbitMQ node")
    node = ThrowawayNode()
    try:
        node.wait_ready()
    except BaseException:
        node.stop()
        raise
    say(f"throwaway node ready on 127.0.0.1:{node.port}")
    return node.url, node


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
            self.proc.kill()
            self.proc.wait(10)
            raise DemoError(f"{self.label} was still running after {timeout} s, so it was killed") from None
        for reader in self.readers:
            reader.join(5)
        return self.proc.returncode


def run_demo(python, url):
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # as in a terminal: each line shows at once
    if url:
        env["AMQP_URL"] = url
    consumer = Terminal("terminal 1: consumer", python, ["consumer.py", "amqp0-8.xml"], env)
    try:
        consumer.wait_for("stderr", "Waiting for messages", 30, "'Waiting for messages'")
        producer = Terminal("terminal 2: producer", python, ["producer.py", "amqp0-8.xml", MESSAGE], env)
        status = producer.finish(30)
        print(f"[terminal 2: producer] (exit status {status})", flush=True)
        if status:
            raise DemoError(f"the producer failed with exit status {status}")
        consumer.wait_for("stdout", f"Received: {MESSAGE} from channel #", 15, "the message")
        print("[terminal 1: consumer] ^C", flush=True)
        consumer.proc.send_signal(signal.SIGINT)
        status = consumer.finish(15)
        print(f"[terminal 1: consumer] (exit status {status})", flush=True)
        if status:
            raise DemoError(f"the consumer exited with status {status} after Ctrl-C")
    finally:
        if consumer.proc.poll() is None:
            consumer.proc.kill()
            consumer.proc.wait(10)


def main():
    node = None
    try:
        python = venv_python()
        url, node = find_broker()
        run_demo(python, url)
        say("the message went from the producer to the consumer")
    except DemoError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if node:
            say("stopping the throwaway RabbitMQ node")
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
