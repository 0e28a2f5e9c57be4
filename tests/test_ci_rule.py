"""A green CI proves what it ran: with CI set, a test that needs RabbitMQ 4.0 or
4.3, the newest Python or Node's amqplib fails where it would skip elsewhere
(conftest.py's pytest_runtest_makereport and must_run)."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

import conftest
import helpers

# A test whose rabbitmq43 fixture skips: AMQP_URL points the tests at an
# existing broker (here, none: nothing connects to it before the skip).
SKIPS = "tests/test_rabbitmq43.py::test_node_is_rabbitmq_4_3_denying_what_it_deprecates"


@pytest.mark.parametrize("ci", ["", "true"], ids=["outside-CI", "CI"])
def test_a_skip_for_want_of_rabbitmq_4_fails_under_ci(ci):
    env = dict(os.environ, AMQP_URL="amqp://guest:guest@127.0.0.1:1/%2F", CI=ci)
    done = subprocess.run([sys.executable, "-m", "pytest", SKIPS, "-q", "-p", "no:cacheprovider"],
                          cwd=helpers.ROOT, env=env, capture_output=True, text=True, timeout=120)
    if ci:
        assert done.returncode == 1, done.stdout
        assert "CI is set, and this test must run there, but it was skipped: RabbitMQ 4.3 cases skipped: " \
               "RabbitMQ 4.3 cases need the tests' own throwaway node" in done.stdout, done.stdout
        assert "1 error" in done.stdout, done.stdout
    else:
        assert done.returncode == 0, done.stdout
        assert "1 skipped" in done.stdout, done.stdout


def item(fixtures=(), **params):
    return SimpleNamespace(fixturenames=["request", *fixtures], callspec=SimpleNamespace(params=params))


@pytest.mark.parametrize(("case", "must"), [
    (item(["rabbitmq40"]), True),
    (item(["rabbitmq4", "rabbitmq40"]), True),
    (item(["rabbitmq43"]), True),
    (item(["rabbitmq43_consumer_timeout"]), True),
    (item(["amqplib", "broker"], broker="rabbitmq3"), True),
    (item(["broker"], broker="rabbitmq40"), True),
    (item(["broker"], broker="rabbitmq43"), True),
    (item(["broker", "python"], broker="rabbitmq3", python=helpers.NEWEST_PYTHON), True),
    (item(["broker", "python"], broker="rabbitmq3", python=helpers.VENV_PYTHON), False),
    (item(["broker"], broker="rabbitmq3"), False),
    (item(["tls_broker"]), False),
    (SimpleNamespace(fixturenames=["broker"]), False),  # not parametrized: rabbitmq3
])
def test_what_ci_must_run(case, must):
    assert conftest.must_run(case) is must
