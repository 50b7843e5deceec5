"""Lay a PVH kernel, its command line, initrd and start info out in guest RAM.

Everything is checked before the first byte is written: segments against
guest RAM and the boot structures, the initrd against the room left, the
command line against what the guest keeps.
"""

from __future__ import annotations

from ..config import encode_cmdline
from ..errors import ConfigError, KernelImageError
from ..memory import GuestMemory
from ..x86 import layout
from .elf import KernelImage
from .pvh import E820_RAM, E820_RESERVED, HVM_START_MAGIC, MemmapEntry, ModlistEntry, StartInfo

PAGE = 4096
MEMMAP_ROOM_ENTRIES = 128  # room kept for the memory map (it has 3-4 entries today)

# (what, start, end) of everything load_pvh writes besides the kernel and initrd
BOOT_STRUCTURES = (
    ("start info", layout.START_INFO_ADDR, layout.START_INFO_ADDR + StartInfo.size),
    ("module list", layout.MODLIST_ADDR, layout.MODLIST_ADDR + ModlistEntry.size),
    ("memory map", layout.MEMMAP_ADDR, layout.MEMMAP_ADDR + MEMMAP_ROOM_ENTRIES * MemmapEntry.size),
    ("command line", layout.CMDLINE_ADDR, layout.CMDLINE_ADDR + layout.CMDLINE_MAX),
)
BOOT_STRUCTURES_END = max(end for _, _, end in BOOT_STRUCTURES)


def host_ram_size() -> int:
    """Bytes of RAM on this host: no guest can have more, so no kernel may need more."""
    import os

    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _in_ram(addr: int, size: int, ram_size: int) -> bool:
    return any(start <= addr and addr + size <= start + length for start, length in layout.ram_regions(ram_size))


def memory_map(mem_size: int) -> list[tuple[int, int, int]]:
    """The E820-style map handed to the guest: (addr, size, type)."""
    entries = [(0, layout.EBDA_START, E820_RAM), (layout.EBDA_START, layout.HIGH_MEMORY - layout.EBDA_START, E820_RESERVED)]
    for start, size in layout.ram_regions(mem_size):
        if start == 0:
            start, size = layout.HIGH_MEMORY, size - layout.HIGH_MEMORY
        entries.append((start, size, E820_RAM))
    return entries


def check_kernel_placement(segments, pvh_entry: int, ram_size: int, kernel_path: str) -> None:
    """Each segment at or above 1 MiB, clear of the boot structures, inside guest RAM."""
    for segment in segments:
        start, end = segment.guest_addr, segment.guest_addr + segment.memsz
        if start < layout.HIGH_MEMORY:
            raise KernelImageError(f"{kernel_path}: ELF segment at 0x{start:x} lies below 1 MiB")
        for what, low, high in BOOT_STRUCTURES:
            if start < high and low < end:
                raise KernelImageError(
                    f"{kernel_path}: ELF segment 0x{start:x}-0x{end:x} overlaps the PVH {what} at 0x{low:x}-0x{high:x}"
                )
        if not _in_ram(start, segment.memsz, ram_size):
            raise ConfigError(f"{kernel_path} needs guest RAM up to 0x{end:x}; give the VM more memory (--mem)")
    if not _in_ram(pvh_entry, 1, ram_size):
        raise ConfigError(f"{kernel_path}: PVH entry 0x{pvh_entry:x} is outside guest RAM")


def _initrd_floor(kernel: KernelImage, low_end: int) -> int:
    """The lowest address the initrd may start at: above the boot structures and the low kernel."""
    ends = [s.guest_addr + s.memsz for s in kernel.segments if s.guest_addr < low_end]
    return max([BOOT_STRUCTURES_END, *ends])


def initrd_address(size: int, kernel: KernelImage, ram_size: int) -> int:
    """Where an initrd of ``size`` bytes goes: page-aligned at the top of low RAM, or ConfigError."""
    low_end = layout.ram_regions(ram_size)[0][1]
    addr = (low_end - size) & ~(PAGE - 1)
    if size > low_end or addr < _initrd_floor(kernel, low_end):
        room = max(0, ((low_end - _initrd_floor(kernel, low_end)) & ~(PAGE - 1)))
        raise ConfigError(
            f"initrd of {size} bytes does not fit in guest RAM beside the kernel "
            f"({room} bytes free below 0x{low_end:x}); give the VM more memory (--mem)"
        )
    return addr


def load_initrd(path: str, kernel: KernelImage, ram_size: int) -> bytes:
    """Read an initrd that fits the guest, and no more than its size when checked.

    A device, FIFO or directory is refused; a file too big for the room left
    beside the kernel is refused before any of it is read.
    """
    from .files import InputFile

    with InputFile(path, "initrd") as source:
        initrd_address(source.size, kernel, ram_size)
        return source.read(0, source.size)


def load_pvh(
    memory: GuestMemory,
    kernel: KernelImage,
    kernel_path: str,
    cmdline: str,
    initrd: bytes | None,
    user_cmdline_length: int | None = None,
    rsdp: int | None = None,
) -> int:
    """Copy everything into guest RAM; returns the start info address.

    ``rsdp``: the ACPI RSDP's address, given to the kernel in the start info (Linux only).

    ``cmdline`` is the final command line: the user's plus the VMM's device
    entries (``user_cmdline_length`` bytes of it the user's, when given).
    """
    check_kernel_placement(kernel.segments, kernel.pvh_entry, memory.size, kernel_path)
    encoded = encode_cmdline(cmdline)
    limit = layout.COMMAND_LINE_SIZE - 1
    if len(encoded) > limit:
        if user_cmdline_length is not None:
            parts = f"{user_cmdline_length} yours + {len(encoded) - user_cmdline_length} of the VMM's device entries"
        else:
            parts = "with the VMM's device entries"
        raise ConfigError(
            f"kernel command line is {len(encoded)} bytes ({parts}); the guest keeps at most {limit} "
            f"(COMMAND_LINE_SIZE {layout.COMMAND_LINE_SIZE}) and would lose the rest"
        )
    initrd_addr = initrd_address(len(initrd), kernel, memory.size) if initrd is not None else None

    for segment in kernel.segments:
        memory.write(segment.guest_addr, segment.data)
        zero_length = segment.memsz - len(segment.data)
        if zero_length:
            memory.view(segment.guest_addr + len(segment.data), zero_length)[:] = bytes(zero_length)
    memory.write(layout.CMDLINE_ADDR, encoded + b"\0")

    modules = b""
    if initrd is not None:
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
        rsdp_paddr=rsdp or 0,
    )
    memory.write(layout.START_INFO_ADDR, info)
    return layout.START_INFO_ADDR
