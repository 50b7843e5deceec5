"""Issue 8: every count and size the guest controls has a limit, and each is pushed past here.

The headline attack: a full 256-entry queue, each entry one INDIRECT
descriptor pointing at the same table of 32768 zero-length descriptors
chained with NEXT. Before the fix one notify cost ~33 s and ~2.5 GiB.
"""

import time
import tracemalloc

import pytest

from vmm.devices.virtio import VirtioBlock, VirtioDevice, VirtioMmioTransport
from vmm.devices.virtio import block
from vmm.devices.virtio import constants as c
from vmm.devices.virtio import mmio
from vmm.devices.virtio.queue import BATCH_BUFFERS, DEFAULT_MAX_CHAIN_LEN, ChainTooLong, SplitQueue
from vmm.memory import GuestMemory

from .virtio_mock import INDIRECT, NEXT, WRITE, InterruptLine, MockDriver, MockQueue

QUEUE = 256
ATTACK_ENTRIES = 32768  # the most a 16-bit-indexed table can hold
RAM = 0x200000
QUEUE_BASE = 0x1000
TABLE = 0x10000  # 32768 x 16 bytes = 512 KiB
BUF = 0x100000
STATUS = 0x1F0000


def attack_table(mq: MockQueue, entries: int = ATTACK_ENTRIES, status_last: bool = False) -> None:
    descs = [(BUF, 0, NEXT, i + 1) for i in range(entries - 1)]
    descs.append((STATUS, 1, WRITE, 0) if status_last else (BUF, 0, 0, 0))
    mq.write_table(TABLE, descs)


def fill_with_indirect(mq: MockQueue, entries: int = ATTACK_ENTRIES) -> None:
    for i in range(mq.size):
        mq.write_desc(i, TABLE, 16 * entries, INDIRECT)
        mq.publish(i)


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "bounds.img"
    path.write_bytes(bytes(64 * 512))
    return path


def block_rig(disk, size=QUEUE, fast_path=True):
    mem = GuestMemory([(0, RAM)])
    dev = VirtioBlock(disk)
    dev.use_fast_path = fast_path
    irq = InterruptLine()
    t = VirtioMmioTransport(dev, mem, irq)
    mq = MockQueue.at(mem, QUEUE_BASE, size)
    drv = MockDriver(t)
    drv.start([mq])
    return mem, dev, t, mq, drv, irq


def measured(fn):
    """(seconds, tracemalloc peak bytes) of fn()."""
    tracemalloc.start()
    try:
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return elapsed, peak


def test_issue8_attack_through_virtio_blk(disk):
    mem, dev, t, mq, drv, irq = block_rig(disk)
    attack_table(mq)
    fill_with_indirect(mq)
    elapsed, peak = measured(lambda: drv.notify(0))
    assert elapsed < 0.5, elapsed  # was ~33 s
    assert peak < 2 << 20, peak  # was ~2.5 GiB
    assert mq.used_idx == QUEUE  # every entry answered, none left behind
    assert sorted(mq.used(i)[0] for i in range(QUEUE)) == list(range(QUEUE))
    assert all(mq.used(i)[1] == 0 for i in range(QUEUE))  # no status byte: length 0
    assert not drv.status & c.STATUS_DEVICE_NEEDS_RESET
    assert irq.raised == 1
    dev.close()


def test_issue8_attack_with_a_status_byte_gets_ioerr(disk):
    mem, dev, t, mq, drv, irq = block_rig(disk)
    attack_table(mq, status_last=True)
    fill_with_indirect(mq)
    mem.write(STATUS, b"\xee")
    elapsed, peak = measured(lambda: drv.notify(0))
    assert elapsed < 0.5 and peak < 2 << 20, (elapsed, peak)
    assert mq.used_idx == QUEUE
    assert all(mq.used(i)[1] == 1 for i in range(QUEUE))
    assert mem.read(STATUS, 1)[0] == c.VIRTIO_BLK_S_IOERR
    dev.close()


