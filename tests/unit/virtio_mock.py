"""Test helpers: a driver-side split queue in fake guest RAM, and a fake driver.

MockQueue plays the driver's half of a split virtqueue: it writes any
descriptor table and available ring a test wants (well-formed or not) and
reads the used ring back. MockDriver negotiates through the virtio-mmio
registers like a guest driver would.
"""

from __future__ import annotations

import struct

from vmm.devices.virtio import constants as c
from vmm.errors import GuestMemoryError
from vmm.memory import GuestMemory

NEXT = c.VIRTQ_DESC_F_NEXT
WRITE = c.VIRTQ_DESC_F_WRITE
INDIRECT = c.VIRTQ_DESC_F_INDIRECT


class RecordingMemory(GuestMemory):
    """GuestMemory that remembers every range the device asked to view."""

    def __init__(self, layout):
        super().__init__(layout)
        self.granted: list[tuple[int, int]] = []
        self.refused: list[tuple[int, int]] = []

    def view(self, addr, length):
        try:
            v = super().view(addr, length)
        except GuestMemoryError:
            self.refused.append((addr, length))
            raise
        self.granted.append((addr, length))
        return v

    def in_ram(self, addr: int, length: int) -> bool:
        return any(r.guest_addr <= addr and addr + length <= r.end for r in self.regions)

    def snapshot(self) -> list[bytes]:
        return [bytes(r.mapping) for r in self.regions]


def pack_desc(addr: int, length: int, flags: int = 0, next_: int = 0) -> bytes:
    return struct.pack("<QIHH", addr & (2**64 - 1), length & 0xFFFFFFFF, flags & 0xFFFF, next_ & 0xFFFF)


class MockQueue:
    """Driver view of one split queue laid out in ``memory``."""

    def __init__(self, memory: GuestMemory, size: int, desc_addr: int, avail_addr: int, used_addr: int):
        self.memory = memory
        self.size = size
        self.desc_addr = desc_addr
        self.avail_addr = avail_addr
        self.used_addr = used_addr
        self.avail_idx = 0
        self.next_free = 0  # next descriptor index add_chain() uses

    @classmethod
    def at(cls, memory: GuestMemory, base: int, size: int) -> "MockQueue":
        """Descriptor table at ``base``, then avail ring, then used ring (4-aligned)."""
        desc = base
        avail = desc + 16 * size
        used = (avail + 6 + 2 * size + 3) & ~3
        return cls(memory, size, desc, avail, used)

    @property
    def end(self) -> int:
        return self.used_addr + 6 + 8 * self.size

    # -- driver writes ---------------------------------------------------------

    def write_desc(self, index: int, addr: int, length: int, flags: int = 0, next_: int = 0) -> None:
        self.memory.write(self.desc_addr + 16 * index, pack_desc(addr, length, flags, next_))

    def write_table(self, table_addr: int, descs) -> None:
        """An indirect table: ``descs`` is a list of (addr, len, flags, next)."""
        self.memory.write(table_addr, b"".join(pack_desc(*d) for d in descs))

    def publish(self, head: int) -> None:
        """Put ``head`` in the next avail slot and bump avail.idx."""
        self.memory.write_int(self.avail_addr + 4 + 2 * (self.avail_idx % self.size), 2, head)
        self.set_avail_idx(self.avail_idx + 1)

    def set_avail_idx(self, idx: int) -> None:
        self.avail_idx = idx & 0xFFFF
        self.memory.write_int(self.avail_addr + 2, 2, self.avail_idx)

    def set_avail_flags(self, flags: int) -> None:
        self.memory.write_int(self.avail_addr, 2, flags)

    def set_used_event(self, idx: int) -> None:
        self.memory.write_int(self.avail_addr + 4 + 2 * self.size, 2, idx)

    def add_chain(self, buffers, indirect_at: int | None = None) -> int:
        """Chain ``buffers`` [(addr, len, writable)] and make it available; return head.

        With ``indirect_at``, the chain goes into an indirect table there and one
        queue descriptor points at it.
        """
        flags = [(WRITE if w else 0) | (NEXT if i < len(buffers) - 1 else 0) for i, (_, _, w) in enumerate(buffers)]
        if indirect_at is not None:
            self.write_table(indirect_at, [(a, n, f, i + 1) for i, ((a, n, _), f) in enumerate(zip(buffers, flags))])
            head = self.next_free
            self.write_desc(head, indirect_at, 16 * len(buffers), INDIRECT)
            self.next_free = (head + 1) % self.size
        else:
            indexes = [(self.next_free + i) % self.size for i in range(len(buffers))]
            for i, ((addr, length, _), f) in enumerate(zip(buffers, flags)):
                nxt = indexes[i + 1] if i + 1 < len(indexes) else 0
                self.write_desc(indexes[i], addr, length, f, nxt)
            head = indexes[0]
            self.next_free = (indexes[-1] + 1) % self.size
        self.publish(head)
        return head

    # -- driver reads ------------------------------------------------------------

    @property
    def used_idx(self) -> int:
        return self.memory.read_int(self.used_addr + 2, 2)

    def used(self, i: int) -> tuple[int, int]:
        """(id, len) of used ring entry ``i`` (free-running index)."""
        off = self.used_addr + 4 + 8 * (i % self.size)
        return self.memory.read_int(off, 4), self.memory.read_int(off + 4, 4)

    @property
    def avail_event(self) -> int:
        return self.memory.read_int(self.used_addr + 4 + 8 * self.size, 2)


