"""virtio-console (MULTIPORT) driven through the virtio-mmio transport by a mock driver."""

import os
import struct
import threading
import time
import tracemalloc

import pytest
from construct import Int16ul, Int32ul, Struct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmm.devices.virtio import VirtioMmioTransport
from vmm.devices.virtio import constants as c
from vmm.devices.virtio import console as con
from vmm.devices.virtio.console import ConsoleError, PortClosedError, VirtioConsole
from vmm.devices.virtio.queue import StateError
from vmm.errors import ConfigError
from vmm.memory import GuestMemory

from .virtio_mock import INDIRECT, NEXT, WRITE, InterruptLine, MockDriver, MockQueue, RecordingMemory, pack_desc

RAM = 0x200000
QSIZE = 16
BUFFERS = 0x80000  # the mock driver's buffers are bump-allocated from here
MULTIPORT = 1 << con.VIRTIO_CONSOLE_F_MULTIPORT

# Independent reading of 5.3.4 and 5.3.6.2.
ControlMsg = Struct("id" / Int32ul, "event" / Int16ul, "value" / Int16ul)
ConsoleConfig = Struct("cols" / Int16ul, "rows" / Int16ul, "max_nr_ports" / Int32ul, "emerg_wr" / Int32ul)


def ctrl(port, event, value=0, extra=b""):
    return ControlMsg.build(dict(id=port, event=event, value=value)) + extra


class Rig:
    """A VirtioConsole behind the transport; the test plays the guest driver."""

    def __init__(self, names=("stdin", "stdout"), *, features=None, mask=~0, **kwargs):
        self.mem = GuestMemory([(0, RAM)])
        self.output = []
        self.opened = []
        self.writable = []
        self.dev = VirtioConsole(
            list(names),
            on_output=lambda port, data: self.output.append((port, data)),
            on_guest_open=lambda port, is_open: self.opened.append((port, is_open)),
            on_writable=self.writable.append,
            **kwargs,
        )
        self.irq = InterruptLine()
        self.t = VirtioMmioTransport(self.dev, self.mem, self.irq)
        nqueues = 2 * len(names) + 2
        self.q = [MockQueue.at(self.mem, 0x1000 * (i + 1), QSIZE) for i in range(nqueues)]
        self.drv = MockDriver(self.t)
        self.drv.start(self.q, features=features, mask=mask)
        self.next_buf = BUFFERS
        self.ctrl_seen = 0  # used entries of the control receive queue read so far
        self.rx_seen = {}
        self.rx_posted = {}

    def alloc(self, size):
        addr = self.next_buf
        self.next_buf += (size + 15) & ~15
        assert self.next_buf < RAM
        return addr

    # -- driver -> device
    def send_chain(self, queue_index, pieces, notify=True):
        """A chain of device-readable buffers holding ``pieces``."""
        bufs = []
        for piece in pieces:
            addr = self.alloc(max(len(piece), 1))
            self.mem.write(addr, piece)
            bufs.append((addr, len(piece), False))
        head = self.q[queue_index].add_chain(bufs)
        if notify:
            self.drv.notify(queue_index)
        return head

    def send_ctrl(self, port, event, value=0):
        self.send_chain(con.CONTROL_TX, [ctrl(port, event, value)])

    def guest_write(self, port, *pieces):
        self.send_chain(con.tx_queue(port), list(pieces))

    # -- device -> driver
    def post(self, queue_index, *sizes, notify=True):
        """One chain of device-writable buffers of these sizes."""
        bufs = [(self.alloc(n), n, True) for n in sizes]
        head = self.q[queue_index].add_chain(bufs)
        self.rx_posted.setdefault(queue_index, {})[head] = bufs
        if notify:
            self.drv.notify(queue_index)
        return head

    def take_used(self, queue_index):
        """Data of every chain the device returned since the last call."""
        q = self.q[queue_index]
        seen = self.rx_seen.get(queue_index, 0)
        out = []
        while seen != q.used_idx:
            head, length = q.used(seen)
            seen = (seen + 1) & 0xFFFF
            data = b""
            for addr, n, _ in self.rx_posted[queue_index][head]:
                take = min(n, length - len(data))
                data += self.mem.read(addr, take)
            out.append(data)
        self.rx_seen[queue_index] = seen
        return out

    def control_messages(self):
        msgs = []
        for raw in self.take_used(con.CONTROL_RX):
            assert len(raw) >= 8
            m = ControlMsg.parse(raw)
            msgs.append((m.id, m.event, m.value, raw[8:]))
        return msgs

    def handshake(self, buffers=16):
        for _ in range(buffers):
            self.post(con.CONTROL_RX, 128, notify=False)
        self.drv.notify(con.CONTROL_RX)
        self.send_ctrl(0xFFFFFFFF, con.DEVICE_READY, 1)
        added = [m[0] for m in self.control_messages() if m[1] == con.DEVICE_ADD]
        for port in added:
            self.send_ctrl(port, con.PORT_READY, 1)
        return added

    def open(self, port, rx_buffers=(64,) * 4):
        for n in rx_buffers:
            self.post(con.rx_queue(port), n, notify=False)
        self.drv.notify(con.rx_queue(port))
        self.send_ctrl(port, con.PORT_OPEN, 1)

    def received(self, port):
        return b"".join(self.take_used(con.rx_queue(port)))

    @property
    def healthy(self):
        return not self.drv.status & c.STATUS_DEVICE_NEEDS_RESET


