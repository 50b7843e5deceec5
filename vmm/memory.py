"""Guest RAM: anonymous mappings behind one bounds-checked object.

Nothing else in the VMM indexes the mappings. Every guest-supplied address goes
through :meth:`GuestMemory.view` (or a helper built on it), which refuses any
range that is not wholly inside one RAM region, so a hostile guest can never
make the VMM touch host memory outside its RAM.
"""

from __future__ import annotations

import mmap
from collections import namedtuple

from .errors import GuestMemoryError

_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)


class MemoryRegion(namedtuple("MemoryRegion", "guest_addr size mapping")):
    __slots__ = ()

    @property
    def end(self) -> int:
        return self.guest_addr + self.size


class GuestMemory:
    """Guest physical memory made of non-overlapping, page-aligned regions."""

    def __init__(self, layout: list[tuple[int, int]]):
        """``layout`` is a list of ``(guest_addr, size)``; each gets its own mapping."""
        regions = []
        for guest_addr, size in sorted(layout):
            if size <= 0 or guest_addr % mmap.PAGESIZE or size % mmap.PAGESIZE:
                raise ValueError(f"bad RAM region 0x{guest_addr:x}+0x{size:x}")
            if regions and guest_addr < regions[-1].end:
                raise ValueError("overlapping RAM regions")
            mapping = mmap.mmap(
                -1,
                size,
                flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
            )
            regions.append(MemoryRegion(guest_addr, size, mapping))
        self.regions: tuple[MemoryRegion, ...] = tuple(regions)
        self._views = tuple(memoryview(r.mapping) for r in regions)
        # (start, end, view) per region: the bounds check runs on every guest access
        self._spans = tuple((r.guest_addr, r.end, v) for r, v in zip(regions, self._views))

    @classmethod
    def from_bytes(cls, guest_addr: int, data: bytes) -> "GuestMemory":
        """A single region holding ``data`` (tests build fake guests this way)."""
        size = max(mmap.PAGESIZE, -(-len(data) // mmap.PAGESIZE) * mmap.PAGESIZE)
        mem = cls([(guest_addr, size)])
        mem.write(guest_addr, data)
        return mem

    @property
    def size(self) -> int:
        return sum(r.size for r in self.regions)

    @staticmethod
    def _outside(addr: int, length: int) -> GuestMemoryError:
        if length < 0 or addr < 0:
            return GuestMemoryError(f"bad guest memory range 0x{addr:x}+{length}")
        return GuestMemoryError(f"guest range 0x{addr:x}+0x{length:x} lies outside guest RAM")

    def contains(self, addr: int, length: int) -> bool:
        """Whether [addr, addr+length) lies wholly inside one RAM region."""
        return length >= 0 and addr >= 0 and any(
            start <= addr and addr + length <= end for start, end, _ in self._spans
        )

    def view(self, addr: int, length: int) -> memoryview:
        """A writable view of [addr, addr+length); raises GuestMemoryError if out of RAM."""
        if length >= 0 and addr >= 0:
            for start, end, view in self._spans:
                if start <= addr and addr + length <= end:
                    return view[addr - start : addr - start + length]
        raise self._outside(addr, length)

    def read(self, addr: int, length: int) -> bytes:
        return bytes(self.view(addr, length))

    def write(self, addr: int, data) -> None:
        data = memoryview(data).cast("B")
        self.view(addr, len(data))[:] = data

    def read_int(self, addr: int, size: int) -> int:
        return int.from_bytes(self.view(addr, size), "little")

    def write_int(self, addr: int, size: int, value: int) -> None:
        self.view(addr, size)[:] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def close(self) -> None:
        """Unmap guest RAM. A view still held elsewhere keeps its mapping alive until collected."""
        self._spans = ()
        for view in self._views:
            try:
                view.release()
            except BufferError:
                pass
        for region in self.regions:
            try:
                region.mapping.close()
            except BufferError:
                pass
        self._views = ()
