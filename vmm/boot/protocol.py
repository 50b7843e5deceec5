"""The boot-protocol seam: "load this kernel into guest RAM, give me the entry state".

Each protocol reads and checks its inputs when it is created (before any KVM
object exists, so bad input costs nothing), then ``load(memory, cmdline)``
lays everything out in guest RAM and returns a ``BootEntry`` that knows how to
set the boot vCPU's registers. The machine never calls a protocol's loader
directly, so the Linux boot protocol or Multiboot can be added beside PVH by
adding a class here and a line in ``select_boot``.
"""

from __future__ import annotations

from ..memory import GuestMemory
from .elf import KernelImage, load_kernel
from .loader import initrd_address, load_initrd, load_pvh


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


class PvhBoot:
    """An ELF kernel with a XEN_ELFNOTE_PHYS32_ENTRY note (our guest, Linux vmlinux)."""

    name = "pvh"

    def __init__(self, kernel_path: str, initrd: str | bytes | None, ram_size: int):
        """Reads no more than fits in ``ram_size`` bytes of guest RAM (checked first)."""
        self.kernel_path = kernel_path
        self.kernel: KernelImage = load_kernel(kernel_path, ram_size)
        if isinstance(initrd, str):
            self.initrd = load_initrd(initrd, self.kernel, ram_size)
        else:
            if initrd is not None:
                initrd_address(len(initrd), self.kernel, ram_size)
            self.initrd = initrd

    def load(self, memory: GuestMemory, cmdline: str, user_cmdline_length: int | None = None) -> BootEntry:
        start_info = load_pvh(memory, self.kernel, self.kernel_path, cmdline, self.initrd, user_cmdline_length)
        return PvhEntry(self.kernel.pvh_entry, start_info)


def select_boot(kernel_path: str, initrd: str | bytes | None, ram_size: int):
    """The protocol that can boot ``kernel_path`` (PVH is the only one so far).
    ``initrd`` is a path, or the bytes themselves (the sandbox's bundle)."""
    return PvhBoot(kernel_path, initrd, ram_size)