@pytest.fixture
def rig():
    return Rig()


def started(names=("stdin", "stdout"), **kwargs):
    r = Rig(names, **kwargs)
    r.handshake()
    r.control_messages()
    return r


# -- construction, config, features -----------------------------------------------


def test_config_space_and_queues(rig):
    cfg = ConsoleConfig.parse(rig.dev.config)
    assert (cfg.cols, cfg.rows, cfg.max_nr_ports) == (80, 24, 2)
    assert rig.t.read(c.MMIO_CONFIG + 4, 4) == 2
    assert rig.drv.rd(c.MMIO_DEVICE_ID) == 3
    features = rig.drv.device_features()
    assert features & MULTIPORT and features & (1 << c.VIRTIO_F_VERSION_1)
    assert features & (1 << c.VIRTIO_RING_F_EVENT_IDX) and features & (1 << c.VIRTIO_RING_F_INDIRECT_DESC)
    assert len(rig.dev.queue_max_sizes) == 6  # port 0, control, port 1
    rig.drv.wr(c.MMIO_QUEUE_SEL, 6)
    assert rig.drv.rd(c.MMIO_QUEUE_NUM_MAX) == 0


def test_queue_numbering():
    assert [con.rx_queue(p) for p in range(4)] == [0, 4, 6, 8]
    assert [con.tx_queue(p) for p in range(4)] == [1, 5, 7, 9]
    assert con.queue_port(2) is None and con.queue_port(3) is None
    assert con.queue_port(7) == (2, False) and con.queue_port(0) == (0, True)


def test_layouts_agree_with_construct():
    assert con.CONTROL.pack(5, 7, 1) == ctrl(5, 7, 1)
    parsed = ConsoleConfig.parse(con.CONFIG.pack(100, 40, 3, 0))
    assert (parsed.cols, parsed.rows, parsed.max_nr_ports) == (100, 40, 3)


@pytest.mark.parametrize(
    "names, message",
    [
        ([], "0 ports"),
        (["a"] * 2, "unique"),
        ([""], "bad port name"),
        (["x" * 121], "bad port name"),
        (["a\0b"], "bad port name"),
        ([f"p{i}" for i in range(32)], "32 ports"),
    ],
)
def test_bad_construction(names, message):
    with pytest.raises(ConfigError, match=message):
        VirtioConsole(names, on_output=print)


def test_bad_backlog_size():
    with pytest.raises(ConfigError, match="max_input_backlog"):
        VirtioConsole(["a"], on_output=print, max_input_backlog=0)


# -- handshake ---------------------------------------------------------------------


def test_handshake_adds_names_and_opens_every_port(rig):
    assert rig.handshake() == [0, 1]
    msgs = rig.control_messages()
    assert (0, con.PORT_NAME, 0, b"stdin") in msgs
    assert (1, con.PORT_NAME, 0, b"stdout") in msgs
    assert (0, con.PORT_OPEN, 1, b"") in msgs and (1, con.PORT_OPEN, 1, b"") in msgs
    # a port's name comes before its open state
    assert msgs.index((0, con.PORT_NAME, 0, b"stdin")) < msgs.index((0, con.PORT_OPEN, 1, b""))
    assert not any(m[1] == con.CONSOLE_PORT for m in msgs)  # data ports, not terminals
    assert rig.healthy


def test_repeated_ready_messages_answered_once(rig):
    rig.handshake()
    rig.control_messages()
    rig.send_ctrl(0, con.DEVICE_READY, 1)
    rig.send_ctrl(0, con.PORT_READY, 1)
    rig.send_ctrl(1, con.PORT_READY, 1)
    assert rig.control_messages() == []


