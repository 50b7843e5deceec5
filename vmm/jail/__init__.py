"""--jail: the VMM process locks itself up before the guest starts.

Like Firecracker's jailer, inside vmm. ``enter(spec)`` (enter.py) is called
before any thread exists; it
- enters a new user namespace (the caller's uid/gid mapped to themselves) and
  PID namespace, and forks: the parent stays behind as a waiter that forwards
  signals and passes the child's status on unchanged; the child is PID 1,
- imports every module the command can need (preload.py: after the pivot no
  Python file of the host is visible, nothing is bound but what the VM uses),
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

libc is reached by ctypes (libc.py; Python 3.11 has no os.unshare); no
threads, no subprocesses. VMM_JAIL_PROBE=1 makes the jailed process describe
its jail on stderr (probe.py, a test hook: tests/integration/test_jail.py).
This module says what each command's jail holds; building the parsers
imports only it.
"""

from __future__ import annotations

import os

from ..arguments import Option, mib, refuse
from ..errors import ConfigError, VmmError

THREADS_BASE = 64  # threads the VMM may start besides one per vCPU and the disks' workers
THREADS_PER_DISK = 4  # virtio-blk's worker pool (2 at most today)


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


def _cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        refuse(f"not a number of CPUs: {text!r}")
    if not 0.01 <= value <= 1024:
        refuse(f"must be between 0.01 and 1024: {text!r}")
    return value


# Every command that runs a VM has these (vmm/cli_parser.py; the plain parsers of vmm exec and run too).
OPTIONS = (
    Option("--jail", action="store_true",
           help="run the VMM in namespaces of its own with only the VM's files, no capabilities and rlimits (default off)"),
    Option("--no-jail", dest="jail", action="store_false", default=False, help="do not jail the VMM"),
    Option("--jail-memory", metavar="MIB", type=mib, help="the jailed VMM's memory limit, guest RAM included (cgroup v2 memory.max)"),
    Option("--jail-cpus", metavar="CPUS", type=_cpus, help="the jailed VMM's CPU time, in CPUs: 0.5 is half of one (cgroup v2 cpu.max)"),
)


# --- what each command's jail holds ---------------------------------------------
def _wanted(args) -> bool:
    if not args.jail and (args.jail_memory or args.jail_cpus):
        raise ConfigError("--jail-memory and --jail-cpus need --jail")
    return args.jail


def _spec(args, vcpus: int) -> JailSpec:
    spec = JailSpec(memory_mib=args.jail_memory, cpus=args.jail_cpus, vcpus=vcpus)
    from ..kvm.api import KVM_DEVICE

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
    _enter(spec)


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
    from ..snapshot import format as fmt

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
    _enter(spec)


def jail_exec(args, inputs: dict[str, str], out_limit: int) -> None:
    """Jail `vmm exec` (when args.jail): the bundled guest, the program, the --in paths
    and --rootfs (read-only), and the --out-dir (writable; /out is extracted in the jail)."""
    if not _wanted(args):
        return
    spec = _spec(args, 1)
    from ..config import bundled_guest

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
    _enter(spec)




def _enter(spec: JailSpec) -> None:
    from .enter import enter

    enter(spec)
