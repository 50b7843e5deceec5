"""--jail: the VMM process locks itself up before the guest starts.

Like Firecracker's jailer, inside vmm. ``enter(spec)`` is called before any
thread exists; it
- imports every module the command can need (after the pivot no Python file
  of the host is visible: nothing is bind-mounted but what the VM uses),
- enters a new user namespace (the caller's uid/gid mapped to themselves) and
  PID namespace, and forks: the parent stays behind as a waiter that forwards
  signals and passes the child's status on unchanged; the child is PID 1,
- gives the child new mount, network (only lo), IPC and UTS namespaces,
- pivots into an empty tmpfs holding only bind mounts of what the VM uses,
  at the paths the host knows them by (read-only ones with MS_RDONLY, all
  nosuid/noexec, only the KVM device keeps dev), a fresh read-only /proc,
  then makes that root read-only,
- applies rlimits, locks securebits, sets PR_SET_NO_NEW_PRIVS and drops every
  capability (bounding, ambient, effective, permitted, inheritable),
- and, where cgroup v2 offers the controllers, puts the child in a cgroup of
  its own with memory.max / cpu.max.
It returns in the jailed child, which then builds and runs the VM.

libc is reached by ctypes (Python 3.11 has no os.unshare); no threads, no
subprocesses. VMM_JAIL_PROBE=1 makes the jailed process describe its jail on
stderr (a test hook: tests/integration/test_jail.py).
"""

from __future__ import annotations

import os
import signal
import sys

from .errors import ConfigError, VmmError

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
_LOCKED_FLAGS = ((MS_NOSUID, MS_NOSUID), (MS_NODEV, MS_NODEV), (MS_NOEXEC, MS_NOEXEC),
                 (1024, MS_NOATIME), (2048, MS_NODIRATIME), (4096, MS_RELATIME))

MAX_OPEN_FILES = 1024
THREADS_BASE = 64  # threads the VMM may start besides one per vCPU and the disks' workers
THREADS_PER_DISK = 4  # virtio-blk's worker pool (2 at most today)
PROBE_ENV = "VMM_JAIL_PROBE"
# Signals the waiter passes to the jailed child; those whose default action ends a
# process are also given a handler in the child, since PID 1 ignores them otherwise.
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGALRM, signal.SIGWINCH, signal.SIGCONT)
_FATAL_BY_DEFAULT = {signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
                     signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM}
SI_KERNEL = 0x80  # siginfo si_code of a signal the terminal sent to the whole process group

# Modules every jailed command needs (the vmm packages are walked, see _vmm_modules).
STDLIB_MODULES = (
    "encodings.ascii", "encodings.latin_1", "encodings.unicode_escape", "encodings.utf_8",
    "copy", "errno", "resource", "fcntl", "io", "linecache", "mmap", "queue", "select",
    "stat", "struct", "termios", "threading", "time", "traceback", "tty", "weakref",
    "logging",  # vmm.log imports it on the first message: a vCPU's failure must still be logged
    "concurrent.futures.thread",  # virtio-blk's worker pool, made on the first busy queue
)
KERNEL_LOADER_MODULES = ("bz2", "lzma", "zlib")  # unpacking a bzImage's payload
SANDBOX_MODULES = ("grp", "pwd", "shutil", "subprocess", "tarfile")
# vmm modules a jailed VM never uses (other commands, build and test helpers)
# (vmm linux builds its initramfs before the jail)
_SKIP_MODULES = ("vmm.api", "vmm.bench", "vmm.pytest_plugin", "vmm.doctor", "vmm._build", "vmm.kvm.ffi_build",
                 "vmm.__main__", "vmm.disk_image", "vmm.jail", "vmm.linux_cmd", "vmm.initramfs")


class JailError(VmmError):
    """The jail could not be set up (the message says which step and why)."""


