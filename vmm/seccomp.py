"""Per-thread seccomp filters: each vmm thread may make only the system calls its kind needs.

The lists are in vmm/seccomp_policy.py; this module builds a filter from a
list with libseccomp (through ``pyseccomp``, ctypes over Debian's
libseccomp2) and loads it on the calling thread, without TSYNC: the filter
binds that thread and the threads it starts later, as Firecracker's per-thread
filters do.

A call outside the list returns SECCOMP_RET_TRAP: the kernel raises SIGSYS
on the offending thread, and a handler in C (vmm/kvm/ffi_build.py) writes one
line, ``vmm: seccomp: the vcpu thread made system call socket (41), which its
filter does not allow; stopping with status 159``, and ends the process with
the status given to ``enable`` (159 = 128 + SIGSYS by default; `vmm exec`
uses 125, its "the sandbox failed"). A call made while the thread blocks
every signal (the C library does so around clone() and at a thread's end)
cannot run the handler: the kernel then kills the process with SIGSYS, with
no line (a shell reports that as 159 too).

The filters (and the system call names the report prints) are built with
libseccomp once per machine and policy, then kept as the BPF programs
libseccomp exported, in ~/.cache/vmm/seccomp/ (keyed by a hash of the lists,
the mode and the architecture); a process with that file loads them itself
(vmm_seccomp_load, as seccomp_load would) without importing pyseccomp: ~8 ms
less at every `vmm run` and `vmm exec`.

Switching on: ``enable()`` once per process (the CLI does, unless
``--no-seccomp``); from then on every MicroVM has its vCPU and I/O threads
install their filter as they start (vmm/vcpu.py, vmm/event_loop.py), the
API thread of `vmm serve` its own, and the command installs the main
thread's once the VM runs (``filter_main_thread``). The Python API leaves a process alone unless asked
(``MicroVM(..., seccomp=True)`` filters only vmm's own threads). For
maintainers: ``VMM_SECCOMP=log`` logs calls outside the lists in the kernel
log instead of stopping (to extend the lists); ``VMM_SECCOMP_TEST_VIOLATION=KIND``
makes a thread of that kind call socket() right after its filter is on (the
tests' way to prove a violation is caught).
"""

from __future__ import annotations

import errno
import os
import sys
import threading

from . import seccomp_policy as policy
from .errors import ConfigError

VIOLATION_STATUS = 159  # 128 + SIGSYS, as a shell reports a process SIGSYS ended
CLONE_THREAD = 0x00010000
PR_SET_PDEATHSIG = 1

_enabled = False  # the process switch (enable)
_armed = False  # the SIGSYS report is ready
_arm_lock = threading.Lock()
_pyseccomp = None
_installed = threading.local()  # .kind: this thread's filter, if any


class SeccompError(ConfigError):
    """A filter could not be built or loaded (no libseccomp, an old kernel): status 2, as for a missing /dev/kvm."""


def _binding():
    """pyseccomp, imported once. It finds libc and libseccomp with
    ctypes.util.find_library: importing ctypes.util (subprocess, shutil) and
    running ``ldconfig -p`` twice costs ~30 ms on the start path. A stand-in
    that names the sonames is tried first; the real lookup only if it fails."""
    global _pyseccomp
    if _pyseccomp is None:
        import types

        try:
            if "ctypes.util" in sys.modules:
                import pyseccomp
            else:
                import ctypes

                stand_in = types.ModuleType("ctypes.util")
                stand_in.find_library = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}.get
                sys.modules["ctypes.util"] = ctypes.util = stand_in
                try:
                    import pyseccomp
                except OSError:
                    del sys.modules["ctypes.util"]
                    import ctypes.util  # noqa: F401 (the real lookup)
                    import pyseccomp
                finally:
                    if sys.modules.get("ctypes.util") is stand_in:
                        del sys.modules["ctypes.util"]
                    if getattr(ctypes, "util", None) is stand_in:
                        del ctypes.util
        except (ImportError, OSError, RuntimeError) as err:
            raise SeccompError(f"seccomp filters need libseccomp and pyseccomp ({err}); "
                               "install libseccomp2 and pyseccomp, or pass --no-seccomp") from None
        _pyseccomp = pyseccomp
    return _pyseccomp


def enabled() -> bool:
    """Whether this process filters every vmm thread, its main thread included (``enable``)."""
    return _enabled


def enable(status: int = VIOLATION_STATUS) -> None:
    """This process is vmm's (the CLI): filter the vCPU, I/O and API threads as
    they start, and the main thread once the VM runs (``filter_main_thread``)."""
    global _enabled
    _arm(status)
    _enabled = True


