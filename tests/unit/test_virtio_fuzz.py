"""Property tests: arbitrary guest-written queues and registers.

Whatever the driver writes, no exception escapes the transport, the device
only looks at guest RAM, only writes the used ring and buffers the driver
marked device-writable, and every chain it pops gets a used entry (with an
error status, or length 0, when the chain is bad).

Guest RAM is three regions with holes between them; every view the device
obtains is recorded and must lie in RAM, and every byte of RAM outside the
used ring and the device-writable buffers of answered chains is a guard byte
whose content must not change.
"""

import hashlib
import os
import struct

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from vmm.devices.virtio import VirtioBlock, VirtioMmioTransport
from vmm.devices.virtio import constants as c

from .virtio_mock import INDIRECT, NEXT, WRITE, InterruptLine, MockDriver, MockQueue, RecordingMemory, pack_desc

# Two RAM regions with a hole between them and a third far away.
REGIONS = [(0x0, 0x8000), (0x10000, 0x4000), (0x40000, 0x1000)]
QUEUE_BASE = 0x0
TABLE = 0x1000  # where the fuzzed indirect table is written
DATA = 0x2000
SECTORS = 16

# VIRTIO_FUZZ_EXAMPLES=5000 for a longer soak.
FUZZ = settings(
    max_examples=int(os.environ.get("VIRTIO_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

addresses = st.one_of(
    st.sampled_from(
        [0, TABLE, DATA, 0x7FF0, 0x7FFF, 0x8000, 0xC000, 0x10000, 0x13FF0, 0x14000, 0x40FFF, 2**32, 2**63, 2**64 - 1]
    ),
    st.integers(0, 0x14100),
    st.integers(0, 2**64 - 1),
)
lengths = st.one_of(
    st.sampled_from([0, 1, 15, 16, 17, 32, 48, 512, 513, 1024, 0x1000, 0x80000000, 0xFFFFFFFF]),
    st.integers(0, 0x3000),
    st.integers(0, 2**32 - 1),
)
flag_values = st.one_of(
    st.sampled_from([0, NEXT, WRITE, NEXT | WRITE, INDIRECT, INDIRECT | NEXT, INDIRECT | WRITE]),
    st.integers(0, 0xFFFF),
)
indexes = st.one_of(st.integers(0, 15), st.integers(0, 18), st.integers(0, 0xFFFF))
descriptors = st.one_of(
    st.tuples(addresses, lengths, flag_values, indexes),
    st.tuples(
        st.integers(DATA, 0x7000), st.integers(0, 0x800), st.sampled_from([0, NEXT, WRITE, NEXT | WRITE]), indexes
    ),
    # pointing at the fuzzed indirect table, with good and bad lengths and flags
    st.tuples(
        st.just(TABLE),
        st.sampled_from([0, 8, 16, 32, 48, 160, 320, 0xFFFFFFF0]),
        st.sampled_from([INDIRECT, INDIRECT | NEXT, INDIRECT | WRITE]),
        indexes,
    ),
)
# in RAM, mostly chained: long chains, loops, direction errors
linked = st.tuples(
    st.integers(DATA, 0x7000),
    st.integers(0, 0x800),
    st.sampled_from([NEXT, NEXT | WRITE, NEXT, WRITE, 0]),
    st.integers(0, 15),
)
readable_loop = st.tuples(st.integers(DATA, 0x7000), st.integers(0, 0x100), st.just(NEXT), st.integers(0, 15))
tables = st.one_of(
    st.lists(descriptors, min_size=16, max_size=16),
    st.lists(readable_loop, min_size=16, max_size=16),
    st.lists(linked, min_size=16, max_size=16),
    st.lists(st.one_of(linked, descriptors), min_size=16, max_size=16),
)
headers = st.tuples(
    st.sampled_from([0, 1, 4, 8, 2, 0xFFFFFFFF]),
    st.one_of(st.integers(0, SECTORS + 1), st.integers(0, 2**64 - 1)),
)


class RecordingBlock(VirtioBlock):
    """Remembers every chain it answered, with the status byte it left."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.answers = []

    def _answer(self, chain):
        used_len = super()._answer(chain)
        status = self._status_byte(chain)
        self.answers.append((chain, used_len, None if status is None else status[0]))
        return used_len


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "fuzz.img"
    path.write_bytes(bytes(range(256)) * (SECTORS * 2))
    return path


def build(disk, read_only):
    mem = RecordingMemory(REGIONS)
    dev = RecordingBlock(disk, read_only=read_only)
    irq = InterruptLine()
    t = VirtioMmioTransport(dev, mem, irq)
    return mem, dev, t, irq


def used_area(q: MockQueue) -> tuple[int, int]:
    return q.used_addr, q.used_addr + 6 + 8 * q.size


def _kind(chain) -> str:
    if chain.valid:
        return f"valid, {len(chain.buffers)} buffers"
    return type(chain.fault).__name__


def rings_clobbered(q: MockQueue, dev) -> bool:
    """Did the driver hand the device its own ring memory as a writable buffer?

    Then the device legitimately overwrote ring fields, and only the safety
    invariants (RAM only, no stray writes, no exception) can be checked.
    """
    lo, hi = q.desc_addr, q.end
    return any(
        b.writable and b.length and b.addr < hi and lo < b.addr + b.length
        for chain, _, _ in dev.answers
        for b in chain.buffers
    )


def check_invariants(mem, dev, t, q, before, disk, disk_hash):
    # 1. every view the device obtained lies in guest RAM
    for addr, length in mem.granted:
        assert mem.in_ram(addr, length), (hex(addr), length)
    # 2. bytes changed only in the used ring or in device-writable buffers of answered chains
    allowed = [used_area(q)]
    for chain, _, _ in dev.answers:
        allowed += [(b.addr, b.addr + b.length) for b in chain.buffers if b.writable]
    after = mem.snapshot()
    for region, old, new in zip(mem.regions, before, after):
        if old == new:
            continue
        for off in range(len(old)):
            if old[off] != new[off]:
                addr = region.guest_addr + off
                assert any(lo <= addr < hi for lo, hi in allowed), hex(addr)
    # 3. every popped chain was answered, in order, in the used ring
    if not rings_clobbered(q, dev):
        answered = dev.answers[-q.size :]
        first = (q.used_idx - len(answered)) & 0xFFFF
        for i, (chain, used_len, status) in enumerate(answered):
            assert q.used(first + i) == (chain.head, used_len)
    for chain, used_len, status in dev.answers:
        event("chain: " + _kind(chain))
        event(f"status: {status}")
        if status is None:
            assert used_len == 0
        elif not chain.valid:
            assert (used_len, status) == (1, c.VIRTIO_BLK_S_IOERR)
        else:
            assert status in (c.VIRTIO_BLK_S_OK, c.VIRTIO_BLK_S_IOERR, c.VIRTIO_BLK_S_UNSUPP)
            assert used_len >= 1
    # 4. a read-only disk is never modified
    if dev.read_only:
        assert hashlib.sha256(disk.read_bytes()).hexdigest() == disk_hash
    # 5. the transport is still answering sanely
    assert t.read(c.MMIO_MAGIC_VALUE, 4) == c.MMIO_MAGIC


@FUZZ
@given(
    size=st.sampled_from([1, 2, 4, 8, 16]),
    table=tables,
    indirect_table=st.lists(st.one_of(linked, descriptors), max_size=20),
    ring=st.lists(indexes, min_size=16, max_size=16),
    avail_count=st.integers(0, 16),
    wild_avail_idx=st.one_of(st.none(), st.integers(0, 0xFFFF)),
    avail_flags=st.integers(0, 0xFFFF),
    used_event=st.integers(0, 0xFFFF),
    planted=st.lists(st.tuples(addresses, headers), max_size=6),
    data=st.binary(min_size=64, max_size=64),
    features=st.sampled_from([0, 1 << 28, 1 << 29, 3 << 28]),
    read_only=st.booleans(),
    notifies=st.integers(1, 3),
    tame=st.booleans(),
)
def test_arbitrary_queue_contents(
    disk, size, table, indirect_table, ring, avail_count, wild_avail_idx, avail_flags, used_event, planted, data,
    features, read_only, notifies, tame
):
    avail_idx = min(avail_count, size) if wild_avail_idx is None else wild_avail_idx
    if tame:  # indexes in range, so chains get followed further
        ring = [h % size for h in ring]
        table = [(a, n, f, nxt % size) for a, n, f, nxt in table]
    disk_hash = hashlib.sha256(disk.read_bytes()).hexdigest()
    mem, dev, t, irq = build(disk, read_only)
    q = MockQueue.at(mem, QUEUE_BASE, size)
    drv = MockDriver(t)
    base = 1 << 32 | 1 << 1 | 1 << 2 | 1 << 6 | 1 << 9
    drv.start([q], features=base | features)
    # fill guest RAM with a pattern, then the fuzzed structures
    for region_addr, region_size in REGIONS:
        mem.write(region_addr, (data * (region_size // len(data) + 1))[:region_size])
    for addr, (kind, sector) in planted:
        if mem.contains(addr, 16):
            mem.write(addr, struct.pack("<IIQ", kind, 0, sector))
    for i in range(size):
        q.write_desc(i, *table[i])
        mem.write_int(q.avail_addr + 4 + 2 * i, 2, ring[i])
    if indirect_table:
        mem.write(TABLE, b"".join(pack_desc(*d) for d in indirect_table))
    q.set_avail_flags(avail_flags)
    q.set_used_event(used_event)
    mem.write(q.used_addr, bytes(6 + 8 * size))
    mem.write_int(q.avail_addr + 2, 2, avail_idx)
    mem.granted.clear()
    before = mem.snapshot()

    for _ in range(notifies):
        drv.notify(0)

    needs_reset = bool(drv.status & c.STATUS_DEVICE_NEEDS_RESET)
    if (avail_idx & 0xFFFF) > size:
        assert needs_reset and not dev.answers
    elif not rings_clobbered(q, dev):
        # A head outside the table breaks the ring: the chains before it are
        # answered, then the device needs a reset.
        bad = [i for i in range(avail_idx) if ring[i % size] >= size]
        answered = bad[0] if bad else avail_idx
        assert needs_reset == bool(bad)
        assert len(dev.answers) == answered
        assert q.used_idx == answered
    check_invariants(mem, dev, t, q, before, disk, disk_hash)
    dev.close()


# Mostly well-formed chains: real requests, split anywhere, occasionally wrong.
segment = st.tuples(
    st.one_of(st.integers(DATA, 0x7F00), st.integers(0x10000, 0x13F00), addresses),
    st.one_of(st.sampled_from([1, 15, 16, 512, 513]), st.integers(0, 0x600)),
    st.booleans(),
)
requests = st.tuples(headers, st.lists(segment, min_size=1, max_size=6), st.booleans())


@FUZZ
@given(
    reqs=st.lists(requests, min_size=1, max_size=8),
    read_only=st.booleans(),
    event_idx=st.booleans(),
    sort_directions=st.booleans(),
)
def test_plausible_requests(disk, reqs, read_only, event_idx, sort_directions):
    disk_hash = hashlib.sha256(disk.read_bytes()).hexdigest()
    mem, dev, t, irq = build(disk, read_only)
    q = MockQueue.at(mem, QUEUE_BASE, 16)
    drv = MockDriver(t)
    drv.start([q], mask=~0 if event_idx else ~(1 << 29))
    before = None
    for n, ((kind, sector), segs, use_indirect) in enumerate(reqs):
        hdr_addr = 0x1800 + 16 * n
        mem.write(hdr_addr, struct.pack("<IIQ", kind, 0, sector))
        if sort_directions:
            segs = sorted(segs, key=lambda s: s[2])  # readable first, as the spec wants
        bufs = [(hdr_addr, 16, False), *segs]
        q.add_chain(bufs, indirect_at=TABLE + 0x200 * n if use_indirect else None)
    mem.granted.clear()
    before = mem.snapshot()
    drv.notify(0)
    if not rings_clobbered(q, dev):
        assert not drv.status & c.STATUS_DEVICE_NEEDS_RESET
        assert len(dev.answers) == len(reqs) and q.used_idx == len(reqs)
    check_invariants(mem, dev, t, q, before, disk, disk_hash)
    dev.close()


registers = st.sampled_from(
    [
        c.MMIO_DEVICE_FEATURES_SEL,
        c.MMIO_DRIVER_FEATURES,
        c.MMIO_DRIVER_FEATURES_SEL,
        c.MMIO_QUEUE_SEL,
        c.MMIO_QUEUE_NUM,
        c.MMIO_QUEUE_READY,
        c.MMIO_QUEUE_NOTIFY,
        c.MMIO_INTERRUPT_ACK,
        c.MMIO_STATUS,
        c.MMIO_QUEUE_DESC_LOW,
        c.MMIO_QUEUE_DESC_HIGH,
        c.MMIO_QUEUE_DRIVER_LOW,
        c.MMIO_QUEUE_DRIVER_HIGH,
        c.MMIO_QUEUE_DEVICE_LOW,
        c.MMIO_QUEUE_DEVICE_HIGH,
        c.MMIO_CONFIG,
        c.MMIO_CONFIG + 4,
        c.MMIO_CONFIG + 59,
    ]
)
values = st.one_of(
    st.sampled_from([0, 1, 2, 3, 7, 0xB, 0xF, 0x4F, 0x80, 0x100, 0x200, 0x400, 0x1000, 0x10000, 0xFFFFFFFF]),
    st.integers(0, 0xFFFFFFFF),
)
ops = st.tuples(
    st.booleans(),
    st.one_of(registers, st.integers(-8, 0x300)),
    st.sampled_from([1, 2, 4, 8, 3]),
    values,
)


@FUZZ
@given(
    sequence=st.lists(ops, max_size=60),
    ring_bytes=st.binary(min_size=0x300, max_size=0x300),
    handshake=st.booleans(),
)
def test_arbitrary_register_sequences(disk, sequence, ring_bytes, handshake):
    disk_hash = hashlib.sha256(disk.read_bytes()).hexdigest()
    mem, dev, t, irq = build(disk, True)
    mem.write(0, ring_bytes)  # whatever rings the driver may point at
    if handshake:  # start from a running device, so notifications reach it
        MockDriver(t).start([MockQueue.at(mem, QUEUE_BASE, 16)])
    for is_write, offset, size, value in sequence:
        if is_write:
            t.write(offset, size, value)
        else:
            assert 0 <= t.read(offset, size) < 2 ** (8 * size)
        # the interrupt line is raised exactly while InterruptStatus is non-zero
        assert irq.level == bool(t.interrupt_status)
    for addr, length in mem.granted:
        assert mem.in_ram(addr, length)
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == disk_hash
    dev.close()
