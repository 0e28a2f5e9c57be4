"""Plain helpers for the tests: run the scripts as a person would, and look at a
broker through pika, a neutral AMQP client that the project itself does not use.

Every wait here has a timeout; a test that waits for something that never comes
fails with what the process printed so far instead of hanging.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pika
import pika.exceptions

from tools import rabbitmq4

ROOT = Path(__file__).resolve().parent.parent

# The password no output may show. It has characters that a URL must
# percent-encode, so both of its forms are looked for.
PASSWORD = "pa55:w0rd/n0t@to#show"
SECRET = quote(PASSWORD, safe="")  # the password as a URL holds it


def project_modules():
    """Names of the project's own modules: the .py files at the repo root and the
    packages (folders with __init__.py) at the root, with their submodules."""
    names = {p.stem for p in ROOT.glob("*.py")}
    for init in ROOT.glob("*/__init__.py"):
        package = init.parent
        if package.name in ("tests", "tools"):
            continue
        names.add(package.name)
        names.update(f"{package.name}.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__")
    return sorted(names)


def script_env(url, env=None):
    """The environment a script runs in: ours, AMQP_URL=url, and DeprecationWarning
    turned into an error when it is raised from the project's own code (the script
    itself runs as __main__). Values of None in env remove that variable."""
    result = dict(os.environ)
    own = ",".join(f"error::DeprecationWarning:{m}" for m in ["__main__", *project_modules()])
    # Later PYTHONWARNINGS entries take precedence: ours go last.
    result["PYTHONWARNINGS"] = ",".join(filter(None, [result.get("PYTHONWARNINGS"), own]))
    result["AMQP_URL"] = url
    for key, value in (env or {}).items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


class Python:
    """A Python the scripts run with: the tests' own (sys.executable, .venv's
    through tox), or the newest one, which runs in a chroot of tools/rabbitmq4.py
    (Debian sid's python3, with a virtualenv of requirements.txt).

    A chroot's Python sees the repo and the temporary folder (where the tests'
    files are) at the same paths as the tests, through bind mounts that end with
    it, and reaches the throwaway nodes on 127.0.0.1 (a chroot shares the
    network). The process started is the script itself (each step of the
    command line execs the next): signals and exit statuses are the script's."""

    def __init__(self, name, version, chroot=None):
        self.name, self.version, self.chroot = name, version, chroot

    def __repr__(self):
        return self.name

    def unavailable(self):
        """Why this Python cannot run the scripts here (one line), or None."""
        return self.chroot.python_unavailable() if self.chroot else None

    def command(self, argv):
        """The command line that runs `python ARGV` in the repo root."""
        if self.chroot is None:
            return [sys.executable, *argv]
        temp = Path(tempfile.gettempdir()).resolve()
        binds = [temp] if ROOT.is_relative_to(temp) else [ROOT, temp]
        return self.chroot.python_command(argv, binds=binds, cwd=ROOT)

    def env(self, env):
        """env, less what would point a Python in the chroot at the tests' own."""
        if self.chroot is None:
            return env
        return {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


VENV_PYTHON = Python("py%d.%d" % sys.version_info[:2], "%d.%d" % sys.version_info[:2])
NEWEST_PYTHON = Python("py%d.%d" % rabbitmq4.PYTHON_CHROOT.python, "%d.%d" % rabbitmq4.PYTHON_CHROOT.python,
                       rabbitmq4.PYTHON_CHROOT)


def _command(name, args, python=None):
    return (python or VENV_PYTHON).command([str(name), *map(str, args)])


def run_script(name, *args, url, input=None, timeout=60, env=None, python=None):
    """Run `python NAME ARGS...` in the repo root and wait for it to end.

    Returns a CompletedProcess with bytes stdout and stderr. input (bytes or str)
    is the script's standard input; without it, stdin is /dev/null. Raises
    subprocess.TimeoutExpired (after killing the script) past timeout seconds.
    python: a Python (the python fixture) to run it with; by default the tests' own.
    """
    if isinstance(input, str):
        input = input.encode()
    stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(
        _command(name, args, python), cwd=ROOT, env=(python or VENV_PYTHON).env(script_env(url, env)),
        capture_output=True, timeout=timeout, **stdin,
    )


class RunningScript:
    """A script running in the background, its stdout and stderr read by threads.

    stdout and stderr hold the bytes read so far; stderr_text is stderr decoded.
    """

    def __init__(self, name, *args, url, input=None, env=None, python=None):
        if isinstance(input, str):
            input = input.encode()
        self.command = _command(name, args, python)
        self.shown = ["python", str(name), *map(str, args)]  # for messages
        self.proc = subprocess.Popen(
            self.command, cwd=ROOT, env=(python or VENV_PYTHON).env(script_env(url, env)),
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, killed whole at cleanup
        )
        self.pid = self.proc.pid
        self.stdout = b""
        self.stderr = b""
        self._stdout_pos = 0  # how far read_stdout_lines has handed out lines
        self._changed = threading.Condition()
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, "stderr"), daemon=True),
        ]
        if input is not None:
            self._threads.append(threading.Thread(target=self._feed, args=(input,), daemon=True))
        for thread in self._threads:
            thread.start()

    def _pump(self, stream, attr):
        fd = stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self._changed:
                if chunk:
                    setattr(self, attr, getattr(self, attr) + chunk)
                self._changed.notify_all()
            if not chunk:
                return

    def _feed(self, data):
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.close()
        except OSError:  # the script ended without reading it all
            pass

    @property
    def stderr_text(self):
        return self.stderr.decode("utf-8", "backslashreplace")

    @property
    def returncode(self):
        return self.proc.poll()

    def _describe(self):
        state = "still running" if self.proc.poll() is None else f"exited with {self.proc.returncode}"
        return (f"{' '.join(self.shown[1:])} ({state})\n"
                f"--- stdout:\n{self.stdout.decode('utf-8', 'backslashreplace')}"
                f"--- stderr:\n{self.stderr_text}")

    def _wait_until(self, done, timeout, what):
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done():
                remaining = deadline - time.monotonic()
                finished = self.proc.poll() is not None and not any(
                    t.is_alive() for t in self._threads[:2])
                if remaining <= 0 or finished:
                    why = "the script ended" if finished else f"{timeout} s passed"
                    raise AssertionError(f"{why} before {what}: {self._describe()}")
                self._changed.wait(min(remaining, 0.2))

    def wait_for_stderr(self, substring, timeout=30):
        """Wait until stderr contains substring (str); return stderr so far as text."""
        needle = substring.encode()
        self._wait_until(lambda: needle in self.stderr, timeout, f"stderr showed {substring!r}")
        return self.stderr_text

    def read_stdout_lines(self, n, timeout=30):
        """The next n lines of stdout (str, without the newline), waiting at most
        timeout seconds for them."""
        def lines_available():
            return self.stdout.count(b"\n", self._stdout_pos) >= n
        self._wait_until(lines_available, timeout, f"{n} more stdout line(s) came")
        lines = []
        with self._changed:
            for _ in range(n):
                end = self.stdout.index(b"\n", self._stdout_pos)
                lines.append(self.stdout[self._stdout_pos:end].decode("utf-8", "backslashreplace"))
                self._stdout_pos = end + 1
        return lines

    def send_signal(self, sig=signal.SIGINT):
        self.proc.send_signal(sig)

    def wait(self, timeout=30):
        """Wait for the script to end; return its exit status. Its output is then
        complete in stdout and stderr."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s: {self._describe()}") from None
        for thread in self._threads:
            thread.join(5)
        return self.proc.returncode

    def kill(self):
        """Kill the script's whole process group (if still running) and clean up."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        for thread in self._threads:
            thread.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


