"""Where the password comes from: the URL (--url or AMQP_URL) or --password-file,
which keeps it off the command line that ps shows. It is never printed."""

from urllib.parse import quote

import psutil
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


def test_ps_shows_no_password(secret_url, tmp_path, spawn):
    # What ps (and /proc/PID/cmdline) shows of a consumer that reads its
    # password from a file: the file's name, not the password.
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    consumer = spawn("consumer.py", "amqp0-8.xml", "--queue", "q.ps." + tmp_path.name,
                     "--password-file", password_file, url=without_password(secret_url))
    consumer.wait_for_stderr("Waiting for messages")
    command_line = " ".join(psutil.Process(consumer.pid).cmdline())
    assert str(password_file) in command_line
    for form in helpers.secret_forms():
        assert form not in command_line
    helpers.delete(secret_url, queue="q.ps." + tmp_path.name)