class JailSpec:
    """What the jail holds and which limits it applies."""

    def __init__(self, *, memory_mib: int | None = None, cpus: float | None = None, vcpus: int = 1):
        self.binds: dict[str, tuple[str, bool, bool]] = {}  # target -> (source, writable, device)
        self.executable: set[str] = set()  # targets left without noexec (the --exec program: PATH lookup checks X_OK)
        self.memory_mib, self.cpus = memory_mib, cpus
        self.threads = THREADS_BASE + vcpus  # RLIMIT_NPROC (threads count as processes)
        self.file_size = 0  # RLIMIT_FSIZE: the largest file the jailed VMM may need to write
        self.modules: list[str] = []
        self.sandbox = False  # vmm exec: its modules too
        self.snapshots = False  # snapshots are taken or restored: vmm.persist and vmm.snapshot too
        self.bundled_guest_only = False  # vmm exec: only the bundled PVH guest boots (no other loaders, no ACPI)

    def give(self, path: str, *, writable: bool = False, device: bool = False, grows_by: int = 0) -> None:
        """Bind ``path`` (as given, relative to the working directory) into the jail at
        the same path; a writable file may grow to its size plus ``grows_by``."""
        target = os.path.abspath(path)
        if target in self.binds:  # given twice: read-only wins
            _, was_writable, _ = self.binds[target]
            writable = writable and was_writable
        self.binds[target] = (path, writable, device)
        if writable:
            try:
                size = os.stat(path).st_size
            except OSError:
                size = 0
            self.file_size = max(self.file_size, size + grows_by)


# --- what each command's jail holds ---------------------------------------------
def add_options(parser, mib_type, *, default: bool) -> None:
    """--jail/--no-jail, --jail-memory and --jail-cpus on a subcommand's parser."""
    state = "on" if default else "off"
    parser.add_argument("--jail", dest="jail", action="store_true", default=default,
                        help=f"run the VMM in namespaces of its own with only the VM's files, no capabilities and rlimits (default {state})")
    parser.add_argument("--no-jail", dest="jail", action="store_false", help="do not jail the VMM")
    parser.add_argument("--jail-memory", metavar="MIB", type=mib_type, help="the jailed VMM's memory limit, guest RAM included (cgroup v2 memory.max)")
    parser.add_argument("--jail-cpus", metavar="CPUS", type=_cpus, help="the jailed VMM's CPU time, in CPUs: 0.5 is half of one (cgroup v2 cpu.max)")


def _cpus(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of CPUs: {text!r}") from None
    if not 0.01 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"must be between 0.01 and 1024: {text!r}")
    return value


def _wanted(args) -> bool:
    if not args.jail and (args.jail_memory or args.jail_cpus):
        raise ConfigError("--jail-memory and --jail-cpus need --jail")
    return args.jail


def _spec(args, vcpus: int) -> JailSpec:
    spec = JailSpec(memory_mib=args.jail_memory, cpus=args.jail_cpus, vcpus=vcpus)
    from .kvm.api import KVM_DEVICE

    spec.give(os.environ.get("VMM_KVM_DEVICE", KVM_DEVICE), device=True)
    return spec


def _give_writable_file(spec: JailSpec, path: str, grows_by: int) -> None:
    try:  # made now, as the VMM would make it, so that it can be bound into the jail
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644))
    except OSError:
        return  # the jailed run reports it, as it would without a jail
    spec.give(path, writable=True, grows_by=grows_by)


def jail_vm(args, config, snapshot_state: str | None = None, snapshot_mem: str | None = None) -> None:
    """Jail `vmm run` / `vmm linux` (when args.jail): the kernel, initrd, disks (read-only
    ones read-only), serial log and snapshot directories are all the jail holds."""
    if not _wanted(args):
        return
    spec = _spec(args, config.vcpus)
    spec.give(config.kernel_path())
    if isinstance(config.initrd, str):
        spec.give(config.initrd)
    for disk in config.disks:
        spec.give(disk.path, writable=not disk.read_only)
        spec.threads += THREADS_PER_DISK
    _give_outputs(spec, config.serial_log, snapshot_state, snapshot_mem, config.mem_mib << 20)
    enter(spec)