def start_script(name, *args, url, input=None, env=None, python=None):
    """Start `python NAME ARGS...` in the repo root in the background (python:
    as for run_script). The caller must kill() it: tests use the spawn fixture,
    which does that for them."""
    return RunningScript(name, *args, url=url, input=input, env=env, python=python)


def secret_forms(password=PASSWORD):
    """The password as it may appear in output: as is, percent-encoded (as in a
    URL), and as Python's repr of str and bytes would show it."""
    return {password, quote(password, safe=""), quote(password), repr(password)[1:-1],
            repr(password.encode())[2:-1]}


def assert_no_secret(result, password=PASSWORD):
    """Neither stdout nor stderr of a finished script shows the password."""
    for name, data in (("stdout", result.stdout), ("stderr", result.stderr)):
        text = data.decode("utf-8", "backslashreplace")
        for form in secret_forms(password):
            assert form not in text, "the password (as %r) is in %s:\n%s" % (form, name, text)


def run_failing(*argv, url, **kwargs):
    """run_script for a case that fails, then the same command with --verbose
    (Twisted's log and tracebacks): the same exit status, and the password
    shown by neither run. The case must carry the password (SECRET in its URL
    or arguments). Returns the first run's result."""
    assert SECRET in url or any(SECRET in str(arg) for arg in argv), \
        "this case must use a URL with the known password"
    result = run_script(*argv, url=url, **kwargs)
    assert_no_secret(result)
    verbose = run_script(*argv, "--verbose", url=url, **kwargs)
    assert_no_secret(verbose)
    assert verbose.returncode == result.returncode, verbose.stderr
    return result


# The status line of a script given amqp0-8.xml that meets a broker refusing
# AMQP 0-8 (RabbitMQ 4) and carries on with amqp0-9-1.xml: once, first.
FELL_BACK = re.compile(r"the broker at \S+ refused AMQP 0-8 \(RabbitMQ 4\.0 and later\);"
                       r" using amqp0-9-1\.xml\n")


