"""Benchmark producer.py and consumer.py against the clients a user would pick.

    tox -e bench                                    # or: python bench/run.py [options]
    tox -e bench -- --quick                         # a smoke run (about a minute)
    tox -e bench -- --baseline DIR                  # also DIR's scripts (another checkout): new / baseline
    tox -e bench -- --profile                       # also where the scripts' CPU goes (py-spy)
    tox -e bench -- --quote-only                    # docs/benchmark.md's quote of bench/results.md, again

Starts a throwaway RabbitMQ node (bench/node.py: the tests' way,
tests/rabbitmq_nodes.py), then runs every client as a whole process, in
rounds whose order is rotated each round and reversed every other round, on
that node: the same durable exchange, queue and binding, small persistent
bodies (16 bytes by default), prefetch 100 for consumers. Prints a Markdown
report and writes it to bench/results.md (a smaller run: results-small.md);
writing results.md, it also rewrites the quote of its goals in
docs/benchmark.md, so that the figures there are the report's. It measures
and reports; it asserts no timings. It checks that the work was done (every
message in the queue, none left after a consumer) and stops if not.

With --baseline DIR, DIR is another checkout of this project (the same
layout: producer.py, consumer.py and the spec files at its root): its
producer.py and consumer.py run too, as processes from DIR, in the same
rounds beside this checkout's, and the report gives new / baseline for each
producer, consumer and one-message line. Both run on this Python and its
installed packages.

What is measured is what a user gets, each run starting on an idle node
(QueueProbe.wait_idle: its Erlang VM writing nothing to disk, using almost
no CPU, for 1.5 s):
- a producer: from just before its process starts until the queue holds all N
  messages (the bench polls the queue's depth with a passive queue.declare once
  the process has exited: a client without confirms may exit before the broker
  has queued its backlog, and gets no credit for it);
- a consumer: N messages already in the queue, from just before its process
  starts until it has printed N lines and exited (having acked them all); the
  queue must then be empty;
- one message: start to exit of a producer sending one message (min of
  several runs), beside a bare `python -c "from twisted.internet import
  reactor"`, pika, aio-pika and amqp-publish;
- peak RSS (VmHWM from /proc, read every 20 ms): each run; our scripts with
  --medium and --big messages (a lazy queue); producers with 1 MiB bodies
  (bench/large_bodies.py).
Ratios ours / anchor are taken within a round, then reported as min / median
/ max; the goals are checked against the medians.

The clients (the report's header says the same): producer.py with each spec
file; pika without confirms and with a confirm after each message; aio-pika
with confirms and a window of --in-flight (a semaphore); amqp-publish (C);
the raw publisher with producer.py's guarantee (bench/broker_limit.py) with
producer.py's window, with none, and with none on 2 and 4 connections at
once. consumer.py with each spec file; pika acking each message, and acking
with multiple once per batch (its best form of what consumer.py does);
aio-pika acking each message; the raw consumer (bench/raw_consumer.py),
acking each read with multiple as consumer.py does.
"""

import argparse
import contextlib
import datetime
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import large_bodies
import profiling
from measure import (AMQP_PUBLISH, AMQP_TOOLS_HINT, EXCHANGE, HERE, IDLE_CPU, IDLE_QUIET, KEY, PY, QUEUE, BenchError,
                     QueueProbe, aio_pika_consumer, aio_pika_producer, amqp_publish, broker_limit, compile_ours,
                     describe, ours_consumer, ours_producer, pika_consumer, pika_producer, raw_consumer, run,
                     write_bodies)
from node import ROOT, throwaway_node

BIG_QUEUE, BIG_KEY = "bench_big_queue", "bench_big_key"  # a lazy queue (policy) for the memory runs
DEFAULT_MESSAGES, DEFAULT_ROUNDS = 50_000, 3
REACTOR_IMPORT = "python -c 'from twisted.internet import reactor'"
RAW_PUBLISHER = "raw publisher, producer.py's guarantee (bench/broker_limit.py)"
CONSUMER_LIMIT_LABEL = "raw consumer, one basic.ack (multiple) per read (bench/raw_consumer.py)"
LIMIT_CONNECTIONS = (2, 4)  # the raw publisher also on this many connections in parallel, no window
BASELINE = ", baseline"  # what a label of the baseline's scripts ends with
TOLERANCE = 0.05  # --baseline: a line is "within" if new is at most this much slower than the baseline
RESULTS = HERE / "results.md"
QUOTED_IN = ROOT / "docs" / "benchmark.md"
QUOTE_START = "<!-- Quoted from bench/results.md by bench/run.py; edit nothing down to the closing comment. -->"
QUOTE_END = "<!-- End of the quote from bench/results.md. -->"
QUOTED_SECTIONS = ("Goals", "Against the baseline")


@dataclass
class Client:
    key: str
    label: str
    consumer: bool
    command: object  # (url, args) -> argv
    count: int  # messages per run
    cwd: Path = ROOT  # where it runs: our scripts run in the root of their checkout
    spec: str | None = None  # for producer.py and consumer.py: the spec file
    runs: list = field(default_factory=list)  # Run objects
    rates: list = field(default_factory=list)  # msg/s per round, None for a round that did not run it
    steady: list = field(default_factory=list)  # msg/s per round from the first message read or printed
    node_cpu: list = field(default_factory=list)  # (the node's CPU seconds, elapsed seconds) of each run

    @property
    def script(self):
        return self.spec is not None

    def cpu_us(self):
        """CPU time per message, µs, median of the runs."""
        return statistics.median(r.cpu / self.count * 1e6 for r in self.runs)

    def node_usage(self):
        """(the node's CPU µs per message, the cores the client and the node kept busy), medians, as text."""
        if len(self.node_cpu) != len(self.runs):
            return "-", "-"
        node = statistics.median(cpu / self.count * 1e6 for cpu, _ in self.node_cpu)
        busy = statistics.median((cpu + run.cpu) / seconds for (cpu, seconds), run in zip(self.node_cpu, self.runs,
                                                                                          strict=True))
        return f"{node:.0f}", f"{busy:.2f}"

    def rss(self):
        """Peak RSS, MiB, median of the runs that saw it (None if none did)."""
        rss = [r.rss_mib for r in self.runs if r.rss_mib is not None]
        return statistics.median(rss) if rss else None


