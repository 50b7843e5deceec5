"""virtio-console with MULTIPORT (console.py) under a hostile driver and a busy host.

Input: the device's set-up (MULTIPORT or not, ring features, a console
port, the input backlog's size), a script mixing guest notifies and ring
rewrites with the host side's calls (write, close_port, resize,
pause/resume_output, a snapshot round trip, a reset), then guest RAM: the
eight queues' rings and descriptors, control messages, data.
Contract: nothing escapes but ConsoleError from a host call on a closed
port; guest RAM changes only in used rings and device-writable buffers of
consumed chains; the pending control messages and every port's backlog stay
within their bounds; output arrives in pieces of at most OUTPUT_PIECE for
known ports; a state the device reached restores to itself.
"""

from __future__ import annotations

from tests.unit.virtio_mock import MockDriver, MockQueue

from vmm.devices.virtio import constants as c
from vmm.devices.virtio.console import OUTPUT_PIECE, ConsoleError, VirtioConsole
from vmm.devices.virtio.mmio import VirtioMmioTransport
from vmm.devices.virtio.queue import StateError
from vmm.memory import GuestMemory

from .guard import quiet_logs
from .provider import Provider
from .ram import RamCopy, check_writes, consumed_heads, races_itself, used_ring_range, writable_ranges

quiet_logs()
REGIONS = [(0x0, 0x4000), (0x10000, 0x1000)]
PORTS = ("console", "stdout", "stdin")
QUEUES = 2 * len(PORTS) + 2
QUEUE_SIZE = 4
QUEUE_STRIDE = 0x100  # queue i's rings at i * QUEUE_STRIDE
INPUT = bytes(range(256)) * 4


class Sink:
    def __init__(self):
        self.pieces = 0

    def __call__(self, port: int, data: bytes) -> None:
        assert 0 <= port < len(PORTS), port
        assert type(data) is bytes and 0 < len(data) <= OUTPUT_PIECE
        self.pieces += 1


def _start(driver: MockDriver, features_mask: int) -> None:
    driver.negotiate(mask=features_mask)
    for i in range(QUEUES):
        driver.setup_queue(i, MockQueue.at(driver.t.memory, i * QUEUE_STRIDE, QUEUE_SIZE))
    driver.wr(c.MMIO_STATUS, driver.status | c.STATUS_DRIVER_OK)
    assert driver.t.status & c.STATUS_DRIVER_OK, driver.t.last_error


def _check_bounds(dev: VirtioConsole) -> None:
    assert len(dev._control) <= dev._control_limit
    for port in dev._ports:
        assert len(port.backlog) <= dev.max_input_backlog


def test_one_input(data: bytes) -> None:
    p = Provider(data)
    setup = p.u8()
    features_mask = ~(((setup & 1) << 1) | ((setup >> 1 & 3) << c.VIRTIO_RING_F_INDIRECT_DESC))
    console_port = p.pick((None, 0, 2))
    backlog = p.pick((64, 1, 1000, 4096))
    script = p.bytes(p.u8() % 24 * 3)
    memory = GuestMemory(REGIONS)
    sink = Sink()
    try:
        image = p.rest()
        memory.write(0, image[:0x4000])
        if len(image) > 0x4000:
            memory.write(0x10000, image[0x4000:0x5000])
        dev = VirtioConsole(PORTS, on_output=sink, max_input_backlog=backlog, console_port=console_port)
        t = VirtioMmioTransport(dev, memory, lambda level: None)
        _start(MockDriver(t), features_mask)
        s = Provider(script or b"\x00")
        while s.remaining:
            op, arg = s.u8() % 12, s.u16()
            if op >= 10:  # the driver writes a ring word: an avail.idx, a ring entry
                memory.write_int((arg % QUEUES) * QUEUE_STRIDE + 16 * QUEUE_SIZE + 2 * (arg >> 14), 2, arg >> 4)
                continue
            before = RamCopy(memory)
            marks = [q.next_avail for q in t.queues]
            try:
                t, dev = _step(t, dev, memory, sink, op, arg, features_mask)
            except ConsoleError as err:
                assert op in (3, 4) and not dev._ports[arg % len(PORTS)].host_open, err
            buffers, used_rings = [], []
            for q, mark in zip(t.queues, marks):
                if q.ready:
                    used_rings.append(used_ring_range(q))
                    buffers += writable_ranges(before, q.desc_addr, q.size, consumed_heads(before, q, mark, q.next_avail))
            if not races_itself(buffers, [q for q in t.queues if q.ready]):
                check_writes(memory, before, used_rings + buffers)
            _check_bounds(dev)
    finally:
        dev_close = locals().get("dev")
        if dev_close is not None:
            dev_close.close()
        memory.close()


def _step(t, dev, memory, sink, op: int, arg: int, features_mask: int):
    port = arg % len(PORTS)
    if op <= 2:
        t.notify(arg % (QUEUES + 1))
    elif op == 3:
        taken = dev.write(port, INPUT[: arg % 300])
        assert 0 <= taken <= arg % 300
    elif op == 4:
        dev.close_port(port) if arg & 0x100 else dev.write(port, b"x")
    elif op == 5:
        dev.resize(arg & 0xFF, arg >> 8)
    elif op == 6:
        dev.pause_output(port)
    elif op == 7:
        dev.resume_output(port)
    elif op == 8:  # snapshot round trip (taken paused: no host call runs meanwhile)
        state, tstate = dev.state(), t.state()
        try:
            dev2 = VirtioConsole.from_state(state, on_output=sink)
            t2 = VirtioMmioTransport.from_state(dev2, memory, lambda level: None, tstate)
        except StateError as err:
            raise AssertionError(f"a state the console reached does not restore: {err}") from None
        assert dev2.state() == state, (dev2.state(), state)
        assert t2.state() == tstate
        dev.close()
        return t2, dev2
    else:
        _start(MockDriver(t), features_mask)
    return t, dev
