"""Multiboot (version 1, spec 0.6.96): the header, the information structure, loading.

A kernel carries a header in its first 8192 bytes, 4-byte aligned: magic
0x1BADB002, flags, and a checksum making the three sum to zero. With flag
16 the header also gives the load addresses (the "a.out kludge": any flat
image); without it the kernel must be an ELF, loaded by its program headers.
The loader enters the kernel in 32-bit protected mode, paging off, flat
segments, A20 on, IF=0 and VM=0, with EAX = 0x2BADB002 and EBX = the
physical address of the information structure (memory sizes, memory map,
command line, modules, boot loader name).

As GRUB and QEMU do, the command line handed over starts with the kernel's
path, and each module's string is its path. Flag 2 (video mode) is accepted
but no video information is given (there is no display), as with QEMU.
"""

from __future__ import annotations

import struct

from ..binary import Layout
from ..errors import ConfigError, KernelImageError
from ..memory import GuestMemory
from ..x86 import layout
from .elf import (
    ELF_MAGIC,
    ELFCLASS32,
    ELFCLASS64,
    PT_LOAD,
    Elf32Header,
    Elf32ProgramHeader,
    Elf64Header,
    Elf64ProgramHeader,
    Segment,
)

HEADER_MAGIC = 0x1BADB002
BOOTLOADER_MAGIC = 0x2BADB002  # in EAX at entry
HEADER_SEARCH_BYTES = 8192

# Header flags. Bits 0-15 are requirements: a loader that does not know one must refuse.
FLAG_PAGE_ALIGN_MODULES = 1 << 0
FLAG_MEMORY_INFO = 1 << 1
FLAG_VIDEO_MODE = 1 << 2
FLAG_ADDRESSES = 1 << 16  # header_addr .. entry_addr are valid (the a.out kludge)
KNOWN_REQUIRED_FLAGS = FLAG_PAGE_ALIGN_MODULES | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE

# Information structure flags: which fields are valid.
INFO_MEMORY = 1 << 0
INFO_CMDLINE = 1 << 2
INFO_MODULES = 1 << 3
INFO_MEMORY_MAP = 1 << 6
INFO_BOOT_LOADER_NAME = 1 << 9

Header = Layout(
    "MultibootHeader",
    "magic:I flags:I checksum:I header_addr:I load_addr:I load_end_addr:I bss_end_addr:I entry_addr:I",
)
Info = Layout(
    "MultibootInfo",
    "flags:I mem_lower:I mem_upper:I boot_device:I cmdline:I mods_count:I mods_addr:I "
    "syms0:I syms1:I syms2:I syms3:I mmap_length:I mmap_addr:I drives_length:I drives_addr:I "
    "config_table:I boot_loader_name:I apm_table:I",
)
Module = Layout("MultibootModule", "mod_start:I mod_end:I string:I reserved:I")
# ``size`` counts the bytes after itself; the kernel steps by size + 4
MmapEntry = Layout("MultibootMmapEntry", "size:I base_addr:Q length:Q type:I")

# Where the boot structures go: the low area PVH uses for its own (one protocol per VM).
INFO_ADDR = layout.START_INFO_ADDR
BOOT_LOADER_NAME_ADDR = INFO_ADDR + 0x100
MODULES_ADDR = layout.MODLIST_ADDR
MMAP_ADDR = layout.MEMMAP_ADDR
BOOT_LOADER_NAME = b"vmm\0"
PAGE = 4096
FOUR_GIB = 1 << 32


def find_header(image: bytes) -> tuple[int, object] | None:
    """(file offset, header) of the first valid Multiboot header, or None."""
    if len(image) < 12:
        return None
    limit = min(len(image), HEADER_SEARCH_BYTES) - 12
    offset = image.find(HEADER_MAGIC.to_bytes(4, "little"), 0, limit + 4)
    while 0 <= offset <= limit:
        if offset % 4 == 0:
            magic, flags, checksum = struct.unpack_from("<III", image, offset)
            if (magic + flags + checksum) & 0xFFFFFFFF == 0:
                header = Header.unpack_from(image + bytes(Header.size), offset)  # short tail reads as zero
                return offset, header
        offset = image.find(HEADER_MAGIC.to_bytes(4, "little"), offset + 1, limit + 4)
    return None