def checkouts(args):
    """(key suffix, label suffix, root): this checkout, then the baseline's if given."""
    out = [("", "", ROOT)]
    if args.baseline:
        out.append((" baseline", BASELINE, args.baseline))
    return out


def say(text):
    print(text, file=sys.stderr, flush=True)


# --- the clients ----------------------------------------------------------------

def client_groups(args):
    """The benchmark's clients, in groups that run back to back: a producer
    followed by the consumer of its family, so that the consumer can take
    what the producer left in the queue. The baseline's scripts come right
    after ours."""
    n = args.messages
    groups = []
    for spec in args.specs:
        for key, suffix, root in checkouts(args):
            groups.append([
                Client(f"p {spec}{key}", f"producer.py {spec}{suffix}", False,
                       lambda url, a, s=spec: ours_producer(url, s), n, root, spec),
                Client(f"c {spec}{key}", f"consumer.py {spec}{suffix}", True,
                       lambda url, a, s=spec: ours_consumer(url, s, a.messages, a.prefetch), n, root, spec)])
    window = args.in_flight
    groups += [[Client("p pika", "pika 1.4, no confirms", False, lambda url, a: pika_producer(url, False), n),
                Client("c pika", "pika 1.4 consumer, a flush and an ack per message", True,
                       lambda url, a: pika_consumer(url, a.messages, a.prefetch), n)],
               [Client("p aio-pika", f"aio-pika 10, confirms, a window of {window:,} (a semaphore)", False,
                       lambda url, a: aio_pika_producer(url, in_flight=a.in_flight), n),
                Client("c aio-pika", "aio-pika 10 consumer, a flush and an ack per message", True,
                       lambda url, a: aio_pika_consumer(url, a.messages, a.prefetch), n)],
               [Client("p limit window", f"{RAW_PUBLISHER}, a window of {window:,}, 1 connection", False,
                       lambda url, a: broker_limit(url, window=a.in_flight), n),
                Client("c pika multiple", "pika 1.4 consumer, a flush and one ack (multiple) per batch", True,
                       lambda url, a: pika_consumer(url, a.messages, a.prefetch, ack="multiple"), n)],
               [Client("p limit", f"{RAW_PUBLISHER}, no window, 1 connection", False,
                       lambda url, a: broker_limit(url), n),
                Client("c limit", CONSUMER_LIMIT_LABEL, True,
                       lambda url, a: raw_consumer(url, a.messages, a.prefetch), n)]]
    groups += [[Client(f"p limit {k}", f"{RAW_PUBLISHER}, no window, {k} connections in parallel", False,
                       lambda url, a, k=k: broker_limit(url, connections=k), n)] for k in LIMIT_CONNECTIONS]
    if AMQP_PUBLISH:
        groups.append([Client("p amqp-publish", "amqp-publish -l -p (amqp-tools, C), no confirms", False,
                              lambda url, a: amqp_publish(url), n)])
    if args.confirm_messages:
        groups.append([Client("p pika confirm", f"pika 1.4, a confirm after each message "
                              f"({args.confirm_messages:,} per run)", False,
                              lambda url, a: pika_producer(url, True), args.confirm_messages)])
    return groups


