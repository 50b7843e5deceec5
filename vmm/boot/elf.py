"""ELF kernel loading for PVH boot.

Declares the ELF header, program header and note layouts, checks everything
against the file size and guest RAM before copying, and finds the Xen PVH
entry note (XEN_ELFNOTE_PHYS32_ENTRY).
"""

from __future__ import annotations

import struct

from ..binary import Layout
from ..errors import KernelImageError, NoPvhNoteError
from ..record import record

ELF_MAGIC = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
EM_386, EM_X86_64 = 3, 62
PT_LOAD, PT_NOTE = 1, 4
XEN_ELFNOTE_PHYS32_ENTRY = 18
XEN_ELFNOTE_GUEST_OS = 6  # "linux" in a Linux vmlinux: such a kernel gets ACPI tables

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
Segment = record("Segment", "guest_addr data memsz")

ADDRESS_LIMIT = 1 << 64
PVH_ENTRY_LIMIT = 1 << 32  # the PVH entry runs in 32-bit protected mode
NOTES_MAX = 1 << 20  # PT_NOTE segments read in search of the PVH note; real ones are tiny


class KernelImage:
    __slots__ = ("pvh_entry", "segments", "guest_os")

    def __init__(self, pvh_entry: int, segments: tuple[Segment, ...], guest_os: bytes | None = None):
        self.pvh_entry = pvh_entry
        self.segments = segments
        self.guest_os = guest_os  # the XEN_ELFNOTE_GUEST_OS string, if any

    @property
    def lowest(self) -> int:
        return min(s.guest_addr for s in self.segments)

    @property
    def end(self) -> int:
        return max(s.guest_addr + s.memsz for s in self.segments)


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _find_pvh_entry(note_data: bytes) -> int | None:
    desc = _find_xen_note(note_data, XEN_ELFNOTE_PHYS32_ENTRY)
    return int.from_bytes(desc, "little") if desc is not None and len(desc) in (4, 8) else None


def _find_xen_note(note_data: bytes, note_type: int | None, owner: bytes = b"Xen") -> bytes | None:
    """The first note of ``owner`` with ``note_type`` (any type when None)."""
    offset = 0
    while offset + NoteHeader.size <= len(note_data):
        note = NoteHeader.unpack_from(note_data, offset)
        name_start = offset + NoteHeader.size
        desc_start = name_start + _align4(note.namesz)
        desc_end = desc_start + note.descsz
        if desc_end > len(note_data):
            return None
        name = note_data[name_start : name_start + note.namesz].rstrip(b"\0")
        if name == owner and (note_type is None or note.type == note_type):
            return note_data[desc_start:desc_end]
        offset = desc_start + _align4(note.descsz)
    return None


