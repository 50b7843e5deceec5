import pytest

import tracemalloc

from vmm.devices.bus import HIT_CACHE_MAX, MISS_ADDRESSES_ITEMISED, MmioBus, NullDevice, PioBus


class Recorder:
    def __init__(self):
        self.accesses = []

    def read(self, offset, size):
        self.accesses.append(("r", offset, size))
        return 0x40 + offset

    def write(self, offset, size, value):
        self.accesses.append(("w", offset, size, value))


def test_routes_to_the_owner_with_relative_offsets():
    bus, a, b = PioBus(), Recorder(), Recorder()
    bus.register(0x3F8, 8, a)
    bus.register(0xF4, 4, b)
    assert bus.read(0x3FD, 1) == 0x45
    bus.write(0xF4, 1, 7)
    bus.write(0x3F8, 1, ord("x"))
    assert a.accesses == [("r", 5, 1), ("w", 0, 1, ord("x"))]
    assert b.accesses == [("w", 0, 1, 7)]


def test_range_edges():
    bus, dev = PioBus(), Recorder()
    bus.register(0x100, 0x10, dev)
    bus.read(0x10F, 1)
    assert bus.read(0x110, 1) == 0xFF
    assert bus.read(0xFF, 2) == 0xFFFF
    assert dev.accesses == [("r", 0xF, 1)]


def test_unhandled_accesses_are_counted_and_logged_once(caplog):
    bus = PioBus()
    caplog.set_level("INFO", logger="vmm.bus")
    for _ in range(3):
        bus.write(0x70, 1, 0)
    assert bus.read(0x71, 4) == 0xFFFFFFFF
    assert bus.unhandled[0x70] == 3 and bus.unhandled[0x71] == 1
    assert bus.unhandled_total == 4 and bus.unhandled_elsewhere == 0
    assert sum("0x70" in r.message for r in caplog.records) == 1


def test_only_the_first_distinct_missed_addresses_are_itemised(caplog):
    bus = MmioBus()
    caplog.set_level("INFO", logger="vmm.bus")
    extra = 1000
    for addr in range(0xC0000000, 0xC0000000 + 8 * (MISS_ADDRESSES_ITEMISED + extra), 8):
        bus.read(addr, 4)
    bus.write(0xC0000000, 4, 1)  # an itemised address keeps counting
    bus.write(0xF0000000, 4, 1)  # a new one past the limit is only totalled
    assert len(bus.unhandled) == MISS_ADDRESSES_ITEMISED
    assert bus.unhandled[0xC0000000] == 2 and 0xF0000000 not in bus.unhandled
    assert bus.unhandled_total == MISS_ADDRESSES_ITEMISED + extra + 2
    assert bus.unhandled_elsewhere == extra + 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum("hits no device" in m for m in messages) == MISS_ADDRESSES_ITEMISED
    assert sum("only counted" in m for m in messages) == 1


def test_a_miss_sweep_does_not_grow_memory():
    bus = MmioBus()
    for addr in range(0xC0000000, 0xC0000000 + 8 * 5000, 8):  # warm up: past the itemised ones
        bus.read(addr, 4)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for addr in range(0xD0000000, 0xD0000000 + 8 * 100_000, 8):
            bus.read(addr, 4)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 4096, grown  # an unbounded counter grows ~10 MB here


def test_hit_cache_is_capped():
    bus, dev = MmioBus(), Recorder()
    bus.register(0x10000000, 1 << 20, dev)  # a device larger than the cache
    for addr in range(0x10000000, 0x10000000 + 3 * HIT_CACHE_MAX):
        bus.write(addr, 1, 0)
        assert len(bus._cache) <= HIT_CACHE_MAX
    assert bus.read(0x10000000 + 5, 1) == 0x45  # still routed after the cache starts over
    assert len(dev.accesses) == 3 * HIT_CACHE_MAX + 1
    assert bus.unhandled_total == 0


def test_overlapping_ranges_are_refused():
    bus = PioBus()
    bus.register(0x100, 0x10, NullDevice())
    for base, length in [(0x10F, 1), (0xF0, 0x11), (0x100, 1), (0xF0, 0x40)]:
        with pytest.raises(ValueError):
            bus.register(base, length, NullDevice())
    bus.register(0x110, 1, NullDevice())
    bus.register(0xFF, 1, NullDevice())


def test_null_device_ignores_writes():
    bus = PioBus()
    bus.register(0x80, 1, NullDevice())
    bus.write(0x80, 1, 0x55)
    assert bus.read(0x80, 1) == 0xFF
    assert bus.unhandled_total == 0