def test_issue8_attack_on_the_queue_alone():
    mem = GuestMemory([(0, RAM)])
    mq = MockQueue.at(mem, QUEUE_BASE, QUEUE)
    q = SplitQueue(mem, QUEUE, max_chain_len=block.MAX_CHAIN_LEN)
    q.desc_addr, q.avail_addr, q.used_addr = mq.desc_addr, mq.avail_addr, mq.used_addr
    q.indirect = True
    q.enable()
    attack_table(mq)
    fill_with_indirect(mq)
    answered = []

    def serve():
        while chains := q.pop_batch():
            assert all(isinstance(ch.fault, ChainTooLong) for ch in chains)
            q.push_used_many([(ch.head, 0) for ch in chains])
            answered.extend(ch.head for ch in chains)

    elapsed, peak = measured(serve)
    assert elapsed < 0.5 and peak < 2 << 20, (elapsed, peak)
    assert answered == list(range(QUEUE)) and mq.used_idx == QUEUE


# -- chain length: header + SEG_MAX segments + status for virtio-blk ------------------


def test_block_chain_limit_is_seg_max_plus_two():
    assert block.MAX_CHAIN_LEN == block.SEG_MAX + 2 == 128
    assert VirtioBlock.max_chain_len == block.MAX_CHAIN_LEN


def _queue(mem, size, max_chain_len):
    mq = MockQueue.at(mem, QUEUE_BASE, size)
    q = SplitQueue(mem, size, max_chain_len=max_chain_len)
    q.desc_addr, q.avail_addr, q.used_addr = mq.desc_addr, mq.avail_addr, mq.used_addr
    q.indirect = True
    q.enable()
    return mq, q


@pytest.mark.parametrize("length,ok", [(128, True), (129, False)])
def test_direct_chain_limit(length, ok):
    mem = GuestMemory([(0, RAM)])
    mq, q = _queue(mem, 256, 128)
    mq.add_chain([(BUF + i, 1, False) for i in range(length)])
    chain = q.pop()
    assert chain.valid is ok
    if not ok:
        assert isinstance(chain.fault, ChainTooLong)
        assert len(chain.buffers) == 128  # never more than the limit resolved


@pytest.mark.parametrize("length,ok", [(128, True), (129, False)])
def test_indirect_table_limit(length, ok):
    mem = GuestMemory([(0, RAM)])
    mq, q = _queue(mem, 16, 128)
    mq.add_chain([(BUF + i, 1, False) for i in range(length)], indirect_at=TABLE)
    chain = q.pop()
    assert chain.valid is ok
    if not ok:
        assert isinstance(chain.fault, ChainTooLong) and chain.buffers == []


def test_direct_buffers_count_against_an_indirect_table():
    mem = GuestMemory([(0, RAM)])
    mq, q = _queue(mem, 16, 4)
    mq.write_table(TABLE, [(BUF, 1, NEXT, 1), (BUF, 1, NEXT, 2), (BUF, 1, 0, 0)])
    mq.write_desc(0, BUF, 1, NEXT, 1)
    mq.write_desc(1, BUF, 1, NEXT, 2)
    mq.write_desc(2, TABLE, 48, INDIRECT)
    mq.publish(0)
    assert isinstance(q.pop().fault, ChainTooLong)  # 2 direct + 3 indirect > 4


def test_default_chain_limit_for_other_devices():
    assert VirtioDevice.max_chain_len == DEFAULT_MAX_CHAIN_LEN
    mem = GuestMemory([(0, RAM)])
    mq, q = _queue(mem, 16, DEFAULT_MAX_CHAIN_LEN)
    mq.add_chain([(BUF, 1, False)] * (DEFAULT_MAX_CHAIN_LEN + 1), indirect_at=TABLE)
    assert isinstance(q.pop().fault, ChainTooLong)


# -- one batch's memory -----------------------------------------------------------------


def test_batch_is_bounded_by_buffers_not_by_what_is_queued():
    mem = GuestMemory([(0, RAM)])
    mq, q = _queue(mem, QUEUE, 128)
    mq.write_table(TABLE, [(BUF + i, 1, NEXT if i < 127 else 0, i + 1) for i in range(128)])
    for i in range(QUEUE):
        mq.write_desc(i, TABLE, 16 * 128, INDIRECT)
        mq.publish(i)
    sizes = []
    while chains := q.pop_batch():
        buffers = sum(len(ch.buffers) for ch in chains)
        assert buffers <= BATCH_BUFFERS + 128
        sizes.append(len(chains))
        q.push_used_many([(ch.head, 0) for ch in chains])
    assert sum(sizes) == QUEUE and len(sizes) > 1
    assert mq.used_idx == QUEUE