def round_order(groups, round_no, rounds):
    """The clients of round round_no: the groups rotated by a share of them
    each round, and reversed every other round (so that ours and the
    baseline's take turns going first), each group's clients in order."""
    step = max(1, len(groups) // max(rounds, 1))
    shift = (round_no * step) % len(groups)
    order = groups[shift:] + groups[:shift]
    if round_no % 2:
        order.reverse()
    return [client for group in order for client in group]


# --- the benchmark ----------------------------------------------------------------

def measure_client(client, url, broker, args, data, line_size):
    """One run of client; returns its msg/s (messages in the queue per second
    for a producer, messages printed and acked per second for a consumer)."""
    n = client.count
    if client.consumer:
        if broker.depth() != n:  # what the previous producer left is not N messages: refill, untimed
            broker.purge()
            broker.fill([data[i * line_size:(i + 1) * line_size - 1] for i in range(n)])
        broker.wait_idle()  # no backlog of the producer still being written
        node_cpu = broker.node_cpu()
        result = run(client.command(url, args), watch_stdout=True, cwd=client.cwd)
        if result.lines != n:
            raise BenchError(f"{client.label} printed {result.lines} lines, not {n}")
        broker.wait_depth(0, client.label, wait=30)
        seconds = result.seconds
    else:
        broker.purge()
        broker.wait_idle()  # nor of the consumer's acks
        node_cpu = broker.node_cpu()
        result = run(client.command(url, args), data[:n * line_size], cwd=client.cwd)
        seconds = broker.wait_depth(n, client.label) - result.started
    if node_cpu is not None:
        client.node_cpu.append((broker.node_cpu() - node_cpu, seconds))
    client.runs.append(result)
    client.steady.append(n / (seconds - result.first) if result.first is not None else None)
    return n / seconds


def throughput(url, broker, args, data, line_size):
    groups = client_groups(args)
    for round_no in range(args.rounds):
        for client in round_order(groups, round_no, args.rounds):
            rate = measure_client(client, url, broker, args, data, line_size)
            client.rates.append(rate)
            say(f"round {round_no + 1}: {client.label}: {rate:,.0f} msg/s")
    return {c.key: c for group in groups for c in group}


def one_message(url, broker, args):
    """Start-to-exit times of a producer sending one message and of the
    imports a user waits for anyway; args.single runs each, alternating order."""
    cases = [(f"producer.py {spec}{suffix}, one message", ours_producer(url, spec, "one message"), 1, root)
             for spec in args.specs for _, suffix, root in checkouts(args)]
    cases += [(REACTOR_IMPORT, [PY, "-c", "from twisted.internet import reactor"], 0, ROOT),
              ("pika 1.4, one message, no confirms", pika_producer(url, False, "one message"), 1, ROOT),
              ("aio-pika 10, one message, confirmed", aio_pika_producer(url, "one message"), 1, ROOT)]
    if AMQP_PUBLISH:
        cases.append(("amqp-publish -p -b, one message", amqp_publish(url, "one message"), 1, ROOT))
    cases.append(("python -c pass", [PY, "-c", "pass"], 0, ROOT))
    times = {label: [] for label, _, _, _ in cases}
    sent = 0
    broker.purge()
    for i in range(args.single):
        for label, cmd, n, cwd in (cases if i % 2 == 0 else cases[::-1]):
            times[label].append(run(cmd, cwd=cwd).seconds)
            sent += n
    broker.wait_depth(sent, "the one-message producers", wait=30)
    broker.purge()
    return times


def memory(url, broker, args, node):
    """Each spec's producer.py (this checkout's) sending args.medium, then args.big messages into a
    lazy queue (so that the node pages them to disk instead of holding them in
    memory), and consumer.py taking them: flat peak RSS means the scripts keep
    a bounded number of messages in hand, however many pass through."""
    node.ctl("set_policy", "bench-lazy", f"^{BIG_QUEUE}$", '{"queue-mode":"lazy"}', "--apply-to", "queues")
    path = Path(args.workdir) / "big.txt"
    write_bodies(path, args.big, size=args.body_size)
    data = path.read_bytes()
    line_size = args.body_size + 1
    results = {}
    for spec in args.specs:
        for n in (args.medium, args.big):
            produced = run(ours_producer(url, spec, queue=BIG_QUEUE, key=BIG_KEY), data[:n * line_size])
            broker.wait_depth(n, f"producer.py {spec} with {n:,} messages", queue=BIG_QUEUE, wait=300)
            consumed = run(ours_consumer(url, spec, n, args.prefetch, queue=BIG_QUEUE, key=BIG_KEY),
                           watch_stdout=True)
            if consumed.lines != n:
                raise BenchError(f"consumer.py {spec} printed {consumed.lines} lines, not {n}")
            broker.wait_depth(0, f"consumer.py {spec} with {n:,} messages", queue=BIG_QUEUE, wait=30)
            broker.delete(BIG_QUEUE)
            results[f"producer.py {spec}", n] = produced
            results[f"consumer.py {spec}", n] = consumed
            say(f"{n:,} messages, {spec}: peak RSS producer {mib(produced.rss_mib)} MiB, "
                f"consumer {mib(consumed.rss_mib)} MiB")
    return results


# --- the report ---------------------------------------------------------------------

def spread(values, fmt="{:,.0f}"):
    values = [v for v in values if v is not None]
    if not values:
        return ["-", "-", "-"]
    return [fmt.format(v) for v in (min(values), statistics.median(values), max(values))]


def mib(value):
    return "-" if value is None else f"{value:.1f}"


def machine():
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        ram = f"{kb / 1024 ** 2:.1f} GiB"
    return f"{os.cpu_count()} CPUs ({cpu}), {ram} RAM, Linux {platform.release()}"


def versions(node):
    rabbit = node.ctl("version").strip()
    otp = node.ctl("eval", "erlang:system_info(otp_release).").strip().strip('"')
    libs = ", ".join(f"{name} {metadata.version(name)}"
                     for name in ("twisted", "txamqp", "pika", "aio-pika", "aiormq", "pamqp"))
    tools = "amqp-tools not installed"
    if AMQP_PUBLISH:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            tools = "amqp-tools " + subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "amqp-tools"],
                                                   capture_output=True, text=True, check=True).stdout
    return f"RabbitMQ {rabbit} (Erlang/OTP {otp}), Python {platform.python_version()}, {libs}, {tools}"


def load():
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


class Goals:
    """The goals the scripts are measured against, each with its verdict."""

    def __init__(self):
        self.rows = []

    def add(self, what, measured, goal, met, why=None):
        """why: a measurement that says why a goal not met cannot be met here."""
        verdict = "-" if met is None else ("met" if met else "not met" + (f": {why}" if why else ""))
        self.rows.append(f"| {what} | {measured} | {goal} | {verdict} |")


def ratio_values(clients, ours, anchor):
    """ours / anchor msg/s within each round that ran both."""
    if ours not in clients or anchor not in clients:
        return []
    return [a / b for a, b in zip(clients[ours].rates, clients[anchor].rates, strict=True)]


# The goals: the median ratio of msg/s ours / anchor, at least this (producers: by spec file).
PRODUCER_GOALS = {"amqp0-9-1.xml": {"p limit window": 0.95, "p pika": 1.2}, "amqp0-8.xml": {"p pika": 1.0}}
CONSUMER_GOALS = {"c pika multiple": 1.2, "c limit": 0.6}
ONE_MESSAGE_GOAL = 1.10  # producer.py's time to send one message, at most this times the reactor import
FLAT = 1.10  # "flat": the larger run's peak RSS at most this times the smaller run's


