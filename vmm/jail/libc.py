"""The libc calls the jail needs, by ctypes (Python 3.11 has no os.unshare), and their constants."""

from __future__ import annotations

import os

from . import JailError

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_PRIVATE, MS_RELATIME = 1 << 14, 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECUREBITS = 1, 24, 28
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
# SECBIT_NOROOT (+LOCKED), SECBIT_KEEP_CAPS_LOCKED, SECBIT_NO_CAP_AMBIENT_RAISE (+LOCKED)
SECUREBITS = 0x01 | 0x02 | 0x20 | 0x40 | 0x80
SYS_CAPSET, SYS_PIVOT_ROOT = 126, 155  # x86-64
CAPABILITY_VERSION_3 = 0x20080522
# statvfs f_flag bits whose mount flags a bind remount must keep (the kernel
# locks them on mounts inherited from a more privileged namespace)
LOCKED_FLAGS = ((MS_NOSUID, MS_NOSUID), (MS_NODEV, MS_NODEV), (MS_NOEXEC, MS_NOEXEC),
                 (1024, MS_NOATIME), (2048, MS_NODIRATIME), (4096, MS_RELATIME))



_libc = None


def c():
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def check(result: int, what: str) -> int:
    if result == -1:
        import ctypes

        err = ctypes.get_errno()
        raise JailError(f"--jail: {what}: {os.strerror(err)}")
    return result


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(text):
        return None if text is None else os.fsencode(text)

    check(c().mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def prctl(option: int, arg: int = 0, what: str = "prctl") -> None:
    import ctypes

    ul = ctypes.c_ulong
    check(c().prctl(option, ul(arg), ul(0), ul(0), ul(0)), what)


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def write_text(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


