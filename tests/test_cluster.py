"""A cluster of three throwaway RabbitMQ nodes on localhost and a quorum queue
replicated on all three: the scripts, given every node's URL, fail over when
the node they are connected to stops. Every message the producer says the
broker took arrives (at least once); what it had not taken it says, or with
--retry sends again.

The cluster (module scope) starts once for the module: each test stops a node
and starts it again before the next test."""

import json
import re
import secrets
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

import helpers
from rabbitmq_nodes import EXTERNAL_URL, make_node

# The first test also boots the three nodes and joins them (the module's
# fixture: some 25 s on a 2-core machine, more under load), and each test
# waits up to 90 s for a script after a node stops: 120 s would cut those
# waits short, and their messages with them.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SIZE = 3
STREAM = 30000
SPECS = ["amqp0-8.xml", "amqp0-9-1.xml"]
PREFETCH = 100
PROGRESS = re.compile(r"\(the broker had taken (\d+) message\(s\); (\d+) more were sent but not"
                      r" confirmed(?:; some of the \d+ in transactions being committed may have been stored)?\)")


class Cluster:
    def __init__(self, nodes):
        self.nodes = nodes  # rabbitmq_nodes.Broker each

    @property
    def urls(self):
        """Every node's URL, in order: the scripts' --url options."""
        return [arg for node in self.nodes for arg in ("--url", node.url)]

    def node_of(self, script):
        """The node the script (a RunningScript) is connected to, by the port of its TCP connection."""
        ports = {c.raddr.port for c in psutil.Process(script.pid).net_connections("tcp")
                 if c.raddr and c.status == psutil.CONN_ESTABLISHED}
        [node] = [node for node in self.nodes if node.port in ports]
        return node

    def running(self):
        return [node for node in self.nodes if node.os_pid is not None]

    def restore(self):
        """All nodes running and in the cluster again."""
        for node in self.nodes:
            node.ensure_running()
        wait_for_members(self.nodes[0], len(self.nodes))


def wait_for_members(node, n, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        status = json.loads(node.ctl("cluster_status", "--formatter", "json"))
        if len(status["running_nodes"]) == n:
            return
        assert time.monotonic() < deadline, "the cluster never had %d running nodes" % n
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if EXTERNAL_URL:
        pytest.skip("the cluster tests start RabbitMQ nodes of their own, "
                    "but AMQP_URL points the tests at an existing broker")
    cookie = secrets.token_hex(16)  # the nodes of a cluster share their Erlang cookie
    made, ports = [], []
    try:
        for i in range(SIZE):
            node, executor = make_node(tmp_path_factory, "cluster%d" % i, avoid=ports, cookie=cookie)
            made.append((node, executor))
            ports += [node.port, int(executor._envvars["RABBITMQ_DIST_PORT"])]
        nodes = [node for node, _ in made]
        with ThreadPoolExecutor(SIZE) as pool:  # boot them side by side
            list(pool.map(lambda node: node.start(), nodes))
        for node in nodes[1:]:
            # A node joins a cluster with its app stopped; it drops its own data.
            node.ctl("stop_app")
            node.ctl("join_cluster", nodes[0].node)
            node.ctl("start_app")
            helpers.wait_for_amqp(node.url)
        wait_for_members(nodes[0], SIZE)
        yield Cluster(nodes)
    finally:
        for _, executor in made:
            executor.shut_down()


@pytest.fixture
def queues(request, cluster):
    """A queue name of this test's own for each spec (each with the same
    exchange and routing key); deleted afterwards, with every node running again."""
    base = "cluster.%s.%s" % (re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name), secrets.token_hex(3))
    made = {spec: "%s.%s" % (base, spec) for spec in SPECS}
    yield made
    cluster.restore()
    for name in made.values():
        helpers.delete(cluster.nodes[0].url, name, name)


def names(queue):
    return ["--exchange", queue, "--queue", queue, "--routing-key", queue, "--queue-type", "quorum"]


def printed(consumer):
    return [line.removeprefix(b"Received: ").removesuffix(b" from channel #1")
            for line in consumer.stdout.splitlines()]


def wait_until_printed(consumer, bodies, timeout=90):
    deadline = time.monotonic() + timeout
    while not set(bodies) <= set(printed(consumer)):
        assert time.monotonic() < deadline, "%d message(s) never printed:\n%s" % (
            len(set(bodies) - set(printed(consumer))), consumer.stderr_text)
        time.sleep(0.2)


def progress_at_losses(producer):
    """(taken, sent but not confirmed) for each loss the producer reported."""
    return [(int(taken), int(unconfirmed)) for taken, unconfirmed in PROGRESS.findall(producer.stderr_text)]


def assert_mid_stream(taken, unconfirmed, total=STREAM):
    """The node went while the producer was still sending: the broker had
    taken some messages and the producer had not yet sent them all (else the
    test would not have tested a loss in the middle of a stream)."""
    assert taken > 0, "the broker had taken nothing: the loss came before the stream"
    assert taken + unconfirmed < total, (
        "all %d messages were sent before the node stopped: make the stream longer" % total)


