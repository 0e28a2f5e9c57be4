"""Peak RSS of producer.py and of pika's publisher with large message bodies:
part of bench/run.py's memory section (its --huge and --one-mib options).

Cases, each one process per client, into a lazy queue (the node pages the
messages to disk):
- one stdin line of --huge MiB (under RabbitMQ 3.10's default max_message_size
  of 128 MiB, so the broker takes it): what one big message costs;
- --one-mib N lines of 1 MiB each, for each N: flat peak RSS from the smaller N
  to the larger means the bytes in flight are bounded, not the messages only.
"""

import sys

from measure import ours_producer, pika_producer, run

QUEUE, KEY = "bench_large_queue", "bench_large_key"
MIB = 1 << 20


def one_mib_lines(n):
    return b"".join(b"%09d " % i + b"y" * (MIB - 11) + b"\n" for i in range(n))


def cases(args):
    """(label, a function that makes the stdin data, number of messages)."""
    if args.huge:
        yield f"one {args.huge} MiB line", lambda: b"z" * (args.huge * MIB) + b"\n", 1
    for n in args.one_mib:
        yield f"{n} lines of 1 MiB", lambda n=n: one_mib_lines(n), n


def measure(url, broker, node, args):
    """{(client label, case label): Run}."""
    node.ctl("set_policy", "bench-lazy-large", f"^{QUEUE}$", '{"queue-mode":"lazy"}', "--apply-to", "queues")
    spec = args.specs[0]
    clients = [(f"producer.py {spec}", lambda: ours_producer(url, spec, queue=QUEUE, key=KEY)),
               ("pika publisher, no confirms", lambda: pika_producer(url, False, queue=QUEUE, key=KEY)),
               ("pika publisher, confirm each message", lambda: pika_producer(url, True, queue=QUEUE, key=KEY))]
    results = {}
    for case, make_data, n in cases(args):
        data = make_data()
        for label, command in clients:
            result = run(command(), data)
            broker.wait_depth(n, f"{label}, {case}", queue=QUEUE, wait=120, poll=0.05)
            broker.delete(QUEUE)
            results[label, case] = result
            print(f"{case}, {label}: peak RSS {result.rss_mib:.1f} MiB, {result.seconds:.1f} s",
                  file=sys.stderr, flush=True)
        del data
    return results


def report(args, results):
    labels = list(dict.fromkeys(label for label, _ in results))
    case_labels = [case for case, _, _ in cases(args)]
    ours, theirs = labels[0], labels[1]
    out = ["| client | " + " | ".join(f"peak RSS MiB, {c}" for c in case_labels) + " |",
           "| --- |" + " ---: |" * len(case_labels)]
    for label in labels:
        out.append(f"| {label} | " + " | ".join(f"{results[label, c].rss_mib:.1f}" for c in case_labels) + " |")
    out.append(f"| ratio, ours / {theirs} | "
               + " | ".join(f"{results[ours, c].rss_mib / results[theirs, c].rss_mib:.2f}" for c in case_labels)
               + " |")
    return out


def add_arguments(parser):
    """--huge and --one-mib; run.py scales their defaults with --messages."""
    parser.add_argument("--huge", type=int, default=None,
                        help="MiB of the one-line case (0: skip; RabbitMQ 3.10 refuses above 128; "
                             "default 100, less for fewer --messages)")
    parser.add_argument("--one-mib", type=int, nargs="*", default=None,
                        help="numbers of 1 MiB lines, one run each (none: skip; default 100 400, "
                             "less for fewer --messages)")