def _parse(read, file_size: int, path: str, check_placement=None, read_data: bool = True) -> KernelImage:
    """Check the headers, then read the loadable data through ``read(offset, length)``.

    ``check_placement(segments, entry)`` (segments without data yet) runs
    before any segment data is read, so a kernel that cannot fit costs nothing.
    """
    if read(0, min(4, file_size)) != ELF_MAGIC:
        raise KernelImageError(f"{path}: not an ELF file")
    ident = read(0, min(Elf64Header.size, file_size))
    try:
        elf_class = ident[4]
        if elf_class == ELFCLASS64:
            header, phdr = Elf64Header.unpack_from(ident), Elf64ProgramHeader
        elif elf_class == ELFCLASS32:
            header, phdr = Elf32Header.unpack_from(ident), Elf32ProgramHeader
        else:
            raise KernelImageError(f"{path}: unknown ELF class {elf_class}")
        if header.data != 1 or header.machine not in (EM_X86_64, EM_386):
            raise KernelImageError(f"{path}: not a little-endian x86 ELF")
        if header.phentsize != phdr.size or header.phnum == 0:
            raise KernelImageError(f"{path}: ELF has no usable program headers")
        table_end = header.phoff + header.phnum * header.phentsize
        if table_end > file_size:
            raise KernelImageError(f"{path}: ELF program headers lie past the end of the file")
        table = read(header.phoff, table_end - header.phoff)
        loads, entry, guest_os = [], None, None
        for i in range(header.phnum):
            ph = phdr.unpack_from(table, i * header.phentsize)
            if ph.type not in (PT_LOAD, PT_NOTE):
                continue
            if ph.offset + ph.filesz > file_size:
                raise KernelImageError(f"{path}: ELF segment {i} lies past the end of the file")
            if ph.type == PT_NOTE:
                if entry is None and ph.filesz <= NOTES_MAX:
                    notes = read(ph.offset, ph.filesz)
                    entry = _find_pvh_entry(notes)
                    os_note = _find_xen_note(notes, XEN_ELFNOTE_GUEST_OS)
                    guest_os = os_note.rstrip(b"\0") if os_note is not None else guest_os
                    if guest_os is None and _find_xen_note(notes, None, owner=b"Linux") is not None:
                        # a kernel built without Xen has no GUEST_OS note, but kbuild
                        # gives every vmlinux notes owned by "Linux" (its build salt)
                        guest_os = b"linux"
            elif ph.memsz:
                if ph.filesz > ph.memsz:
                    raise KernelImageError(f"{path}: ELF segment {i} has filesz > memsz")
                if ph.paddr + ph.memsz > ADDRESS_LIMIT:
                    raise KernelImageError(
                        f"{path}: ELF segment {i} at 0x{ph.paddr:x} of 0x{ph.memsz:x} bytes wraps past 2^64"
                    )
                loads.append((i, ph))
    except (struct.error, IndexError):  # IndexError: a file that ends inside e_ident
        raise KernelImageError(f"{path}: truncated or malformed ELF file") from None
    if entry is None:
        raise NoPvhNoteError(
            f"{path}: ELF has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); "
            "build the kernel with PVH support"
        )
    if not loads:
        raise KernelImageError(f"{path}: ELF has no loadable segments")
    _check_layout(loads, entry, path)
    if check_placement is not None:
        check_placement(tuple(Segment(ph.paddr, None, ph.memsz) for _, ph in loads), entry)
    segments = tuple(Segment(ph.paddr, read(ph.offset, ph.filesz) if read_data else None, ph.memsz) for _, ph in loads)
    return KernelImage(entry, segments, guest_os)


def _check_layout(loads, entry: int, path: str) -> None:
    """Segments must not overlap, and the 32-bit PVH entry must lie in one of them."""
    ordered = sorted(loads, key=lambda item: item[1].paddr)
    for (i, a), (j, b) in zip(ordered, ordered[1:]):
        if a.paddr + a.memsz > b.paddr:
            raise KernelImageError(
                f"{path}: ELF segments {i} (0x{a.paddr:x}-0x{a.paddr + a.memsz:x}) and "
                f"{j} (0x{b.paddr:x}-0x{b.paddr + b.memsz:x}) overlap"
            )
    if entry >= PVH_ENTRY_LIMIT:
        raise KernelImageError(f"{path}: PVH entry 0x{entry:x} is at or above 4 GiB; the 32-bit PVH entry cannot reach it")
    if not any(ph.paddr <= entry < ph.paddr + ph.memsz for _, ph in loads):
        raise KernelImageError(f"{path}: PVH entry 0x{entry:x} lies outside every loadable segment")


def parse_kernel(image: bytes, path: str = "kernel", check_placement=None) -> KernelImage:
    """Parse a PVH-bootable ELF held in memory; raises KernelImageError with a one-line reason."""
    view = memoryview(image)
    return _parse(lambda offset, length: bytes(view[offset : offset + length]), len(image), path, check_placement)


def load_kernel(path: str, ram_size: int | None = None, read_data: bool = True) -> KernelImage:
    """Read a PVH ELF kernel from ``path``: only its headers, notes and loadable data.

    Segments are checked against guest RAM of ``ram_size`` bytes (default:
    the most any VM on this host can have) before their data is read. With
    ``read_data`` False the segments carry no data: a check, nothing more.
    """
    from .files import InputFile
    from .loader import check_kernel_placement, host_ram_size

    limit = ram_size if ram_size is not None else host_ram_size()

    def check_placement(segments, entry):
        check_kernel_placement(segments, entry, limit, path)

    with InputFile(path, "kernel", KernelImageError) as source:
        return _parse(source.read, source.size, path, check_placement, read_data)
