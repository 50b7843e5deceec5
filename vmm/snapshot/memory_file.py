"""The memory file: guest RAM, regions one after another, sparse.

A full snapshot writes every page that may hold data (resident in the
mapping per mincore(2), or data in the file a restored VM maps) and is not
all zeros; the rest stays a hole. A diff snapshot writes only the pages
dirtied since the previous snapshot (KVM's dirty log for the guest's
writes, GuestMemory.host_dirty for the VMM's), zero or not, into a file
that is otherwise holes: ``merge_diff`` lays it onto the base's memory file
(as Firecracker's rebase-snap does) with SEEK_DATA/SEEK_HOLE.
"""

from __future__ import annotations

import mmap
import os

from .records import SnapshotError

PAGE = mmap.PAGESIZE
ZERO_PAGE = bytes(PAGE)


def _data_ranges(fd: int, start: int, end: int):
    """(offset, end) of the data extents of ``fd`` within [start, end)."""
    offset = start
    while offset < end:
        try:
            data = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after offset
            return
        if data >= end:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        yield data, hole
        offset = hole


def candidate_pages(memory) -> list[bytearray]:
    """Per region, one byte per page: 1 where the page may hold data."""
    from ..kvm.api import resident_pages

    result = []
    file_offset = 0
    for region in memory.regions:
        pages = bytearray(b & 1 for b in resident_pages(region.mapping, region.size))
        if memory.backing_fd is not None:
            for start, end in _data_ranges(memory.backing_fd, file_offset, file_offset + region.size):
                first, last = (start - file_offset) // PAGE, (end - file_offset + PAGE - 1) // PAGE
                pages[first:last] = b"\x01" * (last - first)
        result.append(pages)
        file_offset += region.size
    return result


def _runs(pages: bytearray):
    """(first, end) page runs of non-zero bytes in ``pages``."""
    i, n = 0, len(pages)
    while i < n:
        i = pages.find(1, i)
        if i < 0:
            return
        j = pages.find(0, i)
        j = n if j < 0 else j
        yield i, j
        i = j


def write_memory_file(memory, path: str, pages_by_region: list[bytearray], *, skip_zero: bool) -> int:
    """Write the marked pages of each region at their offsets; returns bytes written.

    The file is written beside ``path`` and renamed over it: a running VM may
    map the file being replaced (MAP_PRIVATE), and must keep seeing the old one.
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    written = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise SnapshotError(f"cannot write memory file {path}: {err.strerror}") from None
    try:
        os.ftruncate(fd, memory.size)
        file_offset = 0
        for region, pages in zip(memory.regions, pages_by_region):
            view = memoryview(region.mapping)
            try:
                if skip_zero:
                    for page in range(len(pages)):
                        if pages[page] and view[page * PAGE : (page + 1) * PAGE] == ZERO_PAGE:
                            pages[page] = 0
                for first, end in _runs(pages):
                    chunk = view[first * PAGE : end * PAGE]
                    offset = file_offset + first * PAGE
                    while chunk:
                        done = os.pwrite(fd, chunk, offset)
                        chunk, offset, written = chunk[done:], offset + done, written + done
            finally:
                view.release()
            file_offset += region.size
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except OSError as err:
        raise SnapshotError(f"cannot write memory file {path}: {err.strerror}") from None
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return written


def merge_diff(diff_path: str, base_path: str) -> int:
    """Copy the data extents of a diff snapshot's memory file onto the base
    snapshot's memory file (in place); returns the bytes copied.

    In place: a VM restored from the base maps it MAP_PRIVATE and would see
    its not-yet-copied pages change. Merge onto a copy (cp --sparse=always)
    while such VMs run."""
    copied = 0
    try:
        src = os.open(diff_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise SnapshotError(f"memory file {diff_path}: {err.strerror}") from None
    try:
        dst = os.open(base_path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as err:
        os.close(src)
        raise SnapshotError(f"memory file {base_path}: {err.strerror}") from None
    try:
        size = os.fstat(src).st_size
        if os.fstat(dst).st_size != size:
            raise SnapshotError(f"memory files {diff_path} and {base_path} differ in size: not one VM's snapshots")
        for start, end in _data_ranges(src, 0, size):
            offset = start
            while offset < end:
                n = os.copy_file_range(src, dst, min(end - offset, 1 << 30), offset, offset)
                if n <= 0:
                    raise SnapshotError(f"cannot copy {diff_path} onto {base_path}: short copy")
                offset += n
                copied += n
    except OSError as err:
        raise SnapshotError(f"cannot merge {diff_path} onto {base_path}: {err.strerror}") from None
    finally:
        os.close(src)
        os.close(dst)
    return copied
