"""The coalesced-MMIO ring replay (vmm/kvm/coalesced.py) on a ring built by hand."""

import mmap
import struct

from vmm.kvm.coalesced import RING_ENTRIES, CoalescedMmio

PAGE = mmap.PAGESIZE


class RecordingBus:
    def __init__(self):
        self.writes = []

    def write(self, addr, size, value):
        self.writes.append((addr, size, value))


def ring_with(entries, first=0, page_offset=2):
    """A vCPU-like map whose ring page holds ``entries`` (addr, len, data) from ``first`` on."""
    run_map = mmap.mmap(-1, (page_offset + 1) * PAGE)
    base = page_offset * PAGE
    index = first
    for addr, length, data in entries:
        struct.pack_into("<QII8s", run_map, base + 8 + (index % RING_ENTRIES) * 24, addr, length, 0, data)
        index = (index + 1) % RING_ENTRIES
    struct.pack_into("<II", run_map, base, first, index)
    return run_map, base


def test_writes_replayed_in_order_and_ring_emptied():
    run_map, base = ring_with([(0xD0000030, 4, (3).to_bytes(8, "little")), (0xD0000080, 4, (0x1234).to_bytes(8, "little")),
                               (0xD0000044, 1, b"\x01" + bytes(7))])
    bus = RecordingBus()
    CoalescedMmio(-1, run_map, 2, bus).drain()
    assert bus.writes == [(0xD0000030, 4, 3), (0xD0000080, 4, 0x1234), (0xD0000044, 1, 1)]
    first, last = struct.unpack_from("<II", run_map, base)
    assert first == last == 3


def test_wraps_around_the_end_of_the_ring():
    entries = [(0x1000 + i, 4, i.to_bytes(8, "little")) for i in range(5)]
    run_map, base = ring_with(entries, first=RING_ENTRIES - 2)
    bus = RecordingBus()
    CoalescedMmio(-1, run_map, 2, bus).drain()
    assert [w[2] for w in bus.writes] == [0, 1, 2, 3, 4]
    assert struct.unpack_from("<II", run_map, base) == (3, 3)


def test_empty_ring_and_nonsense_are_left_alone():
    run_map, base = ring_with([])
    bus = RecordingBus()
    CoalescedMmio(-1, run_map, 2, bus).drain()
    struct.pack_into("<II", run_map, base, 0, RING_ENTRIES + 7)  # 'last' out of range
    CoalescedMmio(-1, run_map, 2, bus).drain()
    assert bus.writes == []


def test_bad_lengths_skipped():
    run_map, _ = ring_with([(0x10, 0, bytes(8)), (0x20, 9, bytes(8)), (0x30, 2, b"\xff\xff" + bytes(6))])
    bus = RecordingBus()
    CoalescedMmio(-1, run_map, 2, bus).drain()
    assert bus.writes == [(0x30, 2, 0xFFFF)]


def test_closed_map_is_quiet():
    run_map, _ = ring_with([(0x10, 4, bytes(8))])
    ring = CoalescedMmio(-1, run_map, 2, RecordingBus())
    run_map.close()
    ring.drain()  # the VM is gone: nothing to do, no error
