"""Profile producer.py and consumer.py: where their time goes, per message.

    tox -e profile                    # or: python bench/profile_clients.py [options]

On a throwaway RabbitMQ node (as the benchmark), each script runs three times
on the same work (N 100-byte persistent messages; the consumer with prefetch
100 and an ack per message, its stdout to /dev/null):
- plain: wall and CPU time, the reference;
- under py-spy (sampling, 250 Hz, from outside the process): shares of the
  time the process was on CPU, by where the code was; little distortion;
- under cProfile: exact call counts per message (its timings inflate small
  Python functions, so its shares lean toward the Deferred machinery).
The tables replace everything below the marker line in bench/PROFILE.md; the
summary above it is written by hand.
"""

import argparse
import collections
import json
import pstats
import statistics
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from measure import (HERE, PY, QUEUE, ROOT, BenchError, QueueProbe, compile_ours, ours_consumer, ours_producer,
                     pika_producer, run, write_bodies)
from node import throwaway_node

MARKER = "<!-- Everything below is written by bench/profile_clients.py. -->"

# Where the time goes, by the file of the code that runs. C functions count
# for the Python function that called them (py-spy sees them that way, and
# cProfile's builtins are handed to their callers below).
CATEGORIES = [
    ("startup", "start-up: imports, spec file, connect, declare"),
    ("defer", "Deferred and inlineCallbacks (twisted/internet/defer.py)"),
    ("txamqp", "txamqp plumbing (protocol.py, queue.py, client.py, content.py, message.py)"),
    ("client", "our AMQClient subclass: dispatch, read_content, invoke (amqp_support/client.py)"),
    ("framing", "frames from and to bytes (AMQClient.dataReceived, send_frame)"),
    ("codec", "frame payloads encoded/decoded (amqp_support/codec.py, txamqp's codec.py, connection.py)"),
    ("warnings", "warnings: txamqp's calls of the deprecated defer.returnValue"),
    ("reactor", "reactor, TCP transport, rest of Twisted"),
    ("script", "the script and common.py (incl. print)"),
    ("other", "other"),
]
LABELS = dict(CATEGORIES)


def category(path, func):
    path = path.replace("\\", "/")
    if func == "<module>" or path.startswith("<frozen") or "/txamqp/spec.py" in path or "/xml/" in path:
        return "startup"
    if path.endswith("twisted/internet/defer.py"):
        return "defer"
    if path.endswith(("txamqp/codec.py", "amqp_support/codec.py", "txamqp/connection.py")):
        return "codec"
    if "/txamqp/" in path:
        return "txamqp"
    if path.endswith("amqp_support/client.py"):
        # Splitting bytes into frames and writing them is codec work; the rest
        # of the subclass (dispatch, read_content, invoke, queues) is machinery.
        return "framing" if func.rpartition(".")[2] in ("dataReceived", "send_frame") else "client"
    if path.endswith(("/warnings.py", "twisted/python/deprecate.py")):
        return "warnings"
    if "/twisted/" in path:
        return "reactor"
    if path.endswith(("/consumer.py", "/producer.py", "/common.py")):
        return "script"
    return "other"


def short(path):
    for anchor in ("site-packages/", "/python3.11/", str(HERE.parent) + "/"):
        if anchor in path:
            return path.split(anchor, 1)[1]
    return path


# --- py-spy ---------------------------------------------------------------------

