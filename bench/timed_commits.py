"""Run producer.py with each tx.commit timed, from the call to its commit-ok:
how long the producer waits for the broker. Used by profile_clients.py.

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

from amqp_support import client

output, script, *argv = sys.argv[1:]
waits = []
started = time.perf_counter()
invoke = client.AMQChannel.invoke


def timed_invoke(self, method, args, content=None):
    d = invoke(self, method, args, content)
    if method.klass.name == "tx" and method.name == "commit":
        t0 = time.perf_counter()
        d.addBoth(lambda result: (waits.append(time.perf_counter() - t0), result)[1])
    return d


def save():
    with open(output, "w") as f:
        json.dump({"waits": waits, "seconds": time.perf_counter() - started}, f)


client.AMQChannel.invoke = timed_invoke
atexit.register(save)
sys.argv = [script, *argv]
runpy.run_path(script, run_name="__main__")
