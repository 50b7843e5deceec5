import threading

import pytest

from vmm.devices.virtio import VirtioDevice, VirtioMmioTransport
from vmm.devices.virtio import constants as c
from vmm.memory import GuestMemory

from .virtio_mock import WRITE, InterruptLine, MockDriver, MockQueue

RAM = 0x20000
DATA = 0x8000
VERSION_1 = 1 << c.VIRTIO_F_VERSION_1
EVENT_IDX = 1 << c.VIRTIO_RING_F_EVENT_IDX
INDIRECT = 1 << c.VIRTIO_RING_F_INDIRECT_DESC


class DummyDevice(VirtioDevice):
    """Two queues; answers every chain with length 0 and counts calls."""

    device_id = 42
    features = VERSION_1 | EVENT_IDX | INDIRECT | 1 << 3
    queue_max_sizes = (16, 8)

    def __init__(self):
        super().__init__()
        self.activations = []
        self.resets = 0
        self.processed = []
        self.config_writes = []
        self.interrupt = None
        self.on_process = None  # a hook run inside process()

    @property
    def config(self):
        return bytes(range(1, 13))

    def write_config(self, offset, data):
        self.config_writes.append((offset, data))

    def activate(self, memory, queues, interrupt):
        self.activations.append([(q.ready, q.event_idx, q.indirect) for q in queues])
        self.interrupt = interrupt

    def reset(self):
        super().reset()
        self.resets += 1

    def process(self, index, queue):
        if self.on_process is not None:
            self.on_process(index)
        added = False
        while (chain := queue.pop()) is not None:
            self.processed.append((index, chain.head, chain.valid))
            queue.push_used(chain.head, 0)
            added = True
        return added


@pytest.fixture
def env():
    mem = GuestMemory([(0, RAM)])
    dev = DummyDevice()
    irq = InterruptLine()
    t = VirtioMmioTransport(dev, mem, irq)
    queues = [MockQueue.at(mem, 0x1000, 16), MockQueue.at(mem, 0x2000, 8)]
    return t, dev, irq, MockDriver(t), queues


def needs_reset(drv):
    return bool(drv.status & c.STATUS_DEVICE_NEEDS_RESET)


def test_identity_registers(env):
    t, dev, irq, drv, _ = env
    assert drv.rd(c.MMIO_MAGIC_VALUE) == 0x74726976
    assert drv.rd(c.MMIO_VERSION) == 2
    assert drv.rd(c.MMIO_DEVICE_ID) == 42
    assert drv.rd(c.MMIO_VENDOR_ID) == c.MMIO_VENDOR
    assert drv.device_features() == dev.features
    drv.wr(c.MMIO_DEVICE_FEATURES_SEL, 7)
    assert drv.rd(c.MMIO_DEVICE_FEATURES) == 0


def test_full_handshake(env):
    t, dev, irq, drv, queues = env
    drv.start(queues, mask=~INDIRECT)
    assert drv.status == c.STATUS_ACKNOWLEDGE | c.STATUS_DRIVER | c.STATUS_FEATURES_OK | c.STATUS_DRIVER_OK
    assert dev.acked_features == dev.features & ~INDIRECT
    assert dev.activations == [[(True, True, False), (True, True, False)]]
    queues[1].add_chain([(DATA, 8, True)])
    drv.notify(1)
    assert dev.processed == [(1, 0, True)]
    assert queues[1].used_idx == 1
    assert irq.calls == [True]
    assert drv.ack_interrupts() == c.MMIO_INT_VRING
    assert irq.calls == [True, False]


def test_queue_registers_read_back(env):
    t, dev, irq, drv, queues = env
    drv.negotiate()
    drv.wr(c.MMIO_QUEUE_SEL, 0)
    assert drv.rd(c.MMIO_QUEUE_NUM_MAX) == 16
    drv.wr(c.MMIO_QUEUE_DESC_LOW, 0x1000)
    drv.wr(c.MMIO_QUEUE_DESC_HIGH, 0x1)
    assert drv.rd(c.MMIO_QUEUE_DESC_LOW) == 0x1000 and drv.rd(c.MMIO_QUEUE_DESC_HIGH) == 1
    assert t.queues[0].desc_addr == 0x1_0000_1000
    drv.wr(c.MMIO_QUEUE_SEL, 5)  # no such queue: reads 0, writes ignored
    assert drv.rd(c.MMIO_QUEUE_NUM_MAX) == 0
    drv.wr(c.MMIO_QUEUE_NUM, 4)
    drv.wr(c.MMIO_QUEUE_READY, 1)
    assert drv.rd(c.MMIO_QUEUE_READY) == 0
    assert not needs_reset(drv)