class MultibootKernel:
    """What the loader needs of a kernel: segments, entry point, header flags."""

    __slots__ = ("segments", "entry", "flags", "form")

    def __init__(self, segments: tuple[Segment, ...], entry: int, flags: int, form: str):
        self.segments, self.entry, self.flags, self.form = segments, entry, flags, form

    @property
    def end(self) -> int:
        return max(s.guest_addr + s.memsz for s in self.segments)


def parse_multiboot(image: bytes, path: str = "kernel") -> MultibootKernel | None:
    """The kernel as Multiboot describes it, None without a header; KernelImageError when malformed."""
    found = find_header(image)
    if found is None:
        return None
    offset, header = found
    unknown = header.flags & 0xFFFF & ~KNOWN_REQUIRED_FLAGS
    if unknown:
        raise KernelImageError(f"{path}: Multiboot header requires features vmm does not know (flags 0x{unknown:x})")
    if header.flags & FLAG_ADDRESSES:
        return _parse_address_fields(image, offset, header, path)
    if image[:4] != ELF_MAGIC:
        raise KernelImageError(f"{path}: Multiboot header has no load addresses (flag 16) and the file is not an ELF")
    segments, entry = _parse_elf_segments(image, path)
    return MultibootKernel(segments, entry, header.flags, "ELF")


def _parse_address_fields(image: bytes, offset: int, header, path: str) -> MultibootKernel:
    if offset + Header.size > len(image):
        raise KernelImageError(f"{path}: Multiboot header with flag 16 is cut short by the end of the file")
    if not header.load_addr <= header.header_addr:
        raise KernelImageError(f"{path}: Multiboot load_addr 0x{header.load_addr:x} lies above header_addr 0x{header.header_addr:x}")
    start = offset - (header.header_addr - header.load_addr)  # file offset of load_addr
    if start < 0:
        raise KernelImageError(f"{path}: Multiboot header_addr - load_addr reaches before the start of the file")
    if header.load_end_addr == 0:
        size = len(image) - start
    elif header.load_end_addr < header.load_addr:
        raise KernelImageError(f"{path}: Multiboot load_end_addr lies below load_addr")
    else:
        size = header.load_end_addr - header.load_addr
        if start + size > len(image):
            raise KernelImageError(f"{path}: Multiboot load_end_addr 0x{header.load_end_addr:x} lies past the end of the file")
    memsz = size
    if header.bss_end_addr:
        if header.bss_end_addr < header.load_addr + size:
            raise KernelImageError(f"{path}: Multiboot bss_end_addr lies below the end of the loaded image")
        memsz = header.bss_end_addr - header.load_addr
    segment = Segment(header.load_addr, image[start : start + size], memsz)
    return MultibootKernel((segment,), header.entry_addr, header.flags, "a.out kludge")


def _parse_elf_segments(image: bytes, path: str) -> tuple[tuple[Segment, ...], int]:
    try:
        if image[4] == ELFCLASS32:
            header, phdr = Elf32Header.unpack_from(image), Elf32ProgramHeader
        elif image[4] == ELFCLASS64:
            header, phdr = Elf64Header.unpack_from(image), Elf64ProgramHeader
        else:
            raise KernelImageError(f"{path}: unknown ELF class {image[4]}")
        if header.phentsize != phdr.size or header.phnum == 0:
            raise KernelImageError(f"{path}: ELF has no usable program headers")
        if header.phoff + header.phnum * header.phentsize > len(image):
            raise KernelImageError(f"{path}: ELF program headers lie past the end of the file")
        segments = []
        for i in range(header.phnum):
            ph = phdr.unpack_from(image, header.phoff + i * header.phentsize)
            if ph.type != PT_LOAD or not ph.memsz:
                continue
            if ph.offset + ph.filesz > len(image) or ph.filesz > ph.memsz:
                raise KernelImageError(f"{path}: ELF segment {i} is malformed (past the end of the file, or filesz > memsz)")
            if ph.paddr + ph.memsz > FOUR_GIB:
                raise KernelImageError(f"{path}: ELF segment {i} lies above 4 GiB, out of reach of a Multiboot loader")
            segments.append(Segment(ph.paddr, image[ph.offset : ph.offset + ph.filesz], ph.memsz))
    except (struct.error, IndexError):
        raise KernelImageError(f"{path}: truncated or malformed ELF file") from None
    if not segments:
        raise KernelImageError(f"{path}: ELF has no loadable segments")
    if header.entry >= FOUR_GIB:
        raise KernelImageError(f"{path}: ELF entry point 0x{header.entry:x} lies above 4 GiB")
    return tuple(segments), header.entry