def _arm(status: int = VIOLATION_STATUS) -> None:
    """Ready the SIGSYS report, once per process (the first call's status stands)."""
    global _armed
    with _arm_lock:
        if _armed:
            return
        from .kvm._kvm_cffi import lib

        for nr, name in _filter_set().names:
            lib.vmm_seccomp_set_name(nr, name)
        rc = lib.vmm_seccomp_arm(status)
        if rc < 0:
            raise SeccompError(f"cannot install the SIGSYS handler: {os.strerror(-rc)}")
        _warm_thread_exit()
        _armed = True


def _syscall_names() -> list[tuple[int, bytes]]:
    """Every system call's name, for the report (its handler may not allocate).
    libseccomp's own table, called directly (pyseccomp's resolve_syscall costs
    ~50 us a call in type checks; this is ~1 us)."""
    import ctypes

    _binding()  # libseccomp is loaded
    libseccomp = ctypes.CDLL("libseccomp.so.2")
    resolve = libseccomp.seccomp_syscall_resolve_num_arch
    resolve.argtypes, resolve.restype = (ctypes.c_uint32, ctypes.c_int), ctypes.c_void_p
    free = ctypes.CDLL("libc.so.6").free
    free.argtypes, free.restype = (ctypes.c_void_p,), None
    native = libseccomp.seccomp_arch_native
    native.restype = ctypes.c_uint32
    arch = native()
    names = []
    for nr in range(512):
        name = resolve(arch, nr)
        if name:
            names.append((nr, ctypes.string_at(name)))
            free(name)
    return names


class _FilterSet:
    """Each kind's BPF program and the system call names, as libseccomp made them."""

    def __init__(self, programs: dict[str, bytes], names: list[tuple[int, bytes]]):
        self.programs, self.names = programs, names


_filters: _FilterSet | None = None
_CACHE_MAGIC = b"VMMSECC1"
_RULES_VERSION = 2  # bump when _build_filter makes different rules from the same lists


def _filter_set() -> _FilterSet:
    """The process's filters: from the cache when it has this policy's, else built (and kept)."""
    global _filters
    if _filters is None:
        key = _policy_key()
        path = os.path.join(_cache_dir(), f"filters-{key}.bin")
        _filters = _read_cache(path) or _build_and_keep(path)
    return _filters


def _log_only() -> bool:
    return os.environ.get("VMM_SECCOMP") == "log"


def _policy_key() -> str:
    """A hash of everything a filter is made from: the lists, the mode and the
    architecture (which fixes the ioctl numbers the names stand for: KVM's are
    ABI, the terminal ones per architecture; their names keep termios out of
    every start)."""
    from .user_cache import key

    parts = [_RULES_VERSION, _log_only(), os.uname().machine]
    for kind in sorted(policy.KINDS):
        limited = policy.IOCTLS.get(kind)
        parts.append((kind, allowed(kind), sorted(limited) if limited is not None else None))
    return key(repr(parts).encode())


def _cache_dir() -> str:
    from .user_cache import cache_dir

    return cache_dir("seccomp")


def _read_cache(path: str) -> _FilterSet | None:
    """The cached filter set, or None: missing, not this user's own, writable by
    others, or not in the expected shape (then it is rebuilt)."""
    import struct

    from .user_cache import trusted

    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not trusted(st) or st.st_size > 1 << 20:
                return None
            data = f.read()
    except OSError:
        return None
    if not data.startswith(_CACHE_MAGIC):
        return None
    programs, names, at = {}, [], len(_CACHE_MAGIC)
    try:
        while at < len(data):
            label_len, body_len = struct.unpack_from("<HI", data, at)
            at += 6
            label, body = data[at : at + label_len].decode("ascii"), data[at + label_len : at + label_len + body_len]
            at += label_len + body_len
            if len(body) != body_len:
                return None
            if label == ".names":
                for line in body.split(b"\n"):
                    if line:
                        nr, name = line.split(b" ", 1)
                        names.append((int(nr), name))
            elif label in policy.KINDS and body_len and body_len % 8 == 0:
                programs[label] = body
            else:
                return None
    except (struct.error, ValueError, UnicodeDecodeError):
        return None
    if set(programs) != set(policy.KINDS) or not names:
        return None
    return _FilterSet(programs, names)


def _build_and_keep(path: str) -> _FilterSet:
    """Every kind's filter built with libseccomp, exported as BPF; kept at ``path``
    for later processes when the cache directory can be written (else built each time)."""
    import struct

    seccomp = _binding()
    programs = {}
    for kind in sorted(policy.KINDS):
        with os.fdopen(os.memfd_create("vmm-seccomp-bpf", os.MFD_CLOEXEC), "w+b") as out:
            _build_filter(seccomp, kind).export_bpf(out)  # libseccomp writes to the descriptor
            out.seek(0)
            programs[kind] = out.read()
    names = _syscall_names()
    records = [(".names", b"".join(b"%d %s\n" % (nr, name) for nr, name in names))] + sorted(programs.items())
    data = _CACHE_MAGIC + b"".join(struct.pack("<HI", len(label), len(body)) + label.encode() + body for label, body in records)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except OSError:
        pass  # a read-only home: the filters still work, built again next time
    return _FilterSet(programs, names)


