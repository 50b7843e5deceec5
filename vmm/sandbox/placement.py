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

import os

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


class SpanImages:
    """The laid-out span of programs this process runs again and again, each in a
    memfd that a guest's RAM maps copy-on-write instead of having the segments
    written into it (a glibc hello: 190 pages the host no longer copies; the
    guest faults in the few it touches). Made on a program's second run, so a
    one-off run (`vmm exec`) pays nothing; keyed by the host file's identity
    (path, device, inode, size, times), so a rebuilt program is a new entry."""

    MAX_ENTRIES = 16
    MAX_BYTES = 256 << 20

    def __init__(self):
        import threading
        from collections import OrderedDict

        self._lock = threading.Lock()
        self._images: OrderedDict = OrderedDict()  # identity -> (fd, start, end)
        self._seen: set = set()
        self._bytes = 0

    def fd_for(self, identity, image, start: int, end: int, loads) -> int | None:
        with self._lock:
            entry = self._images.get(identity)
            if entry is not None:
                self._images.move_to_end(identity)
                return entry[0] if entry[1:] == (start, end) else None
            if identity not in self._seen or end - start > self.MAX_BYTES:
                if len(self._seen) < 4096:
                    self._seen.add(identity)
                return None
            fd = os.memfd_create("vmm-program", os.MFD_CLOEXEC)
            try:
                os.ftruncate(fd, end - start)
                for addr, offset, length in loads:
                    if length:
                        os.pwrite(fd, image[offset : offset + length], addr - start)
            except OSError:
                os.close(fd)
                return None
            self._images[identity] = (fd, start, end)
            self._bytes += end - start
            while len(self._images) > 1 and (len(self._images) > self.MAX_ENTRIES or self._bytes > self.MAX_BYTES):
                old_fd, old_start, old_end = self._images.popitem(last=False)[1]
                os.close(old_fd)  # mappings made from it keep their pages
                self._bytes -= old_end - old_start
            return fd


_span_images = SpanImages()


def place_program(memory, program_addr: int, program_size: int, floor: int, limit: int,
                  identity: tuple | None = None) -> tuple[int, int]:
    """Write the segments of the program at ``program_addr`` in guest RAM to their
    load addresses when their span lies in [floor, limit) (RAM the waiting guest has
    never used: still zero); returns the span, or (0, 0) when nothing was placed. A program
    with an ``identity`` run before in this process is mapped from SpanImages."""
    image = memory.view(program_addr, program_size)
    try:
        plan = segments(image)
        if plan is None:
            return 0, 0
        start, end, loads = plan
        if start < floor or end > limit:
            return 0, 0
        fd = _span_images.fd_for(identity, image, start, end, loads) if identity else None
        if fd is not None and memory.map_file_over(start, end - start, fd):
            return start, end
        for addr, offset, length in loads:
            if length:
                memory.view_to_fill(addr, length)[:] = image[offset : offset + length]
        return start, end
    finally:
        image.release()
