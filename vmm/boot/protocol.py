"""The boot-protocol seam: "load this kernel into guest RAM, give me the entry state".

Each protocol reads and checks its inputs when it is created (before any KVM
object exists, so bad input costs nothing), then ``load(memory, cmdline)``
lays everything out in guest RAM and returns a ``BootEntry`` that knows how to
set the boot vCPU's registers. The machine never calls a protocol's loader
directly, so another protocol is added beside PVH, Multiboot and Linux's
own (boot/linux.py) by adding a class and a line in ``select_boot``.
"""

from __future__ import annotations

from ..errors import ConfigError, KernelImageError, NoPvhNoteError
from ..memory import GuestMemory
from .elf import ELF_MAGIC, KernelImage, load_kernel
from .files import InputFile
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


class LongModeEntry(BootEntry):
    """64-bit long mode, identity-mapped paging, RSI = the boot structure (Linux's zero page)."""

    protocol = "linux64"

    def __init__(self, entry: int, rsi: int, cr3: int):
        self.entry, self.rsi, self.cr3 = entry, rsi, cr3

    def apply(self, vcpu) -> None:
        from ..x86.long_mode import set_long_mode_entry_state

        set_long_mode_entry_state(vcpu, self.entry, self.rsi, self.cr3)


class PvhBoot:
    """An ELF kernel with a XEN_ELFNOTE_PHYS32_ENTRY note (our guest, Linux vmlinux)."""

    name = "pvh"
    description = "pvh (ELF note XEN_ELFNOTE_PHYS32_ENTRY)"

    def __init__(self, kernel_path: str, initrd: str | bytes | None, ram_size: int):
        """Reads no more than fits in ``ram_size`` bytes of guest RAM (checked first)."""
        self.kernel_path = kernel_path
        self.kernel: KernelImage = load_kernel(kernel_path, ram_size)
        # a Linux vmlinux finds virtio-mmio devices in the DSDT (the bundled guest reads the command line)
        self.uses_acpi = self.kernel.guest_os == b"linux"
        if isinstance(initrd, str):
            self.initrd = load_initrd(initrd, self.kernel, ram_size)
        else:
            if initrd is not None:
                initrd_address(len(initrd), self.kernel, ram_size)
            self.initrd = initrd

    def load(self, memory: GuestMemory, cmdline: str, user_cmdline_length: int | None = None, acpi_rsdp: int | None = None) -> BootEntry:
        start_info = load_pvh(memory, self.kernel, self.kernel_path, cmdline, self.initrd, user_cmdline_length, rsdp=acpi_rsdp)
        return PvhEntry(self.kernel.pvh_entry, start_info)


class MultibootBoot:
    """A Multiboot (version 1) kernel: an ELF, or any image whose header gives its load addresses."""

    name = "multiboot"

    def __init__(self, kernel_path: str, kernel, initrd: str | bytes | None, ram_size: int):
        self.kernel_path = kernel_path
        self.kernel = kernel
        self.initrd_path = initrd if isinstance(initrd, str) else None
        self.initrd = _read_within(initrd, "initrd", ConfigError, ram_size) if isinstance(initrd, str) else initrd
        self.description = f"multiboot ({kernel.form})"

    def load(self, memory: GuestMemory, cmdline: str, user_cmdline_length: int | None = None) -> BootEntry:
        from .multiboot import load_multiboot

        info = load_multiboot(memory, self.kernel, self.kernel_path, cmdline, self.initrd, self.initrd_path)
        return MultibootEntry(self.kernel.entry, info)


def _read_within(path: str, what: str, error, limit: int) -> bytes:
    """A whole regular file, refused before reading if it cannot fit in ``limit`` bytes."""
    with InputFile(path, what, error) as source:
        if source.size > limit:
            raise ConfigError(f"{what} {path} is {source.size} bytes, more than the guest's RAM; give the VM more memory (--mem)")
        return source.read(0, source.size)


BZIMAGE_PROBE = 0x206  # a bzImage has 0xAA55 at 0x1FE and "HdrS" at 0x202


def select_boot(kernel_path: str, initrd: str | bytes | None, ram_size: int):
    """The protocol that can boot ``kernel_path``: a bzImage's setup header, a PVH note, a Multiboot header.

    ``initrd`` is a path, or the bytes themselves (the sandbox's bundle).
    Nothing is read past what can fit in ``ram_size`` bytes of guest RAM.
    """
    with InputFile(kernel_path, "kernel", KernelImageError) as source:
        head = source.read(0, min(source.size, BZIMAGE_PROBE))
    if len(head) == BZIMAGE_PROBE and head[0x1FE:0x200] == b"\x55\xaa" and head[0x202:0x206] == b"HdrS":
        from .linux import LinuxBoot  # construct and all: only for a bzImage

        return LinuxBoot(kernel_path, initrd, ram_size)
    head = head[:4]
    if head == ELF_MAGIC:
        try:
            return PvhBoot(kernel_path, initrd, ram_size)
        except NoPvhNoteError:
            pass  # a well-formed ELF: perhaps a Multiboot one
    from .multiboot import parse_multiboot

    multiboot = parse_multiboot(_read_within(kernel_path, "kernel", KernelImageError, ram_size), kernel_path)
    if multiboot is not None:
        return MultibootBoot(kernel_path, multiboot, initrd, ram_size)
    pvh = "an ELF with no PVH entry note" if head == ELF_MAGIC else "not an ELF file with a PVH entry note"
    raise KernelImageError(
        f"{kernel_path}: not a kernel vmm can boot: {pvh} (XEN_ELFNOTE_PHYS32_ENTRY), "
        "and no Multiboot header (magic 0x1BADB002 in the first 8 KiB)"
    )
