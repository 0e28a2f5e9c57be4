"""Exchange types mean what they say: a headers exchange routes by the
message's headers (producer --header, consumer --header and --x-match), and
the producer adds no binding of its own where the consumer's binding is a
pattern or a header match (topic, headers). End to end, the scripts as
processes; rabbitmqctl shows the bindings."""

import pytest

from command_line import options
import helpers
from helpers import fails, run_script

SPECS = ["amqp0-8.xml", "amqp0-9-1.xml"]


def bindings(broker, exchange):
    """(queue, routing key, arguments) of every binding from exchange."""
    out = broker.ctl("list_bindings", "source_name", "destination_name", "routing_key", "arguments")
    rows = [line.split("\t") for line in out.splitlines()]
    return sorted((row[1], row[2], row[3]) for row in rows if row[0] == exchange)


def with_type(names, exchange_type, routing_key=None):
    return ["--exchange", names.exchange, "--queue", names.queue, "--exchange-type", exchange_type,
            "--routing-key", routing_key or names.routing_key]


@pytest.mark.parametrize("spec", SPECS)
def test_headers_exchange_routes_by_headers(spec, broker, names, spawn):
    args = with_type(names, "headers")
    consumer = spawn("consumer.py", spec, *args, "--header", "colour=red", "--header", "size=big",
                     url=broker.url)
    consumer.wait_for_stderr("Waiting for messages")
    # x-match all (the default): a message with only one of the two headers matches nothing.
    half = run_script("producer.py", spec, "red only", *args, "--header", "colour=red", url=broker.url)
    fails(half, 1, "1 of 1 message(s) were returned unroutable: 312 NO_ROUTE")
    both = run_script("producer.py", spec, "red and big", *args, "--header", "size=big",
                      "--header", "colour=red", "--header", "extra=1", url=broker.url)
    assert both.returncode == 0, both.stderr
    assert consumer.read_stdout_lines(1) == ["Received: red and big from channel #1"]
    # One binding, the consumer's; the producer added none.
    [(queue, key, arguments)] = bindings(broker, names.exchange)
    assert (queue, key) == (names.queue, "")
    assert all(word in arguments for word in ("x-match", "all", "colour", "red", "size", "big"))


def test_headers_exchange_x_match_any(broker, names, spawn):
    args = with_type(names, "headers")
    consumer = spawn("consumer.py", "amqp0-9-1.xml", *args, "--x-match", "any", "--header", "colour=red",
                     "--header", "size=big", url=broker.url)
    consumer.wait_for_stderr("Waiting for messages")
    other = run_script("producer.py", "amqp0-9-1.xml", "blue", *args, "--header", "colour=blue",
                       url=broker.url)
    fails(other, 1, "returned unroutable")
    one = run_script("producer.py", "amqp0-9-1.xml", "big", *args, "--header", "size=big", url=broker.url)
    assert one.returncode == 0, one.stderr
    assert consumer.read_stdout_lines(1) == ["Received: big from channel #1"]


@pytest.mark.parametrize("spec", SPECS)
def test_topic_producer_adds_no_binding(spec, broker, names, spawn):
    consumer = spawn("consumer.py", spec, *with_type(names, "topic", "logs.*"), url=broker.url)
    consumer.wait_for_stderr("Waiting for messages")
    sent = run_script("producer.py", spec, "disk full", *with_type(names, "topic", "logs.error"),
                      url=broker.url)
    assert sent.returncode == 0, sent.stderr
    assert consumer.read_stdout_lines(1) == ["Received: disk full from channel #1"]
    assert bindings(broker, names.exchange) == [(names.queue, "logs.*", "[]")]


def test_topic_producer_first_is_returned_not_bound(broker, names):
    # No consumer has bound a pattern yet: the message comes back (mandatory)
    # and the exit status says so; no binding appears.
    sent = run_script("producer.py", "amqp0-9-1.xml", "early", *with_type(names, "topic", "logs.error"),
                      url=broker.url)
    fails(sent, 1, "returned unroutable")
    assert bindings(broker, names.exchange) == []


def test_fanout_binds_once_whatever_the_keys(broker, names, spawn):
    consumer = spawn("consumer.py", "amqp0-9-1.xml", *with_type(names, "fanout", "one"), url=broker.url)
    consumer.wait_for_stderr("Waiting for messages")
    sent = run_script("producer.py", "amqp0-9-1.xml", "to all", *with_type(names, "fanout", "two"),
                      url=broker.url)
    assert sent.returncode == 0, sent.stderr
    assert consumer.read_stdout_lines(1) == ["Received: to all from channel #1"]
    assert bindings(broker, names.exchange) == [(names.queue, "", "[]")]


@pytest.mark.parametrize(("script", "args", "words"), [
    ("producer.py", ["m", "--header", "novalue"], "argument --header: 'novalue' is not KEY=VALUE"),
    ("producer.py", ["m", "--header", "=v"], "argument --header: '=v' is not KEY=VALUE"),
    ("consumer.py", ["--header", "a=b"], "--header binds only with --exchange-type headers"),
    ("consumer.py", ["--exchange-type", "headers"], "--exchange-type headers needs a --header"),
])
def test_header_usage_errors(script, args, words, broker):
    done = run_script(script, "amqp0-9-1.xml", *args, url=broker.url)
    fails(done, 2, words)


@pytest.mark.parametrize("argv, queue, routing_key", [
    ([], "test_message_queue", "test_routing_key"),
    (["--queue", "orders"], "orders", "orders"),
    (["--queue", "test_message_queue"], "test_message_queue", "test_routing_key"),
    (["--queue", "orders", "--routing-key", "k"], "orders", "k"),
    (["--exchange", ""], "test_message_queue", "test_message_queue"),
    (["--exchange", "", "--queue", "orders"], "orders", "orders"),
])
def test_the_routing_key_defaults_to_the_queue_name(argv, queue, routing_key, monkeypatch):
    monkeypatch.setenv("AMQP_URL", "amqp://127.0.0.1:1/%2F")
    for parser in (options.producer_parser("Produce."), options.consumer_parser("Consume.")):
        args = options.parse_args(parser, ["amqp0-9-1.xml", *argv])
        assert (args.queue, args.routing_key) == (queue, routing_key)


def test_queues_named_without_a_routing_key_get_only_their_own(broker, names):
    # One exchange, two queues named by --queue alone: each is bound with its
    # own name, so the consumer of orders never gets what was sent for invoices.
    orders, invoices = names.queue + ".orders", names.queue + ".invoices"
    try:
        for queue in (orders, invoices):
            sent = run_script("producer.py", "amqp0-9-1.xml", "for " + queue, "--exchange", names.exchange,
                              "--queue", queue, url=broker.url)
            assert sent.returncode == 0, sent.stderr
        got = run_script("consumer.py", "amqp0-9-1.xml", "--exchange", names.exchange, "--queue", orders,
                         "--count", "1", url=broker.url)
        assert got.stdout.decode() == "Received: for %s from channel #1\n" % orders, got.stderr
        assert helpers.get_all(broker.url, orders) == []
        assert helpers.get_all(broker.url, invoices) == [("for " + invoices).encode()]
        assert bindings(broker, names.exchange) == [(invoices, invoices, "[]"), (orders, orders, "[]")]
    finally:
        helpers.delete(broker.url, queue=orders)
        helpers.delete(broker.url, queue=invoices)
