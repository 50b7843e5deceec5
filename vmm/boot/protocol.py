"""The boot-protocol seam: "load this kernel into guest RAM, give me the entry state".

Each protocol reads and checks its inputs when it is created (before any KVM
object exists, so bad input costs nothing), then ``load(memory, cmdline)``
lays everything out in guest RAM and returns a ``BootEntry`` that knows how to
set the boot vCPU's registers. The machine never calls a protocol's loader
directly, so another protocol (Linux's own, say) is added beside PVH and
Multiboot by adding a class here and a line in ``select_boot``.
"""

from __future__ import annotations

import os
import stat

from ..errors import ConfigError, KernelImageError
from ..memory import GuestMemory
from .elf import KernelImage, load_kernel, parse_kernel
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


def read_initrd(path: str) -> bytes:
    """The initrd's bytes; only a regular file (a FIFO or /dev/zero would never end)."""
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError(f"initrd {path}: not a regular file")
            return f.read()
    except OSError as err:
        raise ConfigError(f"cannot read initrd {path}: {err.strerror}") from None


class MultibootEntry(BootEntry):
    """Multiboot: PVH's machine state, with EAX = 0x2BADB002 and EBX = the information structure."""

    protocol = "multiboot"

    def __init__(self, entry: int, info_addr: int):
        self.entry = entry
        self.info_addr = info_addr

    def apply(self, vcpu) -> None:
        from ..x86.cpu import set_pvh_entry_state
        from .multiboot import BOOTLOADER_MAGIC

        # The same state the Multiboot spec asks for: 32-bit protected mode,
        # paging off, flat 4 GiB segments, EFLAGS IF=0 VM=0 (A20 is always on).
        set_pvh_entry_state(vcpu, self.entry, self.info_addr)
        regs = vcpu.get_regs()
        regs.rax = BOOTLOADER_MAGIC
        vcpu.set_regs(regs)


class PvhBoot:
    """An ELF kernel with a XEN_ELFNOTE_PHYS32_ENTRY note (our guest, Linux vmlinux)."""

    name = "pvh"
    description = "pvh (ELF note XEN_ELFNOTE_PHYS32_ENTRY)"

    def __init__(self, kernel_path: str, initrd_path: str | None = None, kernel: KernelImage | None = None):
        self.kernel_path = kernel_path
        self.kernel: KernelImage = kernel if kernel is not None else load_kernel(kernel_path)
        self.initrd = read_initrd(initrd_path) if initrd_path is not None else None

    def load(self, memory: GuestMemory, cmdline: str) -> BootEntry:
        start_info = load_pvh(memory, self.kernel, self.kernel_path, cmdline, self.initrd)
        return PvhEntry(self.kernel.pvh_entry, start_info)


class MultibootBoot:
    """A Multiboot (version 1) kernel: an ELF, or any image whose header gives its load addresses."""

    name = "multiboot"

    def __init__(self, kernel_path: str, kernel, initrd_path: str | None = None):
        self.kernel_path = kernel_path
        self.kernel = kernel
        self.initrd_path = initrd_path
        self.initrd = read_initrd(initrd_path) if initrd_path is not None else None
        self.description = f"multiboot ({kernel.form})"

    def load(self, memory: GuestMemory, cmdline: str) -> BootEntry:
        from .multiboot import load_multiboot

        info = load_multiboot(memory, self.kernel, self.kernel_path, cmdline, self.initrd, self.initrd_path)
        return MultibootEntry(self.kernel.entry, info)


def read_kernel(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise KernelImageError(f"kernel {path}: not a regular file")
            return f.read()
    except FileNotFoundError:
        raise KernelImageError(f"kernel file not found: {path}") from None
    except IsADirectoryError:
        raise KernelImageError(f"kernel path is a directory: {path}") from None
    except OSError as err:
        raise KernelImageError(f"cannot read kernel {path}: {err.strerror}") from None


def select_boot(kernel_path: str, initrd_path: str | None = None):
    """The protocol that can boot ``kernel_path``: a PVH note first, then a Multiboot header."""
    image = read_kernel(kernel_path)
    try:
        return PvhBoot(kernel_path, initrd_path, parse_kernel(image, kernel_path))
    except KernelImageError as pvh_error:
        from .elf import ELF_MAGIC
        from .multiboot import parse_multiboot

        multiboot = parse_multiboot(image, kernel_path)
        if multiboot is not None:
            return MultibootBoot(kernel_path, multiboot, initrd_path)
        is_elf = image[:4] == ELF_MAGIC
        if is_elf and "PVH entry note" not in str(pvh_error):
            raise  # a broken ELF: its own error says more than "unrecognised"
        pvh = "an ELF with no PVH entry note" if is_elf else "not an ELF file with a PVH entry note"
        raise KernelImageError(
            f"{kernel_path}: not a kernel vmm can boot: {pvh} (XEN_ELFNOTE_PHYS32_ENTRY), "
            "and no Multiboot header (magic 0x1BADB002 in the first 8 KiB)"
        ) from None
