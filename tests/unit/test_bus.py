import pytest

from vmm.devices.bus import NullDevice, PioBus


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
    assert bus.unhandled_total == 4
    assert sum("0x70" in r.message for r in caplog.records) == 1


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
