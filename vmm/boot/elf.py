"""ELF kernel loading for PVH boot.

Declares the ELF header, program header and note layouts, checks everything
against the file size and guest RAM before copying, and finds the Xen PVH
entry note (XEN_ELFNOTE_PHYS32_ENTRY).
"""

from __future__ import annotations

import struct
from collections import namedtuple

from ..binary import Layout
from ..errors import KernelImageError

ELF_MAGIC = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
EM_386, EM_X86_64 = 3, 62
PT_LOAD, PT_NOTE = 1, 4
XEN_ELFNOTE_PHYS32_ENTRY = 18

_IDENT = "magic:4s elf_class:B data:B ident_version:B pad:9s"
_HEADER_REST = "flags:I ehsize:H phentsize:H phnum:H shentsize:H shnum:H shstrndx:H"
Elf64Header = Layout("Elf64Header", f"{_IDENT} type:H machine:H version:I entry:Q phoff:Q shoff:Q {_HEADER_REST}")
Elf32Header = Layout("Elf32Header", f"{_IDENT} type:H machine:H version:I entry:I phoff:I shoff:I {_HEADER_REST}")
Elf64ProgramHeader = Layout(
    "Elf64ProgramHeader", "type:I flags:I offset:Q vaddr:Q paddr:Q filesz:Q memsz:Q align:Q"
)
Elf32ProgramHeader = Layout(
    "Elf32ProgramHeader", "type:I offset:I vaddr:I paddr:I filesz:I memsz:I flags:I align:I"
)
NoteHeader = Layout("NoteHeader", "namesz:I descsz:I type:I")

# file contents at guest_addr; memsz - len(data) bytes of zeroes follow
Segment = namedtuple("Segment", "guest_addr data memsz")


class KernelImage:
    __slots__ = ("pvh_entry", "segments")

    def __init__(self, pvh_entry: int, segments: tuple[Segment, ...]):
        self.pvh_entry = pvh_entry
        self.segments = segments

    @property
    def lowest(self) -> int:
        return min(s.guest_addr for s in self.segments)

    @property
    def end(self) -> int:
        return max(s.guest_addr + s.memsz for s in self.segments)


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _find_pvh_entry(note_data: bytes) -> int | None:
    offset = 0
    while offset + NoteHeader.size <= len(note_data):
        note = NoteHeader.unpack_from(note_data, offset)
        name_start = offset + NoteHeader.size
        desc_start = name_start + _align4(note.namesz)
        desc_end = desc_start + note.descsz
        if desc_end > len(note_data):
            return None
        name = note_data[name_start : name_start + note.namesz].rstrip(b"\0")
        if name == b"Xen" and note.type == XEN_ELFNOTE_PHYS32_ENTRY and note.descsz in (4, 8):
            return int.from_bytes(note_data[desc_start:desc_end], "little")
        offset = desc_start + _align4(note.descsz)
    return None


def parse_kernel(image: bytes, path: str = "kernel") -> KernelImage:
    """Parse a PVH-bootable ELF; raises KernelImageError with a one-line reason."""
    if image[:4] != ELF_MAGIC:
        raise KernelImageError(f"{path}: not an ELF file")
    try:
        elf_class = image[4]
        if elf_class == ELFCLASS64:
            header, phdr = Elf64Header.unpack_from(image), Elf64ProgramHeader
        elif elf_class == ELFCLASS32:
            header, phdr = Elf32Header.unpack_from(image), Elf32ProgramHeader
        else:
            raise KernelImageError(f"{path}: unknown ELF class {elf_class}")
        if header.data != 1 or header.machine not in (EM_X86_64, EM_386):
            raise KernelImageError(f"{path}: not a little-endian x86 ELF")
        if header.phentsize != phdr.size or header.phnum == 0:
            raise KernelImageError(f"{path}: ELF has no usable program headers")
        table_end = header.phoff + header.phnum * header.phentsize
        if table_end > len(image):
            raise KernelImageError(f"{path}: ELF program headers lie past the end of the file")
        segments, entry = [], None
        for i in range(header.phnum):
            ph = phdr.unpack_from(image, header.phoff + i * header.phentsize)
            if ph.type not in (PT_LOAD, PT_NOTE):
                continue
            if ph.offset + ph.filesz > len(image):
                raise KernelImageError(f"{path}: ELF segment {i} lies past the end of the file")
            data = image[ph.offset : ph.offset + ph.filesz]
            if ph.type == PT_NOTE:
                entry = entry if entry is not None else _find_pvh_entry(data)
            elif ph.memsz:
                if ph.filesz > ph.memsz:
                    raise KernelImageError(f"{path}: ELF segment {i} has filesz > memsz")
                segments.append(Segment(ph.paddr, data, ph.memsz))
    except struct.error:
        raise KernelImageError(f"{path}: truncated or malformed ELF file") from None
    if entry is None:
        raise KernelImageError(
            f"{path}: ELF has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); "
            "build the kernel with PVH support"
        )
    if not segments:
        raise KernelImageError(f"{path}: ELF has no loadable segments")
    return KernelImage(entry, tuple(segments))


def load_kernel(path: str) -> KernelImage:
    try:
        with open(path, "rb") as f:
            image = f.read()
    except FileNotFoundError:
        raise KernelImageError(f"kernel file not found: {path}") from None
    except IsADirectoryError:
        raise KernelImageError(f"kernel path is a directory: {path}") from None
    except OSError as err:
        raise KernelImageError(f"cannot read kernel {path}: {err.strerror}") from None
    return parse_kernel(image, path)