def without_fallback_note(err):
    """stderr (str) without the fallback's status line at its start, if it has one."""
    match = FELL_BACK.match(err)
    return err[match.end():] if match else err


def fails(result, status, *words):
    """The script exited with status and said one line naming words (after the
    fallback's status line, if it fell back); returns the line."""
    err = without_fallback_note(result.stderr.decode("utf-8", "backslashreplace"))
    assert result.returncode == status, err
    assert err.count("\n") == 1 and err.endswith("\n"), "not one line: %r" % err
    assert "Traceback" not in err
    for word in words:
        assert word in err, "%r not in %r" % (word, err)
    return err


def wait_for_port(host, port, timeout=60):
    """Return once host:port accepts TCP connections."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=5).close()
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on {host}:{port} after {timeout} s: {exc!r}") from None
            time.sleep(0.2)


# --- looking at the broker with pika ------------------------------------------

def connect(url):
    """A pika BlockingConnection to url that gives up within seconds."""
    params = pika.URLParameters(url)
    params.socket_timeout = 10
    params.stack_timeout = 15
    params.blocked_connection_timeout = 15
    params.connection_attempts = 1
    return pika.BlockingConnection(params)


class _Channel:
    """with _Channel(url) as ch: a channel on a connection of its own."""

    def __init__(self, url):
        self.url = url

    def __enter__(self):
        self.conn = connect(self.url)
        return self.conn.channel()

    def __exit__(self, *exc):
        if self.conn.is_open:
            self.conn.close()


def wait_for_amqp(url, timeout=60):
    """Return once url accepts an AMQP connection (login included)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connect(url).close()
            return
        except pika.exceptions.AMQPError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"no AMQP connection to {url} after {timeout} s: {exc!r}") from None
            time.sleep(0.2)


def queue_depth(url, queue):
    """Ready messages in queue, counted by a passive queue.declare (right for
    quorum queues too, unlike rabbitmqctl list_queues)."""
    with _Channel(url) as ch:
        return ch.queue_declare(queue, passive=True).method.message_count


def wait_for_depth(url, queue, at_least, timeout=60):
    """Return once queue holds at least at_least messages (it may not exist yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if queue_depth(url, queue) >= at_least:
                return
        except pika.exceptions.ChannelClosedByBroker:  # not declared yet
            pass
        assert time.monotonic() < deadline, "the queue never held %d messages" % at_least
        time.sleep(0.05)


def queue_exists(url, queue):
    try:
        queue_depth(url, queue)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return False
        raise


def purge(url, queue):
    """Empty queue; return how many messages it dropped."""
    with _Channel(url) as ch:
        return ch.queue_purge(queue).method.message_count


def get_all(url, queue, ack=True, with_properties=False):
    """Take every ready message from queue: a list of bodies (bytes), or of
    (body, pika.BasicProperties) pairs with with_properties. With ack=False
    the messages go back to the queue. Consumes rather than one basic.get
    per message, so that tens of thousands take seconds."""
    messages = []
    with _Channel(url) as ch:
        ready = ch.queue_declare(queue, passive=True).method.message_count
        if not ready:
            return messages
        ch.basic_qos(prefetch_count=0)  # no limit (nacks wait for the end)
        last = None
        for method, properties, body in ch.consume(queue, inactivity_timeout=10):
            if method is None:
                raise AssertionError("%d of %d messages came from %s" % (len(messages), ready, queue))
            messages.append((body, properties) if with_properties else body)
            last = method.delivery_tag
            if len(messages) == ready:
                break
            if ack and len(messages) % 500 == 0:  # quorum queues stop at 2000 unacked
                ch.basic_ack(delivery_tag=last, multiple=True)
        if ack:
            ch.basic_ack(delivery_tag=last, multiple=True)
        else:
            ch.basic_nack(delivery_tag=last, multiple=True, requeue=True)
        ch.cancel()
    return messages


def declare(url, exchange, queue, routing_key, exchange_type="direct", arguments=None):
    """Declare a durable exchange and queue and bind them, as the scripts do.
    An empty exchange name means the default exchange: only the queue is declared."""
    with _Channel(url) as ch:
        ch.queue_declare(queue, durable=True, arguments=arguments)
        if exchange:
            ch.exchange_declare(exchange, exchange_type, durable=True)
            ch.queue_bind(queue, exchange, routing_key)


def publish(url, exchange, routing_key, body, persistent=True):
    """Publish one message (bytes or str) with publisher confirms."""
    if isinstance(body, str):
        body = body.encode()
    with _Channel(url) as ch:
        ch.confirm_delivery()
        ch.basic_publish(exchange, routing_key, body, pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent if persistent else pika.DeliveryMode.Transient),
            mandatory=True)


def delete(url, exchange=None, queue=None):
    """Delete an exchange and/or a queue, if they exist."""
    with _Channel(url) as ch:
        if queue:
            ch.queue_delete(queue)
        if exchange:
            ch.exchange_delete(exchange)