def test_control_messages_wait_for_receive_buffers(rig):
    rig.send_ctrl(0, con.DEVICE_READY, 1)  # no control receive buffers yet
    assert rig.control_messages() == []
    rig.post(con.CONTROL_RX, 128)
    rig.post(con.CONTROL_RX, 128)
    assert [m[:2] for m in rig.control_messages()] == [(0, con.DEVICE_ADD), (1, con.DEVICE_ADD)]


def test_guest_open_and_close_reported(rig):
    rig.handshake()
    rig.send_ctrl(1, con.PORT_OPEN, 1)
    assert rig.dev.port_open(1) and not rig.dev.port_open(0)
    rig.send_ctrl(1, con.PORT_OPEN, 1)  # no change: no second report
    rig.send_ctrl(1, con.PORT_OPEN, 0)
    assert rig.opened == [(1, True), (1, False)]
    assert not rig.dev.port_open(1)


def test_driver_failure_values_are_respected(rig):
    for _ in range(4):
        rig.post(con.CONTROL_RX, 128)
    rig.send_ctrl(0, con.DEVICE_READY, 0)  # driver failed: nothing sent
    assert rig.control_messages() == []
    rig.send_ctrl(0, con.DEVICE_READY, 1)
    assert len(rig.control_messages()) == 2
    rig.send_ctrl(1, con.PORT_READY, 0)  # port 1 failed: no name, no open
    assert rig.control_messages() == []


def test_console_port_nomination_and_resize():
    r = Rig(["tty", "data"], console_port=0)
    r.dev.resize(100, 30)  # before the guest is ready: config only
    assert ConsoleConfig.parse(r.dev.config).cols == 100
    r.handshake()
    msgs = r.control_messages()
    assert (0, con.CONSOLE_PORT, 1, b"") in msgs
    assert not any(m[1] == con.CONSOLE_PORT and m[0] == 1 for m in msgs)
    r.dev.resize(132, 43)
    assert r.control_messages() == [(0, con.RESIZE, 0, struct.pack("<HH", 132, 43))]
    # without receive buffers, a newer size replaces the one still waiting
    r2 = Rig(["tty"], console_port=0)
    r2.handshake(buffers=3)  # ADD, then CONSOLE_PORT and NAME: OPEN and the rest wait
    for size in range(50):
        r2.dev.resize(80 + size, 24)
    assert len(r2.dev._control) == 2  # OPEN, one RESIZE
    r2.post(con.CONTROL_RX, 128)
    r2.post(con.CONTROL_RX, 128)
    assert r2.control_messages()[-1] == (0, con.RESIZE, 0, struct.pack("<HH", 129, 24))


def test_console_port_must_exist():
    with pytest.raises(ConfigError, match="console port"):
        VirtioConsole(["a"], on_output=print, console_port=1)


# -- guest -> host -----------------------------------------------------------------


def test_guest_output_binary_in_order():
    r = started()
    data = bytes(range(256)) * 4 + b"\0\0\0"
    r.guest_write(1, data[:100], data[100:])  # one chain, two buffers
    r.guest_write(1, b"\0")
    r.guest_write(0, b"on port 0")
    assert r.output == [(1, data), (1, b"\0"), (0, b"on port 0")]
    assert r.q[con.tx_queue(1)].used(0) == (0, 0)  # returned, nothing written into it


def test_paused_output_stays_in_the_ring():
    r = started()

    def full_sink(port, data):  # takes one chunk, then is full
        r.output.append((port, data))
        r.dev.pause_output(port)

    r.dev._on_output = full_sink
    r.send_chain(con.tx_queue(1), [b"one"], notify=False)
    r.send_chain(con.tx_queue(1), [b"two"], notify=False)
    r.drv.notify(con.tx_queue(1))
    assert r.output == [(1, b"one")]
    assert r.q[con.tx_queue(1)].used_idx == 1  # "two" waits in the guest's ring
    r.guest_write(1, b"three")
    assert r.output == [(1, b"one")]
    r.dev._on_output = lambda port, data: r.output.append((port, data))
    r.dev.resume_output(1)
    assert r.output == [(1, b"one"), (1, b"two"), (1, b"three")]
    assert r.q[con.tx_queue(1)].used_idx == 3
    r.guest_write(0, b"other port unaffected")
    assert r.output[-1] == (0, b"other port unaffected")


def test_empty_guest_write_makes_no_call():
    r = started()
    r.guest_write(1, b"")
    assert r.output == [] and r.q[con.tx_queue(1)].used_idx == 1


