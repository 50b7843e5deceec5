"""Guest RAM: anonymous mappings behind one bounds-checked object.

Nothing else in the VMM indexes the mappings. Every guest-supplied address goes
through :meth:`GuestMemory.view` (or a helper built on it), which refuses any
range that is not wholly inside one RAM region, so a hostile guest can never
make the VMM touch host memory outside its RAM.
"""

from __future__ import annotations

import mmap
import os

from .errors import GuestMemoryError
from .record import record

_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
_MAP_FIXED = 0x10
HUGE_PAGE = 2 << 20
# Blobs the VMM writes whole (a sandbox's input files, an initrd, a kernel)
# from this size go into transparent huge pages: the guest then reads them
# ~3x faster here (64 MiB: 3.5 -> 12 GB/s, native speed). Only there: huge
# pages everywhere would cost each small VM ~5 MiB more RSS.
HUGE_WRITE_MIN = 4 << 20
# Smaller blobs from this size have their pages faulted in by one madvise
# (MADV_POPULATE_WRITE, Linux 5.14) rather than one fault a page: ~40% less
# time to write them (0.42 -> 0.25 ms for 760 KB into a snapshot clone here).
POPULATE_MIN = 64 << 10
_MADV_POPULATE_WRITE = 23


class MemoryRegion(record("MemoryRegion", "guest_addr size mapping")):
    __slots__ = ()

    @property
    def end(self) -> int:
        return self.guest_addr + self.size


