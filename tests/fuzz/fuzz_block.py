"""virtio-blk (block.py, and the C fast path) over a temporary disk image.

Input: the device's set-up (read-only or read-write disk, C fast path on or
off or both compared, the ring features the driver takes, the queue size), a script (notify,
the driver rewriting a ring word, a device reset and new handshake), then
guest RAM: the descriptor table, the available ring, request headers, data.
Contract: nothing escapes the transport; guest RAM changes only in the used
ring and in device-writable buffers of consumed chains (unless the driver made
its own rings device-writable: ram.races_itself); every used entry
names a head < size and no more bytes than the chain could take; a
read-only disk's bytes never change; no disk changes size; with the fast
path compared, C and the Python model leave the same RAM and disk.
"""

from __future__ import annotations

import os

from tests.unit.virtio_mock import MockDriver, MockQueue

from vmm.devices.virtio import constants as c
from vmm.devices.virtio import fastpath
from vmm.devices.virtio.block import VirtioBlock
from vmm.devices.virtio.mmio import VirtioMmioTransport
from vmm.memory import GuestMemory

from .guard import confined, quiet_logs, scratch_dir
from .provider import Provider
from .ram import (
    RamCopy,
    check_writes,
    consumed_heads,
    descriptor_ranges,
    overlaps,
    races_itself,
    used_ring_range,
    writable_ranges,
)

quiet_logs()
REGIONS = [(0x0, 0x8000), (0x10000, 0x2000)]
SECTORS = 16
PATTERN = bytes((i * 7 + i // 512) & 0xFF for i in range(SECTORS * 512))
_dir: str | None = None


def _disks() -> tuple[str, str, str]:
    global _dir
    if _dir is None:
        _dir = scratch_dir("block")
        for name in ("ro.img", "rw.img"):
            with open(os.path.join(_dir, name), "wb") as f:
                f.write(PATTERN)
    return _dir, os.path.join(_dir, "ro.img"), os.path.join(_dir, "rw.img")


def _used(memory: GuestMemory, q: MockQueue, first: int, last: int):
    return [q.used(i) for i in range(first, first + ((last - first) & 0xFFFF))]


def test_one_input(data: bytes) -> None:
    p = Provider(data)
    setup = p.u8()
    read_only, fast = bool(setup & 1), not setup & 2
    features_mask = ~((setup >> 2 & 3) << c.VIRTIO_RING_F_INDIRECT_DESC)
    size = p.pick((16, 8, 4, 1, 2, 32, 256))
    script = p.bytes(p.u8() % 8 * 3)
    image = p.rest()
    outcome = _run(read_only, fast, features_mask, size, script, image)
    if setup & 0x10 and fastpath.enabled() and _well_ordered(size, script, image):
        # The C fast path promises what the Python model does: same RAM, used ring, disk.
        other = _run(read_only, not fast, features_mask, size, script, image)
        assert other[0] == outcome[0], "the fast path and the model leave different guest RAM"
        assert other[1] == outcome[1], "the fast path and the model leave different disk contents"


def _well_ordered(size: int, script: bytes, image: bytes) -> bool:
    """Whether the outcome is defined: no device-writable buffer (nor the used
    ring) overlaps the rings, a request header or any buffer the device reads,
    and the driver changes no ring word meanwhile. A driver that lets the device's writes land on what the device
    still has to read races itself: C (which resolves fewer chains ahead) and the
    model may then see different requests, as two real devices could."""
    if any(op % 4 == 2 for op in script[::3]):
        return False
    memory = GuestMemory(REGIONS)
    try:
        memory.write(0, image[:0x8000])
        if len(image) > 0x8000:
            memory.write(0x10000, image[0x8000:0xA000])
        q = MockQueue.at(memory, 0, size)
        ram = RamCopy(memory)
        heads = set(consumed_heads(ram, q, 0, size))  # every ring slot: a superset of what is served
        writable, readable = descriptor_ranges(ram, q.desc_addr, size, heads)
        writable = sorted(set(writable))
        used = [(q.used_addr, 6 + 8 * size)]
        rings = [(q.desc_addr, 16 * size), (q.avail_addr, 6 + 2 * size)] + used
        # The used ring is the device's to write too: a header or buffer on it is
        # read before or after an earlier request's used entry lands there, and
        # C (which answers in batches) and the model answer at different times.
        return not overlaps(writable, readable + rings) and not overlaps(used, readable + rings[:2]) and not any(
            overlaps(writable[i : i + 1], writable[i + 1 :]) for i in range(len(writable))
        )
    finally:
        memory.close()


def _run(read_only: bool, fast: bool, features_mask: int, size: int, script: bytes, image: bytes):
    """One device's life on this input: (guest RAM, disk contents) at the end."""
    directory, ro_path, rw_path = _disks()
    path = ro_path if read_only else rw_path
    if not read_only:
        with open(rw_path, "r+b") as f:  # every case starts from the same disk
            f.write(PATTERN)
    memory = GuestMemory(REGIONS)
    with confined(directory, writable=[rw_path]):
        disk = VirtioBlock(path, read_only=read_only)
        disk.use_fast_path = fast
        try:
            memory.write(0, image[:0x8000])
            if len(image) > 0x8000:
                memory.write(0x10000, image[0x8000:0xA000])
            transport = VirtioMmioTransport(disk, memory, lambda level: None)
            driver = MockDriver(transport)
            q = MockQueue.at(memory, 0, size)
            _start(driver, q, features_mask)
            s = Provider(script or b"\x00")
            while s.remaining:
                op, arg = s.u8() % 4, s.u16()
                if op <= 1:
                    _notify(transport, driver, memory, q)
                elif op == 2:
                    memory.write_int(q.avail_addr + 2, 2, arg)
                else:
                    _start(driver, q, features_mask)
            ram = [bytes(r.mapping) for r in memory.regions]
        finally:
            disk.close()
            memory.close()
    with open(ro_path, "rb") as f:
        assert f.read() == PATTERN, "a read-only disk changed"
    with open(path, "rb") as f:
        contents = f.read()
    assert len(contents) == len(PATTERN)
    return ram, contents


def _start(driver: MockDriver, q: MockQueue, features_mask: int) -> None:
    t = driver.t
    driver.negotiate(mask=features_mask)
    driver.setup_queue(0, q)
    driver.wr(c.MMIO_STATUS, driver.status | c.STATUS_DRIVER_OK)
    assert t.status & c.STATUS_DRIVER_OK, t.last_error


def _notify(transport: VirtioMmioTransport, driver: MockDriver, memory: GuestMemory, q: MockQueue) -> None:
    queue = transport.queues[0]
    before = RamCopy(memory)
    first_avail, first_used = queue.next_avail, queue.next_used
    driver.notify(0)
    if not queue.ready:
        return
    heads = consumed_heads(before, queue, first_avail, queue.next_avail)
    allowed = writable_ranges(before, queue.desc_addr, queue.size, heads)
    if races_itself(allowed, [queue]):
        return
    check_writes(memory, before, [used_ring_range(queue), *allowed])
    if transport.status & c.STATUS_DEVICE_NEEDS_RESET:
        return
    for head, length in _used(memory, q, first_used, queue.next_used):
        assert head < queue.size, head
        room = sum(n for _, n in writable_ranges(before, queue.desc_addr, queue.size, [head]))
        assert length <= room, (head, length, room)
