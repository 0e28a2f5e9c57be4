"""A throwaway RabbitMQ node for the benchmark, started exactly as the tests
start theirs: tests/rabbitmq_nodes.py (free ports, its own config, data and log
folders, nothing shared with a broker on 5672)."""

import contextlib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]  # rabbitmq_nodes imports helpers and tools

import rabbitmq_nodes  # noqa: E402 (needs tests/ and the root on sys.path)


class _Folders:
    """Makes the node's folder in a temporary folder (what pytest's tmp_path_factory does for the tests)."""

    def __init__(self, base):
        self.base = Path(base)

    def mktemp(self, name):
        path = self.base / name
        path.mkdir()
        return path


@contextlib.contextmanager
def throwaway_node():
    """Yield a rabbitmq_nodes.Broker (url, ctl(...)) for a node that is stopped
    and removed when the block ends."""
    with tempfile.TemporaryDirectory(prefix="txamqp-bench-rabbitmq-") as tmp:
        node, executor = rabbitmq_nodes.make_node(_Folders(tmp), "bench")
        try:
            node.start()
            yield node
        finally:
            executor.shut_down()
