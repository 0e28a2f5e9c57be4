"""Ctrl-C, SIGTERM and SIGHUP (the terminal closed) stop the consumer cleanly: it cancels its consumer,
closes channel and connection, exits 0, and the stop loses and duplicates
nothing: every message is either printed once or still in the queue."""

import signal
import subprocess
import sys
import time

import pytest

import helpers
from helpers import run_script

STREAM = 3000


@pytest.mark.parametrize("spec", ["amqp0-8.xml", "amqp0-9-1.xml"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_signal_while_consuming_a_stream(sig, spec, broker, names, spawn, python):
    bodies = [b"message %d" % i for i in range(STREAM)]
    sent = run_script("producer.py", spec, "-", *names.args, url=broker.url,
                      input=b"".join(b + b"\n" for b in bodies), python=python)
    assert sent.returncode == 0, sent.stderr
    consumer = spawn("consumer.py", spec, "--prefetch", "50", *names.args, url=broker.url, python=python)
    consumer.read_stdout_lines(100, timeout=30)  # mid-stream
    consumer.send_signal(sig)
    assert consumer.wait(timeout=30) == 0, consumer.stderr_text
    assert "Stopping after" in consumer.stderr_text
    assert "error" not in consumer.stderr_text

    printed = [line.removeprefix(b"Received: ").removesuffix(b" from channel #1")
               for line in consumer.stdout.splitlines()]
    left = helpers.get_all(broker.url, names.queue)
    assert len(printed) < STREAM, "the signal came too late to test anything"
    assert len(set(printed)) == len(printed), "printed twice"
    assert sorted(printed + left) == sorted(bodies), "lost or duplicated"


def node_log(broker):
    [log] = broker.path.rglob("%s.log" % broker.node)
    return log


@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", ["amqp0-8.xml", "amqp0-9-1.xml"])
def test_signal_while_waiting(spec, broker, names, spawn):
    consumer = spawn("consumer.py", spec, *names.args, url=broker.url)
    consumer.wait_for_stderr("Waiting for messages", timeout=30)
    seen = node_log(broker).stat().st_size
    consumer.send_signal(signal.SIGINT)
    assert consumer.wait(timeout=30) == 0, consumer.stderr_text
    assert consumer.stdout == b""
    # Consumer cancelled, connection closed with connection.close: the broker
    # logs a clean close, not a dropped socket, and has no consumer left.
    deadline = time.monotonic() + 10  # the node writes its log a moment later
    logged = ""
    while "closing AMQP connection" not in logged and time.monotonic() < deadline:
        time.sleep(0.2)
        with node_log(broker).open("rb") as f:
            f.seek(seen)
            logged = f.read().decode()
    assert "closing AMQP connection" in logged
    assert "unexpectedly closed" not in logged
    assert broker.ctl("list_consumers", "queue_name").strip() == ""


# Run as `python -c END_CHECK SCRIPT ARGS...`: the script as __main__, after a handler
# that Python's own teardown would run at exit.
END_CHECK = ("import atexit, runpy, sys\n"
             "atexit.register(print, 'teardown ran', file=sys.stderr)\n"
             "del sys.argv[0]\n"
             "runpy.run_path(sys.argv[0], run_name='__main__')\n")


@pytest.mark.parametrize("spec", ["amqp0-8.xml", "amqp0-9-1.xml"])
def test_a_script_ends_with_its_status_and_output_without_pythons_teardown(broker, names, spec):
    """running.end_at_exit (speed only): once main's result is known the process ends
    with os._exit, its output flushed and its exit status that of task.react; what
    was registered with atexit before the script ran is skipped with the teardown."""
    def run(*argv, url=broker.url):
        return subprocess.run([sys.executable, "-c", END_CHECK, *argv], cwd=helpers.ROOT, capture_output=True,
                              env=helpers.script_env(url), stdin=subprocess.DEVNULL, timeout=60)

    sent = run("producer.py", spec, "one", "two", *names.args)
    assert (sent.returncode, sent.stderr.decode()) == (0, "Sent 2 message(s) to exchange %r with routing key %r.\n"
                                                       % (names.exchange, names.routing_key))
    got = run("consumer.py", spec, "--count", "2", *names.args)
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"Received: one from channel #1\nReceived: two from channel #1\n"
    assert b"teardown ran" not in got.stderr
    failed = run("producer.py", spec, "three", *names.args, url="amqp://guest:guest@127.0.0.1:1/%2F")
    assert failed.returncode == 1
    assert failed.stderr.decode().startswith("producer.py: error: ") and failed.stderr.count(b"\n") == 1
