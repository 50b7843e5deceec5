"""Port-I/O and MMIO buses: route each access to the device owning that range.

A device is any object with ``read(offset, size) -> int`` and
``write(offset, size, value)``, where offset is relative to the base the device
was registered at. Reads of nothing return all ones, as on a real bus.

Accesses that hit no device are counted. The guest chooses those addresses,
so everything kept about them is bounded: a total, plus a count and one log
line for each of the first MISS_ADDRESSES_ITEMISED distinct addresses.
"""

from __future__ import annotations

import bisect

from ..log import get_logger

log = get_logger("vmm.bus")

# Distinct missed addresses counted (and logged once) one by one; misses at any
# further address only add to the total. A guest reading successive unbacked
# addresses would otherwise grow host memory by ~100 bytes per address.
MISS_ADDRESSES_ITEMISED = 64

# Entries in the address -> device cache. The cache holds only addresses that hit
# a device, so its size is bounded by the devices' spans, but a large device
# (or many) could still let a guest sweep it into a big dict: past this many
# entries it starts again from empty, which costs one bisect per address.
HIT_CACHE_MAX = 4096


class Bus:
    def __init__(self, name: str):
        self.name = name
        self._starts: list[int] = []
        self._ranges: list[tuple[int, int, object]] = []  # (start, end, device), sorted
        self._cache: dict[int, tuple[object, int]] = {}  # address -> (device, base), <= HIT_CACHE_MAX
        self.unhandled: dict[int, int] = {}  # address -> misses, for the first itemised addresses only
        self.unhandled_total = 0  # every miss, itemised or not

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
                if len(self._cache) >= HIT_CACHE_MAX:
                    self._cache.clear()
                self._cache[addr] = hit = (device, start)
                return hit
        return None

    def _miss(self, addr: int, kind: str) -> None:
        self.unhandled_total += 1
        unhandled = self.unhandled
        count = unhandled.get(addr)
        if count is not None:
            unhandled[addr] = count + 1
        elif len(unhandled) < MISS_ADDRESSES_ITEMISED:
            unhandled[addr] = 1
            log.info("%s %s at 0x%x hits no device (ignored)", self.name, kind, addr)
            if len(unhandled) == MISS_ADDRESSES_ITEMISED:
                log.info(
                    "%s: %d distinct addresses missed; misses at further addresses are only counted",
                    self.name,
                    MISS_ADDRESSES_ITEMISED,
                )

    @property
    def unhandled_elsewhere(self) -> int:
        """Misses at addresses past the itemised ones (counted in the total only)."""
        return self.unhandled_total - sum(self.unhandled.values())

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


class PioBus(Bus):
    def __init__(self):
        super().__init__("port I/O")


class MmioBus(Bus):
    def __init__(self):
        super().__init__("MMIO")
        # Set when KVM queues some MMIO writes in a ring instead of exiting
        # (coalesced MMIO): the vCPU loop calls it after every KVM_RUN so the
        # devices see the guest's writes before the exit that follows them.
        self.drain_coalesced = None


class NullDevice:
    """Accepts and ignores every access (the POST code port 0x80, for example)."""

    def read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        pass
