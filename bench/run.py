"""Benchmark producer.py and consumer.py against pika doing the same work.

    tox -e bench                      # or: python bench/run.py [options]
    python bench/run.py --quick       # a smoke run: small counts, 2 rounds

Starts a throwaway RabbitMQ node (the tests' way: tests/rabbitmq_nodes.py), then runs
every client as a whole process, in alternating rounds, on that node: the same
exchange, queue and binding (durable), 100-byte persistent bodies, the same
prefetch, one ack per message. Prints a Markdown table and writes it to
bench/results.md. It measures and reports; it asserts no timings. It does
check that the work was done (every message in the queue after a producer,
none left after a consumer) and stops if not: a fast wrong client is no result.

What is measured, per process:
- whole process: msg/s from just before the process is started to its exit;
- from first message: the producer's stdin is a pipe shrunk to one page, so
  the moment the producer first reads it (after imports, connect, login,
  declare) is seen by the writer; the consumer's stdout is a pipe the bench
  drains, and its first line marks the first message; msg/s from then to exit;
- CPU: user + system seconds of the process (os.wait4), per message;
- peak RSS: VmHWM from /proc, read every 20 ms (ru_maxrss would count the
  bench's own memory, copied into the child before exec); also with large
  bodies (bench/large_bodies.py: one 100 MiB line, runs of 1 MiB lines), ours
  and pika's in the same run.
"""

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import large_bodies
from measure import (BODY_SIZE, EXCHANGE, HERE, KEY, PY, QUEUE, BenchError, Broker, ours_consumer,
                     ours_producer, pika_consumer, pika_producer, run, write_bodies)
from node import throwaway_node

BIG_QUEUE, BIG_KEY = "bench_big_queue", "bench_big_key"  # a lazy queue (policy) for the 1M run


@dataclass
class Client:
    key: str
    label: str
    runs: list = field(default_factory=list)


# --- the benchmark ----------------------------------------------------------------

def say(text):
    print(text, file=sys.stderr, flush=True)


def throughput(url, broker, args, data, specs):
    """Alternating rounds of producer then consumer, ours and pika's; returns
    {key: Client} with the runs of each."""
    clients = {}

    def client(key, label):
        return clients.setdefault(key, Client(key, label))

    for spec in specs:
        client(f"prod {spec}", f"producer.py {spec}")
    client("prod pika", "pika publisher, no confirms")
    confirm = client("prod pika confirm", "pika publisher, confirm each message")
    for spec in specs:
        client(f"cons {spec}", f"consumer.py {spec}")
    client("cons pika", "pika consumer")

    pairs = [(clients[f"prod {spec}"], ours_producer(url, spec),
              clients[f"cons {spec}"], ours_consumer(url, spec, args.messages, args.prefetch))
             for spec in specs]
    pairs.append((clients["prod pika"], pika_producer(url, False),
                  clients["cons pika"], pika_consumer(url, args.messages, args.prefetch)))
    confirm_data = data[:args.confirm_messages * (BODY_SIZE + 1)]

    for round_no in range(args.rounds):
        order = pairs if round_no % 2 == 0 else pairs[::-1]
        if round_no % 2:
            order = [None, *order]  # pika with confirms first in odd rounds, last in even ones
        else:
            order = [*order, None]
        for pair in order:
            if pair is None:
                confirm.runs.append(run(pika_producer(url, True), confirm_data))
                broker.expect(args.confirm_messages, confirm.label)
                broker.purge()
                say(f"round {round_no + 1}: {confirm.label}: "
                    f"{args.confirm_messages / confirm.runs[-1].seconds:,.0f} msg/s")
                continue
            producer, producer_cmd, consumer, consumer_cmd = pair
            producer.runs.append(run(producer_cmd, data))
            broker.expect(args.messages, producer.label)
            consumer.runs.append(run(consumer_cmd, watch_stdout=True))
            if consumer.runs[-1].lines != args.messages:
                raise BenchError(f"{consumer.label} printed {consumer.runs[-1].lines} lines, "
                                 f"not {args.messages}")
            broker.expect(0, consumer.label)
            say(f"round {round_no + 1}: {producer.label}: {args.messages / producer.runs[-1].seconds:,.0f}"
                f" msg/s; {consumer.label}: {args.messages / consumer.runs[-1].seconds:,.0f} msg/s")
    return clients


def one_message(url, broker, args, specs):
    """Start-to-exit time of a producer sending one message, and of the imports
    alone; alternating, args.single runs each."""
    cases = [(f"producer.py {spec}, one message", ours_producer(url, spec, "one message"), 1) for spec in specs]
    cases += [
        ("pika publisher, one message, no confirms", pika_producer(url, False, "one message"), 1),
        ("pika publisher, one message, confirmed", pika_producer(url, True, "one message"), 1),
        ("python -c pass", [PY, "-c", "pass"], 0),
        ("python -c 'import producer' (Twisted, txamqp, common)", [PY, "-c", "import producer"], 0),
        ("python -c 'import pika'", [PY, "-c", "import pika"], 0),
    ]
    times = {label: [] for label, _, _ in cases}
    sent = 0
    for i in range(args.single):
        for label, cmd, n in (cases if i % 2 == 0 else cases[::-1]):
            times[label].append(run(cmd).seconds)
            sent += n
    broker.expect(sent, "the one-message producers")
    broker.purge()
    return times


