"""Several --url options (or URLs in AMQP_URL): the scripts connect to the first
that answers, each with the credentials and virtual host of its own URL. One
node and ports where nothing listens are enough here; tests/test_cluster.py
has a real cluster."""

import pytest
from port_for import get_port

from amqp_support import BrokerURL
from command_line import options
import helpers
from helpers import SECRET, run_script


def dead_url(user="guest", password="guest", vhost="%2F"):
    """A URL on a port where nothing listens."""
    return "amqp://%s:%s@127.0.0.1:%d/%s" % (user, password, get_port(None), vhost)


def shown(url):
    """The URL as messages show it (no password)."""
    return str(BrokerURL(url))


def parse(*argv):
    return options.parse_args(options.make_parser("Tests."), ["amqp0-8.xml", *argv])


def test_several_urls_in_order_and_one_password_file(tmp_path, monkeypatch):
    monkeypatch.delenv("AMQP_URL", raising=False)
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    args = parse("--url", "amqp://a@h1:5673/v1", "--url", "amqps://b:x@h2/v2",
                 "--password-file", str(secret))
    assert [str(b) for b in args.url] == ["amqp://a@h1:5673/v1", "amqps://b@h2:5671/v2"]
    assert [b.password for b in args.url] == ["s3cret", "s3cret"]
    assert [str(b) for b in parse().url] == ["amqp://guest@localhost:5672/%2F"]


def test_several_urls_in_amqp_url(monkeypatch):
    monkeypatch.setenv("AMQP_URL", " amqp://u:p@h1/  amqp://u:p@h2:5673/ ")
    assert [str(b) for b in parse().url] == ["amqp://u@h1:5672/%2F", "amqp://u@h2:5673/%2F"]
    # --url replaces AMQP_URL, whatever it holds.
    assert [str(b) for b in parse("--url", "amqp://h3").url] == ["amqp://guest@h3:5672/%2F"]


def test_bad_url_among_several_in_amqp_url():
    result = run_script("consumer.py", "amqp0-8.xml",
                        url="amqp://guest@localhost/ redis://guest:%s@localhost/" % SECRET)
    helpers.fails(result, 2, "AMQP_URL:", "not an amqp://", "redis://guest:***@localhost/")


@pytest.mark.parametrize("spec", ["amqp0-8.xml", "amqp0-9-1.xml"])
def test_first_url_that_answers_with_its_own_login(spec, vhost_url):
    # The dead broker's user, password and vhost would all fail on the live one:
    # the producer must log in with what the live broker's URL says.
    down = dead_url("nobody", "wrong", "no-such-vhost")
    result = run_script("producer.py", spec, "reached", "--queue", "q", "--url", down,
                        "--url", vhost_url, url="")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().splitlines()
    assert lines[0] == ("cannot connect to %s: connection refused (is RabbitMQ"
                        " running there?); trying the next URL" % shown(down)), lines
    assert lines[1] == "connected to %s" % shown(vhost_url), lines
    assert helpers.get_all(vhost_url, "q") == [b"reached"]


def test_password_file_for_every_url(secret_url, names, tmp_path):
    secret = tmp_path / "password"
    secret.write_text(helpers.PASSWORD + "\n")
    user_only = secret_url.replace(":" + SECRET + "@", "@")
    down = dead_url("txamqp-secret-user", "", "%2F").replace(":@", "@")
    # Through AMQP_URL this time, two URLs separated by a space.
    result = run_script("producer.py", "amqp0-9-1.xml", "x", *names.args,
                        "--password-file", secret, url="%s %s" % (down, user_only))
    assert result.returncode == 0, result.stderr
    helpers.assert_no_secret(result)
    assert helpers.get_all(user_only.replace("@", ":%s@" % SECRET, 1), names.queue) == [b"x"]


def test_every_url_refused_without_retry():
    first, second = dead_url(), dead_url()
    result = run_script("consumer.py", "amqp0-8.xml", "--no-reconnect", "--url", first,
                        "--url", second, url="")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.decode().splitlines()
    assert lines == [
        "cannot connect to %s: connection refused (is RabbitMQ running there?);"
        " trying the next URL" % shown(first),
        "consumer.py: error: cannot connect to %s: connection refused (is RabbitMQ running"
        " there?)" % shown(second)]


@pytest.mark.parametrize("script", ["producer.py", "consumer.py"])
def test_help_shows_the_url_option(script):
    # The default URL's "%2F" once made argparse's help formatting fail.
    result = run_script(script, "--help", url="")
    assert result.returncode == 0, result.stderr
    assert b"--url URL" in result.stdout and b"amqp://guest:guest@localhost:5672/%2F" in result.stdout
