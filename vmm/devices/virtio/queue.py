"""Split virtqueue, device side (virtio 1.x section 2.7).

The driver owns the descriptor table and the available ring, the device owns
the used ring; all three live in guest RAM and every byte of them is hostile
input. Every access goes through :class:`GuestMemory`, so a bad address is a
``GuestMemoryError``, never a host access outside guest RAM.

A malformed descriptor chain is still *returned* by :meth:`SplitQueue.pop`
(flagged invalid, with its head index) so the device can answer it with a used
entry: the driver gets its descriptors back and the queue does not stall. Only
a broken ring (the available index running ahead by more than the queue size)
raises :class:`QueueError`, which the transport turns into DEVICE_NEEDS_RESET.

Memory ordering: the driver runs on other CPUs. CPython executes our loads and
stores in program order and x86-64 (the only KVM target here) keeps stores in
order and loads in order, so "write the used element, then used.idx" needs no
barrier. A store followed by a load of another location *can* be reordered on
x86; where that matters (publishing avail_event / used idx and then reading the
driver's index or event) :func:`full_barrier` issues a locked instruction.
"""

from __future__ import annotations

import struct
import threading
from collections import namedtuple

from ...errors import GuestMemoryError, VmmError
from ...memory import GuestMemory
from .constants import (
    MAX_QUEUE_SIZE,
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
)

# 2.7.5 struct virtq_desc: addr u64, len u32, flags u16, next u16.
# 2.7.8 struct virtq_used_elem: id u32, len u32.
# Plain struct on the hot path (construct's parse was half of a 4 KiB request's cost).
_DESC = struct.Struct("<QIHH")
_USED_ELEM = struct.Struct("<II")
_U16 = struct.Struct("<H")
DESC_SIZE = _DESC.size
USED_ELEM_SIZE = _USED_ELEM.size

# Ring headers are flags u16 + idx u16, then the ring, then the event u16.
RING_HEADER = 4
MAX_CHAIN_BYTES = 0xFFFF_FFFF  # used.len is a u32


class VirtioError(VmmError):
    """Base of the typed errors a virtio transport catches at its boundary."""


class QueueError(VirtioError):
    """The driver broke the queue protocol; the device must be reset."""


class ChainError(VirtioError):
    """One descriptor chain is malformed (answered, not followed)."""


_barrier_lock = threading.Lock()


def full_barrier() -> None:
    """Order earlier stores before later loads (a locked cmpxchg on x86)."""
    with _barrier_lock:
        pass


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """2.7.10: True if the batch that moved used.idx from old_idx to new_idx
    filled entry event_idx, i.e. event_idx lies in [old_idx, new_idx) modulo 2^16."""
    return ((new_idx - event_idx - 1) & 0xFFFF) < ((new_idx - old_idx) & 0xFFFF)


class Buffer(namedtuple("Buffer", "addr length writable view")):
    """One guest buffer: its range, whether it is device-writable
    (VIRTQ_DESC_F_WRITE), and a view straight into guest RAM."""

    __slots__ = ()


class DescriptorChain:
    """The buffers of one request, or the reason the chain is malformed.

    An invalid chain keeps the buffers resolved before the fault (each inside
    guest RAM), so a device may still report a status in the last one.
    """

    __slots__ = ("head", "buffers", "error")

    def __init__(self, head: int, buffers: list[Buffer] | None = None, error: str | None = None):
        self.head = head
        self.buffers = [] if buffers is None else buffers
        self.error = error

    def __repr__(self) -> str:
        return f"DescriptorChain(head={self.head}, buffers={self.buffers!r}, error={self.error!r})"

    @property
    def valid(self) -> bool:
        return self.error is None

    @property
    def readable(self) -> list[Buffer]:
        return [b for b in self.buffers if not b.writable]

    @property
    def writable(self) -> list[Buffer]:
        return [b for b in self.buffers if b.writable]


