"""The URL's query parameters the scripts honour (RabbitMQ's URI spec):
heartbeat (seconds) and connection_timeout (milliseconds), for the whole run;
--heartbeat and --timeout, when given, win. Those refused: test_failures.py."""

import pytest

from command_line import options


def parsed(argv, monkeypatch, amqp_url="amqp://127.0.0.1:1/%2F"):
    monkeypatch.setenv("AMQP_URL", amqp_url)
    return options.parse_args(options.consumer_parser("Consume."), ["amqp0-9-1.xml", *argv])


@pytest.mark.parametrize("argv, amqp_url, heartbeat, timeout", [
    ([], "amqp://h/%2F", 60, 10.0),
    ([], "amqp://h/%2F?heartbeat=7&connection_timeout=2500", 7, 2.5),
    (["--url", "amqp://h/%2F?heartbeat=0"], "amqp://h/%2F?heartbeat=7", 0, 10.0),
    (["--heartbeat", "9", "--timeout", "4"], "amqp://h/%2F?heartbeat=7&connection_timeout=2500", 9, 4.0),
    ([], "amqp://a/%2F?connection_timeout=100 amqp://b/%2F", 60, 0.1),
])
def test_heartbeat_and_connection_timeout(argv, amqp_url, heartbeat, timeout, monkeypatch):
    args = parsed(argv, monkeypatch, amqp_url)
    assert (args.heartbeat, args.timeout) == (heartbeat, timeout)


def test_urls_that_disagree_are_refused(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exited:
        parsed([], monkeypatch, "amqp://a/%2F?heartbeat=5 amqp://b/%2F?heartbeat=6")
    assert exited.value.code == 2
    assert "the URLs give different heartbeat values" in capsys.readouterr().err


def connection_timeouts(broker):
    return sorted(int(word) for word in broker.ctl("list_connections", "timeout").split() if word.isdigit())


@pytest.mark.parametrize("argv, seen", [([], 7), (["--heartbeat", "9"], 9)])
def test_the_broker_sees_the_urls_heartbeat(argv, seen, broker, names, spawn):
    consumer = spawn("consumer.py", "amqp0-9-1.xml", *names.args, *argv, url=broker.url + "?heartbeat=7")
    consumer.wait_for_stderr("Waiting for messages")
    assert connection_timeouts(broker) == [seen]
