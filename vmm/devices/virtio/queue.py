"""Split virtqueue, device side (virtio 1.x section 2.7).

The driver owns the descriptor table and the available ring, the device owns
the used ring; all three live in guest RAM and every byte of them is hostile
input. Every access goes through :class:`GuestMemory`, so a bad address is a
``GuestMemoryError``, never a host access outside guest RAM.

A malformed descriptor chain is still *returned* by :meth:`SplitQueue.pop`
(with ``chain.fault`` set to a typed :class:`ChainError`, and its head index)
so the device can answer it with a used entry: the driver gets its
descriptors back and the queue does not stall. A broken *ring* (the available
index running ahead by more than the queue size, a head index outside the
table) raises :class:`QueueError`, which the transport turns into
DEVICE_NEEDS_RESET.

Work and memory are bounded per chain and per batch: a chain holds at most
``max_chain_len`` buffers (an indirect table longer than that is refused
before it is walked), and :meth:`SplitQueue.pop_batch` resolves at most
about ``BATCH_BUFFERS`` buffers before the device must answer them.

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

from ...errors import GuestMemoryError
from ...memory import GuestMemory
from ...record import record
from .chain import (  # re-exported: devices and tests import them from here
    BadIndirect,
    Buffer,
    BufferOutsideRam,
    ChainError,
    ChainLoop,
    ChainTooLarge,
    ChainTooLong,
    DescriptorChain,
    NextOutOfRange,
    QueueError,
    StateError,
    VirtioError,
    WrongDirection,
    check_bool,
    check_uint,
)
from .constants import (
    MAX_QUEUE_SIZE,
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
)

__all__ = [
    "BATCH_BUFFERS", "DEFAULT_MAX_CHAIN_LEN", "MAX_CHAIN_BYTES", "BadIndirect", "Buffer", "BufferOutsideRam",
    "ChainError", "ChainLoop", "ChainTooLarge", "ChainTooLong", "DescriptorChain", "NextOutOfRange", "QueueError",
    "QueueState", "SplitQueue", "StateError", "VirtioError", "WrongDirection", "check_bool", "check_uint",
    "full_barrier", "vring_need_event",
]

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

# -- limits on what the guest controls (each enforced below, each tested) --------
# Total bytes of one chain: used.len is a u32 (rust-vmm stops at 2^32 too).
MAX_CHAIN_BYTES = 0xFFFF_FFFF
# Buffers per chain when the device does not say (devices set their own:
# virtio-blk allows header + seg_max + status). Direct chains and indirect
# tables alike; 2.7.5.3.1 lets a device refuse longer ones.
DEFAULT_MAX_CHAIN_LEN = 256
# Buffers one pop_batch() resolves before the device answers them: with
# max_chain_len this bounds the memory of a batch, whatever the guest queued.
BATCH_BUFFERS = 2048


class QueueState(
    record(
        "QueueState",
        "size ready desc_addr avail_addr used_addr next_avail next_used event_idx indirect signalled_used",
    )
):
    """Everything a SplitQueue keeps outside guest RAM (the rings live in RAM).

    ``signalled_used`` is the used index at the last interrupt decision, or
    None before the first (EVENT_IDX then always signals).
    """

    __slots__ = ()


_barrier_lock = threading.Lock()


def full_barrier() -> None:
    """Order earlier stores before later loads (a locked cmpxchg on x86)."""
    with _barrier_lock:
        pass


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """2.7.10: True if the batch that moved used.idx from old_idx to new_idx
    filled entry event_idx, i.e. event_idx lies in [old_idx, new_idx) modulo 2^16."""
    return ((new_idx - event_idx - 1) & 0xFFFF) < ((new_idx - old_idx) & 0xFFFF)


class SplitQueue:
    """One split virtqueue as configured by the driver through the transport."""

    batch_buffers = BATCH_BUFFERS  # pop_batch()'s default budget

    def __init__(self, memory: GuestMemory, size: int, max_chain_len: int = DEFAULT_MAX_CHAIN_LEN):
        self.memory = memory
        self.size = size  # the driver may lower it (QueueNum) before enabling
        self.max_chain_len = max_chain_len  # buffers per chain the device can use
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

    # -- state records -------------------------------------------------------

    def state(self) -> QueueState:
        return QueueState(
            self.size, self.ready, self.desc_addr, self.avail_addr, self.used_addr,
            self.next_avail, self.next_used, self.event_idx, self.indirect, self._signalled_used,
        )

    @classmethod
    def from_state(
        cls, memory: GuestMemory, state: QueueState, max_size: int, max_chain_len: int = DEFAULT_MAX_CHAIN_LEN
    ) -> "SplitQueue":
        """Rebuild a queue from an untrusted record; StateError if no queue could be so.

        A queue that is not ready holds whatever the driver wrote to its
        registers (QueueNum is a u32 until QueueReady checks it); a ready one
        passed :meth:`validate` (size a power of two <= ``max_size``, rings
        aligned and inside guest RAM) and is checked again here.
        """
        if not isinstance(state, QueueState):
            raise StateError(f"virtio state: queue record is a {type(state).__name__}, not a QueueState")
        queue = cls(memory, check_uint("queue size", state.size, 32), max_chain_len)
        queue.ready = check_bool("queue ready", state.ready)
        queue.desc_addr = check_uint("descriptor table address", state.desc_addr, 64)
        queue.avail_addr = check_uint("available ring address", state.avail_addr, 64)
        queue.used_addr = check_uint("used ring address", state.used_addr, 64)
        queue.next_avail = check_uint("next_avail", state.next_avail, 16)
        queue.next_used = check_uint("next_used", state.next_used, 16)
        queue.event_idx = check_bool("event_idx", state.event_idx)
        queue.indirect = check_bool("indirect", state.indirect)
        if state.signalled_used is not None:
            check_uint("signalled_used", state.signalled_used, 16)
        queue._signalled_used = state.signalled_used
        if queue.ready:
            if queue.size > max_size:
                raise StateError(f"virtio state: queue size {queue.size} > its maximum {max_size}")
            try:
                queue.validate()
            except QueueError as err:
                raise StateError(f"virtio state: {err}") from None
            in_flight = (queue.next_avail - queue.next_used) & 0xFFFF
            if in_flight > queue.size:
                raise StateError(f"virtio state: {in_flight} chains in flight on a queue of {queue.size}")
        return queue

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
        """The next available chain (possibly with a fault), or None.

        Raises QueueError (ring broken) or GuestMemoryError (rings moved out
        of RAM, which validate() rules out) for the transport to handle.
        """
        if not self.ready or self.pending() == 0:
            return None
        return self._take(*self._ring_and_table())

    def pop_batch(self, max_buffers: int | None = None) -> list[DescriptorChain]:
        """Available chains, as pop() would return them, for one batch.

        Reads the available index and maps the descriptor table once for the
        batch (the per-request cost is what limits small-request IOPS), and
        stops once the batch holds ``max_buffers`` (default
        ``self.batch_buffers``) buffers: a batch holds at
        most queue-size chains and max_buffers + max_chain_len buffers. The
        device answers a batch before it asks for the next, so one notify
        never builds more than that, however much the guest queued.

        A broken ring entry ends the batch early; the next call raises its
        QueueError, so the chains already popped can still be answered.
        """
        if not self.ready:
            return []
        count = self.pending()
        if not count:
            return []
        if max_buffers is None:
            max_buffers = self.batch_buffers
        ring, table = self._ring_and_table()
        chains: list[DescriptorChain] = []
        buffers = 0
        for _ in range(count):
            try:
                chain = self._take(ring, table)
            except QueueError:
                if chains:
                    break
                raise
            chains.append(chain)
            buffers += len(chain.buffers)
            if buffers >= max_buffers:
                break
        return chains

    def _ring_and_table(self) -> tuple[memoryview, memoryview]:
        """The available ring's entries and the descriptor table, each bounds-checked once."""
        return (
            self.memory.view(self.avail_addr + RING_HEADER, 2 * self.size),
            self.memory.view(self.desc_addr, DESC_SIZE * self.size),
        )

    def _take(self, ring: memoryview, table: memoryview) -> DescriptorChain:
        """Consume the next available entry and resolve its chain (with a fault if bad).

        A head outside the table is a broken ring (QueueError, entry not
        consumed): there is no chain to give back, and the used ring may only
        name heads < size (rust-vmm's add_used refuses them too).
        """
        head = _U16.unpack_from(ring, 2 * (self.next_avail % self.size))[0]
        if head >= self.size:
            raise QueueError(f"available ring entry {self.next_avail} names head {head} >= queue size {self.size}")
        self.next_avail = (self.next_avail + 1) & 0xFFFF
        chain = DescriptorChain(head)
        try:
            self._resolve(chain, table)
        except ChainError as err:
            chain.fault = err
        return chain

    def _resolve(self, chain: DescriptorChain, table: memoryview) -> None:
        """Follow the chain into chain.buffers; raise a ChainError at the first fault."""
        count = self.size
        index = chain.head
        max_len = self.max_chain_len
        buffers = chain.buffers
        ttl = count  # a chain visits each descriptor at most once: this ends loops
        in_indirect = False
        total = 0
        seen_writable = False
        while True:
            if ttl == 0:
                raise ChainLoop("chain longer than its table (loop?)")
            ttl -= 1
            addr, length, flags, next_index = _DESC.unpack_from(table, DESC_SIZE * index)
            if flags & VIRTQ_DESC_F_INDIRECT:
                table, count = self._indirect_table(chain, addr, length, flags, in_indirect)
                index, ttl, in_indirect = 0, count, True
                continue
            if len(buffers) == max_len:
                raise ChainTooLong(f"chain of more than {max_len} descriptors")
            writable = bool(flags & VIRTQ_DESC_F_WRITE)
            if seen_writable and not writable:
                raise WrongDirection("device-readable buffer after a device-writable one")
            seen_writable |= writable
            total += length
            if total > MAX_CHAIN_BYTES:
                raise ChainTooLarge("chain longer than 4 GiB")
            try:
                view = self.memory.view(addr, length)
            except GuestMemoryError as err:
                raise BufferOutsideRam(str(err)) from None
            buffers.append(Buffer(addr, length, writable, view))
            if not flags & VIRTQ_DESC_F_NEXT:
                return
            index = next_index
            if index >= count:
                raise NextOutOfRange(f"next index {index} >= table size {count}")

    def _indirect_table(
        self, chain: DescriptorChain, addr: int, length: int, flags: int, in_indirect: bool
    ) -> tuple[memoryview, int]:
        """Check an INDIRECT descriptor (2.7.5.3); return (the table, its entries)."""
        if not self.indirect:
            raise BadIndirect("indirect descriptor but VIRTIO_RING_F_INDIRECT_DESC not negotiated")
        if in_indirect:
            raise BadIndirect("nested indirect descriptor")
        if flags & VIRTQ_DESC_F_NEXT:
            raise BadIndirect("descriptor has both INDIRECT and NEXT")
        if length == 0 or length % DESC_SIZE:
            raise BadIndirect(f"indirect table length {length} is not a multiple of 16")
        entries = length // DESC_SIZE
        room = self.max_chain_len - len(chain.buffers)
        if entries > room:
            # Refused before it is walked: the work stays O(1) however long it is.
            self._keep_status_candidate(chain, addr, entries)
            raise ChainTooLong(f"indirect table of {entries} entries > {room} the device accepts")
        try:
            return self.memory.view(addr, length), entries
        except GuestMemoryError:
            raise BufferOutsideRam(f"indirect table 0x{addr:x}+0x{length:x} outside guest RAM") from None

    def _keep_status_candidate(self, chain: DescriptorChain, table_addr: int, entries: int) -> None:
        """Keep a refused table's last entry if it can hold a status: a single
        device-writable, chain-ending buffer in RAM (drivers put the status byte
        there), so the device can still report an error where the driver looks.
        Only while the chain has room for it: it never holds more than max_chain_len."""
        if len(chain.buffers) >= self.max_chain_len:
            return
        try:
            addr, length, flags, _next = _DESC.unpack_from(
                self.memory.view(table_addr + DESC_SIZE * (entries - 1), DESC_SIZE)
            )
            if flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT) == 0 and flags & VIRTQ_DESC_F_WRITE and length:
                chain.buffers.append(Buffer(addr, length, True, self.memory.view(addr, length)))
        except GuestMemoryError:
            pass  # nowhere to report: the device answers with a used length of 0

    # -- returning requests ---------------------------------------------------

    def push_used(self, head: int, written_len: int) -> None:
        """Return chain ``head`` with ``written_len`` bytes written to the driver."""
        self.push_used_many([(head, written_len)])

    def push_used_many(self, answers: list[tuple[int, int]]) -> None:
        """push_used for each (head, written_len), publishing used.idx once at the end.

        Raises QueueError, writing nothing, if a head is not a descriptor index
        (>= size): the used ring may only return chains the driver made.
        """
        size = self.size
        for head, _ in answers:
            if not 0 <= head < size:
                raise QueueError(f"used element for head {head} >= queue size {size}")
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