# -- feature negotiation ------------------------------------------------------------


def test_features_without_version_1_refused(env):
    t, dev, irq, drv, queues = env
    assert not drv.negotiate(features=dev.features & ~VERSION_1)
    drv.wr(c.MMIO_STATUS, drv.status | c.STATUS_DRIVER_OK)
    assert needs_reset(drv)
    assert not dev.activations


def test_unoffered_feature_refused(env):
    t, dev, irq, drv, queues = env
    assert not drv.negotiate(features=VERSION_1 | 1 << 4)


def test_feature_bits_beyond_64_refused(env):
    t, dev, irq, drv, queues = env
    drv.wr(c.MMIO_STATUS, c.STATUS_ACKNOWLEDGE | c.STATUS_DRIVER)
    drv.write_features(VERSION_1)
    drv.wr(c.MMIO_DRIVER_FEATURES_SEL, 2)
    drv.wr(c.MMIO_DRIVER_FEATURES, 1)
    drv.wr(c.MMIO_STATUS, drv.status | c.STATUS_FEATURES_OK)
    assert not drv.status & c.STATUS_FEATURES_OK


def test_minimal_features_accepted(env):
    t, dev, irq, drv, queues = env
    drv.start(queues, features=VERSION_1)
    assert dev.activations == [[(True, False, False), (True, False, False)]]


def test_features_written_after_features_ok(env):
    t, dev, irq, drv, queues = env
    assert drv.negotiate()
    drv.write_features(VERSION_1)
    assert needs_reset(drv)


# -- status state machine ------------------------------------------------------------


@pytest.mark.parametrize(
    "sequence",
    [
        [c.STATUS_DRIVER],  # DRIVER before ACKNOWLEDGE
        [c.STATUS_ACKNOWLEDGE, c.STATUS_ACKNOWLEDGE | c.STATUS_FEATURES_OK],  # FEATURES_OK before DRIVER
        [c.STATUS_ACKNOWLEDGE, c.STATUS_ACKNOWLEDGE | c.STATUS_DRIVER | c.STATUS_DRIVER_OK],  # no FEATURES_OK
        [c.STATUS_ACKNOWLEDGE | c.STATUS_DRIVER, c.STATUS_ACKNOWLEDGE],  # clears a bit
    ],
)
def test_status_order_violations(env, sequence):
    t, dev, irq, drv, queues = env
    for value in sequence:
        drv.wr(c.MMIO_STATUS, value)
    assert needs_reset(drv)
    assert t.last_error
    assert not irq.calls  # no config interrupt before DRIVER_OK (2.1.2)


def test_status_bits_set_in_one_write(env):
    t, dev, irq, drv, queues = env
    drv.wr(c.MMIO_STATUS, c.STATUS_ACKNOWLEDGE | c.STATUS_DRIVER)
    assert drv.status == c.STATUS_ACKNOWLEDGE | c.STATUS_DRIVER


def test_failed_is_recorded_and_stops(env):
    t, dev, irq, drv, queues = env
    drv.start(queues)
    drv.wr(c.MMIO_STATUS, drv.status | c.STATUS_FAILED)
    assert drv.status & c.STATUS_FAILED
    queues[0].add_chain([(DATA, 8, True)])
    drv.notify(0)
    assert not dev.processed


def test_violation_after_driver_ok_interrupts(env):
    t, dev, irq, drv, queues = env
    drv.start(queues)
    drv.wr(c.MMIO_QUEUE_SEL, 0)
    drv.wr(c.MMIO_QUEUE_NUM, 8)  # queue registers are frozen after DRIVER_OK
    assert needs_reset(drv)
    assert irq.calls == [True]
    assert drv.rd(c.MMIO_INTERRUPT_STATUS) == c.MMIO_INT_CONFIG
    # Stopped until reset: notifications and register writes do nothing.
    queues[0].add_chain([(DATA, 8, True)])
    drv.notify(0)
    assert not dev.processed
    # The driver writing back the status it read (NEEDS_RESET included) is fine.
    drv.wr(c.MMIO_STATUS, drv.status)
    assert needs_reset(drv)


def test_queue_config_while_ready(env):
    t, dev, irq, drv, queues = env
    drv.negotiate()
    drv.setup_queue(0, queues[0])
    drv.wr(c.MMIO_QUEUE_DESC_LOW, 0x4000)
    assert needs_reset(drv)