def memory(url, broker, args, node):
    """Our producer (first spec) sending args.medium, then args.big messages into a
    lazy queue (so that the node pages them to disk instead of holding them in
    memory): flat peak RSS means backpressure, not buffering."""
    node.ctl("set_policy", "bench-lazy", f"^{BIG_QUEUE}$", '{"queue-mode":"lazy"}', "--apply-to", "queues")
    path = Path(args.workdir) / "big.txt"
    write_bodies(path, args.big)
    data = path.read_bytes()
    spec = args.specs[0]
    clients = [(f"producer.py {spec}", lambda: ours_producer(url, spec, queue=BIG_QUEUE, key=BIG_KEY))]
    if args.big_pika:
        clients.append(("pika publisher, no confirms",
                        lambda: pika_producer(url, False, queue=BIG_QUEUE, key=BIG_KEY)))
    results = {}
    for label, command in clients:
        for n in (args.medium, args.big):
            result = run(command(), data[:n * (BODY_SIZE + 1)])
            broker.expect(n, f"{label} with {n:,} messages", queue=BIG_QUEUE, wait=120)
            broker.delete(BIG_QUEUE)
            results[label, n] = result
            say(f"{n:,} messages, {label}: {n / result.seconds:,.0f} msg/s, peak RSS {mib(result.rss_mib)} MiB")
    return results


# --- the report ---------------------------------------------------------------------

