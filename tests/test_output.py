"""Where the consumer's lines go, when that is not a terminal that takes anything:
stdout that cannot encode a character, stdout closed (before the start, or as
`| head` ends), a full disk. The consumer never blames the connection for its
output, never loops on a message it cannot print, and acknowledges only what
it printed: what it could not write stays in the queue."""

import os
import subprocess
import time

import pytest

import helpers
from command_line.output import Lines, OutputFailed
from helpers import ROOT, run_script


def send(broker, names, *bodies):
    sent = run_script("producer.py", "amqp0-9-1.xml", "-", *names.args, url=broker.url,
                      input=b"".join(body + b"\n" for body in bodies))
    assert sent.returncode == 0, sent.stderr


def consumer(broker, names, *args, stdout, env=None, preexec_fn=None):
    """consumer.py as a process with stdout as given; (process, its stderr file)."""
    return subprocess.Popen(
        helpers._command("consumer.py", ["amqp0-9-1.xml", *names.args, *args]), cwd=ROOT,
        env=helpers.script_env(broker.url, env), stdin=subprocess.DEVNULL, stdout=stdout,
        stderr=subprocess.PIPE, preexec_fn=preexec_fn)


def one_error_line(stderr):
    lines = [line for line in stderr.decode().splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in stderr.decode(), stderr.decode()
    assert "connection" not in lines[0], lines[0]
    return lines[0]


def test_characters_stdout_cannot_encode_are_escaped_and_acked(broker, names):
    send(broker, names, "h\u00e9llo \U0001f600".encode(), b"next")
    got = run_script("consumer.py", "amqp0-9-1.xml", "--count", "2", *names.args, url=broker.url,
                     env={"PYTHONIOENCODING": "ascii", "LC_ALL": "C"})
    assert got.returncode == 0, got.stderr
    # The project's own escapes, as for a character that is not printable:
    # a backslash in a body is written \\, so the line reads back to the bytes.
    assert got.stdout.decode("ascii").splitlines() == ["Received: h\\u00e9llo \\U0001f600 from channel #1",
                                                       "Received: next from channel #1"]
    assert helpers.queue_depth(broker.url, names.queue) == 0


def test_stdout_closed_before_the_start(broker, names):
    send(broker, names, b"unprinted")
    proc = consumer(broker, names, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(1))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert one_error_line(err) == "consumer.py: error: stdout was closed; 0 message(s) printed"
    assert helpers.get_all(broker.url, names.queue) == [b"unprinted"]


def test_stdout_closed_by_its_reader(broker, names):
    send(broker, names, b"first")
    read, write = os.pipe()
    proc = consumer(broker, names, "--prefetch", "1", stdout=write)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        assert pipe.readline() == b"Received: first from channel #1\n"
    # As `| head -n 1` ends: the pipe has no reader now.
    send(broker, names, b"second")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert one_error_line(err) == "consumer.py: error: stdout was closed; 1 message(s) printed"
    assert helpers.get_all(broker.url, names.queue) == [b"second"]


def test_stdout_on_a_full_disk(broker, names):
    send(broker, names, b"one", b"two")
    with open("/dev/full", "wb") as full:
        proc = consumer(broker, names, stdout=full)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    line = one_error_line(err)
    assert line == "consumer.py: error: cannot write to stdout: No space left on device; 0 message(s) printed"
    time.sleep(0.5)
    assert helpers.get_all(broker.url, names.queue) == [b"one", b"two"]


class Stream:
    """What Lines writes to, call by call (an unbuffered sys.stdout writes each call at once)."""

    def __init__(self):
        self.writes, self.flushes = [], 0

    def write(self, text):
        self.writes.append(text)

    def flush(self):
        self.flushes += 1


def test_lines_go_out_together_at_the_flush():
    stream = Stream()
    out = Lines(stream)
    for n in range(100):
        out.write("line %d" % n)
    assert stream.writes == [] and out.printed == 0
    out.flush()
    assert stream.writes == ["".join("line %d\n" % n for n in range(100))] and stream.flushes == 1
    assert out.printed == 100
    out.flush()  # nothing waiting: nothing written
    assert len(stream.writes) == 1 and out.printed == 100


def test_lines_wait_for_at_most_about_64_kib():
    stream = Stream()
    out = Lines(stream)
    line = "x" * 999
    for _ in range(200):  # 200,000 characters with their newlines
        out.write(line)
    assert [len(text) for text in stream.writes] == [66_000] * 3  # 66 lines each: the first 65,536 characters or more
    assert out.printed == 0  # written, not flushed: not printed yet
    out.flush()
    assert "".join(stream.writes) == (line + "\n") * 200 and out.printed == 200


def test_lines_to_a_closed_stdout_fail_at_the_flush_saying_what_was_printed():
    out = Lines(None)
    out.write("a")
    with pytest.raises(OutputFailed, match="^stdout was closed; 0 message\\(s\\) printed$"):
        out.flush()