def test_large_guest_output_comes_in_bounded_pieces(monkeypatch):
    monkeypatch.setattr(con, "OUTPUT_PIECE", 1000)
    r = started()
    data = os.urandom(2500)
    r.guest_write(1, data[:700], data[700:])
    assert [len(d) for _, d in r.output] == [1000, 1000, 500]
    assert b"".join(d for _, d in r.output) == data


def test_indirect_chain_on_transmit():
    r = started()
    payload = b"indirect \0 data"
    addr = r.alloc(len(payload))
    r.mem.write(addr, payload)
    r.q[con.tx_queue(1)].add_chain([(addr, 6, False), (addr + 6, len(payload) - 6, False)], indirect_at=r.alloc(32))
    r.drv.notify(con.tx_queue(1))
    assert r.output == [(1, payload)]


# -- host -> guest -----------------------------------------------------------------


def test_input_held_until_the_guest_opens_the_port():
    r = started()
    assert r.dev.write(0, b"early") == 5
    r.post(con.rx_queue(0), 64)
    assert r.received(0) == b""  # buffers there, port not opened by the guest
    r.send_ctrl(0, con.PORT_OPEN, 1)
    assert r.received(0) == b"early"
    assert r.dev.input_backlog(0) == 0


def test_input_spread_over_buffers_binary_exact():
    r = started()
    r.open(0, rx_buffers=(10, 10, 10))
    data = bytes([0, 255, 0, 1]) * 6  # 24 bytes
    assert r.dev.write(0, data) == 24
    chunks = r.take_used(con.rx_queue(0))
    assert chunks == [data[:10], data[10:20], data[20:]]
    # the third buffer was only partly filled; more input goes into the next one posted
    r.post(con.rx_queue(0), 3, 3)
    assert r.dev.write(0, b"abcdef") == 6
    assert r.received(0) == b"abcdef"


@pytest.mark.parametrize("event_idx", [True, False], ids=["event-idx", "no-event-idx"])
def test_host_input_raises_the_used_buffer_interrupt(event_idx):
    r = started(mask=~0 if event_idx else ~(1 << c.VIRTIO_RING_F_EVENT_IDX))
    r.open(0, rx_buffers=(16, 16, 16))
    r.drv.ack_interrupts()
    raised = r.irq.raised
    r.dev.write(0, b"wake up")  # from a host thread: interrupt.trigger()
    assert r.received(0) == b"wake up"
    assert r.irq.raised == raised + 1
    assert r.drv.ack_interrupts() & c.MMIO_INT_VRING
    if event_idx:
        r.q[0].set_used_event(10)  # the driver wants no interrupt before used index 10
    else:
        r.q[0].set_avail_flags(c.VIRTQ_AVAIL_F_NO_INTERRUPT)
    r.dev.write(0, b"quiet")
    assert r.received(0) == b"quiet" and r.irq.raised == raised + 1


def test_empty_host_write_is_a_noop():
    r = started()
    r.open(0)
    assert r.dev.write(0, b"") == 0
    assert r.q[con.rx_queue(0)].used_idx == 0


def test_backlog_bounded_partial_writes_and_room_notice():
    r = started(max_input_backlog=100)
    assert r.dev.write(0, b"a" * 80) == 80
    assert r.dev.write(0, b"b" * 50) == 20  # only the room left
    assert r.dev.write(0, b"c") == 0  # full: nothing taken, never blocks
    assert not r.dev.wait_writable(0, timeout=0.01)
    r.open(0, rx_buffers=(30,))
    assert r.writable == [0]
    assert r.dev.wait_writable(0, timeout=0)
    assert r.dev.write(0, b"d" * 40) == 30


def test_wait_writable_wakes_a_writer_thread():
    r = started(max_input_backlog=16)
    r.dev.write(0, b"x" * 16)
    woke = []
    t = threading.Thread(target=lambda: woke.append(r.dev.wait_writable(0, timeout=5)))
    t.start()
    time.sleep(0.05)
    r.open(0)
    t.join(5)
    assert woke == [True]


def test_closing_the_device_releases_a_waiting_writer():
    r = started(max_input_backlog=8)
    r.dev.write(0, b"x" * 8)
    woke = []
    t = threading.Thread(target=lambda: woke.append(r.dev.wait_writable(0, timeout=5)))
    t.start()
    time.sleep(0.05)
    r.dev.close()  # the VM went away
    t.join(5)
    assert woke == [False]


