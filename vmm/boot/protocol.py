"""The boot-protocol seam: "load this kernel into guest RAM, give me the entry state".

Each protocol reads and checks its inputs when it is created (before any KVM
object exists, so bad input costs nothing), then ``load(memory, cmdline)``
lays everything out in guest RAM and returns a ``BootEntry`` that knows how to
set the boot vCPU's registers. The machine never calls a protocol's loader
directly, so the Linux boot protocol or Multiboot can be added beside PVH by
adding a class here and a line in ``select_boot``.
"""

from __future__ import annotations

import os
import stat

from ..errors import ConfigError
from ..memory import GuestMemory
from .elf import KernelImage, load_kernel
from .loader import load_pvh


class BootEntry:
    """The boot vCPU's state at the kernel's entry point."""

    protocol = "none"

    def apply(self, vcpu) -> None:
        raise NotImplementedError


class PvhEntry(BootEntry):
    """Xen PVH: 32-bit protected mode, paging off, %ebx = hvm_start_info."""

    protocol = "pvh"

    def __init__(self, entry: int, start_info_addr: int):
        self.entry = entry
        self.start_info_addr = start_info_addr

    def apply(self, vcpu) -> None:
        from ..x86.cpu import set_pvh_entry_state

        set_pvh_entry_state(vcpu, self.entry, self.start_info_addr)


class LongModeEntry(BootEntry):
    """64-bit long mode, identity-mapped paging, RSI = the boot structure (Linux's zero page)."""

    protocol = "linux64"

    def __init__(self, entry: int, rsi: int, cr3: int):
        self.entry, self.rsi, self.cr3 = entry, rsi, cr3

    def apply(self, vcpu) -> None:
        from ..x86.long_mode import set_long_mode_entry_state

        set_long_mode_entry_state(vcpu, self.entry, self.rsi, self.cr3)


def read_initrd(path: str) -> bytes:
    """The initrd's bytes; only a regular file (a FIFO or /dev/zero would never end)."""
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError(f"initrd {path}: not a regular file")
            return f.read()
    except OSError as err:
        raise ConfigError(f"cannot read initrd {path}: {err.strerror}") from None


class PvhBoot:
    """An ELF kernel with a XEN_ELFNOTE_PHYS32_ENTRY note (our guest, Linux vmlinux)."""

    name = "pvh"

    def __init__(self, kernel_path: str, initrd_path: str | None = None):
        self.kernel_path = kernel_path
        self.kernel: KernelImage = load_kernel(kernel_path)
        self.initrd = read_initrd(initrd_path) if initrd_path is not None else None

    uses_acpi = False  # the PVH loader does not pass an RSDP yet

    def load(self, memory: GuestMemory, cmdline: str, acpi_rsdp: int | None = None) -> BootEntry:
        start_info = load_pvh(memory, self.kernel, self.kernel_path, cmdline, self.initrd)
        return PvhEntry(self.kernel.pvh_entry, start_info)


_BZIMAGE_PROBE = 0x206


def is_bzimage(path: str) -> bool:
    """Whether ``path`` carries the boot protocol's "HdrS" header (a bzImage)."""
    if not os.path.isfile(path):
        return False  # never open a FIFO here; the ELF loader reports what the path is
    try:
        with open(path, "rb") as f:
            head = f.read(_BZIMAGE_PROBE)
    except OSError:
        return False  # the ELF loader reports unreadable files
    return len(head) == _BZIMAGE_PROBE and head[0x1FE:0x200] == b"\x55\xaa" and head[0x202:0x206] == b"HdrS"


def select_boot(kernel_path: str, initrd_path: str | None = None):
    """The protocol that can boot ``kernel_path``: a bzImage by the Linux boot protocol, else PVH."""
    if is_bzimage(kernel_path):
        from .linux import LinuxBoot  # construct and all: only for Linux

        return LinuxBoot(kernel_path, initrd_path)
    return PvhBoot(kernel_path, initrd_path)
