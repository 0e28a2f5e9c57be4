"""The benchmark's means (bench/run.py, large_bodies.py): running a client as
a whole process and measuring it, the clients' command lines, and a pika
connection that checks the queues between runs.

Our scripts are run as a user runs them, `python producer.py ...` in the
root of a checkout (this one, or the baseline's with --baseline): nothing
here imports the project's modules."""

import compileall
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pika

from node import ROOT

HERE = Path(__file__).resolve().parent
PY = sys.executable
EXCHANGE, QUEUE, KEY = "bench_exchange", "bench_queue", "bench_key"
PIPE_PAGE = 4096
# Every client runs with Python's default buffering of stdout, whatever the bench's own
# environment says: with PYTHONUNBUFFERED set (some shells, CI runners and many container
# images set it) each print of pika's consumer would be a system call of its own, and the
# comparison would measure that instead of the client.
CLIENT_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
TIMEOUT = 900  # seconds any one process may take before the bench kills it


class BenchError(Exception):
    pass


@dataclass
class Run:
    seconds: float  # process start to exit
    first: float | None  # process start to its first message (stdin read / stdout line)
    cpu: float  # user + system seconds
    rss_mib: float | None  # peak RSS after exec (VmHWM), None if the process was too quick to see
    lines: int = 0  # stdout lines seen
    stderr: str = ""
    started: float = 0.0  # time.monotonic() just before the process was started

    def rate(self, n):
        return n / self.seconds

    def steady_rate(self, n):
        return n / (self.seconds - self.first) if self.first is not None else None


# --- running one process ----------------------------------------------------------

def compile_ours(root=ROOT):
    """Byte-compile every module of the checkout at root (__pycache__), as a
    user's Python does on their first run and then reuses. With
    PYTHONDONTWRITEBYTECODE set (some shells and CI set it) Python would
    compile them again in every timed run: some 15 to 20 ms more start-up
    that no user pays. The scripts themselves are compiled on every run
    anyway, as Python does with any script it runs. Every .py file counts,
    wherever it is (hidden folders such as .venv and .tox, and node_modules,
    aside), so that a module added or renamed is compiled too."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in ("node_modules", "__pycache__")]
        for name in files:
            if name.endswith(".py"):
                compileall.compile_file(os.path.join(folder, name), quiet=1)


def describe(root):
    """The commit a checkout is at, for the report ("+ changes" if its tracked files differ from it)."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        git = ["git", "--no-optional-locks", "-C", str(root)]
        commit = subprocess.run([*git, "log", "-1", "--format=%h (%cd)", "--date=format:%Y-%m-%d %H:%M"],
                                capture_output=True, text=True, check=True).stdout.strip()
        changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        return f"{commit}{' + changes not committed' if changed else ''}"
    return "not a git checkout"


def write_bodies(path, n, size, tag=b""):
    """n lines, each a body of size bytes (at least 10 + len(tag)), to path."""
    with open(path, "wb") as f:
        for i in range(n):
            head = b"%s%09d " % (tag, i)
            f.write(head + b"x" * (size - len(head)) + b"\n")


def feed(fd, data, started, box):
    """Write data to the pipe fd, noting when the reader first takes from it."""
    try:
        os.write(fd, data[:PIPE_PAGE])  # fills the one-page pipe
        view = memoryview(data)[PIPE_PAGE:]
        if view:
            # Blocks until the reader has taken the first page: its first read.
            os.write(fd, view[:PIPE_PAGE])
            box["first"] = time.monotonic() - started
            view = view[PIPE_PAGE:]
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
            while view:
                view = view[os.write(fd, view[:1 << 20]):]
    except BrokenPipeError:
        pass
    finally:
        os.close(fd)


def drain(fd, started, box):
    """Read the pipe fd to its end, noting when the first line came and counting lines."""
    lines = 0
    while chunk := os.read(fd, 1 << 16):
        if "first" not in box:
            box["first"] = time.monotonic() - started
        lines += chunk.count(b"\n")
    box["lines"] = lines
    os.close(fd)