def test_close_port_sends_eof_after_the_backlog():
    r = started()
    r.dev.write(0, b"last words")
    r.dev.close_port(0)
    assert r.control_messages() == []  # data not delivered yet: no EOF yet
    with pytest.raises(PortClosedError):
        r.dev.write(0, b"more")
    r.open(0, rx_buffers=(4,))
    assert r.received(0) == b"last"
    assert r.control_messages() == []
    r.post(con.rx_queue(0), 64)
    assert r.received(0) == b" words"
    assert r.control_messages() == [(0, con.PORT_OPEN, 0, b"")]
    r.dev.close_port(0)  # idempotent
    assert r.control_messages() == []
    assert r.dev.wait_writable(0, timeout=0) is False


def test_close_before_the_guest_is_ready_says_closed_at_once(rig):
    rig.dev.close_port(0)
    rig.handshake()
    msgs = rig.control_messages()
    assert (0, con.PORT_OPEN, 0, b"") in msgs and (1, con.PORT_OPEN, 1, b"") in msgs


def test_empty_input_then_close():
    r = started()
    r.open(0)
    r.dev.close_port(0)
    assert r.received(0) == b""
    assert r.control_messages() == [(0, con.PORT_OPEN, 0, b"")]


def test_unknown_port_is_a_typed_error(rig):
    for bad in (2, -1, "0"):
        with pytest.raises(ConsoleError, match="no port"):
            rig.dev.write(bad, b"x")
    assert rig.dev.port_id("stdout") == 1
    with pytest.raises(ConsoleError):
        rig.dev.port_id("stderr")


# -- without MULTIPORT -------------------------------------------------------------


def test_single_port_without_multiport():
    r = Rig(["only"], mask=~MULTIPORT)
    r.post(0, 32)
    assert r.dev.write(0, b"\0in") == 3
    assert r.received(0) == b"\0in"
    r.guest_write(0, b"out")
    assert r.output == [(0, b"out")]
    r.send_ctrl(0, con.DEVICE_READY, 1)  # no control queues: ignored
    assert r.control_messages() == [] and r.healthy


# -- hostile driver ----------------------------------------------------------------


def test_hostile_control_messages_are_ignored(rig):
    for _ in range(8):
        rig.post(con.CONTROL_RX, 128)
    rig.send_ctrl(0, con.PORT_READY, 1)  # before DEVICE_READY
    rig.send_ctrl(0, con.PORT_OPEN, 1)
    rig.send_chain(con.CONTROL_TX, [b"\0\0\0"])  # short
    rig.send_chain(con.CONTROL_TX, [b""])  # empty
    assert rig.control_messages() == []
    rig.send_ctrl(0, con.DEVICE_READY, 1)
    rig.control_messages()
    rig.send_ctrl(7, con.PORT_READY, 1)  # no such port
    rig.send_ctrl(0xFFFFFFFF, con.PORT_OPEN, 1)
    rig.send_ctrl(0, con.PORT_OPEN, 1)  # not ready yet
    rig.send_ctrl(0, 0xBEEF, 1)  # unknown event
    rig.send_ctrl(0, con.DEVICE_ADD, 1)  # a device-only event
    rig.send_ctrl(0, con.RESIZE, 1)
    assert rig.control_messages() == [] and rig.opened == []
    # a message split over two buffers, with trailing junk, still parses
    rig.send_chain(con.CONTROL_TX, [ctrl(0, con.PORT_READY, 1)[:3], ctrl(0, con.PORT_READY, 1)[3:] + b"junk"])
    assert [m[1] for m in rig.control_messages()] == [con.PORT_NAME, con.PORT_OPEN]
    rig.send_ctrl(0, con.PORT_OPEN, 9)  # not 0 or 1
    assert rig.opened == []
    # a control message in a device-writable buffer is not read
    q = rig.q[con.CONTROL_TX]
    addr = rig.alloc(8)
    rig.mem.write(addr, ctrl(0, con.PORT_OPEN, 1))
    q.add_chain([(addr, 8, True)])
    rig.drv.notify(con.CONTROL_TX)
    assert rig.opened == []
    assert rig.q[con.CONTROL_TX].used_idx == rig.q[con.CONTROL_TX].avail_idx  # every chain returned
    assert rig.healthy


def test_spamming_control_cannot_grow_the_device(rig):
    # no control receive buffers: whatever the guest sends, what waits for it stays bounded
    for i in range(300):
        rig.send_ctrl(i % 2, (con.DEVICE_READY, con.PORT_READY, con.PORT_READY, con.PORT_OPEN)[i % 4], 1)
        rig.send_ctrl(i % 2, con.PORT_OPEN, i % 2)
    assert len(rig.dev._control) <= rig.dev._control_limit
    assert len(rig.dev._control) == 2 + 2 * 2  # ADD x2, then NAME + OPEN per port
    assert rig.healthy


