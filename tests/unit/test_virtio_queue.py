import mmap

import pytest

from vmm.devices.virtio import constants as c
from vmm.devices.virtio.queue import (
    BadIndirect,
    BufferOutsideRam,
    ChainLoop,
    ChainTooLarge,
    ChainTooLong,
    NextOutOfRange,
    QueueError,
    SplitQueue,
    WrongDirection,
    vring_need_event,
)
from vmm.memory import GuestMemory

from .virtio_mock import INDIRECT, NEXT, WRITE, MockQueue

RAM = 0x10000
DATA = 0x4000
TABLE = 0x3000


@pytest.fixture
def mem():
    # Not closed: chains still hold views into it (mmap.close would refuse).
    return GuestMemory([(0, RAM)])


def make(mem, size=8, *, indirect=False, event_idx=False):
    mq = MockQueue.at(mem, 0x1000, size)
    q = SplitQueue(mem, size)
    q.desc_addr, q.avail_addr, q.used_addr = mq.desc_addr, mq.avail_addr, mq.used_addr
    q.indirect, q.event_idx = indirect, event_idx
    q.enable()
    return mq, q


def chain_of(mq, descs, head=0):
    """Write raw descriptors [(addr, len, flags, next)] from index 0 and publish head."""
    for i, d in enumerate(descs):
        mq.write_desc(i, *d)
    mq.publish(head)


# -- configuration ---------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 3, 6, 65536, 32768 * 2])
def test_size_must_be_power_of_two(mem, size):
    q = SplitQueue(mem, size)
    with pytest.raises(QueueError):
        q.enable()
    assert not q.ready


def test_max_size_accepted():
    m = GuestMemory([(0, 0x100000)])
    q = SplitQueue(m, 32768)
    q.desc_addr, q.avail_addr, q.used_addr = 0, 0x80000, 0x90000
    q.enable()
    assert q.ready


@pytest.mark.parametrize(
    "field,addr",
    [("desc_addr", 0x1008), ("avail_addr", 0x2001), ("used_addr", 0x2802), ("desc_addr", RAM - 16), ("used_addr", RAM)],
)
def test_ring_alignment_and_bounds(mem, field, addr):
    q = SplitQueue(mem, 8)
    q.desc_addr, q.avail_addr, q.used_addr = 0x1000, 0x2000, 0x2800
    setattr(q, field, addr)
    with pytest.raises(QueueError):
        q.enable()


def test_not_ready_pops_nothing(mem):
    q = SplitQueue(mem, 8)
    assert q.pop() is None


# -- chains ---------------------------------------------------------------------------


def test_simple_chain(mem):
    mq, q = make(mem)
    mem.write(DATA, b"hello")
    head = mq.add_chain([(DATA, 5, False), (DATA + 0x100, 64, True)])
    chain = q.pop()
    assert chain.valid and chain.head == head
    assert [(b.addr, b.length, b.writable) for b in chain.buffers] == [(DATA, 5, False), (DATA + 0x100, 64, True)]
    assert bytes(chain.readable_buffers[0].view) == b"hello"
    chain.writable_buffers[0].view[:3] = b"abc"  # views write straight into guest RAM
    assert mem.read(DATA + 0x100, 3) == b"abc"
    assert q.pop() is None


def test_head_out_of_range_breaks_the_ring(mem):
    mq, q = make(mem)
    mq.publish(8)
    with pytest.raises(QueueError, match="head 8"):
        q.pop()
    assert q.next_avail == 0  # not consumed: there is no chain to give back


def test_head_out_of_range_ends_batch_after_good_chains(mem):
    mq, q = make(mem)
    mq.add_chain([(DATA, 16, True)])
    mq.publish(8)
    chains = q.pop_batch()
    assert [ch.head for ch in chains] == [0] and chains[0].valid
    with pytest.raises(QueueError):
        q.pop_batch()


def test_next_out_of_range(mem):
    mq, q = make(mem)
    chain_of(mq, [(DATA, 16, NEXT, 9)])
    chain = q.pop()
    assert isinstance(chain.fault, NextOutOfRange) and "next" in chain.error
    assert len(chain.buffers) == 1  # what was resolved before the fault is kept


def test_loop_ends(mem):
    mq, q = make(mem)
    chain_of(mq, [(DATA, 16, NEXT, 1), (DATA, 16, NEXT, 0)])
    chain = q.pop()
    assert isinstance(chain.fault, ChainLoop) and "loop" in chain.error
    assert len(chain.buffers) == 8


