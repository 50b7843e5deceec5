"""Entering the jail: namespaces, the waiter, the new root, rlimits, no privileges.

The order matters: the user and PID namespaces first (the PID namespace only
applies to children: fork, the child is PID 1), the imports next (in the
child: the waiter's pages are not copied on touch), then the mount, network,
IPC and UTS namespaces, the pivot, the limits, and the capabilities last
(the mounts need them).
"""

from __future__ import annotations

import os
import signal
import sys

from ..errors import VmmError
from . import JailError, JailSpec
from .libc import (
    CAPABILITY_VERSION_3,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    LOCKED_FLAGS,
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAPBSET_DROP,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG,
    PR_SET_SECUREBITS,
    SECUREBITS,
    SYS_CAPSET,
    SYS_PIVOT_ROOT,
    c,
    check,
    mount,
    prctl,
    read_text,
    write_text,
)
from .preload import PROBE_ENV, preload

MAX_OPEN_FILES = 1024
# Signals the waiter passes to the jailed child; those whose default action ends a
# process are also given a handler in the child, since PID 1 ignores them otherwise.
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGALRM, signal.SIGWINCH, signal.SIGCONT)
_FATAL_BY_DEFAULT = {signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
                     signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM}
SI_KERNEL = 0x80  # siginfo si_code of a signal the terminal sent to the whole process group


def enter(spec: JailSpec) -> None:
    """Jail this process (see the module docstring); returns in the jailed child only."""
    import threading

    if threading.active_count() > 1:
        raise JailError("--jail: the jail must be entered before any thread starts")
    c()  # ctypes and libc, before the fork: the child needs them, the waiter too
    cap_last = int(read_text("/proc/sys/kernel/cap_last_cap"))
    cgroup = None
    if spec.memory_mib or spec.cpus:
        from .cgroup import Cgroup

        cgroup = Cgroup.prepare(spec.memory_mib, spec.cpus)
    uid, gid = os.getuid(), os.getgid()
    check(c().unshare(CLONE_NEWUSER), "new user namespace")
    write_text("/proc/self/setgroups", "deny")
    write_text("/proc/self/uid_map", f"{uid} {uid} 1\n")
    write_text("/proc/self/gid_map", f"{gid} {gid} 1\n")
    check(c().unshare(CLONE_NEWPID), "new PID namespace")
    sys.stdout.flush()
    sys.stderr.flush()
    go_read, go_write = os.pipe()
    note_read, note_write = os.pipe()  # the child writes the signal that ends it here
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, (*FORWARDED, signal.SIGCHLD))
    pid = os.fork()
    if pid:
        os.close(go_read)
        os.close(note_write)
        _wait_as_parent(pid, go_write, note_read, cgroup)  # never returns
    os.close(go_write)
    os.close(note_read)
    signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL, "parent-death signal")
    if os.read(go_read, 1) != b"g":  # the waiter failed (or died) before the cgroup was ready
        os._exit(125)
    os.close(go_read)
    _emulate_fatal_defaults(note_write)
    # Imports in the child, not before the fork: pages the waiter shares would be copied on every touch.
    preload(spec)
    os.environ.setdefault("VMM_SOFTWARE_KVM", "1" if _software_kvm() else "0")  # /sys is not in the jail
    check(c().unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "new namespaces")
    check(c().sethostname(b"vmm-jail", 8), "hostname")
    _build_root(spec)
    _limit(spec)
    _drop_privileges(cap_last)
    if os.environ.get(PROBE_ENV) == "1":
        from .probe import probe

        probe(spec)


def _software_kvm() -> bool:
    from ..x86.platform import software_kvm

    return software_kvm()



def _wait_as_parent(pid: int, go_write: int, note_read: int, cgroup) -> None:
    """The waiter: forward signals to the jailed child, then end as it ended."""
    try:
        if cgroup is not None:
            cgroup.adopt(pid)
        os.write(go_write, b"g")
    except (OSError, VmmError) as err:
        print(f"vmm: {err}", file=sys.stderr)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os._exit(2)
    os.close(go_write)
    status = None
    while status is None:
        info = signal.sigwaitinfo((*FORWARDED, signal.SIGCHLD))
        if info.si_signo == signal.SIGCHLD:
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done:
                status = None
        elif info.si_code != SI_KERNEL:  # a terminal's signals reach the child's process group too
            try:
                os.kill(pid, info.si_signo)
            except ProcessLookupError:
                pass
    if cgroup is not None:
        cgroup.remove()
    os.set_blocking(note_read, False)
    try:
        note = os.read(note_read, 1)
    except OSError:
        note = b""
    signum = note[0] if note else (os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0)
    if signum:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (signum,))
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)
    os._exit(os.waitstatus_to_exitcode(status))


