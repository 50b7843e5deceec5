"""The guest physical address map of an x86 microVM."""

from __future__ import annotations

MIB = 1 << 20
GIB = 1 << 30

# Boot structures live in low memory, below the BIOS area, as Firecracker's do.
START_INFO_ADDR = 0x6000
MODLIST_ADDR = 0x6800
MEMMAP_ADDR = 0x7000
CMDLINE_ADDR = 0x20000
CMDLINE_MAX = 0x10000  # including the terminating NUL
COMMAND_LINE_SIZE = 2048  # what the guest keeps, NUL included (Linux x86 COMMAND_LINE_SIZE; the bundled guest too)
EBDA_START = 0x9FC00
HIGH_MEMORY = 1 * MIB  # kernels load at or above 1 MiB

# RAM below 4 GiB stops where the 32-bit MMIO hole starts; the rest goes above 4 GiB.
MMIO_HOLE_START = 3 * GIB
MMIO_HOLE_END = 4 * GIB
VIRTIO_MMIO_BASE = 0xD0000000
VIRTIO_MMIO_SIZE = 0x1000
# IRQs a device slot may take: the IOAPIC's 24 pins less the ones the PC
# platform gives fixed meanings (0 PIT, 1 and 12 i8042, 2 cascade, 3 COM2,
# 4 COM1, 8 RTC). Slots past 15 are reachable through the IOAPIC only (Linux
# uses it; the bundled guest's irqtest drives the 8259 PICs, pins 0-15).
DEVICE_IRQS = (5, 6, 7, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23)

MIN_MEMORY_MIB = 2


def ram_regions(mem_size: int) -> list[tuple[int, int]]:
    """RAM as (guest_addr, size): one region below the MMIO hole, the rest above 4 GiB."""
    low = min(mem_size, MMIO_HOLE_START)
    regions = [(0, low)]
    if mem_size > low:
        regions.append((MMIO_HOLE_END, mem_size - low))
    return regions


class DeviceSlots:
    """Hands out (MMIO address, IRQ) pairs for virtio-mmio devices, in order."""

    def __init__(self, irqs: tuple[int, ...] = DEVICE_IRQS):
        self._irqs = irqs
        self._used = 0

    @property
    def capacity(self) -> int:
        return len(self._irqs)

    def allocate(self, what: str) -> tuple[int, int]:
        from ..errors import ConfigError

        if self._used == len(self._irqs):
            raise ConfigError(f"too many devices: {what} needs a slot, and at most {len(self._irqs)} virtio devices fit (one IRQ each)")
        index = self._used
        self._used += 1
        return VIRTIO_MMIO_BASE + index * VIRTIO_MMIO_SIZE, self._irqs[index]