def test_bad_chains_on_data_queues_are_returned_unread():
    r = started()
    r.open(0, rx_buffers=())
    # a device-readable buffer on a receive queue, then a chain outside RAM
    addr = r.alloc(16)
    r.q[0].add_chain([(addr, 16, False)])
    r.q[0].add_chain([(RAM - 8, 64, True)])
    r.drv.notify(0)
    r.dev.write(0, b"data")
    assert r.q[0].used_idx == 2 and r.q[0].used(0)[1] == 0 and r.q[0].used(1)[1] == 0
    assert r.mem.read(addr, 16) == bytes(16)  # not written
    assert r.dev.input_backlog(0) == 4  # still waiting for a good buffer
    # device-writable buffer on a transmit queue: dropped, returned
    r.q[con.tx_queue(1)].add_chain([(r.alloc(8), 8, True)])
    r.drv.notify(con.tx_queue(1))
    assert r.output == [] and r.q[con.tx_queue(1)].used_idx == 1
    assert r.healthy


def test_broken_ring_mid_batch_answers_what_was_popped():
    r = started()
    r.open(0, rx_buffers=())
    r.post(con.rx_queue(0), 8, notify=False)
    r.q[0].publish(99)  # a head outside the table: the ring is broken
    assert r.dev.write(0, b"x" * 20) == 20
    assert r.received(0) == b"x" * 8  # the good chain before it was answered
    assert not r.healthy
    assert r.dev.write(0, b"more") == 4  # the device itself carries on
    assert r.dev.input_backlog(0) == 16
    r.dev.close_port(0)


def test_small_control_buffer_truncates_the_name():
    r = Rig(["a-rather-long-port-name"])
    r.post(con.CONTROL_RX, 128)
    r.send_ctrl(0, con.DEVICE_READY, 1)
    r.control_messages()
    r.post(con.CONTROL_RX, 4, 6)  # 10 bytes over two buffers
    r.post(con.CONTROL_RX, 128)
    r.send_ctrl(0, con.PORT_READY, 1)
    msgs = r.take_used(con.CONTROL_RX)
    assert msgs[0] == ctrl(0, con.PORT_NAME) + b"a-"
    assert ControlMsg.parse(msgs[1]).event == con.PORT_OPEN


