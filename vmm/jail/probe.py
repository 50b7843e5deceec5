"""VMM_JAIL_PROBE=1: the jailed VMM describes its jail on stderr (a test hook)."""

from __future__ import annotations

import os
import sys

from . import JailSpec
from .libc import read_text


def probe(spec: JailSpec) -> None:
    """Describe the jail on stderr (VMM_JAIL_PROBE=1), and report imports that come too late."""
    import errno
    import socket

    def say(line: str) -> None:
        os.write(2, f"jail-probe: {line}\n".encode(errors="backslashreplace"))

    entries = []
    for directory, subdirs, files in os.walk("/"):
        if directory == "/":
            subdirs[:] = [d for d in subdirs if d != "proc"]
            entries.append("/proc")
        entries += [os.path.join(directory, name) for name in subdirs + files]
    say("files: " + " ".join(sorted(entries)[:500]))
    say(f"pid: {os.getpid()}")
    try:
        for line in read_text("/proc/self/status").splitlines():
            if line.startswith(("Cap", "NoNewPrivs", "Uid", "Gid", "Seccomp")):
                say("status: " + " ".join(line.split()))
        say("net: " + " ".join(line.split(":")[0].strip() for line in read_text("/proc/net/dev").splitlines()[2:]))
    except OSError as err:
        say(f"no /proc: {err.strerror}")
    say("interfaces: " + " ".join(name for _, name in socket.if_nameindex()))
    import resource

    say("rlimits: " + " ".join(f"{name}={resource.getrlimit(getattr(resource, 'RLIMIT_' + name.upper()))[1]}"
                               for name in ("nofile", "fsize", "nproc", "core")))
    for target, (source, writable, device) in sorted(spec.binds.items()):
        if writable or device or not os.path.exists(target):
            continue
        try:  # a file opened for writing; a directory: a file created in it
            is_dir = os.path.isdir(target)
            path = os.path.join(target, "jail-probe") if is_dir else target
            os.close(os.open(path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if is_dir else 0), 0o600))
            say(f"read-only {target}: {'created a file' if is_dir else 'opened read-write'}")
        except OSError as err:
            say(f"read-only {target}: {errno.errorcode.get(err.errno, err.errno)}")

    class LateImports:
        @staticmethod
        def find_spec(name, path=None, target=None):
            say(f"late import: {name}")  # and no spec: the import goes on (and fails) as without the probe

    sys.meta_path.insert(0, LateImports)

