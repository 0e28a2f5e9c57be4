#!/usr/bin/env python3
"""Real RabbitMQ 4 brokers, and a newer Python, for the tests: Debian chroots
with their rabbitmq-server package, installed by debootstrap into folders outside
the clone that later runs reuse, and the command lines that run programs inside.

- RabbitMQ 4.0 (4.0.5): Debian 13 (trixie).
- RabbitMQ 4.3 and Python 3.14: Debian sid (unstable), with python3 and a
  virtualenv of the project's requirements.txt (one per version of that file).

    sudo python3 tools/rabbitmq4.py         # build both now (a few minutes each)
    sudo python3 tools/rabbitmq4.py 4.3     # only that one

tools/test.py builds them when it runs as root; tests/rabbitmq_nodes.py starts
throwaway RabbitMQ 4 nodes in them and tests/helpers.py runs the scripts with
the chroot's Python. Standard library only: tools/test.py imports this before
any virtualenv exists.

Nothing stays mounted: every program run inside gets a mount namespace of its
own (unshare) with /proc and /dev mounted there, so the mounts end with it.
"""

import argparse
import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path("/var/cache/txamqp-example")
MIRROR = "http://deb.debian.org/debian"
TOOLS = ("unshare", "chroot", "mount")
ROOT = Path(__file__).resolve().parent.parent


def _say(message):
    print(f"tools/rabbitmq4.py: {message}", file=sys.stderr)


def _mounted_under(path):
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return [p for p in points if p == str(path) or p.startswith(f"{path}/")]


def _remove(path):
    """Delete a half-built tree; never one with something mounted in it."""
    if not path.exists():
        return
    if _mounted_under(path):
        raise RuntimeError(f"{path} has file systems mounted in it ({', '.join(_mounted_under(path))}): "
                           f"unmount them, then delete it")
    shutil.rmtree(path)


