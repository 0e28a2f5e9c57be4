#!/usr/bin/env python3
"""A real RabbitMQ 4 for the tests: Debian 13 (trixie) with its rabbitmq-server
package (4.0.5), installed by debootstrap into a folder outside the clone that
later runs reuse, and the command line that runs a program inside it.

    sudo python3 tools/rabbitmq4.py     # build it now (a few minutes, ~300 MB)

tools/test.py builds it when it runs as root; tests/rabbitmq_nodes.py starts
throwaway RabbitMQ 4 nodes in it. Standard library only: tools/test.py imports
this before any virtualenv exists.

Nothing stays mounted: every program run inside gets a mount namespace of its
own (unshare) with /proc and /dev mounted there, so the mounts end with it.
"""

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path("/var/cache/txamqp-example")
ROOTFS = CACHE / "rabbitmq-4.0-trixie"
MARKER = ROOTFS / ".txamqp-ready"  # written last: a half-built tree never has it
SUITE, MIRROR = "trixie", "http://deb.debian.org/debian"
HOW = "build it with `sudo python3 tools/rabbitmq4.py`, or run the tests as root with `python3 tools/test.py`"
TOOLS = ("unshare", "chroot", "mount")


def unavailable():
    """Why RabbitMQ 4 nodes cannot run here and how to get them (one line), or None."""
    if not MARKER.is_file():
        return f"no RabbitMQ 4 at {ROOTFS}: {HOW}"
    if os.geteuid() != 0:
        return "RabbitMQ 4 runs in a chroot, which needs root: run the tests as root"
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if missing:
        return f"RabbitMQ 4 needs {', '.join(missing)} (apt-get install util-linux coreutils mount)"
    tried = subprocess.run(command(["true"]), capture_output=True, text=True)
    if tried.returncode:  # in a container without the right to mount or chroot, say
        why = (tried.stderr.strip().splitlines() or ["no message"])[-1]
        return f"cannot run a program in RabbitMQ 4's chroot ({why}): run the tests where root may mount and chroot"
    return None


def version():
    """The Debian version of the cached rabbitmq-server package, e.g. 4.0.5-6+deb13u2."""
    return MARKER.read_text().strip()


def user_ids():
    """(uid, gid) of the rabbitmq user inside ROOTFS."""
    for line in (ROOTFS / "etc" / "passwd").read_text().splitlines():
        name, _, uid, gid, *_ = line.split(":")
        if name == "rabbitmq":
            return int(uid), int(gid)
    raise LookupError(f"no rabbitmq user in {ROOTFS}/etc/passwd")


def inside(path):
    """path (under ROOTFS) as programs inside ROOTFS see it."""
    return "/" + str(Path(path).relative_to(ROOTFS))


def command(argv):
    """The command line that runs argv inside ROOTFS as its rabbitmq user, in a
    mount namespace of its own (its /proc and bind of /dev go when it ends)."""
    return ["unshare", "--mount", f"--mount-proc={ROOTFS}/proc",
            "sh", "-c", 'mount --bind /dev "$0/dev" && exec chroot --userspec=rabbitmq:rabbitmq "$0" "$@"',
            str(ROOTFS), *argv]


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


def _run(argv):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(argv, env=env, stdin=subprocess.DEVNULL).returncode:
        raise RuntimeError(f"`{' '.join(map(str, argv))}` failed")


def provision():
    """Build ROOTFS unless it is ready. Returns None when it is, else why not (one line)."""
    if MARKER.is_file():
        return None
    if os.geteuid() != 0:
        return f"building RabbitMQ 4's chroot needs root: {HOW}"
    try:
        if not shutil.which("debootstrap"):
            _say("installing debootstrap")
            _run(["apt-get", "update"])
            _run(["apt-get", "install", "-y", "debootstrap"])
        CACHE.mkdir(parents=True, exist_ok=True)
        with open(CACHE / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it right now
            if MARKER.is_file():
                return None
            scratch = ROOTFS.with_name(ROOTFS.name + ".partial")
            _remove(scratch)
            _remove(ROOTFS)  # no marker: left half-built by an interrupted run
            _say(f"installing Debian {SUITE} with rabbitmq-server into {ROOTFS} (a few minutes, ~300 MB)")
            # In a mount namespace of its own, debootstrap's mounts of /proc and
            # /sys in the new tree end with it, even if it is killed.
            _run(["unshare", "--mount", "debootstrap", "--variant=minbase", "--include=rabbitmq-server",
                  SUITE, str(scratch), MIRROR])
            found = subprocess.run(["chroot", str(scratch), "dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"],
                                   capture_output=True, text=True)
            if found.returncode or not found.stdout.startswith("4."):
                raise RuntimeError(f"no RabbitMQ 4 in {scratch}: {found.stdout or found.stderr}".strip())
            for deb in (scratch / "var" / "cache" / "apt" / "archives").glob("*.deb"):
                deb.unlink()
            scratch.rename(ROOTFS)
            MARKER.write_text(found.stdout + "\n")
            _say(f"RabbitMQ {found.stdout} ready in {ROOTFS}")
    except (OSError, RuntimeError) as exc:
        return f"could not build RabbitMQ 4's chroot: {exc}"
    return None


def main():
    problem = provision()
    if problem:
        _say(problem)
        sys.exit(1)
    print(f"RabbitMQ {version()} in {ROOTFS}")


if __name__ == "__main__":
    main()