FUZZ = settings(
    max_examples=int(os.environ.get("VIRTIO_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
control_msgs = st.lists(
    st.one_of(
        st.tuples(st.sampled_from([0, 1, 2, 5, 0xFFFFFFFF]), st.integers(0, 9), st.sampled_from([0, 1, 2, 0xFFFF])),
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    ),
    max_size=40,
)


@FUZZ
@given(msgs=control_msgs, writes=st.lists(st.binary(max_size=300), max_size=5), close=st.booleans())
def test_fuzzed_control_streams(msgs, writes, close):
    r = Rig(["in", "out", "err"], max_input_backlog=512)
    for _ in range(8):
        r.post(con.CONTROL_RX, 128, notify=False)
    for port in range(3):
        r.post(con.rx_queue(port), 100, notify=False)
    for port_id, event, value in msgs:
        r.send_ctrl(port_id, event, value)
        for data in writes:
            assert 0 <= r.dev.write(0, data) <= len(data)
    if close:
        r.dev.close_port(0)
    assert len(r.dev._control) <= r.dev._control_limit
    assert r.dev.input_backlog(0) <= 512
    for raw in r.take_used(con.CONTROL_RX):
        m = ControlMsg.parse(raw)
        assert m.id < 3 and m.event in (con.DEVICE_ADD, con.PORT_NAME, con.PORT_OPEN)
    assert r.healthy


def test_host_flood_with_a_guest_that_never_reads_is_bounded():
    r = started(max_input_backlog=1 << 20)
    chunk = os.urandom(64 << 10)
    tracemalloc.start()
    start = time.monotonic()
    taken = sum(r.dev.write(0, chunk) for _ in range(2000))  # 125 MiB offered
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert taken == 1 << 20
    assert peak < 8 << 20 and time.monotonic() - start < 2


# -- reset and snapshots -----------------------------------------------------------


def test_reset_keeps_host_input_and_forgets_the_driver():
    r = started()
    r.dev.write(0, b"kept")
    r.open(0, rx_buffers=())
    r.drv.wr(c.MMIO_STATUS, 0)
    assert not r.dev.port_open(0) and r.dev.input_backlog(0) == 4
    r2 = Rig.__new__(Rig)
    r2.__dict__.update(r.__dict__)
    r2.q = [MockQueue.at(r.mem, 0x1000 * (i + 1), QSIZE) for i in range(6)]
    for q in r2.q:  # fresh rings for the new driver
        r.mem.write(q.desc_addr, bytes(q.end - q.desc_addr))
    r2.rx_seen, r2.rx_posted = {}, {}
    r2.drv.start(r2.q)
    assert r2.handshake() == [0, 1]
    r2.control_messages()
    r2.open(0)
    assert r2.received(0) == b"kept"


def test_state_round_trip():
    r = started()
    r.send_ctrl(0, con.PORT_OPEN, 1)
    r.dev.write(1, b"\0pending")
    r.dev.close_port(1)
    state = r.dev.state()
    assert state.ports[1].backlog == b"\0pending" and not state.ports[1].host_open
    out = []
    copy = VirtioConsole.from_state(state, on_output=lambda p, d: out.append((p, d)))
    assert copy.state() == state
    assert copy.port_open(0) and copy.input_backlog(1) == 8


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s._replace(max_input_backlog=4), "backlog too large"),
        (lambda s: s._replace(acked_features=1 << 40), "features"),
        (lambda s: s._replace(control_pending=(b"x",)), "control"),
        (lambda s: s._replace(control_pending=(bytes(8),) * 1000), "control"),
        (lambda s: s._replace(ports=(s.ports[0]._replace(name=""),)), "port name"),
        (lambda s: s._replace(ports=None), "malformed"),
        (lambda s: s._replace(max_input_backlog=1 << 40), "max_input_backlog"),
        (lambda s: s._replace(cols=-1), "cols"),
        (lambda s: s._replace(device_ready=2), "device_ready"),
        (lambda s: s._replace(console_port=5), "console port"),
        (lambda s: tuple(s), "not a ConsoleState"),
        (lambda s: s._replace(ports=(tuple(s.ports[0]),)), "PortState"),
        (lambda s: s._replace(ports=(s.ports[0]._replace(backlog=bytearray(b"x")),)), "backlog"),
    ],
)
def test_state_restore_checks_bounds(change, message):
    r = started()
    r.dev.write(1, b"\0pending")
    with pytest.raises(StateError, match=message):
        VirtioConsole.from_state(change(r.dev.state()), on_output=print)


# -- arbitrary descriptor tables on every kind of queue ------------------------------

FUZZ_REGIONS = [(0x0, 0x10000), (0x20000, 0x4000), (0x40000, 0x1000)]
FUZZ_TABLE = 0x6800
fuzz_addresses = st.one_of(
    st.integers(0x7000, 0xFF00),
    st.sampled_from([0, 0x1000, FUZZ_TABLE, 0xFFF0, 0x10000, 0x20000, 0x23FF8, 0x40FFF, 2**32, 2**64 - 1]),
    st.integers(0, 2**64 - 1),
)
fuzz_lengths = st.one_of(st.integers(0, 0x400), st.sampled_from([0, 1, 7, 8, 16, 0x1000, 0xFFFFFFFF]))
fuzz_flags = st.one_of(st.sampled_from([0, NEXT, WRITE, NEXT | WRITE, INDIRECT, INDIRECT | NEXT]), st.integers(0, 7))
fuzz_desc = st.tuples(fuzz_addresses, fuzz_lengths, fuzz_flags, st.one_of(st.integers(0, 15), st.integers(0, 0xFFFF)))