def load_multiboot(memory: GuestMemory, kernel: MultibootKernel, kernel_path: str, cmdline: str, initrd: bytes | None, initrd_path: str | None) -> int:
    """Copy the kernel, command line, module, memory map and information
    structure into guest RAM; returns the information structure's address."""
    from .loader import memory_map

    for segment in kernel.segments:
        if segment.guest_addr < layout.HIGH_MEMORY:
            raise KernelImageError(f"{kernel_path}: Multiboot image at 0x{segment.guest_addr:x} lies below 1 MiB, where vmm keeps the boot information")
        if not memory.contains(segment.guest_addr, segment.memsz):
            raise ConfigError(f"{kernel_path} needs guest RAM up to 0x{segment.guest_addr + segment.memsz:x}; give the VM more memory (--mem)")
    if not memory.contains(kernel.entry, 1):
        raise KernelImageError(f"{kernel_path}: Multiboot entry point 0x{kernel.entry:x} is outside guest RAM")
    for segment in kernel.segments:
        memory.write(segment.guest_addr, segment.data)
        zeroes = segment.memsz - len(segment.data)
        if zeroes:
            memory.view(segment.guest_addr + len(segment.data), zeroes)[:] = bytes(zeroes)

    # The command line, then the module's string, in the command line area.
    strings = f"{kernel_path} {cmdline}".encode() + b"\0"
    module_string_addr = layout.CMDLINE_ADDR + len(strings)
    if initrd is not None:
        strings += (initrd_path or "").encode() + b"\0"
    if len(strings) > layout.CMDLINE_MAX or strings.count(b"\0") != (2 if initrd is not None else 1):
        raise ConfigError(f"kernel command line too long or malformed (max {layout.CMDLINE_MAX - 1} bytes with the kernel's path)")
    memory.write(layout.CMDLINE_ADDR, strings)
    memory.write(BOOT_LOADER_NAME_ADDR, BOOT_LOADER_NAME)

    flags = INFO_MEMORY | INFO_CMDLINE | INFO_MEMORY_MAP | INFO_BOOT_LOADER_NAME
    low_end = memory.regions[0].end
    mods_count = 0
    if initrd is not None:
        # at the top of low RAM, page-aligned (always: flag 0 may ask for it)
        start = (low_end - len(initrd)) & ~(PAGE - 1)
        if start < max(kernel.end, layout.CMDLINE_ADDR + layout.CMDLINE_MAX):
            raise ConfigError(f"initrd of {len(initrd)} bytes does not fit in guest RAM beside the kernel; give the VM more memory (--mem)")
        memory.write(start, initrd)
        memory.write(MODULES_ADDR, Module.pack(mod_start=start, mod_end=start + len(initrd), string=module_string_addr))
        flags |= INFO_MODULES
        mods_count = 1

    entries = memory_map(memory.size)
    table = b"".join(MmapEntry.pack(size=MmapEntry.size - 4, base_addr=a, length=s, type=t) for a, s, t in entries)
    memory.write(MMAP_ADDR, table)

    info = Info.pack(
        flags=flags,
        mem_lower=layout.EBDA_START // 1024,
        mem_upper=(low_end - layout.HIGH_MEMORY) // 1024,
        cmdline=layout.CMDLINE_ADDR,
        mods_count=mods_count,
        mods_addr=MODULES_ADDR if mods_count else 0,
        mmap_length=len(table),
        mmap_addr=MMAP_ADDR,
        boot_loader_name=BOOT_LOADER_NAME_ADDR,
    )
    memory.write(INFO_ADDR, info)
    return INFO_ADDR
