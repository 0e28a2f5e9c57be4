"""Every failure a user can cause: exit status 2 for usage and spec, 1 for
broker and network; one line on stderr, no traceback without --verbose.

Every case runs twice (helpers.run_failing), as is and with --verbose, with
helpers.PASSWORD in its URL: neither run may show the password anywhere on
stdout or stderr. The stand_in fixture is in conftest.py."""

import io
import os
import socket
import sys
from pathlib import Path

import pytest
from twisted.python.failure import Failure
import txamqp

from command_line import options, running
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
    ("missing.xml", ["'missing.xml' is not a spec file: there is no such file"]),
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
    (["producer.py", "amqp0-8.xml", "x", "--count", "many"], ["--count: must be a whole number 1 or more, not 'many'"]),
    (["consumer.py", "amqp0-8.xml", "--prefetch", "-"], ["--prefetch"]),
    (["consumer.py", "amqp0-8.xml", "--no-such-option"], ["unrecognized option '--no-such-option'"]),
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


@pytest.fixture
def nobody_url():
    """A URL (with the password) where a listening socket notes every
    connection: a usage error must be found before any."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)

        def connected():
            try:
                server.accept()[0].close()
                return True
            except BlockingIOError:
                return False
        yield "amqp://guest:%s@127.0.0.1:%d/%%2F" % (SECRET, server.getsockname()[1]), connected


# What AMQP cannot carry (a short is 0..65535), what would retry forever or
# do nothing: one line naming the option and its range, exit 2, no connection.
# Undecodable bytes in argv arrive in Python as lone surrogates: os.fsdecode.
NOT_UTF8 = os.fsdecode(b"caf\xe9\x1b")
BIG = "m" * 60000


@pytest.mark.parametrize("argv, words", [
    (["consumer.py", "amqp0-8.xml", "--prefetch", "-1"], ["argument --prefetch", "from 0 to 65535, not '-1'"]),
    (["consumer.py", "amqp0-8.xml", "--prefetch", "65536"], ["argument --prefetch", "from 0 to 65535"]),
    (["consumer.py", "amqp0-8.xml", "--heartbeat", "-5"], ["argument --heartbeat", "from 0 to 65535"]),
    (["producer.py", "amqp0-8.xml", "x", "--heartbeat", "70000"], ["argument --heartbeat", "from 0 to 65535"]),
    (["consumer.py", "amqp0-8.xml", "--timeout", "-1"], ["argument --timeout", "above 0 and at most 86400"]),
    (["producer.py", "amqp0-8.xml", "x", "--timeout", "nan"], ["argument --timeout", "above 0", "'nan'"]),
    (["consumer.py", "amqp0-8.xml", "--timeout", "0"], ["argument --timeout", "above 0"]),
    (["consumer.py", "amqp0-8.xml", "--timeout", "1e300"], ["argument --timeout", "at most 86400"]),
    (["consumer.py", "amqp0-8.xml", "--count", "0"], ["argument --count", "1 or more, not '0'"]),
    (["consumer.py", "amqp0-8.xml", "--count", "-1"], ["argument --count", "1 or more"]),
    (["producer.py", "amqp0-8.xml", "x", "--count", "-3"], ["argument --count", "1 or more"]),
    (["consumer.py", "amqp0-8.xml", "--queue", NOT_UTF8], ["argument --queue", r"'caf\xe9\x1b' is not valid UTF-8"]),
    (["producer.py", "amqp0-8.xml", "x", "--exchange", NOT_UTF8], ["argument --exchange", "not valid UTF-8"]),
    (["producer.py", "amqp0-8.xml", "x", "--routing-key", NOT_UTF8], ["argument --routing-key", "not valid UTF-8"]),
    (["producer.py", "hello world"], ["'hello world' is not a spec file"]),
    (["producer.py", "amqp0-8.xml", "-x", BIG, BIG], ["unrecognized option '-x'", 'goes after "--"']),
    (["producer.py", "amqp0-8.xml", "one", "-\x1b[2J", BIG], [r"unrecognized option '-\x1b[2J'"]),
    (["consumer.py", "amqp0-8.xml", BIG], ["unexpected argument 'mmmm", "..."]),
    (["consumer.py", "amqp0-8.xml", "--exchange-type", BIG], ["invalid choice", "(choose from"]),
])
def test_values_amqp_cannot_carry_are_usage_errors(argv, words, nobody_url):
    url, connected = nobody_url
    err = fails(run_script(*argv, url=url), 2, *words)
    assert len(err) < 400 and "\x1b" not in err, err  # short, and nothing that drives the terminal
    assert not connected()


# RabbitMQ's URI query parameters (https://www.rabbitmq.com/docs/uri-query-parameters):
# heartbeat and connection_timeout are honoured (test_urls.py); any other is
# refused, naming it and what to do instead, before connecting.
@pytest.mark.parametrize("query, words", [
    ("cacertfile=/ca.pem", ["'cacertfile'", "use --cafile"]),
    ("certfile=/c.pem", ["'certfile'", "use --certfile"]),
    ("keyfile=/k.pem", ["'keyfile'", "use --keyfile"]),
    ("verify=verify_none", ["'verify'", "always verifies"]),
    ("server_name_indication=other", ["'server_name_indication'"]),
    ("fail_if_no_peer_cert=true", ["'fail_if_no_peer_cert'"]),
    ("channel_max=5", ["'channel_max'"]),
    ("frame_max=4096", ["'frame_max'"]),
    ("auth_mechanism=external", ["'auth_mechanism'", "PLAIN"]),
    ("colour=red", ["'colour'", "not a query parameter"]),
    ("heartbeat=often", ["the URL's heartbeat (seconds)", "from 0 to 65535, not 'often'"]),
    ("heartbeat=70000", ["the URL's heartbeat", "from 0 to 65535"]),
    ("connection_timeout=0", ["the URL's connection_timeout (milliseconds)"]),
    ("connection_timeout=1.5", ["the URL's connection_timeout (milliseconds)"]),
    ("heartbeat=5&heartbeat=6", ["'heartbeat' is given twice"]),
])
@pytest.mark.parametrize("given", ["--url", "AMQP_URL"])
def test_url_query_parameters_not_honoured_are_refused(query, words, given, nobody_url):
    url, connected = nobody_url
    url += "?" + query
    argv = ["--url", url] if given == "--url" else []
    fails(run_script("consumer.py", "amqp0-9-1.xml", "--no-reconnect", "--timeout", "1", *argv, url=url), 2, *words)
    assert not connected()


def test_a_message_that_starts_with_a_dash_goes_after_double_dash(broker, names):
    sent = helpers.run_script("producer.py", "amqp0-9-1.xml", *names.args, "--", "-x", url=broker.url)
    assert sent.returncode == 0, sent.stderr
    assert helpers.get_all(broker.url, names.queue) == [b"-x"]


def test_prefetch_zero_means_no_limit(broker, names):
    helpers.declare(broker.url, names.exchange, names.queue, names.routing_key)
    helpers.publish(broker.url, names.exchange, names.routing_key, b"m")
    got = helpers.run_script("consumer.py", "amqp0-9-1.xml", "--prefetch", "0", "--count", "1",
                             *names.args, url=broker.url)
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"Received: m from channel #1\n"


def help_entries(script):
    """--help's text for each option: {"--queue": "queue name (default: ...)"}."""
    result = helpers.run_script(script, "--help", url="amqp://")
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode().split("options:", 1)[1]
    entries = {}
    for block in text.split("\n  -")[1:]:
        names, _, rest = ("-" + block).partition("  ")
        for name in names.replace(",", " ").split():
            if name.startswith("-"):
                entries[name] = " ".join(rest.split())
    return entries