@FUZZ
@given(
    target=st.sampled_from([0, 1, 2, 3, 4, 5]),
    table=st.lists(fuzz_desc, min_size=16, max_size=16),
    indirect_table=st.lists(fuzz_desc, max_size=12),
    ring=st.lists(st.one_of(st.integers(0, 15), st.integers(0, 0xFFFF)), min_size=16, max_size=16),
    count=st.integers(0, 16),
    wild_count=st.booleans(),
    indirect=st.booleans(),
    fill=st.binary(min_size=32, max_size=32),
)
def test_arbitrary_chains_on_any_queue(target, table, indirect_table, ring, count, wild_count, indirect, fill):
    mem = RecordingMemory(FUZZ_REGIONS)
    dev = VirtioConsole(["in", "out"], on_output=lambda p, d: None, max_input_backlog=4096)
    t = VirtioMmioTransport(dev, mem, InterruptLine())
    qs = [MockQueue.at(mem, 0x1000 * i, 16) for i in range(6)]
    drv = MockDriver(t)
    drv.start(qs, mask=~0 if indirect else ~(1 << c.VIRTIO_RING_F_INDIRECT_DESC))
    for region_addr, region_size in FUZZ_REGIONS[1:]:
        mem.write(region_addr, (fill * (region_size // 32 + 1))[:region_size])

    def control(port, event, value):  # a well-formed message, out of the fuzzed range
        addr = 0x6C00 + 8 * qs[3].avail_idx
        mem.write(addr, ctrl(port, event, value))
        qs[3].add_chain([(addr, 8, False)])
        drv.notify(3)

    # a running device with work waiting: control messages queued, input pending on port 0
    control(0, con.DEVICE_READY, 1)
    control(0, con.PORT_READY, 1)
    control(1, con.PORT_READY, 1)
    control(0, con.PORT_OPEN, 1)
    dev.write(0, fill * 8)
    # the target queue's next entries come from the fuzzer
    q = qs[target]
    for i in range(16):
        q.write_desc(i, *table[i])
    if indirect_table:
        mem.write(FUZZ_TABLE, b"".join(pack_desc(*d) for d in indirect_table))
    for k in range(16):
        mem.write_int(q.avail_addr + 4 + 2 * ((q.avail_idx + k) % 16), 2, ring[k])
    new_idx = (q.avail_idx + count) & 0xFFFF if not wild_count else ring[0]
    popped = []
    for queue in t.queues:
        original = queue._take
        queue._take = lambda *a, _orig=original: popped.append(_orig(*a)) or popped[-1]
    used_before = [qq.used_idx for qq in qs]
    mem.granted.clear()
    before = mem.snapshot()
    mem.write_int(q.avail_addr + 2, 2, new_idx)
    drv.notify(target)
    dev.write(0, b"more")  # host-side trigger on port 0's receive queue
    dev.close_port(0)
    after = mem.snapshot()
    mem.write_int(q.avail_addr + 2, 2, q.avail_idx)  # (only so `before` and `after` compare)

    for addr, length in mem.granted:
        assert mem.in_ram(addr, length), (hex(addr), length)
    allowed = [(qq.used_addr, qq.end) for qq in qs] + [(q.avail_addr + 2, q.avail_addr + 4)]
    allowed += [(b.addr, b.addr + b.length) for ch in popped for b in ch.buffers if b.writable]
    for region, old, new in zip(mem.regions, before, after):
        if old != new:
            for off in range(len(old)):
                if old[off] != new[off]:
                    addr = region.guest_addr + off
                    assert any(lo <= addr < hi for lo, hi in allowed), hex(addr)
    clobbered = any(
        b.writable and b.length and b.addr < 0x6000 for ch in popped for b in ch.buffers
    )
    offered = (new_idx - q.avail_idx) & 0xFFFF
    # a head outside the table is a broken ring (DEVICE_NEEDS_RESET), not a bad chain
    if not clobbered and offered <= 16 and all(h < 16 for h in ring[:offered]):
        assert not drv.status & c.STATUS_DEVICE_NEEDS_RESET
        # every chain popped was answered
        answered = sum((qq.used_idx - ub) & 0xFFFF for qq, ub in zip(qs, used_before))
        assert answered == len(popped)
    assert len(dev._control) <= dev._control_limit
    assert dev.input_backlog(0) <= 4096
    assert t.read(c.MMIO_MAGIC_VALUE, 4) == c.MMIO_MAGIC


def test_snapshot_with_the_transport_mid_stream():
    r = started()
    r.open(0, rx_buffers=(4,))
    r.dev.write(0, b"abcdefgh")  # "abcd" delivered, "efgh" waiting for a buffer
    r.guest_write(1, b"before")
    t_state, d_state = r.t.state(), r.dev.state()
    # restore into a new device and transport over the same guest RAM
    out = []
    dev = VirtioConsole.from_state(d_state, on_output=lambda p, d: out.append((p, d)))
    r.t = VirtioMmioTransport.from_state(dev, r.mem, InterruptLine(), t_state)
    r.dev, r.drv = dev, MockDriver(r.t)
    r.post(con.rx_queue(0), 64)
    assert r.received(0) == b"abcdefgh"
    r.guest_write(1, b"after")
    assert out == [(1, b"after")]
    r.dev.close_port(0)
    assert r.control_messages() == [(0, con.PORT_OPEN, 0, b"")]
    assert r.healthy