def _give_outputs(spec: JailSpec, serial_log, snapshot_state, snapshot_mem, mem_bytes: int) -> None:
    if serial_log is not None:
        _give_writable_file(spec, serial_log, grows_by=1 << 30)
    for path in (snapshot_state, snapshot_mem):
        if path is not None:  # the snapshot's directory: it may write beside the file and rename
            spec.give(os.path.dirname(os.path.abspath(path)), writable=True)
            spec.file_size = max(spec.file_size, mem_bytes + (64 << 20))
            spec.snapshots = True


def jail_restore(args) -> None:
    """Jail `vmm restore` (when args.jail): the state and memory files (read-only), the
    disks the snapshot names (as they were attached), the serial log and snapshot directories."""
    if not _wanted(args):
        return
    from .snapshot import format as fmt

    disks, vcpus = [], 1
    try:  # the same checked decoder the restore uses; if it refuses, the jailed restore says why
        _, body = fmt.decode(fmt.read_state_file(args.state), f"snapshot {args.state}")
        disks = [(os.fsdecode(bytes(s.device.path)), bool(s.device.read_only)) for s in body.virtio if str(s.kind) == "block"]
        vcpus = len(body.vcpus)
    except (VmmError, OSError, ValueError):
        pass
    spec = _spec(args, vcpus)
    spec.snapshots = True
    spec.give(args.state)
    spec.give(args.mem)
    for path, read_only in disks:
        spec.give(path, writable=not read_only)
        spec.threads += THREADS_PER_DISK
    try:
        mem_bytes = os.stat(args.mem).st_size
    except OSError:
        mem_bytes = 0
    _give_outputs(spec, args.serial_log, args.snapshot_path, args.mem_file_path, mem_bytes)
    enter(spec)


def jail_exec(args, inputs: dict[str, str], out_limit: int) -> None:
    """Jail `vmm exec` (when args.jail): the bundled guest, the program, the --in paths
    and --rootfs (read-only), and the --out-dir (writable; /out is extracted in the jail)."""
    if not _wanted(args):
        return
    spec = _spec(args, 1)
    from .config import bundled_guest

    spec.sandbox = spec.bundled_guest_only = True
    if args.deterministic and args.seed is None:
        spec.modules.append("secrets")  # a fresh seed
    spec.give(bundled_guest())
    program = args.program
    if "/" not in program:
        import shutil

        program = shutil.which(program)
    if program is not None and os.path.exists(program):
        spec.give(program)
        spec.executable.add(os.path.abspath(program))
    for host in inputs.values():
        spec.give(host)
    if args.rootfs is not None and os.path.exists(args.rootfs):
        spec.give(args.rootfs)
    if args.out_dir is not None:
        try:
            os.makedirs(args.out_dir, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--out-dir {args.out_dir}: {err.strerror}") from None
        spec.give(args.out_dir, writable=True)
        spec.file_size = max(spec.file_size, out_limit)
    enter(spec)


# --- libc ---------------------------------------------------------------------
_libc = None
_libgcc = None


def _c():
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> int:
    if result == -1:
        import ctypes

        err = ctypes.get_errno()
        raise JailError(f"--jail: {what}: {os.strerror(err)}")
    return result


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(text):
        return None if text is None else os.fsencode(text)

    _check(_c().mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _prctl(option: int, arg: int = 0, what: str = "prctl") -> None:
    import ctypes

    ul = ctypes.c_ulong
    _check(_c().prctl(option, ul(arg), ul(0), ul(0), ul(0)), what)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


# --- entering -----------------------------------------------------------------
def enter(spec: JailSpec) -> None:
    """Jail this process (see the module docstring); returns in the jailed child only."""
    import threading

    if threading.active_count() > 1:
        raise JailError("--jail: the jail must be entered before any thread starts")
    _c()  # ctypes and libc, before the fork: the child needs them, the waiter too
    cap_last = int(_read("/proc/sys/kernel/cap_last_cap"))
    cgroup = _Cgroup.prepare(spec.memory_mib, spec.cpus) if spec.memory_mib or spec.cpus else None
    uid, gid = os.getuid(), os.getgid()
    _check(_c().unshare(CLONE_NEWUSER), "new user namespace")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
    _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
    _check(_c().unshare(CLONE_NEWPID), "new PID namespace")
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
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, "parent-death signal")
    if os.read(go_read, 1) != b"g":  # the waiter failed (or died) before the cgroup was ready
        os._exit(125)
    os.close(go_read)
    _emulate_fatal_defaults(note_write)
    # Imports in the child, not before the fork: pages the waiter shares would be copied on every touch.
    _preload(spec)
    os.environ.setdefault("VMM_SOFTWARE_KVM", "1" if _software_kvm() else "0")  # /sys is not in the jail
    _check(_c().unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "new namespaces")
    _check(_c().sethostname(b"vmm-jail", 8), "hostname")
    _build_root(spec)
    _limit(spec)
    _drop_privileges(cap_last)
    if os.environ.get(PROBE_ENV) == "1":
        _probe(spec)


def _software_kvm() -> bool:
    from .x86.platform import software_kvm

    return software_kvm()


def _vmm_modules(spec: JailSpec) -> list[str]:
    import vmm

    skip = list(_SKIP_MODULES)
    if not spec.sandbox:
        skip.append("vmm.sandbox")
    if not spec.snapshots:  # (construct: ~50 ms)
        skip += ["vmm.persist", "vmm.snapshot"]
    if spec.bundled_guest_only:
        skip += ["vmm.boot.linux", "vmm.boot.bzimage_layout", "vmm.boot.multiboot", "vmm.boot.unpack",
                 "vmm.x86.acpi", "vmm.x86.aml"]
    root = os.path.dirname(vmm.__file__)
    names = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(("_", "."))]
        package = "vmm" + directory[len(root):].replace(os.sep, ".")
        for file in files:
            if file.endswith(".py"):
                name = package if file == "__init__.py" else f"{package}.{file[:-3]}"
                if not name.startswith(tuple(skip)) and not name.endswith("_build"):
                    names.append(name)
    return names


