"""Lay a PVH kernel, its command line, initrd and start info out in guest RAM."""

from __future__ import annotations

from ..errors import ConfigError, GuestMemoryError, KernelImageError
from ..memory import GuestMemory
from ..x86 import layout
from .elf import KernelImage
from .pvh import E820_RAM, E820_RESERVED, HVM_START_MAGIC, MemmapEntry, ModlistEntry, StartInfo

PAGE = 4096


def memory_map(mem_size: int) -> list[tuple[int, int, int]]:
    """The E820-style map handed to the guest: (addr, size, type)."""
    entries = [(0, layout.EBDA_START, E820_RAM), (layout.EBDA_START, layout.HIGH_MEMORY - layout.EBDA_START, E820_RESERVED)]
    for start, size in layout.ram_regions(mem_size):
        if start == 0:
            start, size = layout.HIGH_MEMORY, size - layout.HIGH_MEMORY
        entries.append((start, size, E820_RAM))
    return entries


def load_pvh(memory: GuestMemory, kernel: KernelImage, kernel_path: str, cmdline: str, initrd: bytes | None) -> int:
    """Copy everything into guest RAM; returns the start info address."""
    low_end = memory.regions[0].end
    for segment in kernel.segments:
        if segment.guest_addr < layout.HIGH_MEMORY:
            raise KernelImageError(
                f"{kernel_path}: ELF segment at 0x{segment.guest_addr:x} lies below 1 MiB"
            )
        if not memory.contains(segment.guest_addr, segment.memsz):
            raise ConfigError(
                f"{kernel_path} needs guest RAM up to 0x{segment.guest_addr + segment.memsz:x}; "
                f"give the VM more memory (--mem)"
            )
    for segment in kernel.segments:
        memory.write(segment.guest_addr, segment.data)
        zero_length = segment.memsz - len(segment.data)
        if zero_length:
            memory.view(segment.guest_addr + len(segment.data), zero_length)[:] = bytes(zero_length)

    encoded = cmdline.encode()
    if len(encoded) + 1 > layout.CMDLINE_MAX or b"\0" in encoded:
        raise ConfigError(f"kernel command line too long or malformed (max {layout.CMDLINE_MAX - 1} bytes)")
    memory.write(layout.CMDLINE_ADDR, encoded + b"\0")

    modules = b""
    if initrd is not None:
        initrd_addr = (low_end - len(initrd)) & ~(PAGE - 1)
        if initrd_addr < max(kernel.end, layout.CMDLINE_ADDR + layout.CMDLINE_MAX):
            raise ConfigError(
                f"initrd of {len(initrd)} bytes does not fit in guest RAM beside the kernel; give the VM more memory (--mem)"
            )
        memory.write(initrd_addr, initrd)
        modules = ModlistEntry.pack(paddr=initrd_addr, size=len(initrd))
        memory.write(layout.MODLIST_ADDR, modules)

    entries = memory_map(memory.size)
    table = b"".join(MemmapEntry.pack(addr=a, size=s, type=t) for a, s, t in entries)
    memory.write(layout.MEMMAP_ADDR, table)

    info = StartInfo.pack(
        magic=HVM_START_MAGIC,
        version=1,
        nr_modules=1 if modules else 0,
        modlist_paddr=layout.MODLIST_ADDR if modules else 0,
        cmdline_paddr=layout.CMDLINE_ADDR,
        memmap_paddr=layout.MEMMAP_ADDR,
        memmap_entries=len(entries),
    )
    memory.write(layout.START_INFO_ADDR, info)
    if not memory.contains(kernel.pvh_entry, 1):
        raise GuestMemoryError(f"{kernel_path}: PVH entry 0x{kernel.pvh_entry:x} is outside guest RAM")
    return layout.START_INFO_ADDR
