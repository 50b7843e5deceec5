"""The host's half of loading a program into a warm clone (guest/lx_mem.c, lx_elf.c).

The guest would copy each PT_LOAD segment of the program out of its bundle
into place, touching every page of the image twice; on this platform each
first touch of a page costs a few microseconds (1.4 ms for a glibc hello).
The host writes the segments into the clone's RAM instead, exactly where and
as the guest would (same checks, same span, same static-PIE base), and tells
the guest the span in the bundle header; the guest adopts it only if its own
loader computes the same span, and otherwise treats those pages as used RAM.
Anything unusual here (not ELF, dynamic, odd headers) places nothing: the
guest then refuses the program with its own message.
"""

from __future__ import annotations

PAGE = 4096
STATIC_PIE_BASE = 0x1000000  # guest/lx_elf.c: the first base tried for static-PIE
# Under the bundle the guest keeps its stack (8 MiB), the guard below it and a
# 1 MiB gap (guest/lx_mem.c); the span must stay clear of all of them.
BELOW_BUNDLE = 10 << 20

_ET_EXEC, _ET_DYN = 2, 3
_PT_INTERP = 3


def segments(image) -> tuple[int, int, list[tuple[int, int, int]]] | None:
    """(span start, span end, [(guest address, file offset, file size)]) of a static
    x86-64 program, as guest/lx_elf.c would load it; None for anything it would refuse."""
    from ..boot.elf import ADDRESS_LIMIT, ELF_MAGIC, ELFCLASS64, EM_X86_64, PT_LOAD, Elf64Header, Elf64ProgramHeader

    size = len(image)
    if size < Elf64Header.size:
        return None
    header = Elf64Header.unpack_from(image)
    if header.magic != ELF_MAGIC or header.elf_class != ELFCLASS64 or header.data != 1 or header.machine != EM_X86_64:
        return None
    phoff, phnum = header.phoff, header.phnum
    if header.type not in (_ET_EXEC, _ET_DYN) or header.phentsize != Elf64ProgramHeader.size or not phnum \
            or phoff > size or phnum * Elf64ProgramHeader.size > size - phoff:
        return None
    lo, hi, loads = None, 0, []
    for i in range(phnum):
        ph = Elf64ProgramHeader.unpack_from(image, phoff + i * Elf64ProgramHeader.size)
        if ph.type == _PT_INTERP:
            return None
        if ph.type != PT_LOAD or not ph.memsz:
            continue
        if ph.filesz > ph.memsz or ph.offset > size or ph.filesz > size - ph.offset or ph.vaddr + ph.memsz >= ADDRESS_LIMIT:
            return None
        lo = ph.vaddr if lo is None else min(lo, ph.vaddr)
        hi = max(hi, ph.vaddr + ph.memsz)
        loads.append((ph.vaddr, ph.offset, ph.filesz))
    if lo is None or hi <= lo:
        return None
    lo &= ~(PAGE - 1)
    bias = 0
    if header.type == _ET_DYN:
        if lo != 0:
            return None
        bias = STATIC_PIE_BASE
    end = -(-(hi + bias) // PAGE) * PAGE
    return lo + bias, end, [(vaddr + bias, offset, filesz) for vaddr, offset, filesz in loads]


def place_program(memory, program_addr: int, program_size: int, floor: int, limit: int) -> tuple[int, int]:
    """Write the segments of the program at ``program_addr`` in guest RAM to their
    load addresses when their span lies in [floor, limit) (RAM the waiting guest has
    never used: still zero); returns the span, or (0, 0) when nothing was placed.
    (From a program's second run its span is mapped instead: program_cache.py.)"""
    image = memory.view(program_addr, program_size)
    try:
        plan = segments(image)
        if plan is None:
            return 0, 0
        start, end, loads = plan
        if start < floor or end > limit:
            return 0, 0
        for addr, offset, length in loads:
            if length:
                memory.view_to_fill(addr, length)[:] = image[offset : offset + length]
        return start, end
    finally:
        image.release()
