"""What a VM is made of: frozen dataclasses, checked before anything is built."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigError

DEFAULT_MEM_MIB = 128
DEFAULT_CMDLINE = "console=ttyS0"
GUEST_ELF_ENV = "VMM_GUEST_ELF"


@dataclass(frozen=True)
class DiskConfig:
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class VmConfig:
    kernel: str | None = None  # None: the bundled guest
    cmdline: str | None = None  # None: DEFAULT_CMDLINE
    initrd: str | None = None
    mem_mib: int = DEFAULT_MEM_MIB
    timeout: float | None = None
    serial_log: str | None = None
    disks: tuple[DiskConfig, ...] = field(default_factory=tuple)
    # Queue notifications by ioeventfd, handled on an I/O thread while the
    # guest runs on, rather than on the vCPU thread at the MMIO exit: measured
    # (vmm bench blk) ~100k against ~78k random 4 KiB reads per second.
    ioeventfd: bool = True

    def kernel_path(self) -> str:
        return self.kernel if self.kernel is not None else bundled_guest()

    def base_cmdline(self) -> str:
        return DEFAULT_CMDLINE if self.cmdline is None else self.cmdline


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