def spread(values, fmt="{:,.0f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def mib(value):
    return "-" if value is None else f"{value:.1f}"


def median_mib(values):
    values = [v for v in values if v is not None]
    return mib(statistics.median(values) if values else None)


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
    libs = ", ".join(f"{name} {metadata.version(name)}" for name in ("twisted", "txamqp", "pika"))
    return f"RabbitMQ {rabbit} (Erlang/OTP {otp}), Python {platform.python_version()}, {libs}"


def report(args, clients, single, big, large, header):
    n = args.messages
    out = [
        "# Benchmark: producer.py and consumer.py against pika",
        "",
        *header,
        "",
        f"Each client ran as a whole process, {args.rounds} alternating rounds, on one throwaway RabbitMQ "
        f"node: durable exchange, queue and binding; {BODY_SIZE}-byte persistent bodies; {n:,} messages per "
        f"run ({args.confirm_messages:,} for pika with confirms); consumers with prefetch {args.prefetch} "
        "and one ack per message, stdout a pipe the bench drains. Pika speaks AMQP 0-9-1. "
        "Figures are min / median / max over the rounds; CPU (user + system time of the process, per "
        "message and as a share of its wall time) and peak RSS are medians.",
        "",
        "## Throughput",
        "",
        "| client | msg/s, whole process | msg/s, from first message | CPU µs/msg | CPU busy | peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in clients.values():
        count = args.confirm_messages if c.key == "prod pika confirm" else n
        out.append(f"| {c.label} | {spread([r.rate(count) for r in c.runs])} "
                   f"| {spread([r.steady_rate(count) for r in c.runs])} "
                   f"| {statistics.median(r.cpu / count * 1e6 for r in c.runs):.0f} "
                   f"| {statistics.median(r.cpu / r.seconds for r in c.runs):.0%} "
                   f"| {median_mib(r.rss_mib for r in c.runs)} |")

    def ratios(ours, theirs, count_ours, count_theirs, steady):
        values = []
        for a, b in zip(clients[ours].runs, clients[theirs].runs, strict=True):
            ra = a.steady_rate(count_ours) if steady else a.rate(count_ours)
            rb = b.steady_rate(count_theirs) if steady else b.rate(count_theirs)
            if ra is not None and rb is not None:
                values.append(ra / rb)
        return spread(values, "{:.2f}")

    out += ["", "## Ratios, ours / pika (msg/s; above 1 means ours is faster), per round", "",
            "| comparison | whole process | from first message | issue 7 target |",
            "| --- | ---: | ---: | --- |"]
    nc = args.confirm_messages
    for spec in args.specs:
        out.append(f"| producer.py {spec} / pika, no confirms | {ratios(f'prod {spec}', 'prod pika', n, n, False)} "
                   f"| {ratios(f'prod {spec}', 'prod pika', n, n, True)} | at least 1.5 |")
        out.append(f"| producer.py {spec} / pika, confirm each | "
                   f"{ratios(f'prod {spec}', 'prod pika confirm', n, nc, False)} "
                   f"| {ratios(f'prod {spec}', 'prod pika confirm', n, nc, True)} | (same guarantee) |")
    for spec in args.specs:
        out.append(f"| consumer.py {spec} / pika consumer | {ratios(f'cons {spec}', 'cons pika', n, n, False)} "
                   f"| {ratios(f'cons {spec}', 'cons pika', n, n, True)} | at least 1.0 |")

    if big:
        out += ["", "## Producer memory", "",
                "Peak RSS of one producer run each, into a lazy queue (so the node pages the messages to "
                "disk): flat means backpressure, not buffering.", "",
                f"| client | peak RSS MiB, {args.medium:,} msgs | peak RSS MiB, {args.big:,} msgs "
                f"| msg/s, {args.medium:,} msgs | msg/s, {args.big:,} msgs |",
                "| --- | ---: | ---: | ---: | ---: |"]
        for label in dict.fromkeys(label for label, _ in big):
            medium, large = big[label, args.medium], big[label, args.big]
            out.append(f"| {label} | {mib(medium.rss_mib)} | {mib(large.rss_mib)} "
                       f"| {args.medium / medium.seconds:,.0f} | {args.big / large.seconds:,.0f} |")

    if large:
        out += ["", "## Producer memory, large bodies", "",
                "Peak RSS of one run each (bench/large_bodies.py), into a lazy queue; the same for the "
                "smaller and the larger count of 1 MiB lines means the bytes in flight are bounded.", "",
                *large_bodies.report(args, large)]

    out += ["", f"## One message, start to exit ({args.single} runs each, alternating)", "",
            "| process | ms, min | ms, median |", "| --- | ---: | ---: |"]
    for label, values in single.items():
        out.append(f"| {label} | {min(values) * 1e3:.0f} | {statistics.median(values) * 1e3:.0f} |")
    pika_times = single["pika publisher, one message, no confirms"]
    pika_confirmed = single["pika publisher, one message, confirmed"]
    out += ["", "| ratio, ours / pika (time; below 1 means ours is faster) | min | median | issue 7 target |",
            "| --- | ---: | ---: | --- |"]
    for spec in args.specs:
        ours = single[f"producer.py {spec}, one message"]
        for what, theirs, target in (("no confirms", pika_times, "at most 1.8"),
                                     ("confirmed", pika_confirmed, "")):
            out.append(f"| producer.py {spec} / pika, {what} | {min(ours) / min(theirs):.2f} "
                       f"| {statistics.median(ours) / statistics.median(theirs):.2f} | {target} |")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000, help="messages per throughput run")
    parser.add_argument("--confirm-messages", type=int, default=5_000,
                        help="messages per run of pika with per-message confirms (it is slow)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--single", type=int, default=10, help="runs of each one-message case")
    parser.add_argument("--medium", type=int, default=100_000,
                        help="messages for the smaller producer memory run")
    parser.add_argument("--big", type=int, default=1_000_000,
                        help="messages for the larger producer memory run (0: skip the memory runs)")
    parser.add_argument("--big-pika", action="store_true", help="also run pika's publisher in the memory runs")
    parser.add_argument("--specs", nargs="+", default=["amqp0-8.xml", "amqp0-9-1.xml"])
    large_bodies.add_arguments(parser)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 3000 messages, 2 rounds, 3 one-message runs, no big run")
    parser.add_argument("--output", default=str(HERE / "results.md"), help='"" to write no file')
    args = parser.parse_args()
    if args.quick:
        args.messages, args.confirm_messages, args.rounds, args.single, args.big = 3000, 1000, 2, 3, 0
        args.huge, args.one_mib = 0, []
    args.confirm_messages = min(args.confirm_messages, args.messages)

    started = datetime.datetime.now().astimezone()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="txamqp-bench-") as workdir, throwaway_node() as node:
        args.workdir = workdir
        say(f"RabbitMQ node up at {node.url}")
        broker = Broker(node.url)
        try:
            path = Path(workdir) / "bodies.txt"
            write_bodies(path, args.messages)
            data = path.read_bytes()
            broker.chan.exchange_declare(EXCHANGE, "direct", durable=True)
            broker.chan.queue_declare(QUEUE, durable=True)
            broker.chan.queue_bind(QUEUE, EXCHANGE, KEY)
            broker.purge()
            single = one_message(node.url, broker, args, args.specs)
            clients = throughput(node.url, broker, args, data, args.specs)
            big = memory(node.url, broker, args, node) if args.big else {}
            large = large_bodies.measure(node.url, broker, node, args) if args.huge or args.one_mib else {}
            header = [
                f"Run {started:%Y-%m-%d %H:%M %Z} with `python bench/run.py {' '.join(sys.argv[1:])}`".rstrip()
                + f" in {(datetime.datetime.now().astimezone() - started).total_seconds():.0f} s.",
                f"Machine: {machine()}; load average {load_before[0]:.1f} before, "
                f"{os.getloadavg()[0]:.1f} after (other work shared the machine).",
                f"Software: {versions(node)}.",
            ]
        finally:
            broker.close()
    text = report(args, clients, single, big, large, header)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
        say(f"written to {args.output}")


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        sys.exit(1)