def filter_main_thread() -> None:
    """The main thread's filter, once the VM's own threads are running (only
    where the process switch is on: an embedding application's thread is its own)."""
    if _enabled and thread_kind() is None:
        install("main")


def _warm_thread_exit() -> None:
    """The C library loads libgcc_s (openat, mmap) the first time a thread ends,
    to unwind it: load it now, before any thread's list forbids that (a
    throwaway thread does the same where the soname differs)."""
    from .kvm._kvm_cffi import lib

    if lib.vmm_preload_unwinder() < 0:
        thread = threading.Thread(target=lambda: None, name="vmm-seccomp-warmup")
        thread.start()
        thread.join()


def allowed(kind: str) -> list[str]:
    """The system calls a ``kind`` thread may make: the Python runtime's, its
    own, and those of the kinds it starts (their filters stack on its own)."""
    names = set(policy.PYTHON_RUNTIME) | set(policy.KINDS[kind])
    for child in policy.SPAWNS[kind]:
        names |= set(policy.KINDS[child]) | set(policy.INSTALL_FILTER)
    return sorted(names)


def _ioctl_numbers(names) -> list[int]:
    import termios

    from .kvm._kvm_cffi import lib

    return sorted({getattr(lib, name) if name.startswith("KVM_") else getattr(termios, name) for name in names})


def install(kind: str, disks: bool = False) -> None:
    """Load ``kind``'s filter on the calling thread (and the threads it starts
    later); ``disks``: the thread serves virtio-blk (what it imports lazily then)."""
    if kind not in policy.KINDS:
        raise ValueError(f"unknown thread kind {kind!r}")
    _arm()
    from .kvm._kvm_cffi import lib

    preload = list(policy.PRELOAD.get(kind, ()))
    if disks:
        preload += policy.PRELOAD_WITH_DISKS.get(kind, ())
    if preload:
        from importlib import import_module

        for module in preload:
            import_module(module)
    program = _filter_set().programs[kind]
    if kind in policy.NO_IMPORTS:
        from .log import without_imports

        without_imports()
    violate = os.environ.get("VMM_SECCOMP_TEST_VIOLATION") == kind
    if violate:
        import socket  # imported (files opened) before the filter is on
    lib.vmm_seccomp_set_kind(kind.encode())
    rc = lib.vmm_seccomp_load(program, len(program))
    if rc < 0:
        raise SeccompError(f"cannot load the {kind} thread's seccomp filter: {os.strerror(-rc)}")
    _installed.kind = kind
    if violate:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # outside every list


def _build_filter(seccomp, kind: str):
    """``kind``'s filter as a pyseccomp SyscallFilter (not loaded)."""
    arch = seccomp.system_arch()
    filt = seccomp.SyscallFilter(seccomp.LOG if _log_only() else seccomp.TRAP)
    limited_ioctls = policy.IOCTLS.get(kind)
    for name in allowed(kind):
        if seccomp.resolve_syscall(arch, name) < 0:
            continue  # not a system call on this architecture
        if name == "ioctl" and limited_ioctls is not None:
            for number in _ioctl_numbers(limited_ioctls):
                # the request is an unsigned int in the kernel: compare the low 32 bits
                filt.add_rule(seccomp.ALLOW, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, number))
        elif name == "clone":
            # threads only: a clone without CLONE_THREAD would be a new process
            filt.add_rule(seccomp.ALLOW, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, CLONE_THREAD))
        elif name == "clone3":
            # its flags are in memory, out of a filter's reach: the C library
            # falls back to clone(), whose flags the rule above checks
            filt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        else:
            filt.add_rule(seccomp.ALLOW, name)
    if kind in policy.HANDS_OVER_TEARDOWN:
        from .kvm._kvm_cffi import lib

        filt.add_rule(seccomp.ALLOW, "clone", seccomp.Arg(0, seccomp.EQ, lib.VMM_TEARDOWN_CLONE_FLAGS))
        filt.add_rule(seccomp.ALLOW, "prctl", seccomp.Arg(0, seccomp.EQ, PR_SET_PDEATHSIG))
    return filt


def thread_kind() -> str | None:
    """The kind whose filter the calling thread installed, if any."""
    return getattr(_installed, "kind", None)
