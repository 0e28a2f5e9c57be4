"""The producer's progress line: on a terminal (stderr a tty), a long run
shows messages sent and taken, redrawn in place, erased before every other
line and at the end; with stderr not a terminal, nothing of it.

The producer runs as a process with its stderr on a pseudo-terminal. A run
is made to last, without timing anything, by RabbitMQ's memory alarm: with
a watermark of 0 the broker stops reading from publishers, the producer
waits for confirms, and the test lets it go once the progress line shows.
"""

import os
import re
import signal
import subprocess
import termios
import threading
import time

import pytest

import helpers
from helpers import ROOT
from test_faults import PROGRESS

SPECS = ["amqp0-8.xml", "amqp0-9-1.xml"]
MESSAGES = 100_000
# One drawing of the progress line: "\r" + the line + erase to its end.
FRAME = re.compile(rb"\rsent (\d+), (?:confirmed|committed) (\d+), (\d+) msg/s, \d+:\d\d\x1b\[K")
BLOCKED = "The broker blocked the connection (low on memory); waiting until it unblocks."
UNBLOCKED = "The broker unblocked the connection; going on."


class OnTerminal:
    """`python producer.py ARGS` with stderr on a pseudo-terminal (80 columns
    unless told, no newline translation, so the bytes read are the bytes written),
    stdout a pipe, stdin fed from a thread."""

    def __init__(self, *args, url, input, env=None, columns=80):
        master, slave = os.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.ONLCR  # oflag: "\n" stays "\n"
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        termios.tcsetwinsize(slave, (24, columns))
        self.proc = subprocess.Popen(
            helpers._command("producer.py", args), cwd=ROOT,
            env=helpers.script_env(url, {"TERM": "xterm", **(env or {})}),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=slave, start_new_session=True)
        os.close(slave)
        self.master = master
        self.tty = b""
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        threading.Thread(target=self._feed, args=(input,), daemon=True).start()

    def _read(self):
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the last process holding the terminal is gone
                chunk = b""
            with self.changed:
                self.tty += chunk
                self.changed.notify_all()
            if not chunk:
                return

    def _feed(self, data):
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.close()
        except OSError:
            pass

    def wait_for_frames(self, n=1, timeout=30):
        """Wait until the progress line has been drawn n times; return the frames."""
        with self.changed:
            done = self.changed.wait_for(lambda: len(FRAME.findall(self.tty)) >= n
                                         or not self.reader.is_alive(), timeout)
        assert done and len(FRAME.findall(self.tty)) >= n, "no progress line: %r" % self.tty[-2000:]
        return FRAME.findall(self.tty)

    def wait(self, timeout=60):
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("still running; the terminal shows %r" % self.tty[-2000:]) from None
        self.reader.join(10)
        return status

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.reader.join(10)
        os.close(self.master)
        self.proc.stdout.close()


@pytest.fixture
def on_terminal():
    started = []

    def start(*args, **kw):
        started.append(OnTerminal(*args, **kw))
        return started[-1]
    yield start
    for producer in started:
        producer.kill()


def screen(data):
    """The lines a terminal shows after data, as it handles "\\r", "\\n"
    and erase-to-end-of-line; the last is the line the cursor is on."""
    lines, line, col = [], [], 0
    for token in re.findall(rb"\x1b\[K|\r|\n|[^\r\n\x1b]+|\x1b", data):
        if token == b"\r":
            col = 0
        elif token == b"\n":
            lines.append(b"".join(line).decode())
            line, col = [], 0
        elif token == b"\x1b[K":
            del line[col:]
        else:
            for i in range(len(token)):
                byte = token[i:i + 1]
                if col < len(line):
                    line[col] = byte
                else:
                    line.append(byte)
                col += 1
    return lines + [b"".join(line).decode()]


def counts(frames):
    return [(int(sent), int(taken)) for sent, taken, _rate in frames]


def lines_of(n):
    return b"".join(b"%d\n" % i for i in range(n))


@pytest.fixture
def low_memory(broker):
    """A function that sets off RabbitMQ's memory alarm (the broker then
    reads nothing from publishers) and one that clears it; cleared at the end."""
    def block():
        broker.ctl("set_vm_memory_high_watermark", "0")

    def unblock():
        broker.ctl("set_vm_memory_high_watermark", "0.4")  # RabbitMQ's default
    yield block, unblock
    unblock()


def sent_line(n, names):
    return "Sent %d message(s) to exchange %r with routing key %r." % (n, names.exchange, names.routing_key)


@pytest.mark.parametrize("spec", SPECS)
def test_long_run_shows_progress_then_erases_it(spec, broker, names, low_memory, on_terminal):
    block, unblock = low_memory
    block()
    producer = on_terminal(spec, "-", *names.args, url=broker.url, input=lines_of(MESSAGES))
    first = counts(producer.wait_for_frames())
    unblock()
    assert producer.wait() == 0, producer.tty.decode()
    frames = counts(FRAME.findall(producer.tty))
    # Counts only grow, none beyond the run, and the run went past the first.
    assert frames == sorted(frames, key=lambda c: c[0]) == sorted(frames, key=lambda c: c[1])
    assert all(taken <= sent <= MESSAGES for sent, taken in frames)
    assert first[0][1] < MESSAGES
    # What stays on the terminal: whole lines, none of them progress, and the
    # cursor on an empty line.
    shown = screen(producer.tty)
    expected = [BLOCKED, UNBLOCKED] if spec == "amqp0-9-1.xml" else []  # 0-8 cannot tell
    assert shown == [*expected, sent_line(MESSAGES, names), ""], shown
    assert all(len(m.group()) <= 80 for m in FRAME.finditer(producer.tty))
    assert producer.proc.stdout.read() == b""
    assert helpers.queue_depth(broker.url, names.queue) == MESSAGES


