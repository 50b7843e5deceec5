"""The split virtqueue (queue.py, chain.py) over descriptor tables in fake guest RAM.

Input: the queue's configuration (size, ring addresses: mostly well placed,
sometimes anywhere; negotiated ring features; the device's chain limit),
a script of device operations, then guest RAM (descriptor table, rings,
indirect tables). Contract: only QueueError / GuestMemoryError escape, and
a bad chain comes back as a chain with a typed ChainError; popping writes
nothing; every buffer lies in RAM with a view of its length; a chain holds
at most max_chain_len buffers and at most MAX_CHAIN_BYTES; a valid chain
has no readable buffer after a writable one; a batch stays in its budget;
answering writes only the used ring (and avail_event).
"""

from __future__ import annotations

from vmm.devices.virtio.queue import (
    MAX_CHAIN_BYTES,
    ChainError,
    DescriptorChain,
    QueueError,
    SplitQueue,
)
from vmm.errors import GuestMemoryError
from vmm.memory import GuestMemory

from .guard import quiet_logs
from .provider import Provider
from .ram import RamCopy, check_writes, used_ring_range

quiet_logs()
# Two regions with a hole between them (the hole and past-the-end are where bad addresses go).
REGIONS = [(0x0, 0x8000), (0x10000, 0x2000)]
SIZES = (1, 2, 4, 8, 16, 32, 256, 3, 0)


def _address(p: Provider, default: int) -> int:
    mode = p.u8()
    if mode < 230:
        return default
    if mode < 250:
        return p.u16() * 2
    return p.u64()


def _check_chain(q: SplitQueue, memory: GuestMemory, chain: DescriptorChain) -> None:
    assert isinstance(chain, DescriptorChain)
    assert 0 <= chain.head < q.size
    assert chain.fault is None or isinstance(chain.fault, ChainError), chain.fault
    assert len(chain.buffers) <= q.max_chain_len, (len(chain.buffers), q.max_chain_len)
    total = 0
    seen_writable = False
    for b in chain.buffers:
        assert memory.contains(b.addr, b.length), b
        assert len(b.view) == b.length and b.view.nbytes == b.length, b
        total += b.length
        if chain.valid:
            assert not (seen_writable and not b.writable), "readable buffer after a writable one in a valid chain"
        seen_writable |= b.writable
    assert total <= MAX_CHAIN_BYTES + (0xFFFFFFFF if not chain.valid else 0)
    if chain.error is not None:
        assert "\n" not in chain.error


def test_one_input(data: bytes) -> None:
    p = Provider(data)
    size = p.pick(SIZES)
    max_chain_len = p.pick((1, 2, 3, 4, 16, 128, 256))
    features = p.u8()
    first_index = p.u16()
    desc = _address(p, 0)
    avail = _address(p, 16 * max(size, 1))
    used = _address(p, (16 * max(size, 1) + 6 + 2 * max(size, 1) + 3) & ~3)
    script = p.bytes(p.u8() % 16 * 3)
    memory = GuestMemory(REGIONS)
    try:
        image = p.rest()
        memory.write(0, image[:0x8000])
        if len(image) > 0x8000:
            memory.write(0x10000, image[0x8000:0xA000])
        q = SplitQueue(memory, size, max_chain_len)
        q.desc_addr, q.avail_addr, q.used_addr = desc, avail, used
        q.indirect, q.event_idx = bool(features & 1), bool(features & 2)
        try:
            q.enable()
        except QueueError as err:
            assert "\n" not in str(err)
            return
        q.next_avail = q.next_used = first_index  # any point of the u16 wrap
        _run(q, memory, Provider(script or b"\x00\x01"))
    finally:
        memory.close()


def _run(q: SplitQueue, memory: GuestMemory, s: Provider) -> None:
    popped: list[int] = []
    while s.remaining:
        op, arg = s.u8() % 6, s.u16()
        try:
            if op in (0, 1):
                before = RamCopy(memory)
                if op == 0:
                    chain = q.pop()
                    chains = [] if chain is None else [chain]
                else:
                    budget = arg % 300 + 1
                    chains = q.pop_batch(budget)
                    assert len(chains) <= q.size
                    if chains:
                        assert sum(len(ch.buffers) for ch in chains[:-1]) < budget
                check_writes(memory, before, [])  # popping only reads
                for chain in chains:
                    _check_chain(q, memory, chain)
                    popped.append(chain.head)
            elif op == 2 and popped:
                before = RamCopy(memory)
                answers = [(head, arg * 7) for head in popped]
                q.push_used_many(answers)
                popped.clear()
                check_writes(memory, before, [used_ring_range(q)])
            elif op == 3:
                before = RamCopy(memory)
                q.publish_avail_event()
                check_writes(memory, before, [used_ring_range(q)])
            elif op == 4:
                assert type(q.needs_interrupt()) is bool
            else:  # the driver publishes more (or fewer) entries
                memory.write_int(q.avail_addr + 2, 2, arg)
        except (QueueError, GuestMemoryError) as err:
            assert "\n" not in str(err)