@pytest.mark.parametrize(
    "reg,value",
    [
        (c.MMIO_QUEUE_NUM, 32),  # > QueueNumMax
        (c.MMIO_QUEUE_NUM, 12),  # not a power of two
        (c.MMIO_QUEUE_NUM, 0),
        (c.MMIO_QUEUE_DESC_LOW, 0x1008),  # misaligned
        (c.MMIO_QUEUE_DRIVER_LOW, 0x1001),
        (c.MMIO_QUEUE_DEVICE_LOW, 0x1002),
        (c.MMIO_QUEUE_DEVICE_LOW, RAM - 8),  # outside RAM
        (c.MMIO_QUEUE_DESC_HIGH, 1),
    ],
)
def test_bad_queue_rejected_at_ready(env, reg, value):
    t, dev, irq, drv, queues = env
    drv.negotiate()
    q = queues[0]
    drv.wr(c.MMIO_QUEUE_SEL, 0)
    drv.wr(c.MMIO_QUEUE_NUM, q.size)
    drv.wr(c.MMIO_QUEUE_DESC_LOW, q.desc_addr)
    drv.wr(c.MMIO_QUEUE_DRIVER_LOW, q.avail_addr)
    drv.wr(c.MMIO_QUEUE_DEVICE_LOW, q.used_addr)
    drv.wr(reg, value)
    drv.wr(c.MMIO_QUEUE_READY, 1)
    assert needs_reset(drv)
    assert drv.rd(c.MMIO_QUEUE_READY) == 0


def test_queue_enabled_after_driver_ok(env):
    t, dev, irq, drv, queues = env
    drv.negotiate()
    drv.setup_queue(0, queues[0])
    drv.wr(c.MMIO_STATUS, drv.status | c.STATUS_DRIVER_OK)
    drv.wr(c.MMIO_QUEUE_SEL, 1)
    drv.wr(c.MMIO_QUEUE_READY, 1)
    assert needs_reset(drv)


def test_reset_clears_everything(env):
    t, dev, irq, drv, queues = env
    drv.start(queues)
    queues[0].add_chain([(DATA, 8, True)])
    drv.notify(0)
    assert irq.level
    resets = dev.resets
    drv.wr(c.MMIO_STATUS, 0)
    assert drv.status == 0 and dev.resets == resets + 1
    assert dev.acked_features == 0
    assert not irq.level and drv.rd(c.MMIO_INTERRUPT_STATUS) == 0
    for i, size in enumerate((16, 8)):
        drv.wr(c.MMIO_QUEUE_SEL, i)
        assert drv.rd(c.MMIO_QUEUE_READY) == 0
        assert drv.rd(c.MMIO_QUEUE_NUM) == size
        assert drv.rd(c.MMIO_QUEUE_DESC_LOW) == 0
    # and the device works again after a new handshake, ring indexes from 0
    for q in queues:
        q.memory.write(q.avail_addr, bytes(q.end - q.avail_addr))
        q.avail_idx = 0
    drv.start(queues)
    queues[0].add_chain([(DATA, 8, True)])
    drv.notify(0)
    assert queues[0].used_idx == 1


def test_reset_recovers_from_needs_reset(env):
    t, dev, irq, drv, queues = env
    drv.wr(c.MMIO_STATUS, c.STATUS_DRIVER)
    assert needs_reset(drv)
    drv.start(queues)
    assert not needs_reset(drv)


# -- notifications ------------------------------------------------------------------------


def test_notify_before_driver_ok_ignored(env):
    t, dev, irq, drv, queues = env
    drv.negotiate()
    drv.setup_queue(0, queues[0])
    queues[0].add_chain([(DATA, 8, True)])
    drv.notify(0)
    t.notify(0)
    assert not dev.processed and queues[0].used_idx == 0


def test_notify_unknown_queue_ignored(env):
    t, dev, irq, drv, queues = env
    drv.start(queues)
    drv.notify(7)
    drv.notify(0xFFFFFFFF)
    assert not needs_reset(drv)


def test_avail_idx_jump_needs_reset(env):
    t, dev, irq, drv, queues = env
    drv.start(queues)
    queues[0].set_avail_idx(100)
    drv.notify(0)  # no exception
    assert needs_reset(drv)
    assert "ahead" in t.last_error
    assert drv.rd(c.MMIO_INTERRUPT_STATUS) & c.MMIO_INT_CONFIG