def watch_rss(pid, cmd, done, box):
    """Keep box["rss"] at the peak RSS (VmHWM, in MiB) of the program cmd runs
    as pid. ru_maxrss would not do: it keeps the high-water mark from before
    exec, when the child was a copy of this (bigger) process. So only readings
    taken once /proc shows cmd's own command line count."""
    want = b"\0".join(os.fsencode(str(a)) for a in cmd) + b"\0"
    while not done.wait(0.02):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() != want:
                    continue
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmHWM:"):
                        box["rss"] = max(box.get("rss", 0), int(line.split()[1]) / 1024)
        except OSError:
            return


def run(cmd, stdin_data=None, watch_stdout=False, cwd=ROOT):
    """Run cmd in the folder cwd (the checkout's root) to its end; return a Run, or raise BenchError."""
    box = {}
    threads = []
    with tempfile.TemporaryFile() as err:
        stdin = subprocess.DEVNULL
        if stdin_data is not None:
            stdin, feed_fd = os.pipe()
            fcntl.fcntl(feed_fd, fcntl.F_SETPIPE_SZ, PIPE_PAGE)
        stdout = subprocess.DEVNULL
        if watch_stdout:
            drain_fd, stdout = os.pipe()
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, stdin=stdin, stdout=stdout, stderr=err, env=CLIENT_ENV)
        if stdin_data is not None:
            os.close(stdin)
            threads.append(threading.Thread(target=feed, args=(feed_fd, stdin_data, started, box)))
        if watch_stdout:
            os.close(stdout)
            threads.append(threading.Thread(target=drain, args=(drain_fd, started, box)))
        done = threading.Event()
        threads.append(threading.Thread(target=watch_rss, args=(proc.pid, cmd, done, box)))
        for t in threads:
            t.start()
        watchdog = threading.Timer(TIMEOUT, proc.kill)
        watchdog.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        watchdog.cancel()
        done.set()
        proc.returncode = os.waitstatus_to_exitcode(status)
        for t in threads:
            t.join()
        err.seek(0)
        stderr = err.read().decode("utf-8", "backslashreplace")
    if proc.returncode != 0:
        where = "" if cwd == ROOT else f" (in {cwd})"
        raise BenchError(f"{' '.join(map(str, cmd))}{where} exited {proc.returncode}: {stderr.strip()[-2000:]}")
    return Run(seconds, box.get("first"), usage.ru_utime + usage.ru_stime, box.get("rss"),
               box.get("lines", 0), stderr, started)


# --- the clients ------------------------------------------------------------------

def names(queue=QUEUE, key=KEY):
    return ["--exchange", EXCHANGE, "--queue", queue, "--routing-key", key]


def ours_producer(url, spec, message="-", queue=QUEUE, key=KEY):
    """producer.py of the checkout run() is given as cwd."""
    return [PY, "producer.py", spec, message, "--url", url, *names(queue, key)]


def ours_consumer(url, spec, n, prefetch, queue=QUEUE, key=KEY):
    return [PY, "consumer.py", spec, "--count", str(n), "--prefetch", str(prefetch), "--url", url,
            *names(queue, key)]


def pika_producer(url, confirm, message="-", queue=QUEUE, key=KEY):
    return [PY, str(HERE / "pika_producer.py"), url, message, *(["--confirm"] if confirm else []),
            *names(queue, key)]


def pika_consumer(url, n, prefetch, ack="each"):
    """pika's consumer acking each message (ack="each"), or in batches with multiple (ack="multiple")."""
    return [PY, str(HERE / "pika_consumer.py"), url, "--count", str(n), "--prefetch", str(prefetch),
            "--ack", ack, *names()]


def aio_pika_producer(url, message="-", in_flight=1000, queue=QUEUE, key=KEY):
    return [PY, str(HERE / "aio_pika_producer.py"), url, message, "--in-flight", str(in_flight), *names(queue, key)]


def broker_limit(url, window=0, connections=1, queue=QUEUE, key=KEY):
    """A raw AMQP client that costs almost no CPU, with producer.py's guarantee
    (confirms, persistent, mandatory): what the broker takes from it, with at
    most window messages unconfirmed (0: no window) on each of connections."""
    return [PY, str(HERE / "broker_limit.py"), url, "--window", str(window), "--connections", str(connections),
            *names(queue, key)]


def raw_consumer(url, n, prefetch):
    """A raw AMQP consumer that costs almost no CPU, printing and acking (with
    multiple) each read's messages as consumer.py does: what the broker gives."""
    return [PY, str(HERE / "raw_consumer.py"), url, "--count", str(n), "--prefetch", str(prefetch), *names()]


