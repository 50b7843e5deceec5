"""Guest RAM checks shared by the virtio targets.

The contract: a device writes guest RAM only in the used rings of its
queues and in buffers the driver flagged device-writable, in chains it
consumed. ``writable_ranges`` finds those buffers independently of the
queue code (a superset: every WRITE-flagged descriptor reachable from the
consumed heads, whole indirect tables included), from a copy of RAM taken
before the device ran; ``check_writes`` compares RAM before and after.
"""

from __future__ import annotations

import contextlib
import ctypes
import struct

from vmm.memory import GuestMemory
from vmm.x86 import layout

_DESC = struct.Struct("<QIHH")
NEXT, WRITE, INDIRECT = 1, 2, 4
INDIRECT_ENTRIES_CAP = 4096  # a table longer than this is refused by every device anyway


class RamCopy:
    """A copy of every region of ``memory`` (the state before an operation)."""

    def __init__(self, memory: GuestMemory):
        self.spans = [(r.guest_addr, r.end, bytes(r.mapping)) for r in memory.regions]

    def read(self, addr: int, length: int) -> bytes | None:
        for start, end, data in self.spans:
            if start <= addr and addr + length <= end:
                return data[addr - start : addr - start + length]
        return None


def used_ring_range(queue) -> tuple[int, int]:
    """The used ring of a SplitQueue, avail_event included."""
    return queue.used_addr, 4 + 8 * queue.size + 2


def consumed_heads(ram: RamCopy, queue, first: int, last: int) -> list[int]:
    """Heads in the available ring slots [first, last) (free-running u16 indexes)."""
    count = (last - first) & 0xFFFF
    heads = []
    size = queue.size
    if not size or size & (size - 1):
        return heads
    for i in range(min(count, size * 2)):
        raw = ram.read(queue.avail_addr + 4 + 2 * ((first + i) % size), 2)
        if raw is not None:
            heads.append(int.from_bytes(raw, "little"))
    return heads


def writable_ranges(ram: RamCopy, desc_addr: int, size: int, heads) -> list[tuple[int, int]]:
    return descriptor_ranges(ram, desc_addr, size, heads)[0]


def descriptor_ranges(ram: RamCopy, desc_addr: int, size: int, heads) -> tuple[list, list]:
    """(device-writable, device-readable) buffers [(addr, length)] reachable from ``heads``.

    Each head and each indirect table is walked once: a looping chain through
    a long table must not cost the harness more than the device."""
    writable, readable = set(), set()
    tables = set()
    for head in set(heads):
        index, steps = head, 0
        while steps <= size and index < size:
            steps += 1
            raw = ram.read(desc_addr + 16 * index, 16)
            if raw is None:
                break
            addr, length, flags, nxt = _DESC.unpack(raw)
            if flags & INDIRECT:
                readable.add((addr, length))  # the table itself
                if (addr, length) not in tables:
                    tables.add((addr, length))
                    for i in range(min(length // 16, INDIRECT_ENTRIES_CAP)):
                        entry = ram.read(addr + 16 * i, 16)
                        if entry is None:
                            break
                        a, n, f, _ = _DESC.unpack(entry)
                        (writable if f & WRITE else readable).add((a, n))
            else:
                (writable if flags & WRITE else readable).add((addr, length))
            if not flags & NEXT:
                break
            index = nxt
    return sorted(writable), sorted(readable)


def rings(queue) -> list[tuple[int, int]]:
    """A SplitQueue's descriptor table, available ring and used ring."""
    return [(queue.desc_addr, 16 * queue.size), (queue.avail_addr, 6 + 2 * queue.size), used_ring_range(queue)]


def races_itself(writable, queues) -> bool:
    """Whether the driver made a queue's own rings device-writable buffers: the
    device's writes then change what it reads next (a status byte becomes the
    next chain's buffer address) or the used entries it wrote before (a status
    byte lands in an earlier entry's length), so neither where it writes nor
    what the used ring says afterwards follows from RAM before the notify. A
    driver racing itself; the device's writes stay in guest RAM regardless."""
    return any(overlaps(writable, rings(q)) for q in queues)


def overlaps(ranges_a, ranges_b) -> bool:
    return any(a < b + m and b < a + n for a, n in ranges_a if n for b, m in ranges_b if m)


def check_writes(memory: GuestMemory, before: RamCopy, allowed) -> None:
    """AssertionError naming the first byte that changed outside ``allowed`` [(addr, length)]."""
    for (start, end, old), region in zip(before.spans, memory.regions):
        new = bytes(region.mapping)
        if new == old:
            continue
        step = 256
        for off in range(0, len(old), step):
            if old[off : off + step] == new[off : off + step]:
                continue
            for i in range(off, min(off + step, len(old))):
                if old[i] != new[i]:
                    addr = start + i
                    if not any(a <= addr < a + n for a, n in allowed):
                        raise AssertionError(f"device wrote guest RAM at 0x{addr:x}, outside its used rings and writable buffers")


_ZEROES = bytes(16 << 20)
_ZERO_VIEW = memoryview(_ZEROES)
_libc = ctypes.CDLL(None)
_libc.memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_libc.memcmp.restype = ctypes.c_int
_ZEROES_ADDR = ctypes.cast(ctypes.c_char_p(_ZEROES), ctypes.c_void_p).value


def _address(mapping) -> int:
    """Where ``mapping`` starts in this process (the export is dropped at once so the mapping can still close)."""
    anchor = ctypes.c_char.from_buffer(mapping)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor


def check_zero_outside(memory: GuestMemory, allowed) -> None:
    """AssertionError unless every byte of fresh (all-zero) RAM outside ``allowed``
    [(addr, length)] is still zero: what a loader may write, it wrote only there.

    memcmp, not a Python comparison: a memoryview compares byte by byte, and
    this check ran ~17 ms a case, most of the loader targets' time."""
    for region in memory.regions:
        cuts = sorted(
            (max(a, region.guest_addr), min(a + n, region.end)) for a, n in allowed if a < region.end and a + n > region.guest_addr
        )
        base = _address(region.mapping)
        pos = region.guest_addr
        for start, end in [*cuts, (region.end, region.end)]:
            while pos < start:
                chunk = min(start - pos, len(_ZEROES))
                if _libc.memcmp(base + pos - region.guest_addr, _ZEROES_ADDR, chunk):
                    raise AssertionError(f"loader wrote guest RAM near 0x{pos:x}, outside what it placed there")
                pos += chunk
            pos = max(pos, end)


_SCRATCH: dict[int, GuestMemory] = {}


@contextlib.contextmanager
def zeroed_ram(size: int):
    """All-zero guest RAM of ``size`` bytes, one mapping reused (and zeroed
    again) from case to case: a fresh mapping's first touch of every page
    cost more than the loader under test."""
    memory = _SCRATCH.get(size)
    if memory is None:
        memory = _SCRATCH[size] = GuestMemory(layout.ram_regions(size))
    try:
        yield memory
    finally:
        for region in memory.regions:
            for off in range(0, region.size, len(_ZEROES)):
                n = min(len(_ZEROES), region.size - off)
                region.mapping[off : off + n] = _ZERO_VIEW[:n]