def _emulate_fatal_defaults(note_write: int) -> None:
    """PID 1 ignores signals it has no handler for: give the fatal ones a handler that
    tells the waiter (which then dies of the same signal) and exits."""

    def die(signum, frame):
        os.write(note_write, bytes([signum]))
        os._exit(128 + signum)

    for sig in _FATAL_BY_DEFAULT:
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, die)


def _build_root(spec: JailSpec) -> None:
    """Pivot into a tmpfs that holds only the given binds, a /proc, and the working directory."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    sources = {}  # opened before the tmpfs may cover them (it goes on /tmp)
    for target, (source, writable, device) in sorted(spec.binds.items()):
        try:
            sources[target] = (os.open(source, os.O_PATH | os.O_CLOEXEC), writable, device)
        except OSError:
            pass  # missing: the run reports it, as it would outside the jail
    cwd = os.getcwd()
    base = "/tmp" if os.path.isdir("/tmp") else "/mnt"
    mount("tmpfs", base, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=1m,nr_inodes=4096")
    for target, (fd, writable, device) in sources.items():
        import stat

        mode = os.fstat(fd).st_mode
        is_dir = stat.S_ISDIR(mode)
        device = device or stat.S_ISBLK(mode) or stat.S_ISCHR(mode)  # a block device as a disk keeps dev too
        place = base + target
        try:
            os.makedirs(place if is_dir else os.path.dirname(place), mode=0o755, exist_ok=True)
            if not is_dir and not os.path.exists(place):
                os.close(os.open(place, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as err:
            raise JailError(f"--jail: cannot place {target} in the jail (inside another mount?): {err.strerror}") from None
        mount(f"/proc/self/fd/{fd}", place, None, MS_BIND)
        flags = MS_BIND | MS_REMOUNT | MS_NOSUID | (0 if target in spec.executable else MS_NOEXEC)
        flags |= 0 if device else MS_NODEV
        flags |= 0 if writable else MS_RDONLY
        locked = os.statvfs(place).f_flag
        for bit, flag in LOCKED_FLAGS:
            if locked & bit:
                flags |= flag
        mount(None, place, None, flags)
        os.close(fd)
    os.makedirs(base + cwd, mode=0o755, exist_ok=True)
    os.makedirs(base + "/proc", mode=0o555, exist_ok=True)
    try:
        mount("proc", base + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
    except JailError:
        os.rmdir(base + "/proc")  # a host whose /proc is partly hidden refuses a fresh one
    os.chdir(base)
    check(c().syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    check(c().umount2(b".", MNT_DETACH), "detach the host's root")
    os.chdir("/")
    mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    try:
        os.chdir(cwd)  # relative paths resolve as on the host
    except OSError:
        pass


def _limit(spec: JailSpec) -> None:
    import resource

    def lower(kind, value):
        hard = resource.getrlimit(kind)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))

    lower(resource.RLIMIT_NOFILE, MAX_OPEN_FILES)
    lower(resource.RLIMIT_NPROC, spec.threads)  # (not enforced by the kernel for the host's root)
    lower(resource.RLIMIT_CORE, 0)
    if not any(_is_regular_file(fd) for fd in (1, 2)):
        # (the limit binds every regular file: with output redirected to one, it is left as it was)
        lower(resource.RLIMIT_FSIZE, spec.file_size)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead


def _is_regular_file(fd: int) -> bool:
    import stat

    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _drop_privileges(cap_last: int) -> None:
    import ctypes

    prctl(PR_SET_SECUREBITS, SECUREBITS, "securebits")
    prctl(PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "clear ambient capabilities")
    for cap in range(cap_last + 1):
        prctl(PR_CAPBSET_DROP, cap, "drop bounding capabilities")
    header = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # two of {effective, permitted, inheritable}, all 0
    check(c().syscall(SYS_CAPSET, header, data), "drop capabilities")