def producer_anchors(args):
    """(key, name) of the producers ours are compared with."""
    return [("p limit window", f"raw publisher, a window of {args.in_flight:,}"),
            ("p limit", "raw publisher, no window"),
            *((f"p limit {k}", f"raw publisher, {k} connections") for k in LIMIT_CONNECTIONS),
            ("p pika", "pika, no confirms"), ("p amqp-publish", "amqp-publish (C), no confirms"),
            ("p aio-pika", f"aio-pika, confirms, a window of {args.in_flight:,}"),
            ("p pika confirm", "pika, a confirm after each message")]


CONSUMER_ANCHORS = [("c limit", "raw consumer, multiple per read"),
                    ("c pika multiple", "pika consumer, acks in batches (multiple)"),
                    ("c pika", "pika consumer, an ack per message"),
                    ("c aio-pika", "aio-pika consumer, an ack per message")]


def ceiling(clients, anchor, single):
    """The most any client that first imports Twisted's reactor could reach against anchor, a raw
    client, from the process's start (as the goals count it): the anchor's time over the bare reactor
    import's (the quickest of One message's runs) plus the time the anchor took from its first message on; the
    median over the rounds. A raw client costs almost no CPU: from its first message on it goes as
    fast as the broker lets a client of its form. None for another anchor, or if not measured."""
    if not anchor.startswith(("p limit", "c limit")) or anchor not in clients or not single.get(REACTOR_IMPORT):
        return None
    start = min(single[REACTOR_IMPORT])
    raw = clients[anchor]
    values = [(raw.count / rate) / (start + raw.count / steady)
              for rate, steady in zip(raw.rates, raw.steady, strict=True) if steady is not None]
    return statistics.median(values) if values else None


def ratio_rows(clients, goals, ours, label, anchors, goal_of, single):
    """The ratio table's rows of ours / each anchor, adding the goals of goal_of (anchor key: ratio) to goals.
    A goal above the ceiling() of its anchor is said to be out of reach here, with the ceiling."""
    out = []
    for anchor, name in anchors:
        values = ratio_values(clients, ours, anchor)
        goal = goal_of.get(anchor)
        what = f"{label}: msg/s / {name}"
        if not values:  # an anchor skipped (amqp-tools missing, --confirm-messages 0)
            if goal:
                goals.add(what, "not measured", f"at least {goal}", None)
            continue
        median = statistics.median(values)
        out.append(f"| {label} / {name} | {' | '.join(spread(values, '{:.2f}'))} "
                   f"| {f'at least {goal}' if goal else ''} "
                   f"| {'' if goal is None else ('met' if median >= goal else 'not met')} |")
        if goal:
            most = ceiling(clients, anchor, single)
            out_of_reach = most is not None and most < goal
            goals.add(what, f"{median:.2f}", f"at least {goal}", median >= goal,
                      f"at most {most:.2f} here for a client that imports Twisted's reactor (below)" if out_of_reach
                      else None)
    return out


def median_ratio(clients, ours, anchor):
    values = ratio_values(clients, ours, anchor)
    return statistics.median(values) if values else None


def limit_note(args, clients):
    """What the raw clients (almost no CPU: their rates are what the broker
    gave them) reached against the anchors of the goals, in the same rounds:
    the measurement that says whether a goal against pika is within what the
    broker gives a client of our script's form."""
    raw = [key for key, _ in producer_anchors(args) if key.startswith("p limit") and key in clients]
    if not raw or "c limit" not in clients:
        return []
    out = ["What the raw clients reached in the same rounds (they cost almost no CPU, so their rates are what "
           "the broker gave a client of their form on this node; ratios are medians within rounds):", "",
           "| raw client | msg/s, median | / pika, no confirms | / amqp-publish (C), no confirms |",
           "| --- | ---: | ---: | ---: |"]
    for key in raw:
        cells = [f"{r:.2f}" if (r := median_ratio(clients, key, a)) is not None else "-"
                 for a in ("p pika", "p amqp-publish")]
        out.append(f"| {clients[key].label} | {statistics.median(clients[key].rates):,.0f} | {' | '.join(cells)} |")
    out += ["", "| raw client | msg/s, median | / pika consumer, acks in batches (multiple) "
            "| / pika consumer, an ack per message |", "| --- | ---: | ---: | ---: |",
            f"| {CONSUMER_LIMIT_LABEL} | {statistics.median(clients['c limit'].rates):,.0f} "
            f"| {median_ratio(clients, 'c limit', 'c pika multiple'):.2f} "
            f"| {median_ratio(clients, 'c limit', 'c pika'):.2f} |", ""]

    # A producer goal against pika, beside the raw publisher in producer.py's form (guarantee and window).
    fastest = max(raw, key=lambda key: statistics.median(clients[key].rates))
    for spec, goal_of in PRODUCER_GOALS.items():
        if "p limit window" not in goal_of or "p pika" not in goal_of or f"p {spec}" not in clients:
            continue
        same, pika_goal, near = (median_ratio(clients, "p limit window", "p pika"), goal_of["p pika"],
                                 goal_of["p limit window"])
        out.append(f"- producer.py {spec}, at least {pika_goal}x pika without confirms: the raw publisher with "
                   f"producer.py's guarantee and window reached {same:.2f}x pika, so producer.py at its goal of "
                   f"{near}x that client would be at {near * same:.2f}x pika"
                   + (f"; {pika_goal}x pika asks more of producer.py than the broker gave that raw client, which "
                      "costs almost no CPU, in the same form. " if same < pika_goal else ". ")
                   + f"The fastest raw form tried, {dict(producer_anchors(args))[fastest]}, reached "
                   f"{median_ratio(clients, fastest, 'p pika'):.2f}x pika: no client with the guarantee went faster "
                   "in this run (forms tried: the rows above, one channel per connection).")
    # The consumer goals: against pika acking in batches, and against the raw consumer.
    pika_goal, raw_goal = CONSUMER_GOALS["c pika multiple"], CONSUMER_GOALS["c limit"]
    raw_over_pika = median_ratio(clients, "c limit", "c pika multiple")
    out.append(f"- consumer.py, at least {pika_goal}x pika acking in batches and {raw_goal}x the raw consumer: "
               f"the raw consumer reached {raw_over_pika:.2f}x pika acking in batches, so the two goals together "
               f"ask for at least {max(pika_goal, raw_goal * raw_over_pika):.2f}x pika"
               + (f"; the raw consumer itself is below {pika_goal}x pika." if raw_over_pika < pika_goal else "."))
    return out