def test_self_loop(mem):
    mq, q = make(mem, size=1)
    chain_of(mq, [(DATA, 16, NEXT, 0)])
    assert not q.pop().valid


def test_readable_after_writable(mem):
    mq, q = make(mem)
    chain_of(mq, [(DATA, 16, NEXT | WRITE, 1), (DATA, 16, 0, 0)])
    chain = q.pop()
    assert isinstance(chain.fault, WrongDirection) and "readable" in chain.error
    assert [b.writable for b in chain.buffers] == [True]


@pytest.mark.parametrize("addr,length", [(RAM, 1), (RAM - 1, 2), (2**64 - 1, 1), (0, 2**32 - 17), (RAM + 1, 0)])
def test_buffer_outside_ram(mem, addr, length):
    mq, q = make(mem)
    chain_of(mq, [(DATA, 16, NEXT | WRITE, 1), (addr, length, WRITE, 0)])
    chain = q.pop()
    assert isinstance(chain.fault, BufferOutsideRam) and chain.head == 0
    assert [b.addr for b in chain.buffers] == [DATA]


def test_total_over_4gib():
    try:
        m = GuestMemory([(0, 1 << 33)])  # NORESERVE: never touched
    except (OSError, ValueError):
        pytest.skip("cannot map 8 GiB of address space")
    mq, q = make(m)
    chain_of(mq, [(0x100000, 0xFFFF0000, NEXT, 1), (0x100000, 0x10000, 0, 0)])
    chain = q.pop()
    assert isinstance(chain.fault, ChainTooLarge) and "4 GiB" in chain.error


# -- indirect ---------------------------------------------------------------------------


def test_indirect(mem):
    mq, q = make(mem, indirect=True)
    head = mq.add_chain([(DATA, 16, False), (DATA + 16, 512, True), (DATA + 600, 1, True)], indirect_at=TABLE)
    chain = q.pop()
    assert chain.valid and chain.head == head
    assert [(b.addr, b.length, b.writable) for b in chain.buffers] == [
        (DATA, 16, False),
        (DATA + 16, 512, True),
        (DATA + 600, 1, True),
    ]


def test_direct_then_indirect(mem):
    mq, q = make(mem, indirect=True)
    mq.write_table(TABLE, [(DATA + 16, 8, WRITE, 0)])
    chain_of(mq, [(DATA, 16, NEXT, 1), (TABLE, 16, INDIRECT, 0)])
    chain = q.pop()
    assert chain.valid and [b.addr for b in chain.buffers] == [DATA, DATA + 16]


def test_indirect_write_flag_on_table_descriptor_ignored(mem):
    mq, q = make(mem, indirect=True)
    mq.write_table(TABLE, [(DATA, 8, 0, 0)])
    chain_of(mq, [(TABLE, 16, INDIRECT | WRITE, 0)])
    chain = q.pop()
    assert chain.valid and not chain.buffers[0].writable


@pytest.mark.parametrize(
    "desc,table,fault,why",
    [
        ((TABLE, 16, INDIRECT | NEXT, 1), [(DATA, 8, 0, 0)], BadIndirect, "NEXT"),
        ((TABLE, 0, INDIRECT, 0), [], BadIndirect, "multiple of 16"),
        ((TABLE, 24, INDIRECT, 0), [(DATA, 8, 0, 0)], BadIndirect, "multiple of 16"),
        ((RAM - 16, 32, INDIRECT, 0), [], BufferOutsideRam, "outside"),
        ((TABLE, 16, INDIRECT, 0), [(TABLE, 16, INDIRECT, 0)], BadIndirect, "nested"),
        ((TABLE, 32, INDIRECT, 0), [(DATA, 8, NEXT, 1), (DATA, 8, NEXT, 0)], ChainLoop, "loop"),
        ((TABLE, 16, INDIRECT, 0), [(DATA, 8, NEXT, 1)], NextOutOfRange, "next index"),
        ((TABLE, 16 * 40000, INDIRECT, 0), [], ChainTooLong, "entries"),
    ],
)
def test_bad_indirect(mem, desc, table, fault, why):
    mq, q = make(mem, indirect=True)
    if table:
        mq.write_table(TABLE, table)
    chain_of(mq, [desc])
    chain = q.pop()
    assert type(chain.fault) is fault and why in chain.error


