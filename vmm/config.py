"""What a VM is made of: immutable records, checked before anything is built.

Named tuples rather than dataclasses: importing dataclasses costs ~10 ms,
a sizeable part of a vmm start.
"""

from __future__ import annotations

from collections import namedtuple

from .errors import ConfigError

DEFAULT_MEM_MIB = 128
DEFAULT_CMDLINE = "console=ttyS0"
GUEST_ELF_ENV = "VMM_GUEST_ELF"


class DiskConfig(namedtuple("DiskConfig", "path read_only", defaults=(False,))):
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
    # guest runs on, rather than on the vCPU thread at the MMIO exit: measured
    # (vmm bench blk) ~100k against ~78k random 4 KiB reads per second.
    ("ioeventfd", True),
)


class VmConfig(namedtuple("VmConfig", [name for name, _ in _VM_FIELDS], defaults=[d for _, d in _VM_FIELDS])):
    __slots__ = ()

    def kernel_path(self) -> str:
        return self.kernel if self.kernel is not None else bundled_guest()

    def base_cmdline(self) -> str:
        return DEFAULT_CMDLINE if self.cmdline is None else self.cmdline

    @property
    def disks(self) -> tuple:
        return tuple(d for d in self.devices if isinstance(d, DiskConfig))


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