def test_block_answers_each_batch_before_popping_the_next(disk, monkeypatch):
    # The model's batches (the C fast path publishes each run of <= VF_BATCH chains too).
    mem, dev, t, mq, drv, irq = block_rig(disk, size=16, fast_path=False)
    t.queues[0].batch_buffers = 2
    pushes = []
    original = dev._answer_batch
    monkeypatch.setattr(dev, "_answer_batch", lambda q, chains: (pushes.append(len(chains)), original(q, chains)))
    hdr = 0x20000
    mem.write(hdr, bytes(16))  # VIRTIO_BLK_T_IN, sector 0
    for i in range(6):
        mq.add_chain([(hdr, 16, False), (BUF + 512 * i, 512, True), (STATUS + i, 1, True)])
    drv.notify(0)
    assert mq.used_idx == 6 and len(pushes) > 1
    dev.close()


# -- the transport's registers ------------------------------------------------------------


class TwoQueues(VirtioDevice):
    device_id = 42
    queue_max_sizes = (16, 8)

    @property
    def config(self):
        return bytes(range(12))


@pytest.fixture
def transport():
    mem = GuestMemory([(0, 0x20000)])
    t = VirtioMmioTransport(TwoQueues(), mem, InterruptLine())
    return t, MockDriver(t)


@pytest.mark.parametrize("sel", [mmio.FEATURE_WORDS, 0xFFFF_FFFF])
def test_feature_selectors_past_64_bits(transport, sel):
    t, drv = transport
    drv.wr(c.MMIO_DEVICE_FEATURES_SEL, sel)
    assert drv.rd(c.MMIO_DEVICE_FEATURES) == 0
    drv.wr(c.MMIO_STATUS, c.STATUS_ACKNOWLEDGE | c.STATUS_DRIVER)
    drv.write_features(1 << c.VIRTIO_F_VERSION_1)
    drv.wr(c.MMIO_DRIVER_FEATURES_SEL, sel)
    for _ in range(1000):  # many writes past the end are one flag, not stored bits
        drv.wr(c.MMIO_DRIVER_FEATURES, 0xFFFF_FFFF)
    assert t.driver_features == 1 << c.VIRTIO_F_VERSION_1
    drv.wr(c.MMIO_STATUS, drv.status | c.STATUS_FEATURES_OK)
    assert not drv.status & c.STATUS_FEATURES_OK


@pytest.mark.parametrize("sel", [2, 0xFFFF_FFFF])
def test_queue_sel_past_the_queues(transport, sel):
    t, drv = transport
    drv.wr(c.MMIO_QUEUE_SEL, sel)
    assert drv.rd(c.MMIO_QUEUE_NUM_MAX) == 0
    drv.wr(c.MMIO_QUEUE_NUM, 8)
    drv.wr(c.MMIO_QUEUE_DESC_LOW, 0x1000)
    drv.wr(c.MMIO_QUEUE_READY, 1)
    assert drv.rd(c.MMIO_QUEUE_READY) == 0 and len(t.queues) == 2


@pytest.mark.parametrize("num", [17, 32768, 65536, 0xFFFF_FFFF])
def test_queue_num_past_queue_num_max(transport, num):
    t, drv = transport
    drv.negotiate()
    drv.wr(c.MMIO_QUEUE_SEL, 0)
    drv.wr(c.MMIO_QUEUE_NUM, num)
    drv.wr(c.MMIO_QUEUE_READY, 1)
    assert drv.rd(c.MMIO_QUEUE_READY) == 0
    assert drv.status & c.STATUS_DEVICE_NEEDS_RESET


@pytest.mark.parametrize("offset,size", [(0, 3), (0, 16), (11, 2), (12, 1), (0xF00, 4), (2**40, 8), (0, 2**20)])
def test_config_access_outside_config_space(transport, offset, size):
    t, drv = transport
    assert t.read(c.MMIO_CONFIG + offset, size) == 0
    t.write(c.MMIO_CONFIG + offset, size, 2**64 - 1)
    assert t.device.config == bytes(range(12))


def test_device_queue_sizes_checked():
    class Huge(VirtioDevice):
        queue_max_sizes = (c.MAX_QUEUE_SIZE * 2,)

    with pytest.raises(ValueError):
        VirtioMmioTransport(Huge(), GuestMemory([(0, 0x1000)]), InterruptLine())
