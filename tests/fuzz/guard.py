"""Where the targets may touch the host: one scratch directory, nothing else.

A fuzzer invents paths (a snapshot's disk path, an API request's metrics
file, a kernel path) and the code under test opens what it is given. While
a case runs, :func:`confined` makes ``os.open`` and ``open`` refuse (EACCES,
as a permission-less user would see) any path outside the scratch
directory, and any opening for writing of a file that is not on the
target's list: a fuzz run can neither change a host file nor fill the
scratch directory with files. (An earlier fuzz test once overwrote
/etc/passwd as root.)
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import tempfile
from contextlib import contextmanager

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_root: str | None = None


def set_root(path) -> None:
    """Use ``path`` (pytest's tmp_path) as the parent of the scratch directories."""
    global _root
    _root = os.path.realpath(os.fspath(path))


def scratch_dir(name: str) -> str:
    """A fresh directory for one target, under the root (default: a new temporary directory)."""
    global _root
    if _root is None:
        _root = os.path.realpath(tempfile.mkdtemp(prefix="vmm-fuzz-"))
    path = tempfile.mkdtemp(prefix=f"{name}-", dir=_root)
    return os.path.realpath(path)


def _refuse(path) -> PermissionError:
    return PermissionError(errno.EACCES, "refused by the fuzz harness's confinement", path)


@contextmanager
def confined(directory: str, writable=()):
    """Within the block, only files under ``directory`` open, and only those
    in ``writable`` (absolute paths) for writing; reads of /proc/self and of
    Python modules (lazy imports) pass."""
    allowed = {os.path.realpath(p) for p in writable}
    prefix = directory.rstrip(os.sep) + os.sep
    real_os_open, real_open = os.open, builtins.open

    def check(path, write: bool) -> None:
        if isinstance(path, int):
            return  # an fd already open
        resolved = os.path.realpath(os.fsdecode(path))  # ValueError for a NUL, as open() gives
        if resolved.startswith(prefix):
            if write and resolved not in allowed:
                raise _refuse(path)
            return
        if not write and (os.fsdecode(path).startswith("/proc/self/") or resolved.endswith((".py", ".pyc"))):
            return  # a lazy import (pytest's import hook opens sources itself), /proc/self/statm
        raise _refuse(path)

    def guarded_os_open(path, flags, mode=0o777, *, dir_fd=None):
        if dir_fd is not None:
            raise _refuse(path)
        check(path, bool(flags & _WRITE_FLAGS))
        return real_os_open(path, flags, mode)

    def guarded_open(file, mode="r", *args, **kwargs):
        check(file, any(c in mode for c in "wax+"))
        return real_open(file, mode, *args, **kwargs)

    os.open, builtins.open, io.open = guarded_os_open, guarded_open, guarded_open
    try:
        yield
    finally:
        os.open, builtins.open, io.open = real_os_open, real_open, real_open


def quiet_logs() -> None:
    """The code under test logs every refusal; millions of cases need silence."""
    import logging

    logging.getLogger("vmm").setLevel(logging.CRITICAL + 1)