def _preload(spec: JailSpec) -> None:
    """Import now what the jailed run may import later: the host's files go away."""
    from importlib import import_module

    names = [*STDLIB_MODULES, *_vmm_modules(spec), *spec.modules]
    if not spec.bundled_guest_only:
        names += KERNEL_LOADER_MODULES
    if os.environ.get(PROBE_ENV) == "1":
        names.append("socket")
    global _libgcc
    try:  # glibc loads it on a thread's first exit (to unwind): load it while it can be found
        import ctypes

        _libgcc = ctypes.CDLL("libgcc_s.so.1")
    except OSError:
        pass
    if spec.sandbox:
        names += SANDBOX_MODULES
    for name in names:
        try:
            import_module(name)
        except ImportError as err:
            if not name.startswith("vmm"):
                continue  # a stripped-down Python: the run will say so if it needs it
            raise JailError(f"--jail: cannot import {name} before the jail: {err}") from None


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
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    sources = {}  # opened before the tmpfs may cover them (it goes on /tmp)
    for target, (source, writable, device) in sorted(spec.binds.items()):
        try:
            sources[target] = (os.open(source, os.O_PATH | os.O_CLOEXEC), writable, device)
        except OSError:
            pass  # missing: the run reports it, as it would outside the jail
    cwd = os.getcwd()
    base = "/tmp" if os.path.isdir("/tmp") else "/mnt"
    _mount("tmpfs", base, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=1m,nr_inodes=4096")
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
        _mount(f"/proc/self/fd/{fd}", place, None, MS_BIND)
        flags = MS_BIND | MS_REMOUNT | MS_NOSUID | (0 if target in spec.executable else MS_NOEXEC)
        flags |= 0 if device else MS_NODEV
        flags |= 0 if writable else MS_RDONLY
        locked = os.statvfs(place).f_flag
        for bit, flag in _LOCKED_FLAGS:
            if locked & bit:
                flags |= flag
        _mount(None, place, None, flags)
        os.close(fd)
    os.makedirs(base + cwd, mode=0o755, exist_ok=True)
    os.makedirs(base + "/proc", mode=0o555, exist_ok=True)
    try:
        _mount("proc", base + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
    except JailError:
        os.rmdir(base + "/proc")  # a host whose /proc is partly hidden refuses a fresh one
    os.chdir(base)
    _check(_c().syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(_c().umount2(b".", MNT_DETACH), "detach the host's root")
    os.chdir("/")
    _mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
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

    _prctl(PR_SET_SECUREBITS, SECUREBITS, "securebits")
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "clear ambient capabilities")
    for cap in range(cap_last + 1):
        _prctl(PR_CAPBSET_DROP, cap, "drop bounding capabilities")
    header = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # two of {effective, permitted, inheritable}, all 0
    _check(_c().syscall(SYS_CAPSET, header, data), "drop capabilities")


# --- cgroup v2 ----------------------------------------------------------------
class _Cgroup:
    """A cgroup v2 child of our own, with memory.max / cpu.max; set up from the host's view."""

    CPU_PERIOD_US = 100_000

    @staticmethod
    def own_cgroup() -> str:
        """This process's cgroup v2 directory, from the host's view."""
        root = None
        for line in _read("/proc/self/mountinfo").splitlines():
            fields = line.split()
            if fields[fields.index("-") + 1] == "cgroup2":
                root = fields[4]
                break
        own = next((line[3:].strip() for line in _read("/proc/self/cgroup").splitlines() if line.startswith("0::")), None)
        if root is None or own is None:
            raise ConfigError("--jail-memory/--jail-cpus need cgroup v2, which this host does not mount")
        return os.path.normpath(root + own)

    @classmethod
    def prepare(cls, memory_mib: int | None, cpus: float | None, parent: str | None = None) -> _Cgroup:
        """A new cgroup under ``parent`` (default: our own), controllers enabled, limits written."""
        parent = parent or cls.own_cgroup()
        wanted = [name for name, value in (("memory", memory_mib), ("cpu", cpus)) if value]
        try:
            offered = _read(os.path.join(parent, "cgroup.controllers")).split()
            enabled = _read(os.path.join(parent, "cgroup.subtree_control")).split()
        except OSError as err:
            raise ConfigError(f"--jail-memory/--jail-cpus: cannot read cgroup {parent}: {err.strerror}") from None
        for name in wanted:
            if name not in offered:
                raise ConfigError(f"--jail-{'memory' if name == 'memory' else 'cpus'}: cgroup v2 has no {name} controller "
                                  f"delegated at {parent} (it offers: {' '.join(offered) or 'none'})")
            if name not in enabled:
                try:
                    _write(os.path.join(parent, "cgroup.subtree_control"), f"+{name}")
                except OSError as err:
                    raise ConfigError(f"cannot enable the {name} controller under {parent}: {err.strerror}") from None
        name = f"vmm-jail-{os.getpid()}"
        path = os.path.join(parent, name)
        try:
            os.mkdir(path)
            if memory_mib:
                _write(os.path.join(path, "memory.max"), str(memory_mib << 20))
                if os.path.exists(os.path.join(path, "memory.swap.max")):
                    _write(os.path.join(path, "memory.swap.max"), "0")
            if cpus:
                _write(os.path.join(path, "cpu.max"), f"{max(int(cpus * cls.CPU_PERIOD_US), 1000)} {cls.CPU_PERIOD_US}")
            self = cls()
            # opened now, with the host's credentials: the waiter writes them from inside its user namespace
            self.procs = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
            self.parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.name = name
            return self
        except OSError as err:
            try:
                os.rmdir(path)
            except OSError:
                pass
            raise ConfigError(f"cannot set up cgroup {path}: {err.strerror}") from None

    def adopt(self, pid: int) -> None:
        os.write(self.procs, str(pid).encode())

    def remove(self) -> None:
        try:
            os.rmdir(self.name, dir_fd=self.parent_fd)
        except OSError:
            pass


# --- the test hook ------------------------------------------------------------
def _probe(spec: JailSpec) -> None:
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
        for line in _read("/proc/self/status").splitlines():
            if line.startswith(("Cap", "NoNewPrivs", "Uid", "Gid", "Seccomp")):
                say("status: " + " ".join(line.split()))
        say("net: " + " ".join(line.split(":")[0].strip() for line in _read("/proc/net/dev").splitlines()[2:]))
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