def startup_note(args, clients, single):
    """The goals against a raw client, from each process's start (the goals) and after its start-up: how
    much of a gap is the start-up, Python and Twisted's imports, which a raw client has almost none of."""
    pairs = [(f"p {spec}", "p limit window", f"producer.py {spec} / raw publisher, a window of {args.in_flight:,}",
              "the first line of stdin read") for spec in args.specs]
    pairs += [(f"c {spec}", "c limit", f"consumer.py {spec} / raw consumer", "the first line printed")
              for spec in args.specs]
    rows = []
    for ours, anchor, what, since in pairs:
        if ours not in clients or anchor not in clients:
            continue
        after = [a / b for a, b in zip(clients[ours].steady, clients[anchor].steady, strict=True)
                 if a is not None and b is not None]
        if not after:
            continue
        starts = [statistics.median(r.first for r in clients[key].runs if r.first is not None)
                  for key in (ours, anchor)]
        usage = [clients[key].node_usage() for key in (ours, anchor)]
        most = ceiling(clients, anchor, single)
        rows.append(f"| {what} | {median_ratio(clients, ours, anchor):.2f} | {statistics.median(after):.2f} "
                    f"| {'-' if most is None else f'{most:.2f}'} "
                    f"| {starts[0] * 1e3:.0f} / {starts[1] * 1e3:.0f} | {since} "
                    f"| {clients[ours].cpu_us():.0f} / {clients[anchor].cpu_us():.0f} "
                    f"| {usage[0][0]} / {usage[1][0]} | {usage[0][1]} / {usage[1][1]} |")
    if not rows:
        return []
    return ["Where the gap to a raw client goes, in the same runs: start-up, msg/s from each process's start (as "
            "the goals count it) and from its first message on (N over the time from then to the end), with how "
            "long each took to get there; and CPU, the client's and the node's per message, and the cores the two "
            f"kept busy together, of the machine's {os.cpu_count()} (medians). A raw client imports next to "
            "nothing and spends almost no CPU; producer.py and consumer.py first import Python's and Twisted's "
            "modules (see the bare reactor import in One message). At most, from start: what a client that "
            "imports Twisted's reactor first (as quickly as the quickest run of One message) and then goes exactly "
            "as fast as the raw client from its first message on would reach against it (medians over the "
            "rounds): to get past it, a client built on Twisted would have to go faster than the raw client, "
            "which spends almost no CPU, once started. With every core busy, the CPU a client spends is CPU the "
            "node does not get.", "",
            "| ours / raw client | msg/s from start, median ratio | after start-up | at most, from start "
            "| ms to the first message, ours / raw | first message | client CPU µs/msg, ours / raw "
            "| node's CPU µs/msg | cores busy |",
            "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |", *rows, ""]