def test_progress_line_fits_a_narrow_terminal(broker, names, low_memory, on_terminal):
    # A line as wide as the terminal would wrap, and "\r" would then redraw
    # only its last part.
    block, unblock = low_memory
    block()
    producer = on_terminal("amqp0-9-1.xml", "-", *names.args, url=broker.url, input=lines_of(1000),
                           columns=20)
    with producer.changed:
        drawn = producer.changed.wait_for(lambda: re.search(rb"\r\w[^\n]*\x1b\[K", producer.tty), 30)
    assert drawn, producer.tty
    unblock()
    assert producer.wait() == 0, producer.tty.decode()
    drawings = re.findall(rb"\r([^\r\n\x1b]*)\x1b\[K", producer.tty)
    assert drawings and max(map(len, drawings)) == 19, drawings


def test_status_line_erases_the_progress_line_first(broker, names, low_memory, on_terminal):
    # The broker's "unblocked" comes while the progress line shows: it must
    # not be written onto it.
    block, unblock = low_memory
    block()
    producer = on_terminal("amqp0-9-1.xml", "-", *names.args, url=broker.url, input=lines_of(MESSAGES))
    producer.wait_for_frames()
    unblock()
    assert producer.wait() == 0, producer.tty.decode()
    before = producer.tty[:producer.tty.index(UNBLOCKED.encode())]
    assert before.endswith(b"\r\x1b[K"), before[-200:]


def test_failure_mid_run_leaves_one_clean_error_line(broker, names, low_memory, on_terminal):
    block, unblock = low_memory
    block()
    producer = on_terminal("amqp0-9-1.xml", "-", *names.args, url=broker.url, input=lines_of(MESSAGES))
    producer.wait_for_frames()
    broker.ctl("close_all_connections", "test: closed mid-run")
    assert producer.wait() == 1, producer.tty.decode()
    shown = screen(producer.tty)
    assert shown[0] == BLOCKED and shown[-1] == "", shown
    assert len(shown) == 3 and shown[1].startswith("producer.py: error: "), shown
    assert "closed mid-run" in shown[1]


def test_ctrl_c_leaves_one_clean_line(broker, names, low_memory, on_terminal):
    block, unblock = low_memory
    block()
    producer = on_terminal("amqp0-8.xml", "-", *names.args, url=broker.url, input=lines_of(MESSAGES))
    producer.wait_for_frames()
    producer.proc.send_signal(signal.SIGINT)
    unblock()  # so the producer can close its connection
    assert producer.wait() == 1, producer.tty.decode()
    [line, end] = screen(producer.tty)
    assert line.startswith("producer.py: error: interrupted by SIGINT before the end (the broker had taken "), line
    assert PROGRESS.search(line) and end == "", screen(producer.tty)


def test_short_run_on_a_terminal_prints_what_it_always_did(broker, names, on_terminal):
    producer = on_terminal("amqp0-9-1.xml", "hello", *names.args, url=broker.url, input=b"")
    assert producer.wait() == 0, producer.tty.decode()
    assert producer.tty == (sent_line(1, names) + "\n").encode()


@pytest.mark.parametrize("term", ["dumb"])
def test_no_progress_on_a_dumb_terminal(term, broker, names, low_memory, on_terminal):
    # A terminal that cannot erase a line gets none: the run prints what a
    # run with stderr in a file prints. Seen after the run (its connection
    # blocked for as long as a progress line would take to show).
    block, unblock = low_memory
    block()
    producer = on_terminal("amqp0-8.xml", "-", *names.args, url=broker.url,
                           input=lines_of(MESSAGES), env={"TERM": term})
    wait_for_blocked_connection(broker)
    blocked_for_a_while(broker)
    unblock()
    assert producer.wait() == 0, producer.tty.decode()
    assert producer.tty == (sent_line(MESSAGES, names) + "\n").encode()


def test_no_progress_when_stderr_is_not_a_terminal(broker, names, low_memory, spawn):
    block, unblock = low_memory
    block()
    producer = spawn("producer.py", "amqp0-9-1.xml", "-", *names.args, url=broker.url,
                     input=lines_of(MESSAGES))
    wait_for_blocked_connection(broker)
    blocked_for_a_while(broker)
    unblock()
    assert producer.wait(timeout=60) == 0, producer.stderr_text
    assert producer.stderr_text == "%s\n%s\n%s\n" % (BLOCKED, UNBLOCKED, sent_line(MESSAGES, names))


def wait_for_blocked_connection(broker, timeout=30):
    deadline = time.monotonic() + timeout
    while "blocked" not in broker.ctl("list_connections", "state").split():
        assert time.monotonic() < deadline, "no connection was blocked"
        time.sleep(0.2)


def blocked_for_a_while(broker, seconds=2):
    """Keep the producer waiting long enough for a progress line to show, if
    it would (a second and a little more): checking that something does not
    appear needs a wait, here a bounded one with no assertion on time."""
    time.sleep(seconds)
    wait_for_blocked_connection(broker)