def test_interrupt_raised_only_when_newly_set(env):
    t, dev, irq, drv, queues = env
    drv.start(queues, features=VERSION_1)
    for _ in range(3):
        queues[0].add_chain([(DATA, 8, True)])
        drv.notify(0)
    assert irq.calls == [True]  # bit stays set until acknowledged
    drv.ack_interrupts()
    queues[0].add_chain([(DATA, 8, True)])
    drv.notify(0)
    assert irq.calls == [True, False, True]


def test_partial_ack_keeps_level(env):
    t, dev, irq, drv, queues = env
    drv.start(queues)
    queues[0].add_chain([(DATA, 8, True)])
    drv.notify(0)
    t.config_changed()
    assert drv.rd(c.MMIO_INTERRUPT_STATUS) == 3
    assert drv.rd(c.MMIO_CONFIG_GENERATION) == 1
    drv.wr(c.MMIO_INTERRUPT_ACK, 1)
    assert irq.level
    drv.wr(c.MMIO_INTERRUPT_ACK, 2)
    assert not irq.level


def test_notify_from_other_threads(env):
    t, dev, irq, drv, queues = env
    drv.start(queues, features=VERSION_1)
    q = queues[0]
    for i in range(16):
        q.write_desc(i, DATA + 16 * i, 8, WRITE)
    total = 0
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            drv.rd(c.MMIO_INTERRUPT_STATUS)
            drv.ack_interrupts()

    th = threading.Thread(target=reader)
    th.start()
    try:
        for round_ in range(50):
            for i in range(4):
                q.publish((round_ * 4 + i) % 16)
            total += 4
            workers = [threading.Thread(target=t.notify, args=(0,)) for _ in range(3)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
    finally:
        stop.set()
        th.join()
    assert q.used_idx == total
    assert len(dev.processed) == total


# -- access rules and config space ---------------------------------------------------------


def test_bad_register_accesses_ignored(env):
    t, dev, irq, drv, queues = env
    assert t.read(c.MMIO_MAGIC_VALUE, 2) == 0
    assert t.read(c.MMIO_MAGIC_VALUE + 1, 4) == 0
    assert t.read(c.MMIO_MAGIC_VALUE, 8) == 0
    assert t.read(0xF0, 4) == 0  # reserved
    assert t.read(0x10000, 4) == 0
    assert t.read(-4, 4) == 0
    t.write(c.MMIO_STATUS, 1, c.STATUS_ACKNOWLEDGE)
    t.write(c.MMIO_STATUS + 2, 4, c.STATUS_ACKNOWLEDGE)
    t.write(-4, 4, 1)
    t.write(0x10000, 4, 1)
    t.write(c.MMIO_MAGIC_VALUE, 4, 0)  # read-only register
    assert drv.status == 0
    assert drv.rd(c.MMIO_MAGIC_VALUE) == c.MMIO_MAGIC


def test_config_space_reads(env):
    t, dev, irq, drv, queues = env
    base = c.MMIO_CONFIG
    assert t.read(base, 1) == 1
    assert t.read(base + 1, 2) == 0x0302
    assert t.read(base + 3, 4) == 0x07060504  # any alignment
    assert t.read(base + 4, 8) == int.from_bytes(bytes(range(5, 13)), "little")
    assert t.read(base + 11, 1) == 12
    assert t.read(base + 11, 2) == 0  # crosses the end
    assert t.read(base + 12, 1) == 0
    assert t.read(base, 3) == 0  # not a valid width
    assert t.read(base + 0x1000, 4) == 0


def test_config_space_writes(env):
    t, dev, irq, drv, queues = env
    t.write(c.MMIO_CONFIG + 2, 2, 0xABCDEF)
    t.write(c.MMIO_CONFIG + 11, 4, 1)  # out of range
    assert dev.config_writes == [(2, b"\xef\xcd")]


# -- the device's side: TransportInterrupt (trigger, config_changed) -----------------


def test_trigger_processes_queue_and_interrupts(env):
    t, dev, irq, drv, queues = env
    drv.start(queues, mask=~EVENT_IDX)
    queues[0].add_chain([(DATA, 8, True)])  # buffers posted, no notify (e.g. an rx queue)
    assert dev.processed == []
    dev.interrupt.trigger(0)  # host input arrived
    assert dev.processed == [(0, 0, True)]
    assert queues[0].used_idx == 1
    assert irq.calls == [True]
    assert drv.rd(c.MMIO_INTERRUPT_STATUS) == c.MMIO_INT_VRING


def test_trigger_honours_no_interrupt(env):
    t, dev, irq, drv, queues = env
    drv.start(queues, mask=~EVENT_IDX)
    queues[0].set_avail_flags(c.VIRTQ_AVAIL_F_NO_INTERRUPT)
    queues[0].add_chain([(DATA, 8, True)])
    dev.interrupt.trigger(0)
    assert queues[0].used_idx == 1 and irq.calls == []


def test_trigger_honours_event_idx(env):
    t, dev, irq, drv, queues = env
    drv.start(queues)
    queues[0].add_chain([(DATA, 8, True)])
    dev.interrupt.trigger(0)
    assert irq.calls == [True]  # the first batch always signals
    drv.ack_interrupts()
    queues[0].set_used_event(5)  # the driver wants an interrupt only past used index 5
    queues[0].add_chain([(DATA, 8, True)])
    dev.interrupt.trigger(0)
    assert queues[0].used_idx == 2 and irq.raised == 1


def test_trigger_is_noop_unless_running(env):
    t, dev, irq, drv, queues = env
    interrupt = t.device_interrupt  # what activate() will hand out
    interrupt.trigger(0)
    interrupt.trigger(99)
    drv.start(queues)
    drv.wr(c.MMIO_STATUS, 0)  # reset: stopped again
    queues[0].add_chain([(DATA, 8, True)])
    interrupt.trigger(0)
    dev.interrupt.trigger(-1)
    assert dev.processed == [] and irq.raised == 0


def test_trigger_skips_queue_not_ready(env):
    t, dev, irq, drv, queues = env
    drv.negotiate()
    drv.setup_queue(0, queues[0])  # queue 1 never made ready
    drv.wr(c.MMIO_STATUS, drv.status | c.STATUS_DRIVER_OK)
    dev.interrupt.trigger(1)
    assert dev.processed == [] and not needs_reset(drv)


def test_trigger_from_inside_process_is_deferred_not_recursive(env):
    t, dev, irq, drv, queues = env
    drv.start(queues)
    depth = []

    def hook(index):
        depth.append(index)
        if len(depth) == 1:
            queues[1].add_chain([(DATA, 8, True)])
            dev.interrupt.trigger(1)  # same thread, lock held: must not deadlock
            dev.interrupt.config_changed()
            assert dev.processed == []  # not run recursively

    dev.on_process = hook
    queues[0].add_chain([(DATA, 8, True)])
    drv.notify(0)
    assert depth == [0, 1]
    assert dev.processed == [(0, 0, True), (1, 0, True)]
    assert drv.rd(c.MMIO_INTERRUPT_STATUS) == c.MMIO_INT_VRING | c.MMIO_INT_CONFIG


def test_self_retriggering_device_is_bounded(env):
    t, dev, irq, drv, queues = env
    drv.start(queues)
    dev.on_process = lambda index: dev.interrupt.trigger(index)  # a buggy device
    drv.notify(0)
    assert t.read(c.MMIO_STATUS, 4) & c.STATUS_DRIVER_OK  # returned, device still up


def test_trigger_from_another_thread(env):
    t, dev, irq, drv, queues = env
    drv.start(queues, mask=~EVENT_IDX)
    for _ in range(8):
        queues[0].add_chain([(DATA, 8, True)])
    threads = [threading.Thread(target=dev.interrupt.trigger, args=(0,)) for _ in range(4)]
    for th in threads:
        th.start()
    drv.notify(0)
    for th in threads:
        th.join()
    assert sorted(h for _, h, _ in dev.processed) == list(range(8))
    assert queues[0].used_idx == 8


def test_config_changed_through_device_interrupt(env):
    t, dev, irq, drv, queues = env
    drv.start(queues)
    generation = drv.rd(c.MMIO_CONFIG_GENERATION)
    dev.interrupt.config_changed()
    assert drv.rd(c.MMIO_CONFIG_GENERATION) == generation + 1
    assert drv.rd(c.MMIO_INTERRUPT_STATUS) == c.MMIO_INT_CONFIG
    assert irq.calls == [True]


def test_device_leaving_buffers_queued_does_not_spin(env):
    """An rx-like queue: buffers wait for host input, process() takes none."""
    t, dev, irq, drv, queues = env
    drv.start(queues)  # EVENT_IDX negotiated: publish_avail_event sees pending buffers
    calls = []

    def idle_process(index, queue):
        calls.append(index)
        assert len(calls) < 100, "transport keeps calling process() on a queue the device leaves alone"
        return False

    dev.process = idle_process
    queues[0].add_chain([(DATA, 8, True)])
    drv.notify(0)
    dev.interrupt.trigger(0)
    assert calls == [0, 0] and not needs_reset(drv)