@pytest.mark.parametrize("script, defaults, flags", [
    ("consumer.py", {"--exchange": "test_message_exchange", "--exchange-type": "direct",
                     "--queue": "test_message_queue", "--routing-key": "test_routing_key",
                     "--queue-type": "classic", "--timeout": "10.0", "--heartbeat": "60",
                     "--prefetch": "100", "--count": "run until stopped", "--offset": "next"},
     ["--no-reconnect", "--verbose", "--help"]),
    ("producer.py", {"--exchange": "test_message_exchange", "--queue": "test_message_queue",
                     "--count": "1"},
     ["--transient", "--retry", "--verbose"]),
])
def test_help_shows_each_default_once_and_true(script, defaults, flags):
    entries = help_entries(script)
    for name, text in entries.items():
        assert text.count("(default:") <= 1, (name, text)
        for wrong in ("(default: None)", "(default: False)", "(default: [])"):
            assert wrong not in text, (name, text)
    for name, default in defaults.items():
        assert "(default: %s" % default in entries[name], (name, entries[name])
    for name in flags:
        assert "(default:" not in entries[name], (name, entries[name])


def test_bad_url_in_environment():
    fails(run_script("consumer.py", "amqp0-8.xml", url="redis://guest:%s@localhost/" % SECRET), 2,
          "not an amqp://")