class GuestMemory:
    """Guest physical memory made of non-overlapping, page-aligned regions."""

    def __init__(self, layout: list[tuple[int, int]], backing_fd: int | None = None):
        """``layout`` is a list of ``(guest_addr, size)``; each gets its own mapping.

        With ``backing_fd`` (a snapshot's memory file, the regions one after
        another) each region maps the file MAP_PRIVATE: pages load lazily and
        copy on write, so clones of one snapshot share what they do not change.
        """
        regions = []
        file_offset = 0
        for guest_addr, size in sorted(layout):
            if size <= 0 or guest_addr % mmap.PAGESIZE or size % mmap.PAGESIZE:
                raise ValueError(f"bad RAM region 0x{guest_addr:x}+0x{size:x}")
            if regions and guest_addr < regions[-1].end:
                raise ValueError("overlapping RAM regions")
            if backing_fd is None:
                mapping = mmap.mmap(
                    -1,
                    size,
                    flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE,
                    prot=mmap.PROT_READ | mmap.PROT_WRITE,
                )
            else:
                mapping = mmap.mmap(
                    backing_fd, size, flags=mmap.MAP_PRIVATE | _MAP_NORESERVE,
                    prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=file_offset,
                )
            file_offset += size
            regions.append(MemoryRegion(guest_addr, size, mapping))
        # The snapshot file mapped (a dup: closed with the memory), for finding its data extents.
        self.backing_fd = None if backing_fd is None else os.dup(backing_fd)
        # Pages the VMM hands out views of, while a diff snapshot needs them
        # (KVM's dirty log sees only the guest's own writes): one byte per page.
        self.host_dirty: bytearray | None = None
        self.regions: tuple[MemoryRegion, ...] = tuple(regions)
        self._views = tuple(memoryview(r.mapping) for r in regions)
        # (start, end, view) per region: the bounds check runs on every guest access
        self._spans = tuple((r.guest_addr, r.end, v) for r, v in zip(regions, self._views))
        self._first_pages = {}
        page = 0
        for r in regions:
            self._first_pages[r.guest_addr] = page
            page += r.size // mmap.PAGESIZE

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
                    if self.host_dirty is not None:
                        self._mark_dirty(start, addr, length)
                    return view[addr - start : addr - start + length]
        raise self._outside(addr, length)

    def _mark_dirty(self, start: int, addr: int, length: int) -> None:
        """Record the pages of a view (read or write: the view may be written)."""
        first = self._first_pages[start] + ((addr - start) >> 12)
        last = self._first_pages[start] + ((addr - start + max(length, 1) - 1) >> 12)
        self.host_dirty[first : last + 1] = b"\x01" * (last + 1 - first)

    def read(self, addr: int, length: int) -> bytes:
        return bytes(self.view(addr, length))

    def write(self, addr: int, data) -> None:
        data = memoryview(data).cast("B")
        self.view_to_fill(addr, len(data))[:] = data

    def view_to_fill(self, addr: int, length: int) -> memoryview:
        """view(), for a blob the VMM is about to write whole (its old bytes do not
        matter): from HUGE_WRITE_MIN bytes, the whole huge pages inside it become
        transparent huge pages, fresh anonymous ones where RAM is a snapshot's file."""
        view = self.view(addr, length)
        if POPULATE_MIN <= length < HUGE_WRITE_MIN:
            self._populate(addr, length)
        elif length >= HUGE_WRITE_MIN:
            for region in self.regions:
                start = max(addr, region.guest_addr)
                end = min(addr + length, region.end)
                first = -(-(start - region.guest_addr) // HUGE_PAGE) * HUGE_PAGE
                last = (end - region.guest_addr) // HUGE_PAGE * HUGE_PAGE
                if last > first and not self._huge_pages(region.mapping, first, last - first):
                    break  # no THP here: 4 KiB pages, slower guest reads, still right
        return view

    def map_file_over(self, addr: int, length: int, fd: int, offset: int = 0) -> bool:
        """Make [addr, addr+length) (page-aligned, in one region) a private copy-on-write
        mapping of ``length`` bytes of ``fd`` from ``offset`` (page-aligned): its pages
        are shared with the file's until written; with ``fd`` -1, fresh zeroed
        anonymous memory. False (RAM unchanged) where that cannot be done."""
        if (addr | length | offset) % mmap.PAGESIZE or length <= 0 or offset < 0:
            return False
        for region in self.regions:
            if region.guest_addr <= addr and addr + length <= region.end:
                if self.host_dirty is not None:
                    self._mark_dirty(region.guest_addr, addr, length)
                try:
                    _map_over(region.mapping, addr - region.guest_addr, length, fd, offset)
                except (OSError, ValueError, TypeError):
                    return False
                return True
        return False

    def _populate(self, addr: int, length: int) -> None:
        for region in self.regions:
            if region.guest_addr <= addr and addr + length <= region.end:
                first = (addr - region.guest_addr) & ~(mmap.PAGESIZE - 1)
                try:
                    region.mapping.madvise(_MADV_POPULATE_WRITE, first, addr + length - region.guest_addr - first)
                except (OSError, ValueError):
                    pass  # an older kernel: the writes fault the pages in
                return

    def _huge_pages(self, mapping, offset: int, length: int) -> bool:
        try:
            if self.backing_fd is not None:
                # A file's private pages stay 4 KiB: put anonymous memory in their place
                # (KVM follows the mapping change; the caller overwrites every byte).
                _map_over(mapping, offset, length)
            mapping.madvise(mmap.MADV_HUGEPAGE, offset, length)
            return True
        except (OSError, AttributeError, ValueError):
            return False

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
        if self.backing_fd is not None:
            os.close(self.backing_fd)
            self.backing_fd = None


def _map_over(mapping: mmap.mmap, offset: int, length: int, fd: int = -1, file_offset: int = 0) -> None:
    """Replace [offset, offset+length) of ``mapping``, in place, by a private mapping
    of ``fd`` from ``file_offset``, or by zeroed anonymous memory (fd -1). Through the
    cffi module: ctypes would cost every vCPU thread an import before its filter."""
    from .kvm._kvm_cffi import ffi, lib

    if offset < 0 or length <= 0 or offset + length > len(mapping):
        raise ValueError("range outside the mapping")
    base = ffi.from_buffer(mapping)
    try:
        rc = lib.vmm_map_over(base + offset, length, fd, file_offset)
    finally:
        ffi.release(base)  # the export would keep the mmap from closing
    if rc < 0:
        raise OSError(-rc, f"mmap MAP_FIXED: {os.strerror(-rc)}")