STARTUP = {"_find_and_load", "load_spec", "get_connection", "declare", "parse_args", "make_parser"}
MACHINERY = {"defer", "txamqp", "client", "warnings"}
PROCESS_FRAME = "txamqp `process_frame`: an inlineCallbacks per frame"
INVOKE = "`invoke` for basic.ack or basic.publish (ours + txamqp's: 2 inlineCallbacks)"
# The code on whose behalf the machinery runs: the nearest of these above a
# sample whose own code is machinery (Deferreds, inlineCallbacks, queues, locks).
ORIGINS = [
    ("txamqp/protocol.py", "AMQClient.channel", "txamqp `channel()`: a DeferredLock around a dict lookup, per frame"),
    ("txamqp/protocol.py", "AMQClient.process_frame", PROCESS_FRAME),
    ("txamqp/protocol.py", "AMQClient.frame_received", PROCESS_FRAME),
    ("txamqp/protocol.py", "AMQChannel.dispatch",
     "txamqp `AMQChannel.dispatch`: each frame into a DeferredQueue, resuming its reader"),
    ("amqp_support/client.py", "read_content", "`read_content` (inlineCallbacks, resumed per frame)"),
    ("amqp_support/client.py", "AMQClient.dispatch", "`dispatch` (inlineCallbacks, one per method frame)"),
    ("txamqp/protocol.py", "AMQClient.worker", "txamqp `worker`: the next `dispatch` after each one"),
    ("txamqp/client.py", "TwistedDelegate.basic_deliver", "the delivery into the consumer's queue"),
    ("txamqp/protocol.py", "AMQChannel.write_content",
     "`write_content`: header and body frames into the outgoing queue"),
    ("txamqp/protocol.py", "AMQClient.writer", "txamqp `writer`: the outgoing DeferredQueue, a frame at a time"),
    ("amqp_support/client.py", "AMQChannel.invoke", INVOKE),
    ("txamqp/protocol.py", "AMQChannel.invoke", INVOKE),
    ("<string>", "basic_ack", INVOKE),
    ("<string>", "basic_publish", INVOKE),
    ("/consumer.py", "main", "the script's own loop (`queue.get()`, the script's generator)"),
    ("/producer.py", "main", "the script's own loop (the script's generator)"),
]


def parse_frame(text):
    """'func (path)' -> (path, func)."""
    func, _, rest = text.rpartition(" (")
    return rest.rstrip(")"), func


def origin(frames):
    for path, func in reversed(frames):
        for suffix, name, label in ORIGINS:
            if func == name and path.endswith(suffix):
                return label
    return "elsewhere"


def pyspy_summary(path):
    stacks = []
    other_threads = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [parse_frame(f) for f in stack.split(";")]
        if frames[0][1].endswith("_bootstrap") and frames[0][0].endswith("threading.py"):
            other_threads += int(count)  # a thread pool's thread (name resolution), not the reactor's
            continue
        stacks.append((frames, int(count)))
    total = sum(n for _, n in stacks)
    by_category = collections.Counter()
    by_origin = collections.Counter()
    self_time = collections.Counter()
    inclusive = collections.Counter()
    for frames, n in stacks:
        leaf = frames[-1]
        if any(f in STARTUP for _, f in frames):
            cat = "startup"
        else:
            cat = category(*leaf)
        by_category[cat] += n
        if cat in MACHINERY:
            by_origin[origin(frames)] += n
        self_time[leaf] += n
        for frame in set(frames):
            inclusive[frame] += n
    return total, by_category, by_origin, self_time, inclusive, other_threads


# --- cProfile -------------------------------------------------------------------

def cprofile_summary(path):
    stats = pstats.Stats(str(path)).stats  # (file, line, func) -> (cc, nc, tt, ct, callers)
    by_category = collections.Counter()

    def owner(key, depth=0):
        """The category a function's own time counts for: a builtin's goes to its callers."""
        if key[0] != "~" or depth > 3:
            return {category(key[0], key[2]): 1.0}
        callers = stats[key][4]
        total = sum(edge[2] for edge in callers.values()) or 1.0
        shares = collections.Counter()
        for caller, edge in callers.items():
            for cat, share in owner(caller, depth + 1).items():
                shares[cat] += share * edge[2] / total
        return shares or {"other": 1.0}

    for key, (_, _, tt, _, _) in stats.items():
        if key[2] == EPOLL:
            by_category["idle"] += tt  # waiting for the broker: not CPU
            continue
        for cat, share in owner(key).items():
            by_category[cat] += tt * share
    return stats, by_category


EPOLL = "<method 'poll' of 'select.epoll' objects>"


def calls(stats, file_suffix, func):
    """Calls of func defined in a file ending with file_suffix ("~" for builtins)."""
    return sum(v[1] for k, v in stats.items()
               if k[2] == func and (k[0].endswith(file_suffix) or (file_suffix == "~" and k[0] == "~")))