def aio_pika_consumer(url, n, prefetch):
    return [PY, str(HERE / "aio_pika_consumer.py"), url, "--count", str(n), "--prefetch", str(prefetch), *names()]


AMQP_PUBLISH = shutil.which("amqp-publish")
AMQP_TOOLS_HINT = ("amqp-publish not found: install Debian's amqp-tools (apt-get install -y amqp-tools) "
                   "to compare with it; skipping that anchor")


def amqp_publish(url, message=None, key=KEY):
    """Debian's amqp-tools (C, librabbitmq): with no message, -l publishes each
    stdin line as one message, in one process; -p makes them persistent. It
    declares nothing and waits for no confirm."""
    body = ["-l"] if message is None else ["-b", message]
    return [AMQP_PUBLISH, "-u", url, "-e", EXCHANGE, "-r", key, "-p", *body]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IDLE_QUIET, IDLE_CPU = 1.5, 0.1  # idle: this many seconds without a disk write, under this share of a core


def beam_usage(pid):
    """(bytes written to disk, CPU seconds) of the process pid so far, from /proc."""
    with open(f"/proc/{pid}/io", "rb") as f:
        written = next(int(line.split()[1]) for line in f if line.startswith(b"write_bytes:"))
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return written, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


class QueueProbe:
    """A pika connection to the node, to check and empty the queues between
    runs, and the node's Erlang VM (beam, its pid) to wait for it to be idle."""

    def __init__(self, url, beam=None):
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.chan = self.conn.channel()
        self.beam = beam
        self.idle_waits = []  # seconds each wait_idle() took

    def wait_idle(self, quiet=IDLE_QUIET, cpu_share=IDLE_CPU, wait=60, poll=0.05):
        """Wait until the node has been idle for quiet seconds: its Erlang VM
        wrote nothing to disk (write_bytes in /proc/PID/io: a backlog the
        broker is still writing, such as the queue index of messages a producer
        without confirms left, shows there) and used at most cpu_share of a
        core (plus one clock tick) meanwhile. After a producer without confirms
        the node goes on writing for about a second after the queue holds every
        message. Gives up after wait seconds (stderr says so)."""
        if self.beam is None:
            return
        started = since = time.monotonic()
        try:
            base = beam_usage(self.beam)
        except OSError as e:  # /proc/PID/io may be closed to us: then no wait, and the report says so
            print(f"bench: cannot read the node's process ({e}); not waiting for it to be idle",
                  file=sys.stderr, flush=True)
            self.beam = None
            return
        while (now := time.monotonic()) - since < quiet:
            if now - started > wait:
                print(f"bench: the node was not idle after {wait} s; going on", file=sys.stderr, flush=True)
                break
            time.sleep(poll)
            written, cpu = beam_usage(self.beam)
            if written != base[0] or cpu - base[1] > cpu_share * (time.monotonic() - since) + 1 / CLOCK_TICKS:
                since, base = time.monotonic(), (written, cpu)
        self.idle_waits.append(time.monotonic() - started)

    def node_cpu(self):
        """The CPU seconds the node's Erlang VM has used so far, or None if its process cannot be read."""
        return beam_usage(self.beam)[1] if self.beam is not None else None

    def depth(self, queue=QUEUE):
        return self.chan.queue_declare(queue, durable=True, passive=True).method.message_count

    def wait_depth(self, n, what, queue=QUEUE, wait=120, poll=0.005):
        """Poll the queue (passive queue.declare) until it holds n messages;
        return time.monotonic() at the first reading of n."""
        deadline = time.monotonic() + wait
        while (depth := self.depth(queue)) != n:
            if time.monotonic() > deadline or depth > n:
                raise BenchError(f"after {what}, {queue} holds {depth} message(s), not {n}")
            time.sleep(poll)
        return time.monotonic()

    def fill(self, bodies, queue=QUEUE, key=KEY):
        """Publish bodies (persistent, no confirms) into the empty queue from this process, untimed,
        and wait until the queue holds them all."""
        properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        for body in bodies:
            self.chan.basic_publish(EXCHANGE, key, body, properties)
        self.wait_depth(len(bodies), "filling the queue", queue)

    def purge(self, queue=QUEUE):
        self.chan.queue_purge(queue)

    def delete(self, queue):
        self.chan.queue_delete(queue)

    def close(self):
        self.conn.close()