# A user name or password with "@ : / ? # %" not percent-encoded: one line that
# says how to encode them, and never the password (what the URL holds there).
ENCODE = "percent-encode @ : / ? # % in the user name and password as %40 %3A %2F %3F %23 %25"


@pytest.mark.parametrize("url, password", [
    ("amqp://u:p@ss:w/rd%x#@host:5661/%2F", "p@ss:w/rd%x#"),
    ("amqp://guest:%s@127.0.0.1:1/%%2F" % helpers.PASSWORD, helpers.PASSWORD),
    ("amqp://guest:50%off@127.0.0.1:1/%2F", "50%off"),
    ("amqp://guest:100%@127.0.0.1:1/%2F", "100%"),
    ("amqp://guest:p@ss@127.0.0.1:1/%2F", "p@ss"),
    ("amqp://guest:pa:ss@127.0.0.1:1/%2F", "pa:ss"),
    ("amqp://guest:pa?ss@127.0.0.1:1/%2F", "pa?ss"),
    ("amqp://guest:pa/ss@127.0.0.1:1/%2F", "pa/ss"),
    ("amqp://gu/est:s3cret@127.0.0.1:1/%2F", "s3cret"),
    ("amqp://guest:pa[ss@127.0.0.1:1/%2F", "pa[ss"),
])
@pytest.mark.parametrize("given", ["--url", "AMQP_URL"])
def test_url_with_characters_to_percent_encode(url, password, given):
    argv = ["--url", url] if given == "--url" else []
    result = helpers.run_script("consumer.py", "amqp0-8.xml", "--no-reconnect", *argv,
                                url=url if given == "AMQP_URL" else NOWHERE)
    err = fails(result, 2, ENCODE)
    assert password not in err and "the port in" not in err, err
    assert (given + ":" if given == "AMQP_URL" else "argument --url:") in err, err


@pytest.mark.parametrize("value", ["", " "])
def test_empty_amqp_url_is_a_usage_error(value, monkeypatch, capsys):
    # In-process: a script given AMQP_URL="" would connect to localhost:5672.
    monkeypatch.setenv("AMQP_URL", value)
    with pytest.raises(SystemExit) as exited:
        options.parse_args(options.consumer_parser("Consume."), ["amqp0-9-1.xml"])
    assert exited.value.code == 2
    assert "AMQP_URL is set but empty" in capsys.readouterr().err


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

@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", SPECS)
def test_wrong_password(spec, broker):
    url = "amqp://guest:%s@%s:%d/%%2F" % (SECRET, broker.host, broker.port)
    fails(run_script("producer.py", spec, "x", url=url), 1, "ACCESS_REFUSED", "Login was refused")


