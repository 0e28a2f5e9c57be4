#!/usr/bin/env python3
"""Run the tests: python3 tools/test.py [PYTEST ARGS...]

Creates .venv in the repo (or reuses it), installs the pinned tox into it, makes
sure RabbitMQ is installed (the tests start throwaway nodes of their own, never
touching a broker on the standard port), then runs tox, which runs pytest with
the arguments given here. Exits with tox's status. Standard library only.

As root it also builds, once, the Debian 13 chroot with a real RabbitMQ 4 that
the rabbitmq4 tests run against (tools/rabbitmq4.py; a few minutes, cached in
/var/cache/txamqp-example). Without it those tests skip, saying how to get it.

With AMQP_URL set, the broker tests use that broker instead, and RabbitMQ need not
be installed here; the tests that stop or kill a broker are skipped.
"""

import os
import subprocess
import sys
from pathlib import Path

import rabbitmq4  # tools/rabbitmq4.py

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
APT_INSTALL = "apt-get update && apt-get install -y rabbitmq-server"


def fail(message):
    print(f"tools/test.py: {message}", file=sys.stderr)
    sys.exit(2)


def venv_python():
    """.venv's python, creating .venv first if needed."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"Creating {VENV}", file=sys.stderr)
        if subprocess.run([sys.executable, "-m", "venv", str(VENV)]).returncode:
            fail(f"could not create {VENV}; on Debian or Ubuntu: apt-get install python3-venv")
    return python


def ensure_rabbitmq():
    if RABBITMQ_SERVER.exists() or os.environ.get("AMQP_URL"):
        return
    if os.geteuid() != 0:
        fail(f"RabbitMQ is not installed ({RABBITMQ_SERVER} is missing). Install it with:\n"
             f"    sudo sh -c '{APT_INSTALL}'")
    print(f"Installing RabbitMQ: {APT_INSTALL}", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "rabbitmq-server"]):
        if subprocess.run(command, env=env).returncode:
            fail(f"`{' '.join(command)}` failed")
    if not RABBITMQ_SERVER.exists():
        fail(f"rabbitmq-server was installed but {RABBITMQ_SERVER} is still missing")


def ensure_rabbitmq4():
    """Build RabbitMQ 4's chroot if we can; if not, its tests skip (not an error)."""
    if os.environ.get("AMQP_URL") or os.geteuid() != 0:
        return
    problem = rabbitmq4.provision()
    if problem:
        print(f"tools/test.py: {problem}; the RabbitMQ 4 tests will be skipped", file=sys.stderr)


def main():
    if sys.version_info < (3, 11):  # noqa: UP036 (run by whatever python3 a machine has)
        fail("Python 3.11 or later is needed")
    python = venv_python()
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if subprocess.run([*pip, "-r", str(ROOT / "requirements-tox.txt")]).returncode:
        fail("could not install tox into .venv (see pip's message above)")
    ensure_rabbitmq()
    ensure_rabbitmq4()
    tox = [str(python), "-m", "tox"]
    if sys.argv[1:]:
        tox += ["--", *sys.argv[1:]]
    sys.exit(subprocess.run(tox, cwd=ROOT).returncode)


if __name__ == "__main__":
    main()