def cumtime(stats, file_suffix, func):
    return sum(v[3] for k, v in stats.items() if k[2] == func and k[0].endswith(file_suffix))


# (label, file suffix or "~" for a builtin, function): each is called once per
# thing counted. A generator function is entered once per resume, so
# inlineCallbacks functions are counted through a function they call once.
COUNTS = [
    ("frames decoded (`unpack_payload`)", "amqp_support/codec.py", "unpack_payload"),
    ("frames encoded (`pack_frame`)", "amqp_support/codec.py", "pack_frame"),
    ("socket reads (`AMQClient.dataReceived`)", "amqp_support/client.py", "dataReceived"),
    ("transport writes (`FileDescriptor.write`)", "twisted/internet/abstract.py", "write"),
    ("`socket.send` calls", "~", "<method 'send' of '_socket.socket' objects>"),
    ("txamqp `process_frame` calls (via `frame_received`)", "txamqp/protocol.py", "frame_received"),
    ("txamqp `channel()` calls, each taking a DeferredLock (`DeferredLock.acquire`)",
     "twisted/internet/defer.py", "acquire"),
    ("`dispatch` calls (via txamqp's `worker`)", "txamqp/protocol.py", "worker"),
    ("contents written (txamqp `write_content`: header + body frames)", "txamqp/protocol.py", "write_content"),
    ("inlineCallbacks functions called (`_cancellableInlineCallbacks`)", "twisted/internet/defer.py",
     "_cancellableInlineCallbacks"),
    ("generator (re)starts (`_inlineCallbacks`)", "twisted/internet/defer.py", "_inlineCallbacks"),
    ("Deferreds created (`Deferred.__init__`)", "twisted/internet/defer.py", "__init__"),
    ("callback chains run (`Deferred._runCallbacks`)", "twisted/internet/defer.py", "_runCallbacks"),
    ("`defer.returnValue` calls (deprecated: each one warns)", "twisted/internet/defer.py", "returnValue"),
    ("`warnings.warn` calls", "~", "<built-in method _warnings.warn>"),
    ("`print` calls", "~", "<built-in method builtins.print>"),
]


# --- running ------------------------------------------------------------------------

def profile_script(name, cmd, n, workdir, prepare, stdin_data):
    """Run cmd plain, under py-spy and under cProfile; return the three results."""
    results = {}
    pyspy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    spy_out = Path(workdir) / f"{name}.pyspy.txt"
    prof_out = Path(workdir) / f"{name}.prof"
    variants = {
        "plain": cmd,
        "py-spy": [pyspy, "record", "--format", "raw", "--full-filenames", "--nolineno", "-r", "250",
                   "-o", str(spy_out), "--", *cmd],
        "cProfile": [cmd[0], "-m", "cProfile", "-o", str(prof_out), *cmd[1:]],
    }
    for variant, command in variants.items():
        prepare()
        results[variant] = run(command, stdin_data)
        print(f"{name}, {variant}: {results[variant].seconds:.1f} s", file=sys.stderr, flush=True)
    return results, pyspy_summary(spy_out), cprofile_summary(prof_out)


