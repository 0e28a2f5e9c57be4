"""Where the password comes from: the URL (--url or AMQP_URL) or --password-file,
which keeps it off the command line that ps shows. It is never printed."""

import signal
from urllib.parse import quote

import pytest

import helpers
from helpers import PASSWORD


def without_password(url):
    user = url.split("//", 1)[1].split(":", 1)[0]
    return url.replace("%s:%s@" % (user, quote(PASSWORD, safe="")), "%s@" % user)


def test_password_from_a_file(secret_url, names, tmp_path):
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    url = without_password(secret_url)
    assert PASSWORD not in url and quote(PASSWORD, safe="") not in url
    sent = helpers.run_script("producer.py", "amqp0-8.xml", "from a file", *names.args,
                              "--password-file", password_file, url=url)
    assert sent.returncode == 0, sent.stderr
    helpers.assert_no_secret(sent)
    assert helpers.get_all(secret_url, names.queue) == [b"from a file"]


def test_password_file_wins_over_the_url(secret_url, names, tmp_path):
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)  # no line end: fine too
    url = secret_url.replace(quote(PASSWORD, safe=""), "not-the-password")
    sent = helpers.run_script("producer.py", "amqp0-9-1.xml", "x", *names.args,
                              "--password-file", password_file, url=url)
    assert sent.returncode == 0, sent.stderr


def test_wrong_password_in_the_file_is_not_shown(broker, tmp_path):
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    url = "amqp://guest@%s:%d/%%2F" % (broker.host, broker.port)
    for verbose in ([], ["--verbose"]):
        result = helpers.run_script("producer.py", "amqp0-8.xml", "x", "--password-file", password_file,
                                    *verbose, url=url)
        assert result.returncode == 1
        assert b"ACCESS_REFUSED" in result.stderr
        helpers.assert_no_secret(result)


@pytest.mark.parametrize("content, words", [
    (None, ["cannot read --password-file", "No such file"]),
    ("", ["is empty"]),
    ("\n" + PASSWORD, ["is empty"]),  # the first line is the password
    (b"\xff\xfe" + PASSWORD.encode(), ["cannot read --password-file"]),
])
def test_bad_password_file(content, words, tmp_path):
    path = tmp_path / "password"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = helpers.run_script("consumer.py", "amqp0-8.xml", "--password-file", path,
                                url="amqp://guest@127.0.0.1:1/%2F")
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.count("\n") == 1
    for word in words:
        assert word in err
    helpers.assert_no_secret(result)


@pytest.mark.parametrize("verbose", [[], ["--verbose"]], ids=["plain", "verbose"])
@pytest.mark.parametrize("given", ["in the URL", "in a file"])
def test_reconnecting_consumer_never_shows_the_password(given, verbose, broker, secret_url, names,
                                                        tmp_path, spawn):
    # Every line a consumer prints over a run that names its broker: waiting,
    # the lost connection (the broker closes it), reconnecting, waiting again,
    # the messages, the stop; and with --verbose Twisted's log too. None may
    # hold the password, whether it came in the URL or from --password-file.
    if given == "in a file":
        password_file = tmp_path / "password"
        password_file.write_text(PASSWORD + "\n")
        url, password = without_password(secret_url), ["--password-file", password_file]
    else:
        url, password = secret_url, []
    consumer = spawn("consumer.py", "amqp0-9-1.xml", *names.args, *password, *verbose, url=url)
    consumer.wait_for_stderr("Waiting for messages")
    helpers.publish(secret_url, names.exchange, names.routing_key, b"before")
    assert consumer.read_stdout_lines(1) == ["Received: before from channel #1"]
    broker.ctl("close_all_connections", "closed by the test")
    consumer.wait_for_stderr("reconnecting")
    helpers.publish(secret_url, names.exchange, names.routing_key, b"after")  # waits in the queue
    assert consumer.read_stdout_lines(1) == ["Received: after from channel #1"]
    consumer.send_signal(signal.SIGINT)
    assert consumer.wait() == 0, consumer.stderr_text
    # Not one line holds the password, in any form ...
    helpers.assert_no_secret(consumer)
    # ... and the lines that name the broker were printed, with its user.
    shown = without_password(secret_url)
    assert "lost the connection to %s: " % shown in consumer.stderr_text, consumer.stderr_text
    assert consumer.stderr_text.count("Waiting for messages") == 2, consumer.stderr_text
