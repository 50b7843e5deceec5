"""The C fast path (vmm/kvm/virtio_fast.c) against the Python model.

Each example builds the same queue twice, in two guest RAMs over two copies
of one disk: one device serves it with the model alone, the other with the
fast path in front. Afterwards guest RAM (used ring, status bytes, data),
the disk, the transport's status and the queue indexes must be identical.

Requests are mostly the common layout (header, data, status), and some are
mutated in one descriptor field: a chain that looks like the fast path's
until its last buffer, a NEXT out of range, a buffer across a RAM hole, a
loop, a sector past the end... Those straddle the two: C must leave them to
the model, which answers them as it always did.

One exception is allowed: when the driver hands the device its own queue
memory (rings, indirect tables, headers) as a device-writable buffer, the
order in which chains are resolved and executed becomes visible, and only
the safety invariants are compared.
"""

import os
import struct

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from vmm.devices.virtio import VirtioBlock, VirtioMmioTransport
from vmm.devices.virtio import constants as c
from vmm.devices.virtio import fastpath
from vmm.memory import GuestMemory

from .virtio_mock import INDIRECT, NEXT, WRITE, InterruptLine, MockDriver, MockQueue, pack_desc

pytestmark = pytest.mark.skipif(not fastpath.AVAILABLE, reason="the compiled module has no fast path")

REGIONS = [(0x0, 0x8000), (0x10000, 0x4000)]
QUEUE_SIZE = 64  # 8 direct chains of up to 6 descriptors fit without reuse
TABLES = 0x800  # indirect table n at TABLES + 0x100 * n
HEADERS = 0x1000  # header n at HEADERS + 16 * n
QUEUE_MEMORY_END = 0x1100  # rings, tables and headers live below this
SECTORS = 64
IN, OUT = c.VIRTIO_BLK_T_IN, c.VIRTIO_BLK_T_OUT

EXAMPLES = settings(
    max_examples=int(os.environ.get("VIRTIO_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Data and status addresses: mostly in RAM, some across the hole or outside.
addresses = st.one_of(
    st.integers(0x2000, 0x7E00),
    st.integers(0x10000, 0x13E00),
    st.sampled_from([0x7F00, 0x7FFF, 0x8000, 0x13FFF, 0x14000, 2**32, 2**64 - 512]),
)
good_addresses = st.one_of(st.integers(0x2000, 0x6E00), st.integers(0x10000, 0x12E00))
good_segments = st.lists(st.tuples(good_addresses, st.sampled_from([512, 1024, 4096])), min_size=1, max_size=3)
wild_segments = st.lists(
    st.tuples(addresses, st.sampled_from([512, 512, 1024, 4096, 100, 0, 0x8000])), min_size=1, max_size=4
)
segments = st.one_of(good_segments, good_segments, wild_segments)
mutations = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    st.tuples(
        st.integers(-1, 6),  # which descriptor (-1: the ring's indirect descriptor)
        st.sampled_from(["addr", "len", "flags", "next"]),
        st.one_of(
            st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 15, 16, 17, 0x200, 0x7FFF, 0x8000, 0xFFFF, 2**32 - 1]),
            st.integers(0, 2**64 - 1),
        ),
    ),
)
wild_requests = st.tuples(
    st.sampled_from([IN, IN, IN, IN, OUT, OUT, c.VIRTIO_BLK_T_FLUSH, c.VIRTIO_BLK_T_GET_ID, 7]),
    st.one_of(st.integers(0, SECTORS - 8), st.integers(0, SECTORS + 2), st.sampled_from([2**55, 2**64 - 1])),
    segments,
    st.one_of(good_addresses, addresses),  # status byte
    st.booleans(),  # indirect
    mutations,
)
# the common layout, as fast-path-shaped as the model's real drivers make them
good_requests = st.tuples(
    st.sampled_from([IN, IN, OUT]),
    st.integers(0, SECTORS - 24),
    good_segments,
    good_addresses,
    st.booleans(),
    st.none(),
)
requests = st.one_of(good_requests, good_requests, good_requests, wild_requests)


def _descriptors(kind, segs, status_addr, header_addr):
    """(addr, len, flags, next-in-chain) of header, data and status, as a driver writes them."""
    data_flags = NEXT | (WRITE if kind != OUT else 0)
    return [(header_addr, 16, NEXT), *[(a, n, data_flags) for a, n in segs], (status_addr, 1, WRITE)]


def _mutate(desc, field, value):
    addr, length, flags, next_ = desc
    if field == "addr":
        return (value, length, flags, next_)
    if field == "len":
        return (addr, value & 0xFFFFFFFF, flags, next_)
    if field == "flags":
        return (addr, length, value & 0xFFFF, next_)
    return (addr, length, flags, value & 0xFFFF)


