"""What a VM is made of: immutable records, checked before anything is built.

Named tuples rather than dataclasses: importing dataclasses costs ~10 ms,
a sizeable part of a vmm start.
"""

from __future__ import annotations

from _thread import TIMEOUT_MAX as _THREAD_TIMEOUT_MAX

from .errors import ConfigError
from .record import record
from .x86 import layout

DEFAULT_MEM_MIB = 128
MAX_VCPUS = 64  # a microVM; KVM's own limit (KVM_CAP_MAX_VCPUS) is checked when the VM is built
DEFAULT_CMDLINE = "console=ttyS0"
GUEST_ELF_ENV = "VMM_GUEST_ELF"
# A timer further out than threading.TIMEOUT_MAX overflows in the timer
# thread (and then never fires); a year is longer than anyone means.
TIMEOUT_MAX = min(365 * 24 * 3600, int(_THREAD_TIMEOUT_MAX))
COMMAND_LINE_MAX = layout.COMMAND_LINE_SIZE - 1  # bytes of command line the guest keeps


class DiskConfig(record("DiskConfig", "path read_only", defaults=(False,))):
    """A virtio-blk disk backed by a host file (or block device)."""

    __slots__ = ()


_VM_FIELDS = (
    ("kernel", None),  # None: the bundled guest
    ("cmdline", None),  # None: DEFAULT_CMDLINE
    ("initrd", None),  # a path, or the bytes themselves
    ("mem_mib", DEFAULT_MEM_MIB),
    ("timeout", None),  # seconds, or None
    ("serial_log", None),
    ("devices", ()),  # device records (DiskConfig, ...), each placed in the next virtio-mmio slot
    ("vcpus", 1),
    # Queue notifications by ioeventfd, handled on an I/O thread while the
    # guest runs on, each queue moving to the vCPU thread (the MMIO exit)
    # while that thread is late for it (vmm/notify_route.py). False: always
    # at the MMIO exit.
    ("ioeventfd", True),
)


class VmConfig(record("VmConfig", [name for name, _ in _VM_FIELDS], defaults=[d for _, d in _VM_FIELDS])):
    __slots__ = ()

    def validate(self) -> "VmConfig":
        """Refuse values no VM can use (ConfigError); returns self. Files are checked later."""
        _validate(self)
        return self

    def kernel_path(self) -> str:
        return self.kernel if self.kernel is not None else bundled_guest()

    def base_cmdline(self) -> str:
        return DEFAULT_CMDLINE if self.cmdline is None else self.cmdline

    @property
    def disks(self) -> tuple:
        return tuple(d for d in self.devices if isinstance(d, DiskConfig))


def _check_path(what: str, path) -> None:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{what} path must be a non-empty string, not {path!r}")
    if "\0" in path:
        raise ConfigError(f"{what} path contains a NUL byte")


def _validate(cfg: VmConfig) -> None:
    for what, path in (("kernel", cfg.kernel), ("serial log", cfg.serial_log)):
        if path is not None:
            _check_path(what, path)
    if cfg.initrd is not None and not isinstance(cfg.initrd, (bytes, bytearray)):
        _check_path("initrd", cfg.initrd)  # a path, or the initrd's bytes
    if isinstance(cfg.vcpus, bool) or not isinstance(cfg.vcpus, int) or not 1 <= cfg.vcpus <= MAX_VCPUS:
        raise ConfigError(f"vCPU count {cfg.vcpus!r} is out of range (1-{MAX_VCPUS})")
    if isinstance(cfg.mem_mib, bool) or not isinstance(cfg.mem_mib, int):
        raise ConfigError(f"guest memory must be a whole number of MiB, not {cfg.mem_mib!r}")
    if cfg.mem_mib < layout.MIN_MEMORY_MIB:
        raise ConfigError(f"guest memory {cfg.mem_mib} MiB is too small (minimum {layout.MIN_MEMORY_MIB} MiB)")
    if cfg.timeout is not None:
        check_timeout(cfg.timeout)
    if cfg.cmdline is not None:
        check_cmdline(cfg.cmdline)
    for disk in cfg.disks:  # other device records are the builder's to check
        _check_path("disk", disk.path)


def check_timeout(seconds) -> float:
    """A positive, finite timeout no longer than TIMEOUT_MAX, as a float."""
    try:
        value = float(seconds)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"timeout must be a number of seconds, not {seconds!r}") from None
    if not value > 0:
        raise ConfigError(f"timeout must be positive: {seconds!r}")
    if not value <= TIMEOUT_MAX:  # also inf and nan
        raise ConfigError(f"timeout {seconds!r} is too long (at most {TIMEOUT_MAX} s, one year)")
    return value


def encode_cmdline(cmdline: str) -> bytes:
    """A command line as the guest gets it: UTF-8, no NUL (a C string)."""
    try:
        encoded = cmdline.encode()
    except UnicodeEncodeError:
        raise ConfigError("kernel command line is not valid UTF-8") from None
    if b"\0" in encoded:
        raise ConfigError("kernel command line contains a NUL byte")
    return encoded


def check_cmdline(cmdline) -> bytes:
    """The user's command line as bytes: UTF-8, no NUL, within what the guest keeps."""
    if not isinstance(cmdline, str):
        raise ConfigError(f"kernel command line must be a string, not {type(cmdline).__name__}")
    encoded = encode_cmdline(cmdline)
    if len(encoded) > COMMAND_LINE_MAX:
        raise ConfigError(
            f"kernel command line is {len(encoded)} bytes; the guest keeps at most {COMMAND_LINE_MAX} "
            "(and the VMM appends an entry per disk)"
        )
    return encoded


def check_host_memory(mem_mib: int) -> None:
    """No more guest RAM than the host has (the machine checks this again)."""
    import os

    host_mib = (os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) >> 20
    if mem_mib > host_mib:
        raise ConfigError(f"guest memory {mem_mib} MiB is more than this host has ({host_mib} MiB)")


def bundled_guest() -> str:
    """The guest ELF built by build_guest.sh, or $VMM_GUEST_ELF."""
    import os

    override = os.environ.get(GUEST_ELF_ENV)
    if override:
        return override
    # os.path, not pathlib: importing pathlib costs ~5 ms of every vmm start
    root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    path = os.path.join(root, "guest", "build", "guest.elf")
    if not os.path.exists(path):
        raise ConfigError(f"the bundled guest is not built ({path} is missing): run ./build_guest.sh")
    return path
