"""The virtio-mmio transport (mmio.py, mmio_state.py) driven by a hostile driver.

Input: a script of register reads and writes, notifies, host-side events,
state save/restore round trips and forged state records, then the bytes of
guest RAM (rings and descriptors). Contract: read/write/notify never raise;
a register read is a u32 (a config read fits its width); the interrupt line
is high exactly while InterruptStatus is non-zero; the device's RAM writes
stay in used rings; any reachable state restores to itself
(from_state(state()) == state()); a forged record is refused with
StateError or restores to exactly itself.
"""

from __future__ import annotations

from vmm.devices.virtio import constants as c
from vmm.devices.virtio.device import VirtioDevice
from vmm.devices.virtio.mmio import VirtioMmioTransport
from vmm.devices.virtio.mmio_state import TransportState
from vmm.devices.virtio.queue import QueueState, StateError
from vmm.memory import GuestMemory

from .guard import quiet_logs
from .provider import Provider
from .ram import RamCopy, check_writes, used_ring_range

quiet_logs()
REGIONS = [(0x0, 0x4000), (0x10000, 0x2000)]
REGISTERS = (
    c.MMIO_MAGIC_VALUE, c.MMIO_VERSION, c.MMIO_DEVICE_ID, c.MMIO_VENDOR_ID, c.MMIO_DEVICE_FEATURES,
    c.MMIO_DEVICE_FEATURES_SEL, c.MMIO_DRIVER_FEATURES, c.MMIO_DRIVER_FEATURES_SEL, c.MMIO_QUEUE_SEL,
    c.MMIO_QUEUE_NUM_MAX, c.MMIO_QUEUE_NUM, c.MMIO_QUEUE_READY, c.MMIO_QUEUE_NOTIFY, c.MMIO_INTERRUPT_STATUS,
    c.MMIO_INTERRUPT_ACK, c.MMIO_STATUS, c.MMIO_QUEUE_DESC_LOW, c.MMIO_QUEUE_DESC_HIGH, c.MMIO_QUEUE_DRIVER_LOW,
    c.MMIO_QUEUE_DRIVER_HIGH, c.MMIO_QUEUE_DEVICE_LOW, c.MMIO_QUEUE_DEVICE_HIGH, c.MMIO_CONFIG_GENERATION,
    c.MMIO_CONFIG, c.MMIO_CONFIG + 4,
)
# Ring placement the handshake macro uses: queue i at QUEUE_BASE + i * 0x1000.
QUEUE_BASE = 0x1000


class EchoDevice(VirtioDevice):
    """Answers every chain with a used length of 0; a chain whose first buffer
    has an odd length kicks the other queue from inside process() (the
    transport's deferral), one of length 3 changes the config."""

    device_id = 42
    features = 1 << c.VIRTIO_F_VERSION_1 | 1 << c.VIRTIO_RING_F_INDIRECT_DESC | 1 << c.VIRTIO_RING_F_EVENT_IDX | 1
    queue_max_sizes = (8, 4)
    max_chain_len = 16

    def __init__(self):
        super().__init__()
        self._config = bytearray(b"ECHOconfig\0\0\0\0\0\0")
        self.interrupt = None

    @property
    def config(self) -> bytes:
        return bytes(self._config)

    def write_config(self, offset: int, data: bytes) -> None:
        assert 0 <= offset and offset + len(data) <= len(self._config), (offset, len(data))
        self._config[offset : offset + len(data)] = data

    def activate(self, memory, queues, interrupt) -> None:
        self.interrupt = interrupt

    def process(self, queue_index, queue) -> bool:
        chains = queue.pop_batch()
        if not chains:
            return False
        queue.push_used_many([(ch.head, 0) for ch in chains])
        first = chains[0].buffers[0].length if chains[0].buffers else 0
        if first % 2 and self.interrupt is not None:
            self.interrupt.trigger(queue_index ^ 1)
        if first == 3 and self.interrupt is not None:
            self.interrupt.config_changed()
        return True


class Line:
    def __init__(self):
        self.level = False

    def __call__(self, level: bool) -> None:
        self.level = level


def _handshake(t: VirtioMmioTransport, p: Provider) -> None:
    """A well-behaved driver's set-up (3.1.1) with fuzzed features and queue sizes."""
    w = lambda off, val: t.write(off, 4, val)  # noqa: E731
    w(c.MMIO_STATUS, 0)
    w(c.MMIO_STATUS, c.STATUS_ACKNOWLEDGE)
    w(c.MMIO_STATUS, c.STATUS_ACKNOWLEDGE | c.STATUS_DRIVER)
    features = EchoDevice.features & p.u64() | 1 << c.VIRTIO_F_VERSION_1
    for sel in (0, 1):
        w(c.MMIO_DRIVER_FEATURES_SEL, sel)
        w(c.MMIO_DRIVER_FEATURES, (features >> 32 * sel) & 0xFFFFFFFF)
    w(c.MMIO_STATUS, c.STATUS_ACKNOWLEDGE | c.STATUS_DRIVER | c.STATUS_FEATURES_OK)
    for index, max_size in enumerate(EchoDevice.queue_max_sizes):
        size = p.pick((1, 2, 4, 8, max_size))
        base = QUEUE_BASE + index * 0x1000
        desc, avail = base, base + 16 * size
        used = (avail + 6 + 2 * size + 3) & ~3
        w(c.MMIO_QUEUE_SEL, index)
        w(c.MMIO_QUEUE_NUM, size)
        for low, addr in ((c.MMIO_QUEUE_DESC_LOW, desc), (c.MMIO_QUEUE_DRIVER_LOW, avail), (c.MMIO_QUEUE_DEVICE_LOW, used)):
            w(low, addr)
            w(low + 4, 0)
        w(c.MMIO_QUEUE_READY, 1)
    w(c.MMIO_STATUS, c.STATUS_ACKNOWLEDGE | c.STATUS_DRIVER | c.STATUS_FEATURES_OK | c.STATUS_DRIVER_OK)