class MockDriver:
    """Talks to a VirtioMmioTransport through its registers, as a guest would."""

    def __init__(self, transport):
        self.t = transport

    def rd(self, offset: int) -> int:
        return self.t.read(offset, 4)

    def wr(self, offset: int, value: int) -> None:
        self.t.write(offset, 4, value)

    @property
    def status(self) -> int:
        return self.rd(c.MMIO_STATUS)

    def device_features(self) -> int:
        self.wr(c.MMIO_DEVICE_FEATURES_SEL, 0)
        low = self.rd(c.MMIO_DEVICE_FEATURES)
        self.wr(c.MMIO_DEVICE_FEATURES_SEL, 1)
        return low | self.rd(c.MMIO_DEVICE_FEATURES) << 32

    def write_features(self, features: int) -> None:
        for sel in (0, 1):
            self.wr(c.MMIO_DRIVER_FEATURES_SEL, sel)
            self.wr(c.MMIO_DRIVER_FEATURES, (features >> (32 * sel)) & 0xFFFFFFFF)

    def negotiate(self, features: int | None = None, mask: int = ~0) -> bool:
        """Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK; True if accepted."""
        self.wr(c.MMIO_STATUS, 0)
        self.wr(c.MMIO_STATUS, c.STATUS_ACKNOWLEDGE)
        self.wr(c.MMIO_STATUS, c.STATUS_ACKNOWLEDGE | c.STATUS_DRIVER)
        if features is None:
            features = self.device_features() & mask
        self.write_features(features)
        self.wr(c.MMIO_STATUS, self.status | c.STATUS_FEATURES_OK)
        return bool(self.status & c.STATUS_FEATURES_OK)

    def setup_queue(self, index: int, q: MockQueue) -> None:
        self.wr(c.MMIO_QUEUE_SEL, index)
        assert self.rd(c.MMIO_QUEUE_READY) == 0
        assert self.rd(c.MMIO_QUEUE_NUM_MAX) >= q.size
        self.wr(c.MMIO_QUEUE_NUM, q.size)
        for low, addr in (
            (c.MMIO_QUEUE_DESC_LOW, q.desc_addr),
            (c.MMIO_QUEUE_DRIVER_LOW, q.avail_addr),
            (c.MMIO_QUEUE_DEVICE_LOW, q.used_addr),
        ):
            self.wr(low, addr & 0xFFFFFFFF)
            self.wr(low + 4, addr >> 32)
        self.wr(c.MMIO_QUEUE_READY, 1)

    def start(self, queues: list[MockQueue], features: int | None = None, mask: int = ~0) -> None:
        """The full handshake (3.1.1) ending in DRIVER_OK."""
        assert self.rd(c.MMIO_MAGIC_VALUE) == c.MMIO_MAGIC
        assert self.rd(c.MMIO_VERSION) == 2
        assert self.negotiate(features, mask), "device refused features"
        for i, q in enumerate(queues):
            self.setup_queue(i, q)
        self.wr(c.MMIO_STATUS, self.status | c.STATUS_DRIVER_OK)
        assert self.status & c.STATUS_DRIVER_OK

    def notify(self, index: int = 0) -> None:
        self.wr(c.MMIO_QUEUE_NOTIFY, index)

    def ack_interrupts(self) -> int:
        pending = self.rd(c.MMIO_INTERRUPT_STATUS)
        self.wr(c.MMIO_INTERRUPT_ACK, pending)
        return pending


class InterruptLine:
    """The transport's interrupt callback: records calls, tracks the level."""

    def __init__(self):
        self.calls: list[bool] = []

    def __call__(self, level: bool) -> None:
        self.calls.append(level)

    @property
    def raised(self) -> int:
        return self.calls.count(True)

    @property
    def level(self) -> bool:
        return bool(self.calls) and self.calls[-1]