def stream(n=STREAM):
    bodies = [b"%d" % i for i in range(n)]
    return bodies, b"".join(b + b"\n" for b in bodies)


def test_node_loss_under_producers_and_consumers(cluster, queues, spawn):
    """A producer (--retry) and a consumer for each spec, all connected to the
    first node; it stops; they carry on on the next."""
    bodies, data = stream()
    consumers, producers = {}, {}
    for spec, queue in queues.items():
        consumers[spec] = spawn("consumer.py", "amqp0-8.xml", "--prefetch", PREFETCH, *names(queue),
                                *cluster.urls, url="")
        consumers[spec].wait_for_stderr("Waiting for messages")
        producers[spec] = spawn("producer.py", spec, "-", "--retry", *names(queue), *cluster.urls,
                                url="", input=data)
    for consumer in consumers.values():
        consumer.read_stdout_lines(1000, timeout=60)
    lost = cluster.node_of(consumers[SPECS[0]])
    assert lost is cluster.nodes[0], "they connect to the first URL that answers"
    assert {cluster.node_of(script) for script in [*consumers.values(), *producers.values()]} == {lost}
    lost.stop()

    for spec, queue in queues.items():
        producer, consumer = producers[spec], consumers[spec]
        assert producer.wait(timeout=90) == 0, producer.stderr_text
        wait_until_printed(consumer, bodies)
        consumer.send_signal(signal.SIGINT)
        assert consumer.wait(timeout=30) == 0, consumer.stderr_text

        # Each script named the node it lost and the one it reached next.
        for script in (consumer, producer):
            err = script.stderr_text
            assert "lost the connection to amqp://guest@127.0.0.1:%d/%%2F: " % lost.port in err, err
            assert "; reconnecting\n" in err, err
            assert "connected to amqp://guest@127.0.0.1:%d/%%2F\n" % cluster.nodes[1].port in err, err
            assert "Traceback" not in err
        # The producer said what the broker had taken when the node went (by
        # confirms on 0-9-1, by commits on 0-8), and sent the rest again.
        assert re.search(PROGRESS.pattern + "; reconnecting", producer.stderr_text), producer.stderr_text
        losses = progress_at_losses(producer)
        assert_mid_stream(*losses[0])
        assert producer.stderr_text.endswith("Sent %d message(s) to exchange %r with routing key"
                                             " %r.\n" % (STREAM, queue, queue))
        got = printed(consumer)
        assert set(got) == set(bodies)
        assert helpers.queue_depth(cluster.nodes[1].url, queue) == 0
        # A message arrives twice only if the producer sent it again (it was
        # not confirmed when a connection went) or the consumer had printed
        # it but its ack was lost (at most --prefetch per lost connection).
        resent = sum(unconfirmed for _, unconfirmed in losses)
        consumer_losses = consumer.stderr_text.count("lost the connection to")
        duplicates = len(got) - len(bodies)
        assert duplicates <= resent + PREFETCH * consumer_losses, (
            "%d duplicate(s): more than the %d sent again and --prefetch %d for each of %d loss(es)"
            % (duplicates, resent, PREFETCH, consumer_losses))
        print("%s: progress at each loss: %s; %d duplicate(s)" % (spec, losses, duplicates))


def test_producer_without_retry_says_what_the_cluster_took(cluster, queues, spawn):
    """A producer for each spec, connected to the second node (the first URL
    given); it stops: one line each, and every message it counts as taken is
    in the queue on the other nodes."""
    bodies, data = stream()
    first, *others = cluster.nodes[1:] + cluster.nodes[:1]
    urls = [arg for node in [first, *others] for arg in ("--url", node.url)]
    producers = {spec: spawn("producer.py", spec, "-", *names(queue), *urls, url="", input=data)
                 for spec, queue in queues.items()}
    for queue in queues.values():
        helpers.wait_for_depth(others[0].url, queue, 2000)
    assert {cluster.node_of(producer) for producer in producers.values()} == {first}
    first.stop()
    for spec, queue in queues.items():
        producer = producers[spec]
        assert producer.wait(timeout=60) == 1, producer.stderr_text
        [line] = producer.stderr_text.splitlines()
        assert line.startswith("producer.py: error: lost the connection to"
                               " amqp://guest@127.0.0.1:%d/%%2F: " % first.port), line
        assert PROGRESS.search(line).end() == len(line), line
        [(taken, unconfirmed)] = progress_at_losses(producer)
        assert_mid_stream(taken, unconfirmed)
        got = set(helpers.get_all(others[0].url, queue))
        assert set(bodies[:taken]) <= got, "a message counted as taken is missing"
        print("%s: taken: %d, in the queue: %d" % (spec, taken, len(got)))
