"""A throwaway RabbitMQ node for the benchmark, started exactly as the tests
start theirs: tests/conftest.py's IsolatedRabbitMqExecutor (free ports, its own
config, data and log folders, nothing shared with a broker on 5672)."""

import contextlib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]  # conftest imports the project's modules

import conftest  # noqa: E402 (needs tests/ and the root on sys.path)
from port_for import get_port  # noqa: E402


@contextlib.contextmanager
def throwaway_node():
    """Yield a conftest.Broker (url, ctl(...)) for a node that is stopped and
    removed when the block ends."""
    with tempfile.TemporaryDirectory(prefix="txamqp-bench-rabbitmq-") as tmp:
        port = get_port(None, conftest.STANDARD_PORTS)
        dist_port = get_port(None, [port, *conftest.STANDARD_PORTS])
        executor = conftest.IsolatedRabbitMqExecutor(
            port, dist_port, f"txamqp-bench-{port}@localhost", Path(tmp))
        node = conftest.Broker(f"amqp://guest:guest@127.0.0.1:{port}/%2F", executor)
        try:
            node.start()
            yield node
        finally:
            executor.shut_down()