def test_indirect_not_negotiated(mem):
    mq, q = make(mem, indirect=False)
    mq.add_chain([(DATA, 16, False)], indirect_at=TABLE)
    chain = q.pop()
    assert isinstance(chain.fault, BadIndirect) and "not negotiated" in chain.error


# -- ring indexes ---------------------------------------------------------------------------


def test_avail_idx_jump_is_fatal(mem):
    mq, q = make(mem)
    mq.set_avail_idx(9)
    with pytest.raises(QueueError):
        q.pop()


def test_indexes_wrap(mem):
    mq, q = make(mem, size=4)
    q.next_avail = q.next_used = 0xFFFF
    mq.avail_idx = 0xFFFF
    mq.memory.write_int(mq.used_addr + 2, 2, 0xFFFF)
    mq.write_desc(2, DATA, 4, WRITE)
    mq.publish(2)  # slot 0xFFFF % 4 == 3, idx wraps to 0
    mq.publish(2)
    assert mq.avail_idx == 1
    for _ in range(2):
        chain = q.pop()
        assert chain.valid and chain.head == 2
        q.push_used(chain.head, 4)
    assert q.pop() is None
    assert mq.used_idx == 1
    assert mq.used(0xFFFF) == (2, 4) and mq.used(0x10000) == (2, 4)


@pytest.mark.parametrize("head", [8, 0xFFFF, 2**32, -1])
def test_push_used_refuses_head_past_the_table(mem, head):
    mq, q = make(mem)
    with pytest.raises(QueueError):
        q.push_used(head, 0)
    with pytest.raises(QueueError):
        q.push_used_many([(0, 0), (head, 0)])
    assert mq.used_idx == 0 and q.next_used == 0  # nothing written


def test_push_used(mem):
    mq, q = make(mem)
    mq.add_chain([(DATA, 16, True)])
    chain = q.pop()
    q.push_used(chain.head, 7)
    assert mq.used_idx == 1 and mq.used(0) == (chain.head, 7)


# -- notification suppression ----------------------------------------------------------------


@pytest.mark.parametrize(
    "event,new,old,expected",
    [
        (0, 1, 0, True),
        (1, 1, 0, False),
        (0, 2, 0, True),
        (5, 10, 4, True),
        (10, 10, 4, False),
        (3, 3, 4, False),
        (0xFFFF, 0, 0xFFFE, True),  # wrap: entry 0xFFFF was used by this batch
        (0xFFFF, 0, 0xFFFF, True),
        (0, 0, 0xFFFF, False),
        (0xFFFE, 1, 0xFFFF, False),
    ],
)
def test_vring_need_event(event, new, old, expected):
    assert vring_need_event(event, new, old) is expected


def test_no_interrupt_flag(mem):
    mq, q = make(mem)
    mq.add_chain([(DATA, 16, True)])
    q.push_used(q.pop().head, 0)
    mq.set_avail_flags(c.VIRTQ_AVAIL_F_NO_INTERRUPT)
    assert not q.needs_interrupt()
    mq.set_avail_flags(0)
    assert q.needs_interrupt()


def test_event_idx(mem):
    mq, q = make(mem, event_idx=True)
    mq.set_avail_flags(c.VIRTQ_AVAIL_F_NO_INTERRUPT)  # ignored with EVENT_IDX
    mq.set_used_event(0)
    for expect in (True, False, False):  # the first interrupt, then used_event 0 is behind
        mq.add_chain([(DATA, 16, True)])
        q.push_used(q.pop().head, 0)
        assert q.needs_interrupt() is expect
    mq.set_used_event(3)  # "interrupt me when entry 3 is used" (used idx goes 3 -> 4)
    mq.add_chain([(DATA, 16, True)])
    q.push_used(q.pop().head, 0)
    assert q.needs_interrupt()


def test_publish_avail_event(mem):
    mq, q = make(mem, event_idx=True)
    mq.add_chain([(DATA, 16, True)])
    q.pop()
    assert q.publish_avail_event() is False
    assert mq.avail_event == 1
    mq.add_chain([(DATA, 16, True)])  # arrived in the race window
    assert q.publish_avail_event() is True


def test_publish_avail_event_without_event_idx(mem):
    mq, q = make(mem)
    mq.add_chain([(DATA, 16, True)])
    assert q.publish_avail_event() is False
    assert mq.avail_event == 0


def test_page_size_sanity():
    assert RAM % mmap.PAGESIZE == 0
