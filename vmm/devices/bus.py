"""Port-I/O and MMIO buses: route each access to the device owning that range.

A device is any object with ``read(offset, size) -> int`` and
``write(offset, size, value)``, where offset is relative to the base the device
was registered at. Accesses that hit no device are counted and logged once per
address; reads of nothing return all ones, as on a real bus.
"""

from __future__ import annotations

import bisect
from collections import Counter

from ..log import get_logger

log = get_logger("vmm.bus")


class Bus:
    def __init__(self, name: str):
        self.name = name
        self._starts: list[int] = []
        self._ranges: list[tuple[int, int, object]] = []  # (start, end, device), sorted
        self._cache: dict[int, tuple[object, int]] = {}  # address -> (device, base)
        self.unhandled: Counter[int] = Counter()

    def register(self, base: int, length: int, device) -> None:
        if length <= 0:
            raise ValueError("empty bus range")
        end = base + length
        i = bisect.bisect_right(self._starts, base)
        if (i > 0 and self._ranges[i - 1][1] > base) or (i < len(self._ranges) and self._ranges[i][0] < end):
            raise ValueError(f"{self.name} range 0x{base:x}+0x{length:x} overlaps another device")
        self._starts.insert(i, base)
        self._ranges.insert(i, (base, end, device))
        self._cache.clear()

    def _find(self, addr: int):
        hit = self._cache.get(addr)
        if hit is not None:
            return hit
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            start, end, device = self._ranges[i]
            if addr < end:
                self._cache[addr] = hit = (device, start)
                return hit
        return None

    def _miss(self, addr: int, kind: str) -> None:
        if addr not in self.unhandled:
            log.info("%s %s at 0x%x hits no device (ignored)", self.name, kind, addr)
        self.unhandled[addr] += 1

    def read(self, addr: int, size: int) -> int:
        hit = self._find(addr)
        if hit is None:
            self._miss(addr, "read")
            return (1 << (8 * size)) - 1
        device, base = hit
        return device.read(addr - base, size)

    def write(self, addr: int, size: int, value: int) -> None:
        hit = self._find(addr)
        if hit is None:
            self._miss(addr, "write")
            return
        device, base = hit
        device.write(addr - base, size, value)

    @property
    def unhandled_total(self) -> int:
        return sum(self.unhandled.values())


class PioBus(Bus):
    def __init__(self):
        super().__init__("port I/O")


class MmioBus(Bus):
    def __init__(self):
        super().__init__("MMIO")


class NullDevice:
    """Accepts and ignores every access (the POST code port 0x80, for example)."""

    def read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        pass