def _run(argv, env=None):
    env = dict(env or os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(argv, env=env, stdin=subprocess.DEVNULL).returncode:
        raise RuntimeError(f"`{' '.join(map(str, argv))}` failed")


def _version_tuple(text):
    """(4, 3) for "4.3.6-1", () for what does not start with numbers."""
    numbers = []
    for part in text.split("-")[0].split(".")[:2]:
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


class Chroot:
    """One cached Debian tree with rabbitmq-server (and maybe Python) in it.

    name: what the tests call it ("4.0"); suite: the Debian suite debootstrap
    installs; minimum: the oldest RabbitMQ version it may hold (a suite such as
    sid moves on); python: the oldest Python it must have, if it is to run the
    scripts too (a virtualenv of requirements.txt), else None.
    """

    def __init__(self, name, suite, minimum, packages=("rabbitmq-server",), python=None):
        self.name, self.suite, self.minimum = name, suite, minimum
        self.packages, self.python = packages, python
        self.rootfs = CACHE / f"rabbitmq-{name}-{suite}"
        self.marker = self.rootfs / ".txamqp-ready"  # written last: a half-built tree never has it
        self.how = (f"build it with `sudo python3 tools/rabbitmq4.py {name}`, "
                    f"or run the tests as root with `python3 tools/test.py`")

    def __repr__(self):
        return f"Chroot({self.name!r}, {str(self.rootfs)!r})"

    # --- RabbitMQ ---------------------------------------------------------------

    def unavailable(self):
        """Why RabbitMQ nodes cannot run in this chroot and how to get them (one line), or None."""
        what = f"RabbitMQ {self.name}"
        if not self.marker.is_file():
            return f"no {what} at {self.rootfs}: {self.how}"
        if os.geteuid() != 0:
            return f"{what} runs in a chroot, which needs root: run the tests as root"
        missing = [tool for tool in TOOLS if not shutil.which(tool)]
        if missing:
            return f"{what} needs {', '.join(missing)} (apt-get install util-linux coreutils mount)"
        tried = subprocess.run(self.command(["true"]), capture_output=True, text=True)
        if tried.returncode:  # in a container without the right to mount or chroot, say
            why = (tried.stderr.strip().splitlines() or ["no message"])[-1]
            return f"cannot run a program in {what}'s chroot ({why}): run the tests where root may mount and chroot"
        return None

    def version(self):
        """The Debian version of the cached rabbitmq-server package, e.g. 4.0.5-6+deb13u2."""
        return self.marker.read_text().strip()

    def user_ids(self):
        """(uid, gid) of the rabbitmq user inside the chroot."""
        for line in (self.rootfs / "etc" / "passwd").read_text().splitlines():
            name, _, uid, gid, *_ = line.split(":")
            if name == "rabbitmq":
                return int(uid), int(gid)
        raise LookupError(f"no rabbitmq user in {self.rootfs}/etc/passwd")

    def inside(self, path):
        """path (under the chroot's folder) as programs inside it see it."""
        return "/" + str(Path(path).relative_to(self.rootfs))

    def command(self, argv, user="rabbitmq", binds=(), cwd=None):
        """The command line that runs argv inside the chroot as user (None: root),
        in a mount namespace of its own (its /proc and binds go when it ends),
        in the folder cwd (inside; by default /). The process that runs argv is
        the one started with this command line (each step execs the next).

        binds: host folders to show inside at the same path (bind mounts made
        in that namespace; the folders they cover inside are hidden meanwhile)."""
        if cwd is not None:  # chroot always starts in /
            argv = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', str(cwd), *argv]
        mounts = ['mount --bind /dev "$0/dev"']
        for folder in binds:
            here = shlex.quote(str(folder))
            mounts.append(f'mkdir -p "$0"{here} && mount --rbind {here} "$0"{here}')
        userspec = f"--userspec={user}:{user} " if user else ""
        return ["unshare", "--mount", f"--mount-proc={self.rootfs}/proc",
                "sh", "-c", " && ".join(mounts) + f' && exec chroot {userspec}"$0" "$@"',
                str(self.rootfs), *argv]

    # --- Python -----------------------------------------------------------------

    def venv(self, requirements=ROOT / "requirements.txt"):
        """The folder (inside the chroot, as the host sees it) of the virtualenv
        for this version of requirements.txt."""
        digest = hashlib.sha256(Path(requirements).read_bytes()).hexdigest()[:16]
        return self.rootfs / "opt" / "txamqp-venvs" / digest

    def python_unavailable(self, requirements=ROOT / "requirements.txt"):
        """Why the scripts cannot run with this chroot's Python (one line), or None."""
        if self.python is None:
            return f"the RabbitMQ {self.name} chroot has no Python for the scripts"
        problem = self.unavailable()
        if problem:
            return f"the newest Python runs in RabbitMQ {self.name}'s chroot: {problem}"
        if not (self.venv(requirements) / ".txamqp-ready").is_file():
            return (f"no virtualenv of requirements.txt in {self.rootfs} yet: "
                    f"run `sudo python3 tools/rabbitmq4.py {self.name}` or the tests with `python3 tools/test.py`")
        return None

    def python_version(self):
        """The chroot's python3 version ("3.14.10"), or None before it is built."""
        found = self.rootfs / ".txamqp-python"
        return found.read_text().strip() if found.is_file() else None

    def python_command(self, argv, binds=(), cwd=None, requirements=ROOT / "requirements.txt"):
        """The command line that runs `python ARGV` with the virtualenv's Python
        inside the chroot, as root, with binds (host folders) at the same paths,
        in the folder cwd."""
        python = self.inside(self.venv(requirements) / "bin" / "python")
        return self.command([python, *argv], user=None, binds=binds, cwd=cwd)

    def provision_python(self, requirements=ROOT / "requirements.txt"):
        """Make the virtualenv of requirements.txt inside the chroot (pip from
        PyPI) unless it is there. Returns None when it is, else why not (one line)."""
        venv = self.venv(requirements)
        ready = venv / ".txamqp-ready"
        if ready.is_file():
            return None
        if os.geteuid() != 0:
            return f"making the Python virtualenv in {self.rootfs} needs root: {self.how}"
        try:
            with self._lock():
                if ready.is_file():
                    return None
                # Earlier requirements.txt's stay: another clone's run may use one now.
                _remove(venv)
                venv.mkdir(parents=True)
                _say(f"installing requirements.txt into a virtualenv of the chroot's Python ({venv})")
                # pip inside checks PyPI's certificate with the host's CA bundle
                # (the host may reach PyPI only through its own CAs), and must not
                # look at the host's wheel folders, which are not in the chroot.
                bundle = Path("/etc/ssl/certs/ca-certificates.crt")
                if bundle.is_file():
                    (self.rootfs / "etc" / "ssl" / "certs").mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(bundle, self.rootfs / "etc" / "ssl" / "certs" / "ca-certificates.crt")
                shutil.copyfile(requirements, venv / "requirements.txt")
                env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
                env.update(PIP_CERT="/etc/ssl/certs/ca-certificates.crt", PIP_DISABLE_PIP_VERSION_CHECK="1",
                           PIP_DEFAULT_TIMEOUT="180", HOME="/root", PATH="/usr/sbin:/usr/bin:/sbin:/bin")
                inside = self.inside(venv)
                _run(self.command(["python3", "-m", "venv", inside], user=None), env)
                _run(self.command([f"{inside}/bin/pip", "install", "--quiet", "--no-cache-dir",
                                   "-r", f"{inside}/requirements.txt"], user=None), env)
                ready.write_text("ok\n")
        except (OSError, RuntimeError) as exc:
            return f"could not make the Python virtualenv in {self.rootfs}: {exc}"
        return None

    # --- building ---------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self):
        """Hold the cache's lock (one for all chroots): another run may be building now."""
        CACHE.mkdir(parents=True, exist_ok=True)
        with open(CACHE / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def provision(self):
        """Build the chroot unless it is ready. Returns None when it is, else why not (one line)."""
        if self.marker.is_file():
            return None
        if os.geteuid() != 0:
            return f"building RabbitMQ {self.name}'s chroot needs root: {self.how}"
        try:
            if not shutil.which("debootstrap"):
                _say("installing debootstrap")
                _run(["apt-get", "update"])
                _run(["apt-get", "install", "-y", "debootstrap"])
            CACHE.mkdir(parents=True, exist_ok=True)
            with self._lock():
                if self.marker.is_file():
                    return None
                self._build()
        except (OSError, RuntimeError) as exc:
            return f"could not build RabbitMQ {self.name}'s chroot: {exc}"
        return None

    def _build(self):
        scratch = self.rootfs.with_name(self.rootfs.name + ".partial")
        _remove(scratch)
        _remove(self.rootfs)  # no marker: left half-built by an interrupted run
        _say(f"installing Debian {self.suite} with {', '.join(self.packages)} into {self.rootfs} "
             f"(a few minutes, ~300 MB)")
        # In a mount namespace of its own, debootstrap's mounts of /proc and
        # /sys in the new tree end with it, even if it is killed.
        _run(["unshare", "--mount", "debootstrap", "--variant=minbase", f"--include={','.join(self.packages)}",
              self.suite, str(scratch), MIRROR])
        found = subprocess.run(["chroot", str(scratch), "dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"],
                               capture_output=True, text=True)
        if found.returncode or _version_tuple(found.stdout) < self.minimum:
            raise RuntimeError(f"no RabbitMQ {self.name} in {scratch}: {found.stdout or found.stderr}".strip())
        if self.python:
            python = subprocess.run(["chroot", str(scratch), "python3", "-c",
                                     "import platform; print(platform.python_version())"],
                                    capture_output=True, text=True)
            if python.returncode or _version_tuple(python.stdout.strip()) < self.python:
                raise RuntimeError(f"no Python {'.'.join(map(str, self.python))} in {scratch}: "
                                   f"{python.stdout or python.stderr}".strip())
            (scratch / ".txamqp-python").write_text(python.stdout)
        for deb in (scratch / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            deb.unlink()
        scratch.rename(self.rootfs)
        self.marker.write_text(found.stdout + "\n")
        _say(f"RabbitMQ {found.stdout} ready in {self.rootfs}")


RABBITMQ_4_0 = Chroot("4.0", "trixie", (4, 0))
RABBITMQ_4_3 = Chroot("4.3", "sid", (4, 3), python=(3, 14),
                      packages=("rabbitmq-server", "python3", "python3-venv", "python3-pip", "ca-certificates"))
CHROOTS = {chroot.name: chroot for chroot in (RABBITMQ_4_0, RABBITMQ_4_3)}
PYTHON_CHROOT = RABBITMQ_4_3  # where the scripts run with the newest Python


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="VERSION",
                        help=f"which to build: {', '.join(CHROOTS)} (default: all)")
    names = parser.parse_args().names or list(CHROOTS)
    unknown = [name for name in names if name not in CHROOTS]
    if unknown:
        parser.error(f"no chroot for RabbitMQ {', '.join(unknown)} (there are: {', '.join(CHROOTS)})")
    failed = False
    for name in names:
        chroot = CHROOTS[name]
        problem = chroot.provision() or (chroot.python and chroot.provision_python())
        if problem:
            _say(problem)
            failed = True
            continue
        extra = f", Python {chroot.python_version()}" if chroot.python else ""
        print(f"RabbitMQ {chroot.version()}{extra} in {chroot.rootfs}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