@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", SPECS)
def test_unknown_vhost(spec, secret_url):
    url = secret_url.replace("/%2F", "/no-such-vhost")
    fails(run_script("consumer.py", spec, url=url), 1, "NOT_ALLOWED", "vhost no-such-vhost not found")


@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", SPECS)
def test_vhost_without_access(spec, broker, secret_url):
    broker.ctl("add_vhost", "locked-out")
    try:
        url = secret_url.replace("/%2F", "/locked-out")
        fails(run_script("producer.py", spec, "x", url=url), 1,
              "access to vhost 'locked-out' refused for user 'txamqp-secret-user'")
    finally:
        broker.ctl("delete_vhost", "locked-out")


@pytest.mark.rabbitmq4
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("script", ["producer.py", "consumer.py"])
def test_exchange_redeclared_with_another_type(spec, script, secret_url, names):
    first = helpers.run_script("producer.py", spec, "x", *names.args, url=secret_url)
    assert first.returncode == 0, first.stderr
    message = ["x"] if script == "producer.py" else []
    again = run_script(script, spec, *message, *names.args, "--exchange-type", "fanout", url=secret_url)
    err = fails(again, 1, "the broker at amqp://txamqp-secret-user@",
                "closed the channel: 406 PRECONDITION_FAILED", "inequivalent arg 'type'",
                "(in reply to exchange.declare)")
    assert "lost the connection" not in err  # the channel ended, the connection was fine


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
def test_broker_refuses_amqp_0_8_and_0_9_1(answer, offered, stand_in):
    # A broker that refuses amqp0-8.xml gets one more connection, with
    # amqp0-9-1.xml (the fallback, said once); refused again, that is the failure.
    server = stand_in(lambda conn: conn.sendall(answer))
    result = run_script("consumer.py", "amqp0-8.xml", url=server.url)
    err = fails(result, 1, "refused AMQP 0-9-1", offered)
    assert "use amqp0-" not in err  # no other spec file to offer
    assert result.stderr.decode().splitlines()[0] == (
        "the broker at amqp://guest@127.0.0.1:%d/%%2F refused AMQP 0-8 (RabbitMQ 4.0 and later);"
        " using amqp0-9-1.xml" % server.port)
    # Twice (run_script runs it plain, then with --verbose): one fallback each time.
    assert server.headers == [b"AMQP\x01\x01\x08\x00", b"AMQP\x00\x00\x09\x01"] * 2, err


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
    # amqp_support._client overrides txamqp 0.8.2's internals: with any other
    # release installed, the scripts say so instead of failing somewhere inside.
    # Another release, as pip would leave it: the package and its dist-info
    # folder (here the package is 0.8.2's code, under 0.9.0's name), first on the path.
    site = tmp_path / "site"
    (site / "txamqp-0.9.0.dist-info").mkdir(parents=True)
    (site / "txamqp-0.9.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: txamqp\nVersion: 0.9.0\n")
    (site / "txamqp").symlink_to(Path(txamqp.__file__).parent)
    result = helpers.run_script(script, "amqp0-8.xml", "x", url=NOWHERE, env={"PYTHONPATH": str(site)})
    fails(result, 1, "%s: error: amqp_support works with txamqp 0.8.2 only" % script,
          "txamqp 0.9.0 is installed", "pip install txamqp==0.8.2")


def test_verbose_run_does_not_ask_for_verbose(monkeypatch):
    # An unexpected exception: with --verbose, the traceback is already shown.
    class Interruption:
        signal = None
    for verbose in (False, True):
        stderr = io.StringIO()
        monkeypatch.setattr(sys, "stderr", stderr)
        monkeypatch.setattr(running, "stderr", running.Stderr(stderr))
        running.stderr.start("consumer.py", live=False)
        with pytest.raises(SystemExit):
            running.exit_with_one_line(Failure(RuntimeError("odd")), verbose, Interruption())
        last = stderr.getvalue().splitlines()[-1]
        assert last.startswith("consumer.py: error: RuntimeError: odd")
        assert ("run with --verbose" in last) is not verbose, last
