"""Every failure a user can cause: exit status 2 for usage and spec, 1 for
broker and network; one line on stderr, no traceback without --verbose.

Every case runs twice (helpers.run_failing), as is and with --verbose, with
helpers.PASSWORD in its URL: neither run may show the password anywhere on
stdout or stderr. The stand_in fixture is in conftest.py."""

import socket

import pytest

import helpers
import standin
from helpers import SECRET, fails
from helpers import run_failing as run_script  # as is and with --verbose, no password shown

SPECS = ["amqp0-8.xml", "amqp0-9-1.xml"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- usage and spec file: status 2, and no connection attempted -------------

NOWHERE = "amqp://guest:%s@127.0.0.1:1/%%2F" % SECRET


@pytest.mark.parametrize("script", ["producer.py", "consumer.py"])
@pytest.mark.parametrize("spec, words", [
    ("missing.xml", ["spec file 'missing.xml' not found"]),
    ("tests", ["cannot read spec file 'tests'"]),
    ("requirements.txt", ["is not an AMQP spec file"]),
    ("tests/conftest.py", ["is not an AMQP spec file"]),
])
def test_bad_spec_file(script, spec, words):
    message = ["x"] if script == "producer.py" else []
    fails(run_script(script, spec, *message, url=NOWHERE), 2, *words)


def test_xml_that_is_not_an_amqp_spec(tmp_path):
    path = tmp_path / "other.xml"
    path.write_text('<?xml version="1.0"?><amqp major="8" minor="0"><constant name="x" value="1"/></amqp>')
    fails(run_script("producer.py", str(path), "x", url=NOWHERE), 2, "is not an AMQP spec file")


@pytest.mark.parametrize("argv, words", [
    (["producer.py"], ["the following arguments are required: SPEC"]),
    (["producer.py", "amqp0-8.xml"], ["no message given"]),
    (["producer.py", "amqp0-8.xml", "x", "--count", "many"], ["--count: invalid int value"]),
    (["consumer.py", "amqp0-8.xml", "--prefetch", "-"], ["--prefetch"]),
    (["consumer.py", "amqp0-8.xml", "--no-such-option"], ["unrecognized arguments: --no-such-option"]),
    (["consumer.py", "amqp0-8.xml", "--exchange-type", "round-robin"], ["--exchange-type: invalid choice"]),
    (["consumer.py", "amqp0-8.xml", "--queue", ""], ["--queue must not be empty"]),
    (["consumer.py", "amqp0-8.xml", "--queue", "q" * 256], ["longer than AMQP's 255 bytes"]),
    (["consumer.py", "amqp0-8.xml", "--url", "http://guest:%s@localhost/" % SECRET],
     ["is not an amqp:// or amqps:// URL", "http://guest:***@localhost/"]),
    (["consumer.py", "amqp0-8.xml", "--url", "amqp://guest:%s@localhost:port/" % SECRET],
     ["the port in", "amqp://guest:***@localhost:port/"]),
])
def test_usage_errors(argv, words):
    fails(run_script(*argv, url=NOWHERE), 2, *words)


def test_bad_url_in_environment():
    fails(run_script("consumer.py", "amqp0-8.xml", url="redis://guest:%s@localhost/" % SECRET), 2,
          "not an amqp://")


# --- network: status 1 -------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("script", ["producer.py", "consumer.py"])
def test_connection_refused(script, spec):
    port = free_port()
    url = "amqp://guest:%s@127.0.0.1:%d/%%2F" % (SECRET, port)
    # the consumer retries a refused connection unless told not to
    message = ["x"] if script == "producer.py" else ["--no-reconnect"]
    fails(run_script(script, spec, *message, url=url), 1,
          "cannot connect to amqp://guest@127.0.0.1:%d/%%2F" % port, "connection refused")


def test_unknown_host():
    url = "amqp://guest:%s@no-such-host.invalid/%%2F" % SECRET
    fails(run_script("producer.py", "amqp0-8.xml", "x", url=url), 1, "unknown host")


@pytest.mark.parametrize("spec", SPECS)
def test_server_that_never_answers(spec, stand_in):
    server = stand_in(lambda conn: conn.recv(100))  # reads, says nothing
    fails(run_script("producer.py", spec, "x", "--timeout", "1", url=server.url), 1,
          "cannot connect", "no answer in time")


# --- the broker says no: status 1 -------------------------------------------

@pytest.mark.parametrize("spec", SPECS)
def test_wrong_password(spec, broker):
    url = "amqp://guest:%s@%s:%d/%%2F" % (SECRET, broker.host, broker.port)
    fails(run_script("producer.py", spec, "x", url=url), 1, "ACCESS_REFUSED", "Login was refused")


@pytest.mark.parametrize("spec", SPECS)
def test_unknown_vhost(spec, secret_url):
    url = secret_url.replace("/%2F", "/no-such-vhost")
    fails(run_script("consumer.py", spec, url=url), 1, "NOT_ALLOWED", "vhost no-such-vhost not found")


@pytest.mark.parametrize("spec", SPECS)
def test_vhost_without_access(spec, broker, secret_url):
    broker.ctl("add_vhost", "locked-out")
    try:
        url = secret_url.replace("/%2F", "/locked-out")
        fails(run_script("producer.py", spec, "x", url=url), 1,
              "access to vhost 'locked-out' refused for user 'txamqp-secret-user'")
    finally:
        broker.ctl("delete_vhost", "locked-out")


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("script", ["producer.py", "consumer.py"])
def test_exchange_redeclared_with_another_type(spec, script, secret_url, names):
    first = helpers.run_script("producer.py", spec, "x", *names.args, url=secret_url)
    assert first.returncode == 0, first.stderr
    message = ["x"] if script == "producer.py" else []
    again = run_script(script, spec, *message, *names.args, "--exchange-type", "fanout", url=secret_url)
    fails(again, 1, "406 PRECONDITION_FAILED", "inequivalent arg 'type'", "exchange.declare")


# --- what txamqp 0.8.2 would report as a lost connection, or not at all ------

@pytest.mark.parametrize("spec", SPECS)
def test_login_refused_by_hanging_up(spec, stand_in):
    # What RabbitMQ does for a client that does not ask for a reason: reads
    # start-ok, closes the socket. (connection.start is the same in both.)
    def script(conn):
        conn.sendall(standin.CONNECTION_START)
        standin.read_frame(conn)
    server = stand_in(script)
    fails(run_script("producer.py", spec, "x", url=server.url), 1,
          "closed the connection during login", "wrong user name or password")


def test_method_without_a_handler_is_reported(stand_in):
    # txamqp's dispatch fails on a method its delegate has no handler for and
    # closes the connection without a word; here it must be said.
    def script(conn):
        conn.sendall(standin.CONNECTION_START)
        standin.read_frame(conn)
        conn.sendall(standin.CONNECTION_TUNE)
        standin.read_frame(conn)
        conn.sendall(standin.method_frame("test.integer", integer_1=1, operation=0))
        conn.recv(100)
    server = stand_in(script)
    fails(run_script("consumer.py", "amqp0-8.xml", url=server.url), 1,
          "cannot connect", "test_integer")


@pytest.mark.parametrize("spec", SPECS)
def test_garbage_instead_of_amqp(spec, stand_in):
    server = stand_in(lambda conn: conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n"))
    fails(run_script("producer.py", spec, "x", url=server.url), 1,
          "cannot connect", "not AMQP")


@pytest.mark.parametrize("answer, offered", [
    (b"AMQP\x03\x01\x00\x00", "AMQP 1.0 (SASL)"),  # RabbitMQ 4.0.5 to AMQP 0-8
    (b"AMQP\x00\x00\x09\x01", "AMQP 0-9-1"),
])
def test_broker_refuses_amqp_0_8(answer, offered, stand_in):
    server = stand_in(lambda conn: conn.sendall(answer))
    err = fails(run_script("consumer.py", "amqp0-8.xml", url=server.url), 1,
                "refused AMQP 0-8", offered, "use amqp0-9-1.xml")
    assert set(server.headers) == {b"AMQP\x01\x01\x08\x00"}, err


def test_broker_refuses_amqp_0_9_1(stand_in):
    server = stand_in(lambda conn: conn.sendall(b"AMQP\x01\x01\x08\x00"))
    fails(run_script("consumer.py", "amqp0-9-1.xml", url=server.url), 1,
          "refused AMQP 0-9-1", "AMQP 0-8", "use amqp0-8.xml")
    assert set(server.headers) == {b"AMQP\x00\x00\x09\x01"}


def test_verbose_shows_the_traceback():
    port = free_port()
    url = "amqp://guest:%s@127.0.0.1:%d/%%2F" % (SECRET, port)
    result = run_script("producer.py", "amqp0-8.xml", "x", "--verbose", url=url)
    err = result.stderr.decode()
    assert result.returncode == 1
    assert "Traceback" in err and "ConnectionRefusedError" in err
    assert "producer.py: error: cannot connect to amqp://guest@127.0.0.1:%d/%%2F: connection refused" % port in err


# --- the installed txamqp ----------------------------------------------------

@pytest.mark.parametrize("script", ["producer.py", "consumer.py"])
def test_another_txamqp_release_is_refused_in_one_line(script, tmp_path):
    # amqp_support.client overrides txamqp 0.8.2's internals: with any other
    # release installed, the scripts say so instead of failing somewhere inside.
    other = tmp_path / "other_txamqp.py"
    other.write_text(
        "import importlib.metadata, runpy, sys\n"
        "real = importlib.metadata.version\n"
        "importlib.metadata.version = lambda name: '0.9.0' if name == 'txamqp' else real(name)\n"
        "sys.argv = sys.argv[1:]\n"
        "sys.path.insert(0, '')  # the repo root, as python SCRIPT would put there\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    result = helpers.run_script(other, script, "amqp0-8.xml", "x", url=NOWHERE)
    fails(result, 1, "%s: error: amqp_support works with txamqp 0.8.2 only" % script,
          "txamqp 0.9.0 is installed", "pip install txamqp==0.8.2")