def section(title, n, results, spy, prof):
    plain = results["plain"]
    total, spy_cats, by_origin, self_time, inclusive, other_threads = spy
    stats, prof_cats = prof
    idle = prof_cats.pop("idle", 0.0)
    prof_total = sum(prof_cats.values())
    cpu_us = plain.cpu / n * 1e6

    def us(count):
        return count / total * cpu_us

    out = [
        f"## {title}", "",
        f"Plain run: {plain.seconds:.2f} s wall, {plain.cpu:.2f} s CPU ({plain.cpu / plain.seconds:.0%} of "
        f"wall), {n / plain.seconds:,.0f} msg/s, **{cpu_us:.1f} µs CPU per message** (start-up included), "
        f"peak RSS {plain.rss_mib or 0:.0f} MiB. "
        f"Under py-spy: {results['py-spy'].seconds:.2f} s wall, {total:,} samples of the main thread on CPU "
        f"({other_threads} of other threads left out). "
        f"Under cProfile: {results['cProfile'].seconds:.2f} s ({results['cProfile'].seconds / plain.seconds:.1f}x "
        f"the plain run; {idle:.2f} s of it waiting in epoll, left out of its shares).",
        "",
        "µs CPU/msg below = py-spy's share × the plain run's CPU per message.",
        "",
        "| where the time goes (own code of the sample) | py-spy share | ≈ µs CPU/msg | cProfile share |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, label in CATEGORIES:
        count = spy_cats.get(key, 0)
        out.append(f"| {label} | {count / total:.1%} | {us(count):.1f} | {prof_cats.get(key, 0) / prof_total:.1%} |")
    machinery = sum(spy_cats.get(k, 0) for k in MACHINERY)
    out += ["", f"The machinery (the Deferred, txamqp, AMQClient-subclass and warnings rows: "
            f"{machinery / total:.1%}, ≈ {us(machinery):.1f} µs/msg), by the code it runs for "
            "(the nearest of these above the sample):", "",
            "| on behalf of | py-spy share | ≈ µs CPU/msg |", "| --- | ---: | ---: |"]
    for label, count in by_origin.most_common():
        out.append(f"| {label} | {count / total:.1%} | {us(count):.1f} |")

    out += ["", "Top functions by own time (py-spy; C calls count for their Python caller):", "",
            "| function | file | own | inclusive |", "| --- | --- | ---: | ---: |"]
    for (path, func), count in self_time.most_common(15):
        out.append(f"| `{func}` | {short(path)} | {count / total:.1%} | {inclusive[(path, func)] / total:.1%} |")

    out += ["", "Top functions by own time (cProfile; its timings inflate small functions; a generator "
            "counts one call per resume):", "",
            "| function | file | calls/msg | own µs/msg | cumulative µs/msg |", "| --- | --- | ---: | ---: | ---: |"]
    top = sorted(((k, v) for k, v in stats.items() if k[2] != EPOLL), key=lambda item: item[1][2], reverse=True)
    for (path, _, func), (_, nc, tt, ct, _) in top[:15]:
        out.append(f"| `{func}` | {short(path)} | {nc / n:.2f} | {tt / n * 1e6:.1f} | {ct / n * 1e6:.1f} |")

    out += ["", "Counts per message (cProfile, exact):", "", "| what | per message |", "| --- | ---: |"]
    for label, suffix, func in COUNTS:
        out.append(f"| {label} | {calls(stats, suffix, func) / n:.2f} |")
    out.append("")
    return out


def commit_waits(cmd, data, workdir):
    """Our producer with its waits for the broker timed (bench/timed_commits.py):
    its tx.commit calls (amqp0-8.xml), or its waits for confirms (amqp0-9-1.xml)."""
    out = Path(workdir) / "commits.json"
    result = run([PY, str(HERE / "timed_commits.py"), str(out), *cmd[1:]], data)
    timed = json.loads(out.read_text())
    if timed["waits"]:
        waits, what = sorted(timed["waits"]), "`tx.commit` timed from the call to its commit-ok"
        count = f"{len(waits)} commits"
    else:
        waits, what = sorted(timed["confirm_waits"]), "wait for confirms timed (its window full, or at the end)"
        count = f"{len(waits)} waits"
    if not waits:
        return ["The producer never waited for the broker in one more run (bench/timed_commits.py).", ""]
    return [
        f"The producer waits for the broker: in one more run with each {what} "
        f"(bench/timed_commits.py), {count} took {sum(waits):.2f} s of "
        f"{result.seconds:.2f} s wall ({sum(waits) / result.seconds:.0%}; each: median "
        f"{statistics.median(waits) * 1e3:.0f} ms, max {waits[-1] * 1e3:.0f} ms), while the process used "
        f"{result.cpu:.2f} s CPU.", ""]


def startup(url, spec, runs=7):
    """Where a one-message producer's time goes: the interpreter, the imports,
    the spec file, and the rest (connect, log in, declare, publish, commit, close)."""
    steps = [
        ("python -c pass", [PY, "-c", "pass"]),
        ("+ import producer (Twisted, txamqp, common)", [PY, "-c", "import producer"]),
        (f"+ common.load_spec({spec!r})", [PY, "-c", f"import producer, common; common.load_spec({spec!r})"]),
        ("+ connect, log in, declare, publish, commit, close: producer.py, one message",
         ours_producer(url, spec, "one message")),
    ]
    times = {label: [] for label, _ in steps}
    for _ in range(runs):
        for label, cmd in steps:
            times[label].append(run(cmd).seconds)
    best = [min(times[label]) for label, _ in steps]
    out = ["## Start-up: one message, start to exit", "",
           f"Fastest of {runs} runs of each (a loaded machine makes medians noisy):", "",
           "| step | ms (fastest run) | this step alone, ms |", "| --- | ---: | ---: |"]
    previous = 0.0
    for (label, _), t in zip(steps, best, strict=True):
        out.append(f"| {label} | {t * 1e3:.0f} | {(t - previous) * 1e3:.0f} |")
        previous = t
    tree = subprocess.run([PY, "-X", "importtime", "-c", "import producer"], cwd=ROOT,
                          capture_output=True, text=True).stderr.splitlines()
    rows = []
    for line in tree:
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        depth = (len(name) - len(name.lstrip())) // 2
        rows.append((int(cumulative), depth, name.strip()))
    out += ["", "The imports, from `python -X importtime -c 'import producer'` (its own overhead included): "
            "the tree, three levels deep, of the imports that took 8 ms or more, each with what it imported:",
            "", "| module | cumulative ms |", "| --- | ---: |"]
    for cumulative, depth, name in reversed(rows):  # importtime lists an import after its children
        if depth > 3 or cumulative < 8000:
            continue
        out.append(f"| {'&nbsp;' * 4 * depth}`{name}` | {cumulative / 1e3:.1f} |")
    return out + [""]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--spec", default="amqp0-8.xml")
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--output", default=str(HERE / "PROFILE.md"), help='"" to write no file')
    args = parser.parse_args()
    n = args.messages
    compile_ours()

    with tempfile.TemporaryDirectory(prefix="txamqp-profile-") as workdir, throwaway_node() as node:
        url = node.url
        broker = QueueProbe(url)
        try:
            path = Path(workdir) / "bodies.txt"
            write_bodies(path, n)
            data = path.read_bytes()
            run(pika_producer(url, False, "declare only"))
            broker.purge()

            def empty():
                broker.purge()

            producer = profile_script("producer", ours_producer(url, args.spec), n, workdir, empty, data)
            broker.expect(n, "the producer")
            empty()
            waits = commit_waits(ours_producer(url, args.spec), data, workdir)
            broker.expect(n, "the producer")

            def prefill():
                broker.purge()
                run(pika_producer(url, False), data)
                broker.expect(n, "the prefill")

            consumer_cmd = ours_consumer(url, args.spec, n, args.prefetch)
            results, spy, prof = profile_script("consumer", consumer_cmd, n, workdir, prefill, None)
            broker.expect(0, "the consumer", QUEUE)
            consumer = (results, spy, prof)
            start = startup(url, args.spec)
            broker.purge()
        finally:
            broker.close()

    out = [MARKER, "",
           f"{n:,} messages of 100 bytes, persistent, `{args.spec}`; consumer prefetch {args.prefetch}, "
           "one ack per message, stdout to /dev/null.", ""]
    out += section(f"consumer.py {args.spec} --count {n}", n, *consumer)
    out += section(f"producer.py {args.spec} - (stdin: {n:,} lines)", n, *producer)
    out += waits
    out += start
    text = "\n".join(out)
    print(text)
    if args.output:
        target = Path(args.output)
        head = target.read_text().split(MARKER)[0] if target.exists() else "# Profile\n\n"
        target.write_text(head + text)
        print(f"written to {target}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        print(f"profile: error: {e}", file=sys.stderr)
        sys.exit(1)
