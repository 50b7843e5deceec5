"""The guest physical address map of an x86 microVM."""

from __future__ import annotations

MIB = 1 << 20
GIB = 1 << 30

# Boot structures live in low memory, below the BIOS area, as Firecracker's do.
START_INFO_ADDR = 0x6000
MODLIST_ADDR = 0x6800
MEMMAP_ADDR = 0x7000
MEMMAP_MAX_ENTRIES = 128
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
VIRTIO_FIRST_IRQ = 5  # IRQ 4 is COM1

MIN_MEMORY_MIB = 2


def ram_regions(mem_size: int) -> list[tuple[int, int]]:
    """RAM as (guest_addr, size): one region below the MMIO hole, the rest above 4 GiB."""
    low = min(mem_size, MMIO_HOLE_START)
    regions = [(0, low)]
    if mem_size > low:
        regions.append((MMIO_HOLE_END, mem_size - low))
    return regions


def virtio_mmio_slot(index: int) -> tuple[int, int]:
    """(address, irq) of the index-th virtio-mmio device."""
    return VIRTIO_MMIO_BASE + index * VIRTIO_MMIO_SIZE, VIRTIO_FIRST_IRQ + index