def against_baseline(args, clients, single):
    """The section --baseline adds: new / baseline for each line of our scripts."""
    low, high = 1 - TOLERANCE, 1 + TOLERANCE
    out = ["## Against the baseline", "",
           f"This checkout, {ROOT} at {describe(ROOT)}, against the baseline, {args.baseline} at "
           f"{describe(args.baseline)}: the same lines of each, in the same rounds on the same node, on the same "
           "Python and packages. msg/s: new / baseline within each round, min / median / max (above 1: new is "
           "faster). One message: start-to-exit time new / baseline, of the mins and of the medians (below 1: "
           f"new is quicker). A line is within {TOLERANCE:.0%} if its median ratio is at least {low:.2f} (one "
           f"message: the ratio of the mins at most {high:.2f}). On a machine shared with other work the "
           "rates of single rounds swing far more than that for the same code; CPU per message (medians) swings "
           "less.", "",
           "| line | msg/s new, median | baseline | new / baseline, min | median | max "
           "| CPU µs/msg, new / baseline | peak RSS MiB, new / baseline | |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    slower = []
    for spec in args.specs:
        for kind in "pc":
            new, base = clients[f"{kind} {spec}"], clients[f"{kind} {spec} baseline"]
            ratios = ratio_values(clients, new.key, base.key)
            within = statistics.median(ratios) >= low
            if not within:
                slower.append(new.label)
            out.append(f"| {new.label} | {statistics.median(new.rates):,.0f} | {statistics.median(base.rates):,.0f} "
                       f"| {' | '.join(spread(ratios, '{:.2f}'))} "
                       f"| {new.cpu_us():.1f} / {base.cpu_us():.1f} = {new.cpu_us() / base.cpu_us():.2f} "
                       f"| {mib(new.rss())} / {mib(base.rss())} "
                       f"| {f'within {TOLERANCE:.0%}' if within else f'more than {TOLERANCE:.0%} slower'} |")
    out += ["", "| line | ms new, min / median | baseline | new / baseline, of the mins | of the medians | |",
            "| --- | ---: | ---: | ---: | ---: | --- |"]
    for spec in args.specs:
        label = f"producer.py {spec}, one message"
        new, base = single[label], single[f"producer.py {spec}{BASELINE}, one message"]
        by_min = min(new) / min(base)
        within = by_min <= high
        if not within:
            slower.append(label)
        out.append(f"| {label} | {min(new) * 1e3:.0f} / {statistics.median(new) * 1e3:.0f} "
                   f"| {min(base) * 1e3:.0f} / {statistics.median(base) * 1e3:.0f} | {by_min:.2f} "
                   f"| {statistics.median(new) / statistics.median(base):.2f} "
                   f"| {f'within {TOLERANCE:.0%}' if within else f'more than {TOLERANCE:.0%} slower'} |")
    out += ["", f"More than {TOLERANCE:.0%} slower than the baseline: {', '.join(slower)}." if slower
            else f"No line is more than {TOLERANCE:.0%} slower than the baseline."]
    return out + [""]


def report(args, clients, single, big, large, header, profile, idle_waits):
    goals = Goals()
    n = args.messages
    idle = "nothing (the node's process could not be read: no wait)"
    if idle_waits:
        idle = (f"{min(idle_waits):.1f} s at least, {statistics.median(idle_waits):.1f} s median, "
                f"{max(idle_waits):.1f} s at most")
    out = [
        "# Benchmark: producer.py and consumer.py against the clients a user would pick",
        "",
        *header,
        "",
        f"Each client ran as a whole process, {args.rounds} round(s) with the client order rotated each round "
        "and reversed every other round, "
        f"on one throwaway RabbitMQ node: durable exchange, queue and binding; {args.body_size}-byte persistent "
        f"bodies; {n:,} messages per run. Every run started on an idle node: the bench first waited until the "
        f"node's Erlang VM had written nothing to disk and used under {IDLE_CPU:.0%} of a core for {IDLE_QUIET} s "
        "(/proc), so "
        "that no backlog of the run before (a producer without confirms leaves the broker writing for about a "
        f"second after its queue is full) fell on the next; those waits took {idle}. Producer msg/s: messages "
        "in the queue per second, from just before "
        "the process started until the queue held all N (its depth polled with a passive queue.declare after "
        "the process exited: a client without confirms gets no credit for a backlog the broker has not queued "
        f"yet). Consumer msg/s: N messages waiting in the queue, prefetch {args.prefetch}, each message printed "
        "as one line on stdout (a pipe the bench drains) and acked, from start until the process exited having "
        "printed N lines, with the queue then empty. Figures are min / median / max over the rounds; CPU "
        "(user + system time of the process per message) and peak RSS are medians. pika, aio-pika and "
        "amqp-publish speak AMQP 0-9-1. Every client ran without PYTHONUNBUFFERED in its environment (Python's "
        "default: stdout into a pipe is buffered), whatever the bench's own.",
        "",
        "What each client does. Producers: producer.py with amqp0-9-1.xml, persistent and mandatory messages "
        "with publisher confirms, at most 1,000 unconfirmed; with amqp0-8.xml, transactions of up to 1,000 "
        "messages; pika (BlockingConnection) without confirms, its fastest way, and with a confirm awaited "
        "after each message; aio-pika with confirms, at most "
        f"{args.in_flight:,} unconfirmed (a semaphore freed by each confirm); amqp-publish -l (C, librabbitmq), "
        "no confirms; and the raw publisher, bench/broker_limit.py, producer.py's guarantee from a raw-socket "
        "client that encodes every message before it connects and costs almost no CPU: with producer.py's "
        f"window ({args.in_flight:,} unconfirmed) on one connection, with no window, and with no window on "
        f"{' and on '.join(map(str, LIMIT_CONNECTIONS))} connections in parallel (a channel each, the messages "
        "split between them). Consumers: consumer.py writes the lines of the messages that came in one socket "
        "read, flushes, and acks them with one basic.ack (multiple); pika either flushes each line and acks "
        "each message, or (its best form of what consumer.py does) flushes and acks with one basic.ack "
        "(multiple) the messages of each process_data_events, and every prefetch/2 messages within one; "
        "aio-pika (queue.iterator()) flushes each line and acks each message; the raw consumer, "
        "bench/raw_consumer.py, does what consumer.py does at almost no CPU: each read's lines, a flush, one "
        "basic.ack (multiple).",
        "",
        "## Throughput",
        "",
        f"The node's CPU is its Erlang VM's (/proc) over the same time as msg/s; cores busy: the client's and the "
        f"node's CPU time over that time, of the machine's {os.cpu_count()}.",
        "",
        "| client | msg/s, min | median | max | CPU µs/msg | node's CPU µs/msg | cores busy | peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in clients.values():
        node, busy = c.node_usage()
        out.append(f"| {c.label} | {' | '.join(spread(c.rates))} | {c.cpu_us():.0f} | {node} | {busy} "
                   f"| {mib(c.rss())} |")
    if not AMQP_PUBLISH:
        out += ["", f"Not measured: {AMQP_TOOLS_HINT}."]
    out += ["", "amqp-consume (amqp-tools) has no fair consumer comparison: it starts a new process (the command "
            "it is given) for every message, so it is not in the table."]

    out += ["", "## Ratios, ours / anchor (msg/s within a round; above 1 means ours is faster)", "",
            "| comparison | min | median | max | goal | |", "| --- | ---: | ---: | ---: | --- | --- |"]
    for spec in args.specs:
        out += ratio_rows(clients, goals, f"p {spec}", f"producer.py {spec}", producer_anchors(args),
                          PRODUCER_GOALS.get(spec, {}), single)
    for spec in args.specs:
        out += ratio_rows(clients, goals, f"c {spec}", f"consumer.py {spec}", CONSUMER_ANCHORS, CONSUMER_GOALS,
                          single)

    out += ["", f"## One message, start to exit ({args.single} runs each, alternating order)", "",
            "| process | ms, min | ms, median |", "| --- | ---: | ---: |"]
    for label, values in single.items():
        out.append(f"| {label} | {min(values) * 1e3:.0f} | {statistics.median(values) * 1e3:.0f} |")
    reactor = single[REACTOR_IMPORT]
    out += ["", "| ratio of times (below 1 means ours is quicker) | of the mins | of the medians | goal | |",
            "| --- | ---: | ---: | --- | --- |"]
    for spec in args.specs:
        ours = single[f"producer.py {spec}, one message"]
        for label in (REACTOR_IMPORT, "pika 1.4, one message, no confirms", "amqp-publish -p -b, one message"):
            if label not in single:
                continue
            by_min = min(ours) / min(single[label])
            goal = ONE_MESSAGE_GOAL if label == REACTOR_IMPORT else None
            out.append(f"| producer.py {spec}, one message / {label} | {by_min:.2f} "
                       f"| {statistics.median(ours) / statistics.median(single[label]):.2f} "
                       f"| {f'at most {goal}' if goal else ''} "
                       f"| {'' if goal is None else ('met' if by_min <= goal else 'not met')} |")
        by_min = min(ours) / min(reactor)
        goals.add(f"producer.py {spec}, one message: time / bare Twisted reactor import (mins)", f"{by_min:.2f}",
                  f"at most {ONE_MESSAGE_GOAL}", by_min <= ONE_MESSAGE_GOAL)

    if big:
        out += ["", "## Memory, many messages", "",
                f"Peak RSS of one run each, into a lazy queue (so the node pages the messages to disk), "
                f"{args.body_size}-byte bodies; the consumer takes what the producer left. "
                f"Flat (the goal) is taken as: the larger run's peak at most {FLAT:.2f} times the smaller's.", "",
                f"| script | peak RSS MiB, {args.medium:,} msgs | peak RSS MiB, {args.big:,} msgs | ratio | |",
                "| --- | ---: | ---: | ---: | --- |"]
        for label in dict.fromkeys(label for label, _ in big):
            small, large_run = big[label, args.medium].rss_mib, big[label, args.big].rss_mib
            ratio = large_run / small if small and large_run else None
            flat = ratio is not None and ratio <= FLAT
            out.append(f"| {label} | {mib(small)} | {mib(large_run)} | {'-' if ratio is None else f'{ratio:.2f}'} "
                       f"| {'flat' if flat else 'grows'} |")
            goals.add(f"{label}: peak RSS flat from {args.medium:,} to {args.big:,} messages",
                      f"{mib(small)} → {mib(large_run)} MiB", "flat", flat)

    if large:
        out += ["", "## Memory, large bodies (producers)", "",
                "Peak RSS of one run each (bench/large_bodies.py), into a lazy queue; the same for the smaller "
                "and the larger count of 1 MiB lines means the bytes in flight are bounded.", "",
                *large_bodies.report(args, large)]
        ours = f"producer.py {args.specs[0]}"
        if len(args.one_mib) >= 2:
            lo, hi = min(args.one_mib), max(args.one_mib)
            small = large[ours, f"{lo} lines of 1 MiB"].rss_mib
            big_run = large[ours, f"{hi} lines of 1 MiB"].rss_mib
            flat = bool(small and big_run and big_run / small <= FLAT)
            goals.add(f"{ours}: peak RSS flat from {lo} to {hi} bodies of 1 MiB",
                      f"{mib(small)} → {mib(big_run)} MiB", "flat", flat)

    out += ["", *profile]

    # The goals come first, before the tables they summarise, then the baseline.
    at = out.index("## Throughput")
    out[at:at] = ["## Goals", "", "Checked against the medians below (one message: the min of the runs).", "",
                  "| what | measured | goal | |", "| --- | ---: | --- | --- |", *goals.rows, "",
                  *limit_note(args, clients), "", *startup_note(args, clients, single),
                  *(against_baseline(args, clients, single) if args.baseline else [])]
    return "\n".join(out).rstrip("\n") + "\n"


# --- the quote in docs/benchmark.md ----------------------------------------------

def quote(results=RESULTS, doc=QUOTED_IN):
    """Rewrite the block between QUOTE_START and QUOTE_END in doc: the run's
    header lines and its QUOTED_SECTIONS, as the report at results has them."""
    preamble, sections, title = [], {}, None
    for line in results.read_text().splitlines():
        if line.startswith("## "):
            title = line[3:]
            sections[title] = []
        elif title is None:
            preamble.append(line)
        else:
            sections[title].append(line)
    relative = Path("..") / results.relative_to(ROOT)
    block = [QUOTE_START, "", f"From [{results.relative_to(ROOT)}]({relative}), as the run wrote it:", "",
             *(line for line in preamble if line.startswith(("Run ", "Machine:", "Software:"))), ""]
    for title in QUOTED_SECTIONS:
        if title in sections:
            block += [f"### {title}", "", "\n".join(sections[title]).strip("\n"), ""]
    block += [QUOTE_END]
    text = doc.read_text()
    if text.count(QUOTE_START) != 1 or text.count(QUOTE_END) != 1:
        raise BenchError(f"{doc} has no block to quote {results.name} in (its marker comments)")
    head, rest = text.split(QUOTE_START)
    tail = rest.split(QUOTE_END)[1]
    doc.write_text(head + "\n".join(block) + tail)
    say(f"{doc.relative_to(ROOT)}: the quote of {results.relative_to(ROOT)} rewritten")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES, help="messages per throughput run")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--body-size", type=int, default=16, help="bytes per message body (at least 10)")
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=1000,
                        help="the window (messages awaiting a confirm) of aio-pika and of the raw publisher's "
                             "line with a window; producer.py's is 1,000")
    parser.add_argument("--confirm-messages", type=int, default=None,
                        help="messages per run of pika with a confirm after each (slow; 0: skip; "
                             "default a tenth of --messages)")
    parser.add_argument("--single", type=int, default=None,
                        help="runs of each one-message case (default 3 per round)")
    parser.add_argument("--medium", type=int, default=None,
                        help="messages for the smaller memory run (default 2 x --messages)")
    parser.add_argument("--big", type=int, default=None,
                        help="messages for the larger memory run (default 20 x --messages; 0: skip)")
    parser.add_argument("--specs", nargs="+", default=["amqp0-9-1.xml", "amqp0-8.xml"])
    large_bodies.add_arguments(parser)
    parser.add_argument("--baseline", metavar="DIR", type=Path,
                        help="another checkout of this project: run its producer.py and consumer.py too, in the "
                             "same rounds, and report new / baseline for each of their lines")
    parser.add_argument("--profile", action="store_true",
                        help="then run each of our scripts once more under py-spy: where its CPU time goes, "
                             "and the imports of its start-up (bench/profiling.py)")
    parser.add_argument("--quick", action="store_true", help="the same as --messages 2000 --rounds 1")
    parser.add_argument("--output", default=None,
                        help='where to write the report (default bench/results.md for a run at the default '
                             'size or larger, else bench/results-small.md; "" for no file). Writing '
                             'bench/results.md also rewrites its quote in docs/benchmark.md')
    parser.add_argument("--quote-only", action="store_true",
                        help="run nothing: rewrite the quote of bench/results.md in docs/benchmark.md")
    args = parser.parse_args(argv)
    if args.baseline:
        args.baseline = args.baseline.resolve()
        missing = [name for name in ("producer.py", "consumer.py", *args.specs)
                   if not (args.baseline / name).is_file()]
        if missing:
            parser.error(f"--baseline {args.baseline}: not a checkout of this project (no {', '.join(missing)})")
    if args.quick:
        args.messages, args.rounds = 2000, 1
    # The other sizes follow --messages, so that a small run is small throughout.
    scale = args.messages / DEFAULT_MESSAGES
    if args.confirm_messages is None:
        args.confirm_messages = max(1, args.messages // 10)
    if args.single is None:
        args.single = 3 * args.rounds
    if args.medium is None:
        args.medium = 2 * args.messages
    if args.big is None:
        args.big = 20 * args.messages
    if args.huge is None:
        args.huge = max(1, round(100 * min(scale, 1)))
    if args.one_mib is None:
        low = max(2, round(100 * min(scale, 1)))
        args.one_mib = [low, 4 * low]
    if args.output is None:
        full = args.messages >= DEFAULT_MESSAGES and args.rounds >= DEFAULT_ROUNDS
        args.output = str(HERE / ("results.md" if full else "results-small.md"))
    if args.body_size < 10:
        parser.error("--body-size must be at least 10 (each body starts with its number)")
    return args


def main():
    args = parse_args()
    if args.quote_only:
        quote()
        return
    for _, _, root in checkouts(args):
        compile_ours(root)
    if not AMQP_PUBLISH:
        say(f"bench: {AMQP_TOOLS_HINT}")
    command = "python bench/run.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    started = datetime.datetime.now().astimezone()
    load_before = load()
    line_size = args.body_size + 1
    with tempfile.TemporaryDirectory(prefix="txamqp-bench-") as workdir, throwaway_node() as node:
        args.workdir = workdir
        say(f"RabbitMQ node up at {node.url}")
        broker = QueueProbe(node.url, node.os_pid)
        try:
            path = Path(workdir) / "bodies.txt"
            write_bodies(path, args.messages, size=args.body_size)
            data = path.read_bytes()
            broker.chan.exchange_declare(EXCHANGE, "direct", durable=True)
            broker.chan.queue_declare(QUEUE, durable=True)
            broker.chan.queue_bind(QUEUE, EXCHANGE, KEY)
            broker.purge()
            single = one_message(node.url, broker, args)
            clients = throughput(node.url, broker, args, data, line_size)
            idle_waits = list(broker.idle_waits)  # the throughput runs'
            big = memory(node.url, broker, args, node) if args.big else {}
            large = large_bodies.measure(node.url, broker, node, args) if args.huge or args.one_mib else {}
            profile = profiling.profile(node.url, broker, args, clients, data, line_size) if args.profile else []
            elapsed = (datetime.datetime.now().astimezone() - started).total_seconds()
            header = [
                f"Run {started:%Y-%m-%d %H:%M %Z} with `{command}` in {elapsed:.0f} s.",
                f"Machine: {machine()}; load average (1, 5, 15 min) {load_before} at the start, {load()} at the "
                "end (other work shared the machine).",
                f"Software: {versions(node)}.",
            ]
        finally:
            broker.close()
    text = report(args, clients, single, big, large, header, profile, idle_waits)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
        say(f"written to {args.output}")
        if Path(args.output).resolve() == RESULTS:
            quote()


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        sys.exit(1)
