"""The producer's input and its stop: a stdin that cannot be read, and a
signal while it sends. Either way one line says what happened and how many
messages the broker had taken, exit 1, no traceback, no hang."""

import os
import pty
import signal
import subprocess
import time

import pytest

import helpers
from helpers import ROOT

SPECS = ["amqp0-8.xml", "amqp0-9-1.xml"]


def producer(broker, names, spec, stdin, preexec_fn=None):
    return subprocess.Popen(
        helpers._command("producer.py", [spec, "-", *names.args]), cwd=ROOT,
        env=helpers.script_env(broker.url), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=preexec_fn)


def one_line(proc, timeout=60):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 1, err
    lines = err.decode().splitlines()
    assert "Traceback" not in err.decode() and len(lines) == 1, err.decode()
    return lines[0]


@pytest.mark.parametrize("spec", SPECS)
def test_stdin_open_for_writing_only(spec, broker, names, tmp_path):
    with open(tmp_path / "input", "w") as write_only:
        line = one_line(producer(broker, names, spec, write_only))
    assert line == "producer.py: error: cannot read stdin: Bad file descriptor; the broker had taken 0 message(s)"


def test_stdin_closed(broker, names):
    line = one_line(producer(broker, names, "amqp0-9-1.xml", subprocess.DEVNULL, preexec_fn=lambda: os.close(0)))
    assert line == "producer.py: error: cannot read stdin: it is closed; the broker had taken 0 message(s)"


def test_stdin_of_a_terminal_that_went_away(broker, names):
    """A pty whose other end closed (`nohup producer.py SPEC -` after the terminal
    is gone): the lines read before are sent, then the read fails with EIO."""
    controller, terminal = pty.openpty()
    os.write(controller, b"typed before\n")
    time.sleep(0.1)
    proc = producer(broker, names, "amqp0-9-1.xml", terminal)
    os.close(terminal)
    helpers.wait_for_depth(broker.url, names.queue, 1)
    os.close(controller)
    line = one_line(proc)
    assert line == "producer.py: error: cannot read stdin: Input/output error; the broker had taken 1 message(s)"
    assert helpers.get_all(broker.url, names.queue) == [b"typed before"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_signal_says_what_the_broker_had_taken(sig, spec, broker, names):
    proc = producer(broker, names, spec, subprocess.PIPE)
    proc.stdin.write(b"1\n2\n3\n")
    proc.stdin.flush()
    helpers.wait_for_depth(broker.url, names.queue, 3)  # with amqp0-8.xml: committed as stdin went quiet
    time.sleep(0.5)  # the confirms (or commit-ok) reach the producer
    proc.send_signal(sig)
    line = one_line(proc)
    assert line == ("producer.py: error: interrupted by %s before the end (the broker had taken 3 message(s);"
                    " 0 more were sent but not confirmed)" % signal.Signals(sig).name)
    proc.stdin.close()


@pytest.mark.parametrize("spec", SPECS)
def test_stdin_that_ends_as_the_producer_stops(spec, broker, names):
    # Ctrl-C in `tail -f log | producer.py SPEC -` stops the writer too: stdin ends
    # while the producer stops. Whenever that comes, the producer says one line and
    # exits 1 (its reader thread held stdin's lock across such a read, and Python
    # aborted: "could not acquire lock for <_io.BufferedReader name='<stdin>'> at
    # interpreter shutdown"). Each delay closes stdin (communicate() in one_line) at
    # another moment of the stop.
    for n, delay in enumerate((0.01, 0.03, 0.05, 0.07), 1):
        proc = producer(broker, names, spec, subprocess.PIPE)
        proc.stdin.write(b"%d\n" % n)
        proc.stdin.flush()
        helpers.wait_for_depth(broker.url, names.queue, n)  # with amqp0-8.xml: committed as stdin went quiet
        time.sleep(0.5)  # the confirm (or commit-ok) reaches the producer
        proc.send_signal(signal.SIGINT)
        time.sleep(delay)
        assert one_line(proc) == ("producer.py: error: interrupted by SIGINT before the end (the broker had taken"
                                  " 1 message(s); 0 more were sent but not confirmed)")