def write_queue(mem, q, reqs, indirect_negotiated):
    """Lay the requests out in ``mem``; returns the device-writable ranges a driver granted."""
    next_desc = 0
    for n, (kind, sector, segs, status_addr, indirect, mutation) in enumerate(reqs):
        header = HEADERS + 16 * n
        mem.write(header, struct.pack("<IIQ", kind, 0, sector))
        descs = _descriptors(kind, segs, status_addr, header)
        if indirect and indirect_negotiated:
            table = [(a, ln, f, i + 1) for i, (a, ln, f) in enumerate(descs)]
            ring_desc = (TABLES + 0x100 * n, 16 * len(table), INDIRECT, 0)
            if mutation:
                which, field, value = mutation
                if which < 0:
                    ring_desc = _mutate(ring_desc, field, value)
                else:
                    table[which % len(table)] = _mutate(table[which % len(table)], field, value)
            mem.write(TABLES + 0x100 * n, b"".join(pack_desc(*d) for d in table))
            head = next_desc % QUEUE_SIZE
            q.write_desc(head, *ring_desc)
            next_desc += 1
        else:
            indexes = [(next_desc + i) % QUEUE_SIZE for i in range(len(descs))]
            chain = [(a, ln, f, indexes[i + 1] if i + 1 < len(indexes) else 0) for i, (a, ln, f) in enumerate(descs)]
            if mutation:
                which, field, value = mutation
                chain[which % len(chain)] = _mutate(chain[which % len(chain)], field, value)
            for index, d in zip(indexes, chain):
                q.write_desc(index, *d)
            head = indexes[0]
            next_desc += len(descs)
        q.publish(head)


def run(disk_path, reqs, fast, read_only, indirect_negotiated, pattern):
    mem = GuestMemory(REGIONS)
    for addr, size in REGIONS:
        mem.write(addr, (pattern * (size // len(pattern) + 1))[:size])
    dev = VirtioBlock(disk_path, read_only=read_only)
    dev.use_fast_path = fast
    t = VirtioMmioTransport(dev, mem, InterruptLine())
    q = MockQueue.at(mem, 0, QUEUE_SIZE)
    mem.write(q.desc_addr, bytes(q.end - q.desc_addr))
    drv = MockDriver(t)
    mask = ~0 if indirect_negotiated else ~(1 << c.VIRTIO_RING_F_INDIRECT_DESC)
    drv.start([q], mask=mask)
    write_queue(mem, q, reqs, indirect_negotiated)
    served_in_c = 0
    drv.notify(0)
    if dev._fast is not None:
        served_in_c = dev._fast.requests
    queue = t.queues[0]
    result = {
        "ram": [bytes(r.mapping) for r in mem.regions],
        "status": drv.status,
        "indexes": (queue.next_avail, queue.next_used),
        "interrupt": t.interrupt_status,
    }
    dev.close()
    result["disk"] = open(disk_path, "rb").read()
    return result, served_in_c


def mutation_may_clobber(reqs) -> bool:
    for _kind, _sector, _segs, _status, _indirect, mutation in reqs:
        if mutation and mutation[1] == "addr" and mutation[2] < QUEUE_MEMORY_END:
            return True
        if mutation and mutation[1] == "flags" and mutation[2] & WRITE:
            return True  # the header may become device-writable
    return False


@pytest.fixture
def disk_pair(tmp_path):
    content = os.urandom(SECTORS * 512)
    paths = []
    for name in ("model", "fast"):  # one file name: GET_ID answers it
        (tmp_path / name).mkdir()
        path = tmp_path / name / "disk.img"
        path.write_bytes(content)
        paths.append(path)
    return paths


@EXAMPLES
@given(
    reqs=st.lists(requests, min_size=1, max_size=8),
    read_only=st.booleans(),
    indirect_negotiated=st.booleans(),
    pattern=st.binary(min_size=16, max_size=16),
)
def test_fast_path_matches_the_model(disk_pair, reqs, read_only, indirect_negotiated, pattern):
    model_disk, fast_disk = disk_pair
    start = model_disk.read_bytes()
    fast_disk.write_bytes(start)
    model, _ = run(model_disk, reqs, False, read_only, indirect_negotiated, pattern)
    fast, served_in_c = run(fast_disk, reqs, True, read_only, indirect_negotiated, pattern)
    model_disk.write_bytes(start)  # both start from the same disk next example
    event(f"served in C: {min(served_in_c, 3)}{'+' if served_in_c > 3 else ''} of {len(reqs)}")
    if mutation_may_clobber(reqs) or any(
        addr < QUEUE_MEMORY_END for _k, _s, segs, st_addr, _i, _m in reqs for addr, _n in [*segs, (st_addr, 1)]
    ):
        event("queue memory writable: safety only")
        assert fast["status"] & c.STATUS_DEVICE_NEEDS_RESET == model["status"] & c.STATUS_DEVICE_NEEDS_RESET
        return
    assert fast == model


def test_common_requests_are_served_in_c(disk_pair):
    """The benchmark's request (4 KiB read, indirect) goes to C, not the model."""
    model_disk, fast_disk = disk_pair
    reqs = [(IN, 8 * i, [(0x2000 + 0x1000 * i, 4096)], 0x7000 + i, True, None) for i in range(4)]
    reqs.append((OUT, 0, [(0x10000, 512)], 0x7100, False, None))
    model, _ = run(model_disk, reqs, False, False, True, bytes(16))
    fast, served_in_c = run(fast_disk, reqs, True, False, True, bytes(16))
    assert served_in_c == 5
    assert fast == model
    assert fast["indexes"] == (5, 5)


def test_a_chain_that_breaks_late_is_left_to_the_model(disk_pair):
    """Two good reads, then one whose status buffer is 2 bytes long, then a good one:
    C serves the first two and stops; the model answers the rest exactly as alone."""
    model_disk, fast_disk = disk_pair
    reqs = [(IN, i, [(0x2000 + 0x200 * i, 512)], 0x7000 + i, True, None) for i in range(4)]
    reqs[2] = (IN, 2, [(0x2400, 512)], 0x7002, True, (2, "len", 2))
    model, _ = run(model_disk, reqs, False, False, True, bytes(16))
    fast, served_in_c = run(fast_disk, reqs, True, False, True, bytes(16))
    assert served_in_c == 2
    assert fast == model
