"""Where producer.py's and consumer.py's CPU time goes: bench/run.py --profile.

Each script (each spec file, and the baseline's with --baseline) runs once
more on the throughput runs' work under py-spy (pinned in
requirements-bench.txt), a sampling profiler that reads the process from
outside, 250 times a second: the script runs unchanged and little slowed.
The samples of its main thread on CPU are summed by where the code is (the
checkout's files one by one, each installed package, Python's standard
library; start-up apart) and by function, and turned into µs per message
with the CPU time per message of the script's timed runs. py-spy's samples
are kept in bench/profiles/ (collapsed stacks: speedscope and flamegraph.pl
read them). Then producer.py sends one message under `python -X importtime`:
the imports its start-up waits for.

Only the paths of the code are read, never the project's modules: renamed
or new modules show up under their own names.
"""

import collections
import shutil
import sysconfig
from pathlib import Path

from measure import HERE, PY, BenchError, ours_producer, run

PROFILES = HERE / "profiles"
STDLIB = sysconfig.get_paths()["stdlib"] + "/"
RATE = 250  # samples per second
TOP = 15  # functions listed
IMPORT_MS = 10  # imports listed: those that took at least this, cumulative
IMPORT_DEPTH = 2


def pyspy():
    found = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if not Path(found).exists():
        raise BenchError("--profile needs py-spy: pip install -r requirements-bench.txt (tox -e bench does)")
    return found


def where(path, root):
    """The place a sample's code is in: an installed package, a file of the checkout, the standard library."""
    if "/site-packages/" in path:  # first: a virtualenv may be inside the checkout
        return path.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if path.startswith(str(root) + "/"):
        return path[len(str(root)) + 1:]
    if path.startswith(STDLIB) or path.startswith("<frozen"):
        return "Python's standard library"
    return path


def short(path, root):
    for anchor in ("/site-packages/", str(root) + "/", STDLIB):
        if anchor in path:
            return path.split(anchor, 1)[1]
    return path


def parse(text):
    """py-spy's raw output: [([(path, function), ...] from the outermost, count)]."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = []
        for frame in stack.split(";"):
            func, _, path = frame.rpartition(" (")
            frames.append((path.removesuffix(")"), func))
        stacks.append((frames, int(count)))
    return stacks


def startup(frames):
    """A sample of the start-up: an import under way, or the script's own top level."""
    return len(frames) == 1 or any(func == "<module>" or path.startswith("<frozen importlib")
                                   for path, func in frames[1:])


def summary(label, stacks, root, us_per_msg, n, seconds):
    stacks = [(frames, count) for frames, count in stacks
              if not (frames[0][0].endswith("/threading.py") and frames[0][1].endswith("_bootstrap"))]
    total = sum(count for _, count in stacks)
    if not total:
        return [f"### {label}", "", "py-spy took no sample of its main thread.", ""]
    places, own, inclusive = collections.Counter(), collections.Counter(), collections.Counter()
    for frames, count in stacks:
        path, func = frames[-1]
        places["start-up: imports and the script's top level" if startup(frames) else where(path, root)] += count
        own[path, func] += count
        for frame in set(frames):
            inclusive[frame] += count
    out = [f"### {label}", "",
           f"{n:,} messages in {seconds:.2f} s under py-spy, {total:,} samples of the main thread on CPU; "
           f"µs/msg = share × {us_per_msg:.1f} µs, the CPU per message of the timed runs (median).", "",
           "| where the code is | share | ≈ µs CPU/msg |", "| --- | ---: | ---: |"]
    for place, count in places.most_common():
        out.append(f"| {place} | {count / total:.1%} | {count / total * us_per_msg:.1f} |")
    out += ["", "| function (own time; C calls count for their caller) | file | own | inclusive |",
            "| --- | --- | ---: | ---: |"]
    for (path, func), count in own.most_common(TOP):
        out.append(f"| `{func}` | {short(path, root)} | {count / total:.1%} | {inclusive[path, func] / total:.1%} |")
    return out + [""]


def imports(label, stderr):
    """The import tree python -X importtime wrote: IMPORT_DEPTH levels, the imports of IMPORT_MS or more."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        rows.append((int(cumulative), (len(name) - len(name.lstrip())) // 2, name.strip()))
    out = [f"{label}: `python -X importtime` (its own overhead included), the imports that took "
           f"{IMPORT_MS} ms or more, {IMPORT_DEPTH} levels deep, each above what it imported:", "",
           "| module | cumulative ms |", "| --- | ---: |"]
    for cumulative, depth, name in reversed(rows):  # importtime lists an import after its children
        if depth <= IMPORT_DEPTH and cumulative >= IMPORT_MS * 1000:
            out.append(f"| {'&nbsp;' * 4 * depth}`{name}` | {cumulative / 1e3:.1f} |")
    return out + [""]


def profile(url, broker, args, clients, data, line_size):
    """Report lines: each script of each checkout under py-spy, then its start-up's imports."""
    spy = pyspy()
    PROFILES.mkdir(exist_ok=True)
    for old in PROFILES.glob("*.txt"):
        old.unlink()
    n = args.messages
    out = ["## Profile (--profile)", "", __doc__.split("\n\n")[1].replace("\n", " "), ""]
    start = []
    for client in clients.values():
        if not client.script:
            continue
        name = client.key.replace(" ", "-").removeprefix("p-").removeprefix("c-")
        folded = PROFILES / f"{'consumer' if client.consumer else 'producer'}-{name}.txt"
        command = [spy, "record", "--format", "raw", "--full-filenames", "--nolineno", "-r", str(RATE),
                   "-o", str(folded), "--", *client.command(url, args)]
        broker.purge()
        if client.consumer:
            broker.fill([data[i * line_size:(i + 1) * line_size - 1] for i in range(n)])
            result = run(command, watch_stdout=True, cwd=client.cwd)  # py-spy's own lines go to stdout too
            broker.wait_depth(0, f"{client.label} under py-spy", wait=30)
        else:
            result = run(command, data[:n * line_size], cwd=client.cwd)
            broker.wait_depth(n, f"{client.label} under py-spy", wait=30)
        us = client.cpu_us()
        out += summary(client.label, parse(folded.read_text()), client.cwd, us, n, result.seconds)
        if not client.consumer:
            one = run([PY, "-X", "importtime", *ours_producer(url, client.spec, "one message")[1:]], cwd=client.cwd)
            start += imports(f"{client.label}, one message", one.stderr)
    broker.purge()
    out += ["### Start-up", "", *start]
    out.append(f"py-spy's samples: bench/profiles/ ({', '.join(p.name for p in sorted(PROFILES.glob('*.txt')))}).")
    return out + [""]