class SplitQueue:
    """One split virtqueue as configured by the driver through the transport."""

    def __init__(self, memory: GuestMemory, size: int):
        self.memory = memory
        self.size = size  # the driver may lower it (QueueNum) before enabling
        self.desc_addr = 0
        self.avail_addr = 0
        self.used_addr = 0
        self.ready = False
        self.event_idx = False  # VIRTIO_RING_F_EVENT_IDX negotiated
        self.indirect = False  # VIRTIO_RING_F_INDIRECT_DESC negotiated
        self.next_avail = 0  # free-running u16: next avail ring slot to consume
        self.next_used = 0  # free-running u16: our copy of used.idx
        self._signalled_used: int | None = None  # used idx at the last interrupt check

    # -- configuration -----------------------------------------------------

    def validate(self) -> None:
        """Check size and ring areas (2.7 alignment and sizes); raise QueueError."""
        size = self.size
        if size <= 0 or size > MAX_QUEUE_SIZE or size & (size - 1):
            raise QueueError(f"queue size {size} is not a power of two <= {MAX_QUEUE_SIZE}")
        areas = (
            ("descriptor table", self.desc_addr, DESC_SIZE * size, 16),
            ("available ring", self.avail_addr, RING_HEADER + 2 * size + 2, 2),
            ("used ring", self.used_addr, RING_HEADER + USED_ELEM_SIZE * size + 2, 4),
        )
        for name, addr, length, align in areas:
            if addr % align:
                raise QueueError(f"{name} at 0x{addr:x} is not {align}-byte aligned")
            if not self.memory.contains(addr, length):
                raise QueueError(f"{name} 0x{addr:x}+0x{length:x} lies outside guest RAM")

    def enable(self) -> None:
        """QueueReady=1: validate, then start from index 0 (raises QueueError)."""
        self.validate()
        self.next_avail = 0
        self.next_used = 0
        self._signalled_used = None
        self.ready = True

    # -- ring fields ---------------------------------------------------------

    def _avail_flags(self) -> int:
        return self.memory.read_int(self.avail_addr, 2)

    def _avail_idx(self) -> int:
        return self.memory.read_int(self.avail_addr + 2, 2)

    def _used_event(self) -> int:
        return self.memory.read_int(self.avail_addr + RING_HEADER + 2 * self.size, 2)

    def pending(self) -> int:
        """How many chains the driver has made available that we have not popped."""
        count = (self._avail_idx() - self.next_avail) & 0xFFFF
        if count > self.size:
            raise QueueError(
                f"available index ran {count} entries ahead of a queue of {self.size}"
            )
        return count

    # -- consuming requests --------------------------------------------------

    def pop(self) -> DescriptorChain | None:
        """The next available chain (possibly flagged invalid), or None.

        Raises QueueError (ring broken) or GuestMemoryError (rings moved out
        of RAM, which validate() rules out) for the transport to handle.
        """
        if not self.ready or self.pending() == 0:
            return None
        return self._take(*self._ring_and_table())

    def pop_all(self) -> list[DescriptorChain]:
        """Every available chain, as pop() would return them one by one.

        Reads the available index and maps the descriptor table once for the
        whole batch: the per-request cost is what limits small-request IOPS.
        """
        if not self.ready:
            return []
        count = self.pending()
        if not count:
            return []
        ring, table = self._ring_and_table()
        return [self._take(ring, table) for _ in range(count)]

    def _ring_and_table(self) -> tuple[memoryview, memoryview]:
        """The available ring's entries and the descriptor table, each bounds-checked once."""
        return (
            self.memory.view(self.avail_addr + RING_HEADER, 2 * self.size),
            self.memory.view(self.desc_addr, DESC_SIZE * self.size),
        )

    def _take(self, ring: memoryview, table: memoryview) -> DescriptorChain:
        """Consume the next available entry and resolve its chain (flagged invalid if bad)."""
        head = _U16.unpack_from(ring, 2 * (self.next_avail % self.size))[0]
        self.next_avail = (self.next_avail + 1) & 0xFFFF
        chain = DescriptorChain(head)
        try:
            self._resolve(chain, table)
        except (ChainError, GuestMemoryError) as err:
            chain.error = f"descriptor chain {head}: {err}"
        return chain

    def _resolve(self, chain: DescriptorChain, table: memoryview) -> None:
        """Follow the chain into chain.buffers; raise ChainError at the first fault."""
        count = self.size
        index = chain.head
        if index >= count:
            raise ChainError(f"head index {index} >= queue size {count}")
        ttl = count  # a chain visits each descriptor at most once: this ends loops
        in_indirect = False
        total = 0
        seen_writable = False
        while True:
            if ttl == 0:
                raise ChainError("chain longer than its table (loop?)")
            ttl -= 1
            addr, length, flags, next_index = _DESC.unpack_from(table, DESC_SIZE * index)
            if flags & VIRTQ_DESC_F_INDIRECT:
                table, count = self._indirect_table(addr, length, flags, in_indirect)
                index, ttl, in_indirect = 0, count, True
                continue
            writable = bool(flags & VIRTQ_DESC_F_WRITE)
            if seen_writable and not writable:
                raise ChainError("device-readable buffer after a device-writable one")
            seen_writable |= writable
            total += length
            if total > MAX_CHAIN_BYTES:
                raise ChainError("chain longer than 4 GiB")
            try:
                view = self.memory.view(addr, length)
            except GuestMemoryError as err:
                raise ChainError(str(err)) from None
            chain.buffers.append(Buffer(addr, length, writable, view))
            if not flags & VIRTQ_DESC_F_NEXT:
                return
            index = next_index
            if index >= count:
                raise ChainError(f"next index {index} >= table size {count}")

    def _indirect_table(self, addr: int, length: int, flags: int, in_indirect: bool) -> tuple[memoryview, int]:
        """Check an INDIRECT descriptor (2.7.5.3); return (the table, its entries)."""
        if not self.indirect:
            raise ChainError("indirect descriptor but VIRTIO_RING_F_INDIRECT_DESC not negotiated")
        if in_indirect:
            raise ChainError("nested indirect descriptor")
        if flags & VIRTQ_DESC_F_NEXT:
            raise ChainError("descriptor has both INDIRECT and NEXT")
        if length == 0 or length % DESC_SIZE:
            raise ChainError(f"indirect table length {length} is not a multiple of 16")
        count = length // DESC_SIZE
        # Bound the work a single request can cost: no sane driver needs more.
        if count > MAX_QUEUE_SIZE:
            raise ChainError(f"indirect table of {count} entries")
        try:
            return self.memory.view(addr, length), count
        except GuestMemoryError:
            raise ChainError(f"indirect table 0x{addr:x}+0x{length:x} outside guest RAM") from None

    # -- returning requests ---------------------------------------------------

    def push_used(self, head: int, written_len: int) -> None:
        """Return chain ``head`` with ``written_len`` bytes written to the driver."""
        self.push_used_many([(head, written_len)])

    def push_used_many(self, answers: list[tuple[int, int]]) -> None:
        """push_used for each (head, written_len), publishing used.idx once at the end."""
        size = self.size
        ring = self.memory.view(self.used_addr + RING_HEADER, USED_ELEM_SIZE * size)
        next_used = self.next_used
        for head, written_len in answers:
            _USED_ELEM.pack_into(ring, USED_ELEM_SIZE * (next_used % size), head, written_len & 0xFFFF_FFFF)
            next_used = (next_used + 1) & 0xFFFF
        # Elements before the index that publishes them (x86 keeps stores in order).
        self.next_used = next_used
        self.memory.write_int(self.used_addr + 2, 2, next_used)

    def publish_avail_event(self) -> bool:
        """With EVENT_IDX, ask to be notified at the next new buffer (2.7.10).

        Returns True if buffers arrived meanwhile: the driver may have checked
        the old avail_event just before we wrote it, so the caller must look
        again instead of waiting for a notification that will not come.
        """
        if not self.ready or not self.event_idx:
            return False
        self.memory.write_int(self.used_addr + RING_HEADER + USED_ELEM_SIZE * self.size, 2, self.next_avail)
        full_barrier()
        return self.pending() > 0

    def needs_interrupt(self) -> bool:
        """Whether the driver wants a used-buffer notification now (2.7.10)."""
        full_barrier()  # used.idx must be visible before we read the driver's wish
        new = self.next_used
        old, self._signalled_used = self._signalled_used, new
        if self.event_idx:
            if old is None:
                return True
            return vring_need_event(self._used_event(), new, old)
        return not self._avail_flags() & VIRTQ_AVAIL_F_NO_INTERRUPT
