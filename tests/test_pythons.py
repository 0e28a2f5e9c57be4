"""The Pythons the scripts run with in the tests (conftest.py's python fixture):
the tests' own, and the newest, Debian sid's python3 in tools/rabbitmq4.py's
RabbitMQ 4.3 chroot with a virtualenv of requirements.txt. The end-to-end core
(round trips with both spec files, the 0-8 fallback, bytes and headers, Ctrl-C,
a broker restart, TLS) takes the python fixture and so runs on both.

Here: each is the Python it is named after, and every module of the project
imports on it with every warning an error (a DeprecationWarning, a
SyntaxWarning in our source), as a new Python release would show first.
"""

import helpers
from helpers import run_script

WHICH = """\
import sys
print("%d.%d" % sys.version_info[:2], sys.prefix)
"""

# Run as a file in a temporary folder, with the repo root as the current folder.
IMPORT_ALL = """\
import importlib, os, sys, warnings
warnings.simplefilter("error")
sys.path.insert(0, os.getcwd())
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    # Compiled again, from source: a .pyc read from __pycache__ would hide
    # the warnings that compiling gives (SyntaxWarning, for one).
    with open(module.__file__, "rb") as source:
        compile(source.read(), module.__file__, "exec")
print("imported", " ".join(sys.argv[1:]))
"""


def run_code(code, tmp_path, python, *args):
    script = tmp_path / "code.py"
    script.write_text(code)
    return run_script(script, *args, url="amqp://unused", python=python, timeout=60)


def test_python_is_the_one_named(python, tmp_path):
    """The scripts really run with the Python the test's name says, and the
    newest one from its own virtualenv (requirements.txt), not the tests'."""
    done = run_code(WHICH, tmp_path, python)
    assert done.returncode == 0, done.stderr
    version, prefix = done.stdout.decode().split()
    assert version == python.version
    if python.chroot:
        assert prefix == python.chroot.inside(python.chroot.venv())


def test_every_module_imports_with_warnings_as_errors(python, tmp_path):
    modules = helpers.project_modules()
    assert {"common", "consumer", "producer"} <= set(modules)
    done = run_code(IMPORT_ALL, tmp_path, python, *modules)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode() == "imported %s\n" % " ".join(modules)
