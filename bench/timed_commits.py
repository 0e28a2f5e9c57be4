"""Run producer.py with its waits for the broker timed: each tx.commit from
the call to its commit-ok (amqp0-8.xml), and each wait for confirms while
the window is full or at the end (amqp0-9-1.xml). Used by profile_clients.py.

    python bench/timed_commits.py OUTPUT.json producer.py SPEC - [options]

Only wraps a method of the project's AMQChannel in this process; producer.py
itself runs unchanged (runpy, as __main__).
"""

import atexit
import json
import runpy
import sys
import time

sys.path.insert(0, "")  # run from the repo root: producer.py imports common

from amqp_support import client, publish

output, script, *argv = sys.argv[1:]
waits = []  # seconds of each commit
confirm_waits = []  # seconds of each wait for confirms that did not end at once
started = time.perf_counter()
invoke = client.AMQChannel.invoke


def timed_invoke(self, method, args, content=None):
    d = invoke(self, method, args, content)
    if method.klass.name == "tx" and method.name == "commit":
        t0 = time.perf_counter()
        d.addBoth(lambda result: (waits.append(time.perf_counter() - t0), result)[1])
    return d


wait_until_below = publish.Outbox.wait_until_below


def timed_wait(self, messages, size):
    d = wait_until_below(self, messages, size)
    if not d.called:
        t0 = time.perf_counter()
        d.addBoth(lambda result: (confirm_waits.append(time.perf_counter() - t0), result)[1])
    return d


def save():
    with open(output, "w") as f:
        json.dump({"waits": waits, "confirm_waits": confirm_waits, "seconds": time.perf_counter() - started}, f)


client.AMQChannel.invoke = timed_invoke
publish.Outbox.wait_until_below = timed_wait
atexit.register(save)
sys.argv = [script, *argv]
runpy.run_path(script, run_name="__main__")