def _small(p: Provider, bits: int) -> int:
    """Mostly small values (what a real record holds), sometimes any value of ``bits`` bits."""
    kind = p.u8()
    if kind < 200:
        return kind % 10
    if kind < 250:
        return p.uint(2)
    return p.uint((bits + 7) // 8) & ((1 << bits) - 1)


def _forged_record(p: Provider) -> TransportState:
    queues = []
    for _ in range(p.pick((2, 2, 2, 1, 3))):
        queues.append(QueueState(
            p.pick((1, 2, 4, 8, 16, 0, 3)), p.bool(), QUEUE_BASE + 0x40 * _small(p, 16), QUEUE_BASE + 0x40 * _small(p, 16),
            QUEUE_BASE + 0x40 * _small(p, 16), _small(p, 16), _small(p, 16), p.bool(), p.bool(),
            None if p.bool() else _small(p, 16),
        ))
    return TransportState(
        p.pick((0, 1, 3, 0xB, 0xF, 0x4F, 0x8F, 0x7, 0x40)) | (_small(p, 8) if p.u8() > 240 else 0),
        _small(p, 32), _small(p, 32), _small(p, 64) | (1 << 32 if p.bool() else 0), p.bool(), _small(p, 32),
        _small(p, 32) & 3 if p.bool() else _small(p, 32), _small(p, 32), _small(p, 64) | (1 << 32 if p.bool() else 0),
        tuple(queues),
    )


def _check(t: VirtioMmioTransport, line: Line) -> None:
    assert line.level == bool(t.interrupt_status), (line.level, t.interrupt_status)


def test_one_input(data: bytes) -> None:
    p = Provider(data)
    n_ops = p.u8() % 48
    script = p.bytes(n_ops * 11)
    memory = GuestMemory(REGIONS)
    try:
        image = p.rest()
        memory.write(0, image[:0x4000])
        if len(image) > 0x4000:
            memory.write(0x10000, image[0x4000:0x6000])
        line = Line()
        t = VirtioMmioTransport(EchoDevice(), memory, line)
        s = Provider(script)
        while s.remaining:
            t, line = _step(t, s, memory, line)
            _check(t, line)
    finally:
        memory.close()


def _allowed(t: VirtioMmioTransport):
    return [used_ring_range(q) for q in t.queues if q.ready]


def _step(t: VirtioMmioTransport, s: Provider, memory: GuestMemory, line: Line) -> tuple[VirtioMmioTransport, Line]:
    kind = s.u8() % 10
    if kind in (0, 1):  # a register write (mostly 4-byte, aligned)
        offset = s.pick(REGISTERS) + (s.u8() % 8 if s.u8() > 230 else 0)
        size = s.pick((4, 4, 4, 1, 2, 8, 3))
        value = s.u32() | (s.u8() << 32 if size == 8 else 0)
        if offset != c.MMIO_QUEUE_NOTIFY:  # no other register write runs the device
            t.write(offset, size, value)
            return t, line
        before = RamCopy(memory)
        allowed = _allowed(t)
        t.write(offset, size, value)
        check_writes(memory, before, allowed + _allowed(t))
    elif kind == 2:
        offset = s.u16() % 0x140
        size = s.pick((4, 1, 2, 8, 3, 0))
        value = t.read(offset, size)
        limit = 1 << 32 if offset < c.MMIO_CONFIG else 1 << (8 * max(size, 1))
        assert type(value) is int and 0 <= value < limit, (offset, size, value)
    elif kind in (3, 4):
        before = RamCopy(memory)
        allowed = _allowed(t)
        t.notify(s.u8() % 4)
        check_writes(memory, before, allowed + _allowed(t))
    elif kind == 5:
        _handshake(t, s)
    elif kind == 6:  # save and restore: a reachable state restores to itself
        state = t.state()
        restored_line = Line()
        restored_line.level = bool(state.interrupt_status)  # the caller restores the line (from_state's contract)
        try:
            t2 = VirtioMmioTransport.from_state(EchoDevice(), memory, restored_line, state)
        except StateError as err:
            raise AssertionError(f"a state the transport reached does not restore: {err}") from None
        assert t2.state() == state, (t2.state(), state)
        return t2, restored_line
    elif kind == 7:  # a forged record: refused, or restored exactly
        record = _forged_record(s)
        forged_line = Line()
        try:
            t2 = VirtioMmioTransport.from_state(EchoDevice(), memory, forged_line, record)
        except StateError as err:
            assert "\n" not in str(err)
            return t, line
        assert t2.state() == record, (t2.state(), record)
        forged_line.level = bool(record.interrupt_status)
        return (t2, forged_line) if s.bool() else (t, line)
    elif kind == 8:
        before = RamCopy(memory)
        allowed = _allowed(t)
        t.config_changed()
        check_writes(memory, before, allowed)
    else:  # the driver rewrites a word of RAM between accesses (avail.idx, a ring entry)
        addr = s.u16() % 0x4000 & ~1
        memory.write_int(addr, 2, s.u16())
    return t, line
