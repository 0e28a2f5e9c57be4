#!/usr/bin/env python3
"""Run the tests: python3 tools/test.py [PYTEST ARGS...]

Creates .venv in the repo (or reuses it), installs the pinned tox into it, makes
sure RabbitMQ is installed (the tests start throwaway nodes of their own, never
touching a broker on the standard port), then runs tox, which runs pytest with
the arguments given here. Exits with tox's status. Standard library only.

As root it also builds, once, the Debian chroots with real RabbitMQ 4.0 and 4.3
that the rabbitmq4 tests run against, and the newest Python (3.14, in the 4.3
one, with a virtualenv of requirements.txt) that the end-to-end core also runs
with (tools/rabbitmq4.py; a few minutes, cached in /var/cache/txamqp-example),
and installs node and npm (for the amqplib tests) where they are missing. Without
them those tests skip, saying how to get them; with CI set in the environment,
what cannot be had fails the run instead, and so does any of those tests that
skips (tests/conftest.py): a green CI has run them all.

With AMQP_URL set, the broker tests use that broker instead, and RabbitMQ need not
be installed here; the tests that stop or kill a broker are skipped.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import rabbitmq4  # tools/rabbitmq4.py

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
APT_INSTALL = "apt-get update && apt-get install -y rabbitmq-server"
CI = bool(os.environ.get("CI"))


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


def missing(problem, tests):
    """What could not be had: fails the run under CI, else its tests will skip."""
    if CI:
        fail(f"{problem} (CI is set: the {tests} tests must run)")
    print(f"tools/test.py: {problem}; the {tests} tests will be skipped", file=sys.stderr)


def ensure_rabbitmq4():
    """Build RabbitMQ 4.0's and 4.3's chroots, and the newest Python's virtualenv
    in 4.3's, if we can; if not, their tests skip (under CI: fail)."""
    if os.environ.get("AMQP_URL"):
        if CI:
            fail("AMQP_URL is set, but CI must run the RabbitMQ 4 tests on throwaway nodes of their own")
        return
    if os.geteuid() != 0:
        if CI:
            fail("CI must run the RabbitMQ 4 and newest Python tests, whose chroots need root: run as root")
        return
    for chroot in rabbitmq4.CHROOTS.values():
        problem = chroot.provision()
        if problem:
            missing(problem, f"RabbitMQ {chroot.name}")
            continue
        if chroot.python:
            problem = chroot.provision_python()
            if problem:
                missing(problem, f"Python {'.'.join(map(str, chroot.python))}")


def ensure_node():
    """node and npm for the amqplib tests: apt-get install them as root where missing."""
    if shutil.which("node") and shutil.which("npm"):
        return
    if os.geteuid() != 0:
        missing("node and npm are not installed (apt-get install nodejs npm)", "amqplib")
        return
    print("Installing node and npm: apt-get install -y nodejs npm", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "nodejs", "npm"]):
        if subprocess.run(command, env=env, stdin=subprocess.DEVNULL).returncode:
            missing(f"`{' '.join(command)}` failed", "amqplib")
            return


def main():
    if sys.version_info < (3, 11):  # noqa: UP036 (run by whatever python3 a machine has)
        fail("Python 3.11 or later is needed")
    python = venv_python()
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if subprocess.run([*pip, "-r", str(ROOT / "requirements-tox.txt")]).returncode:
        fail("could not install tox into .venv (see pip's message above)")
    ensure_rabbitmq()
    ensure_rabbitmq4()
    ensure_node()
    tox = [str(python), "-m", "tox"]
    if sys.argv[1:]:
        tox += ["--", *sys.argv[1:]]
    sys.exit(subprocess.run(tox, cwd=ROOT).returncode)


if __name__ == "__main__":
    main()
