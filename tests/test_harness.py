"""The test harness itself: the broker fixture, names, vhosts, background scripts
and the DeprecationWarning rule do what the other tests rely on."""

import signal

import pika.exceptions
import psutil
import pytest
from twisted.internet import defer

import helpers
from helpers import ROOT, get_all, publish, queue_depth, queue_exists, run_script

pytestmark = pytest.mark.not_ours


@pytest.mark.rabbitmq4
def test_node_is_not_the_machines_broker(broker):
    assert broker.port != 5672
    status = broker.ctl("status")
    assert f"Node name: {broker.node}" in status
    assert not broker.node.startswith("rabbit@")
    assert f"OS PID: {broker.os_pid}" in status
    # The process we hold is the one listening on the port the tests use, and only there.
    listening = {c.laddr.port for c in psutil.Process(broker.os_pid).net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    assert broker.port in listening
    assert 5672 not in listening


@pytest.mark.rabbitmq4
def test_names_are_unique_and_reach_the_node(broker, names):
    assert len({names.exchange, names.queue, names.routing_key}) == 3
    assert names.args == ["--exchange", names.exchange, "--queue", names.queue,
                          "--routing-key", names.routing_key]
    helpers.declare(broker.url, names.exchange, names.queue, names.routing_key)
    if not broker.external:
        assert names.queue in broker.ctl("list_queues", "name").split()


@pytest.mark.rabbitmq4
@pytest.mark.slow
def test_persistent_message_survives_restart(broker, names):
    helpers.declare(broker.url, names.exchange, names.queue, names.routing_key)
    publish(broker.url, names.exchange, names.routing_key, b"kept \xff\x00 across restarts")
    publish(broker.url, names.exchange, names.routing_key, b"transient", persistent=False)
    assert queue_depth(broker.url, names.queue) == 2
    pid_before = broker.os_pid

    broker.restart()

    assert broker.os_pid not in (None, pid_before)
    # Only the persistent message is left: the node really went down and came back.
    assert queue_depth(broker.url, names.queue) == 1
    assert get_all(broker.url, names.queue) == [b"kept \xff\x00 across restarts"]
    assert queue_depth(broker.url, names.queue) == 0


@pytest.mark.rabbitmq4
def test_vhost_url_is_empty_and_isolated(broker, vhost_url):
    vhost = vhost_url.rsplit("/", 1)[1]
    assert broker.ctl("list_queues", "-p", vhost, "name").split() == []
    helpers.declare(vhost_url, "test_message_exchange", "test_message_queue", "test_routing_key")
    publish(vhost_url, "test_message_exchange", "test_routing_key", "in the vhost")
    assert queue_depth(vhost_url, "test_message_queue") == 1
    assert not queue_exists(broker.url, "test_message_queue")  # not in the default vhost


def test_spawned_script_output_signals_and_timeouts(broker, spawn, tmp_path):
    script = tmp_path / "echo.py"
    script.write_text(
        "import os, signal, sys\n"
        "signal.signal(signal.SIGINT, lambda *a: (print('interrupted', file=sys.stderr), sys.exit(0)))\n"
        "print('url', os.environ['AMQP_URL'], file=sys.stderr, flush=True)\n"
        "for line in sys.stdin:\n"
        "    print('got', line.strip(), flush=True)\n"
        "print('Waiting for messages', file=sys.stderr, flush=True)\n"
        "signal.pause()\n"
    )
    proc = spawn(script, url=broker.url, input="one\ntwo\n")
    assert broker.url in proc.wait_for_stderr("Waiting for messages", timeout=10)
    assert proc.read_stdout_lines(2, timeout=10) == ["got one", "got two"]
    with pytest.raises(AssertionError, match="1 more stdout line"):
        proc.read_stdout_lines(1, timeout=0.5)  # nothing more comes: fails, doesn't hang
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert "interrupted" in proc.stderr_text


def test_spawn_kills_leftovers(spawn, tmp_path):
    script = tmp_path / "sleep.py"
    script.write_text("import time\ntime.sleep(600)\n")
    proc = spawn(script, url="amqp://unused")
    with pytest.raises(AssertionError, match="still running"):
        proc.wait(timeout=0.5)
    proc.kill()
    assert proc.returncode == -signal.SIGKILL


def test_run_script_makes_our_deprecation_warnings_errors(tmp_path):
    """Scripts run as processes: a DeprecationWarning from the script itself or a
    module of ours is an error; one from txamqp is not."""
    script = tmp_path / "warns.py"
    script.write_text(
        "import sys, warnings\n"
        "where = sys.argv[1]\n"
        "code = compile('import warnings; warnings.warn(\"old\", DeprecationWarning)', where, 'exec')\n"
        "exec(code, {'__name__': where})\n"
        "print('no error')\n"
    )
    for module in ["__main__", *helpers.project_modules()]:
        done = run_script(script, module, url="amqp://unused", timeout=30)
        assert done.returncode == 1, module
        assert b"DeprecationWarning: old" in done.stderr
    done = run_script(script, "txamqp.protocol", url="amqp://unused", timeout=30)
    assert (done.returncode, done.stdout) == (0, b"no error\n")


def test_project_modules_are_found():
    modules = helpers.project_modules()
    for name in ["common", "consumer", "producer"]:
        if (ROOT / f"{name}.py").exists():
            assert name in modules
    assert not any(m.startswith(("tests", "tools")) for m in modules)


@pytest.mark.parametrize("module", helpers.project_modules() or ["common"])
def test_in_process_deprecation_warnings_from_our_modules_are_errors(module):
    """tox.ini's filterwarnings covers every module of ours: defer.returnValue
    called from it raises the DeprecationWarning instead of returning."""
    code = compile("from twisted.internet import defer\ndefer.returnValue(1)\n", f"{module}.py", "exec")
    with pytest.raises(DeprecationWarning):
        exec(code, {"__name__": module})


def test_in_process_deprecation_warnings_from_txamqp_are_not_errors():
    code = compile("from twisted.internet import defer\ndefer.returnValue(1)\n", "protocol.py", "exec")
    with pytest.raises(defer._DefGen_Return):
        exec(code, {"__name__": "txamqp.protocol"})


def test_connect_gives_up_quickly_on_a_closed_port():
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        helpers.connect("amqp://guest:guest@127.0.0.1:1/%2F")
