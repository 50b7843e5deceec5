"""virtio-mmio transport, version 2 (virtio 1.x section 4.2.2).

What it guarantees:

- It is a state machine driven by register accesses (:meth:`read`,
  :meth:`write`) and notifications (:meth:`notify`); it knows nothing of KVM.
- It never raises on guest input. A driver that breaks the protocol finds
  DEVICE_NEEDS_RESET in Status (plus a configuration-change interrupt once
  DRIVER_OK is set, 2.1.2) and the device stops until the driver resets it.
- It is *not* sans-IO: a notify runs the device's process(), which does the
  device's I/O (disk reads and writes, guest-memory copies) synchronously,
  under the transport's lock. A register access therefore waits for any
  request batch in progress on another thread.

The caller routes MMIO accesses to :meth:`read`/:meth:`write` and may call
:meth:`notify` from an ioeventfd thread; one lock serialises both. The
``interrupt`` callback is invoked with the lock held (so raise/lower calls
can never be reordered between threads) and must not call back into the
transport: ``interrupt(True)`` when an InterruptStatus bit is newly raised,
``interrupt(False)`` when InterruptStatus drops back to 0.

The device gets a :class:`TransportInterrupt` at activate(): its host side
(input arrived, config changed) enters the transport through it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import perf_counter

from ...errors import GuestMemoryError
from ...log import get_logger
from ...memory import GuestMemory
from . import constants as c
from .device import VirtioDevice
from .mmio_state import FEATURE_WORDS, STATUS_BITS, TransportState, check_registers
from .queue import SplitQueue, StateError, VirtioError

log = get_logger("vmm.virtio")

_U32 = 0xFFFF_FFFF

# -- limits on what the guest controls (each pushed past in test_virtio_bounds.py) -------
# Config space: only these access widths, only inside the device's config
# bytes (any alignment); anything else reads 0 and writes nothing.
CONFIG_ACCESS_SIZES = (1, 2, 4, 8)
# Feature selectors (FEATURE_WORDS, mmio_state.py): a DeviceFeaturesSel past
# the two words reads 0; a DriverFeatures write past them is remembered as
# one flag (not stored) and makes FEATURES_OK fail.
# Selectors are stored clamped (a feature selector to FEATURE_WORDS, QueueSel
# to len(queues) = "no queue"): the guest cannot tell, and a state record
# then has only a few possible values to check.
# QueueNum: any u32 is stored; QueueReady refuses one that is not a power of
# two <= QueueNumMax (<= MAX_QUEUE_SIZE), before any ring is touched.
_QUEUE_ADDRESS_REGS = {
    c.MMIO_QUEUE_DESC_LOW: ("desc_addr", 0),
    c.MMIO_QUEUE_DESC_HIGH: ("desc_addr", 32),
    c.MMIO_QUEUE_DRIVER_LOW: ("avail_addr", 0),
    c.MMIO_QUEUE_DRIVER_HIGH: ("avail_addr", 32),
    c.MMIO_QUEUE_DEVICE_LOW: ("used_addr", 0),
    c.MMIO_QUEUE_DEVICE_HIGH: ("used_addr", 32),
}


# "needs reset" warnings per transport: a driver that breaks the protocol,
# resets and does it again would otherwise put one line on the VMM's stderr
# per round, without end (a guest looping on it wrote ~250 lines a second).
# Later violations are logged at debug level; last_error always has the latest.
VIOLATION_WARNINGS_MAX = 8

# A device calling trigger() from inside its own process() is deferred, not
# recursed into; this many deferred rounds per notify at most, so a device
# that re-triggers itself on every call cannot spin the transport forever.
MAX_DEFERRED_ROUNDS = 64


class TransportInterrupt:
    """The handle a device gets at activate(): its way into the transport.

    Safe from any thread. From inside process() (the transport's lock is an
    RLock, held by that thread) trigger() does not recurse: the queue is
    processed again once the current process() returns.
    """

    __slots__ = ("_transport",)

    def __init__(self, transport: "VirtioMmioTransport"):
        self._transport = transport

    def trigger(self, queue_index: int) -> None:
        """Host-side work on ``queue_index``: process it as a guest notify would,
        then tell the machine (a polling guest may be idling until it sees it)."""
        self._transport.notify(queue_index)
        self._transport.on_host_work()

    def config_changed(self) -> None:
        """New config generation and a configuration-change interrupt."""
        self._transport.config_changed()


class VirtioMmioTransport:
    def __init__(
        self,
        device: VirtioDevice,
        memory: GuestMemory,
        interrupt: Callable[[bool], None],
        on_host_work: Callable[[], None] = lambda: None,
    ):
        """``interrupt(level)`` drives the device's interrupt line; ``on_host_work()``
        is called after the device's host side handed the guest new work."""
        if any(not 0 < size <= c.MAX_QUEUE_SIZE for size in device.queue_max_sizes):
            raise ValueError(f"{type(device).__name__}: queue sizes must be 1..{c.MAX_QUEUE_SIZE}")
        self.device = device
        self.memory = memory
        self._interrupt = interrupt
        self.on_host_work = on_host_work
        # Reentrant: a device may call its TransportInterrupt from process().
        self._lock = threading.RLock()
        self._processing = False  # inside device.process(): triggers are deferred
        self._deferred: set[int] = set()
        self.device_interrupt = TransportInterrupt(self)
        # on_exit_notify(queue_index, seconds): a QueueNotify *register write*
        # (not an ioeventfd) took that long to serve; the machine's notify
        # routes (vmm/notify_route.py) learn each queue's load from it.
        self.on_exit_notify: Callable[[int, float], None] | None = None
        self.interrupt_status = 0
        self.config_generation = 0
        self.last_error: str | None = None  # why DEVICE_NEEDS_RESET was set
        self.violations = 0  # how many times it was set (resets do not clear it)
        self._reset()

    # -- public entry points (each takes the lock) ----------------------------

    def read(self, offset: int, size: int) -> int:
        with self._lock:
            if offset >= c.MMIO_CONFIG:
                return self._read_config(offset - c.MMIO_CONFIG, size)
            if size != 4 or offset % 4 or offset < 0:
                return 0  # 4.2.2.2: registers are 32-bit, aligned
            return self._read_register(offset) & _U32

    def write(self, offset: int, size: int, value: int) -> None:
        with self._lock:
            if offset >= c.MMIO_CONFIG:
                self._write_config(offset - c.MMIO_CONFIG, size, value)
            elif size == 4 and offset % 4 == 0 and offset >= 0:
                self._write_register(offset, value & _U32)

    def notify(self, queue_index: int) -> None:
        """The driver kicked a queue (QueueNotify write or ioeventfd), or the
        device's host side did (TransportInterrupt.trigger)."""
        with self._lock:
            self._notify(queue_index)

    def config_changed(self) -> None:
        """The device changed its config space: new generation, tell the driver."""
        with self._lock:
            self.config_generation = (self.config_generation + 1) & _U32
            if self.status & c.STATUS_DRIVER_OK:
                self._raise(c.MMIO_INT_CONFIG)

    # -- state records ----------------------------------------------------------

    def state(self) -> TransportState:
        with self._lock:
            return TransportState(
                self.status, self.device_features_sel, self.driver_features_sel, self.driver_features,
                self._unknown_feature_bits, self.queue_sel, self.interrupt_status, self.config_generation,
                self.device.acked_features, tuple(q.state() for q in self.queues),
            )

    @classmethod
    def from_state(
        cls, device: VirtioDevice, memory: GuestMemory, interrupt: Callable[[bool], None], state: TransportState
    ) -> "VirtioMmioTransport":
        """Rebuild a transport (and re-activate its device) from an untrusted record.

        Raises StateError for any record the state machine could not have
        reached. The interrupt line is not driven: the caller restores its
        level (high while ``interrupt_status`` is non-zero).
        """
        t = cls(device, memory, interrupt)
        check_registers(state, len(t.queues))
        status, driver_features, acked = state.status, state.driver_features, state.acked_features
        unknown_bits = state.unknown_feature_bits
        t.status, t.driver_features, t._unknown_feature_bits = status, driver_features, unknown_bits
        if status & c.STATUS_FEATURES_OK:
            if acked != driver_features or not t._features_acceptable():
                raise StateError(f"virtio state: acked features 0x{acked:x} are not an acceptable driver choice")
        elif acked:
            raise StateError("virtio state: acked features without FEATURES_OK")
        if not isinstance(state.queues, tuple) or len(state.queues) != len(t.queues):
            raise StateError(f"virtio state: expected {len(t.queues)} queue records")
        queues = [
            SplitQueue.from_state(memory, record, max_size, device.max_chain_len)
            for record, max_size in zip(state.queues, device.queue_max_sizes)
        ]
        negotiated = (bool(acked & (1 << c.VIRTIO_RING_F_EVENT_IDX)), bool(acked & (1 << c.VIRTIO_RING_F_INDIRECT_DESC)))
        for index, queue in enumerate(queues):
            # Set at DRIVER_OK from the acked features, False before.
            expected = negotiated if status & c.STATUS_DRIVER_OK else (False, False)
            if (queue.event_idx, queue.indirect) != expected:
                raise StateError(f"virtio state: queue {index} ring features disagree with the acked features")
        t.device_features_sel, t.driver_features_sel = state.device_features_sel, state.driver_features_sel
        t.queue_sel, t.interrupt_status = state.queue_sel, state.interrupt_status
        t.config_generation = state.config_generation
        t.queues = queues
        device.acked_features = acked
        if status & c.STATUS_DRIVER_OK:
            device.activate(memory, queues, t.device_interrupt)
        return t

    # -- state ----------------------------------------------------------------

    def _reset(self) -> None:
        """Status 0: back to the power-on state, every queue forgotten."""
        self.device.reset()
        self.status = 0
        self.device_features_sel = 0
        self.driver_features_sel = 0
        self.driver_features = 0
        self._unknown_feature_bits = False  # driver set bits beyond 64
        self.queue_sel = 0
        chain_len = self.device.max_chain_len
        self.queues = [SplitQueue(self.memory, size, chain_len) for size in self.device.queue_max_sizes]
        if self.interrupt_status:
            self.interrupt_status = 0
            self._interrupt(False)

    def _violation(self, reason: str) -> None:
        """The driver broke the protocol: DEVICE_NEEDS_RESET, device stops."""
        self.last_error = reason
        if self.status & c.STATUS_DEVICE_NEEDS_RESET:
            return
        self.violations += 1
        if self.violations < VIOLATION_WARNINGS_MAX:
            log.warning("virtio device %d needs reset: %s", self.device.device_id, reason)
        elif self.violations == VIOLATION_WARNINGS_MAX:
            log.warning("virtio device %d needs reset: %s (further violations are not logged)",
                        self.device.device_id, reason)
        else:
            log.debug("virtio device %d needs reset: %s", self.device.device_id, reason)
        self.status |= c.STATUS_DEVICE_NEEDS_RESET
        if self.status & c.STATUS_DRIVER_OK:
            self._raise(c.MMIO_INT_CONFIG)

    def _raise(self, bit: int) -> None:
        if not self.interrupt_status & bit:
            self.interrupt_status |= bit
            self._interrupt(True)

    def _selected_queue(self) -> SplitQueue | None:
        if self.queue_sel < len(self.queues):
            return self.queues[self.queue_sel]
        return None

    @property
    def _running(self) -> bool:
        s = self.status
        return bool(s & c.STATUS_DRIVER_OK) and not s & (c.STATUS_DEVICE_NEEDS_RESET | c.STATUS_FAILED)

    # -- registers --------------------------------------------------------------

    def _read_register(self, offset: int) -> int:
        queue = self._selected_queue()
        if offset == c.MMIO_MAGIC_VALUE:
            return c.MMIO_MAGIC
        if offset == c.MMIO_VERSION:
            return c.MMIO_VERSION_MODERN
        if offset == c.MMIO_DEVICE_ID:
            return self.device.device_id
        if offset == c.MMIO_VENDOR_ID:
            return c.MMIO_VENDOR
        if offset == c.MMIO_DEVICE_FEATURES:
            if self.device_features_sel >= FEATURE_WORDS:
                return 0
            return self.device.features >> (32 * self.device_features_sel)
        if offset == c.MMIO_QUEUE_NUM_MAX:
            return self.device.queue_max_sizes[self.queue_sel] if queue else 0
        if offset == c.MMIO_QUEUE_NUM:
            return queue.size if queue else 0
        if offset == c.MMIO_QUEUE_READY:
            return int(queue.ready) if queue else 0
        if offset == c.MMIO_INTERRUPT_STATUS:
            return self.interrupt_status
        if offset == c.MMIO_STATUS:
            return self.status
        if offset == c.MMIO_CONFIG_GENERATION:
            return self.config_generation
        if offset in _QUEUE_ADDRESS_REGS and queue:
            attr, shift = _QUEUE_ADDRESS_REGS[offset]
            return getattr(queue, attr) >> shift
        return 0  # write-only or reserved

    def _write_register(self, offset: int, value: int) -> None:
        if offset == c.MMIO_STATUS:
            self._write_status(value & 0xFF)
        elif offset == c.MMIO_INTERRUPT_ACK:
            self._ack(value)
        elif self.status & c.STATUS_DEVICE_NEEDS_RESET:
            pass  # stopped until the driver resets it
        elif offset == c.MMIO_DEVICE_FEATURES_SEL:
            self.device_features_sel = min(value, FEATURE_WORDS)
        elif offset == c.MMIO_DRIVER_FEATURES_SEL:
            self.driver_features_sel = min(value, FEATURE_WORDS)
        elif offset == c.MMIO_DRIVER_FEATURES:
            self._write_driver_features(value)
        elif offset == c.MMIO_QUEUE_SEL:
            self.queue_sel = min(value, len(self.queues))
        elif offset == c.MMIO_QUEUE_NOTIFY:
            observer = self.on_exit_notify
            if observer is None:
                self._notify(value)
            else:
                start = perf_counter()
                self._notify(value)
                observer(value, perf_counter() - start)
        elif offset == c.MMIO_QUEUE_READY:
            self._write_queue_ready(value)
        elif offset == c.MMIO_QUEUE_NUM or offset in _QUEUE_ADDRESS_REGS:
            self._write_queue_config(offset, value)
        # anything else (read-only or reserved) is ignored

    def _write_driver_features(self, value: int) -> None:
        if self.status & c.STATUS_FEATURES_OK:
            self._violation("DriverFeatures written after FEATURES_OK")
            return
        sel = self.driver_features_sel
        if sel >= FEATURE_WORDS:
            # No such feature bits exist; remember them so FEATURES_OK fails.
            self._unknown_feature_bits |= value != 0
            return
        shift = 32 * sel
        self.driver_features = (self.driver_features & ~(_U32 << shift)) | (value << shift)

    def _features_acceptable(self) -> bool:
        """3.1.1: only offered bits, VERSION_1 included (we have no legacy mode)."""
        features = self.driver_features
        return (
            not self._unknown_feature_bits
            and features & ~self.device.features == 0
            and bool(features & (1 << c.VIRTIO_F_VERSION_1))
        )

    def _write_status(self, value: int) -> None:
        if value == 0:
            self._reset()
            return
        old = self.status
        # Bits 3.1.1 does not define are dropped: stored, they would make a
        # state no snapshot restores (check_registers refuses them).
        value &= STATUS_BITS & ~c.STATUS_DEVICE_NEEDS_RESET  # NEEDS_RESET: the device's bit, not the driver's
        value |= old & c.STATUS_DEVICE_NEEDS_RESET
        if old & ~value:
            self._violation(f"driver cleared status bits (0x{old:02x} -> 0x{value:02x})")
            return
        new = value & ~old
        if new & c.STATUS_FAILED or old & c.STATUS_DEVICE_NEEDS_RESET:
            self.status |= new & c.STATUS_FAILED  # the driver gave up: just record it
            return
        if new & c.STATUS_DRIVER and not value & c.STATUS_ACKNOWLEDGE:
            self._violation("DRIVER set before ACKNOWLEDGE")
            return
        if new & c.STATUS_FEATURES_OK:
            if not value & c.STATUS_DRIVER:
                self._violation("FEATURES_OK set before DRIVER")
                return
            if self._features_acceptable():
                self.device.acked_features = self.driver_features
            else:
                # 3.1.1: the driver reads Status back and sees FEATURES_OK clear.
                log.info("virtio features 0x%x refused", self.driver_features)
                value &= ~c.STATUS_FEATURES_OK
        if new & c.STATUS_DRIVER_OK and not value & c.STATUS_FEATURES_OK:
            self._violation("DRIVER_OK set without FEATURES_OK")
            return
        self.status = value
        if new & c.STATUS_DRIVER_OK:
            self._activate()

    def _activate(self) -> None:
        acked = self.device.acked_features
        for queue in self.queues:
            queue.event_idx = bool(acked & (1 << c.VIRTIO_RING_F_EVENT_IDX))
            queue.indirect = bool(acked & (1 << c.VIRTIO_RING_F_INDIRECT_DESC))
        self.device.activate(self.memory, self.queues, self.device_interrupt)

    def _ack(self, value: int) -> None:
        before = self.interrupt_status
        self.interrupt_status &= ~value
        if before and not self.interrupt_status:
            self._interrupt(False)

    def _write_queue_config(self, offset: int, value: int) -> None:
        queue = self._selected_queue()
        if queue is None:
            return  # QueueNumMax reads 0 for it: not a queue the driver may use
        if self.status & c.STATUS_DRIVER_OK or queue.ready:
            self._violation(f"queue {self.queue_sel} register 0x{offset:03x} written while in use")
            return
        if offset == c.MMIO_QUEUE_NUM:
            queue.size = value
            return
        attr, shift = _QUEUE_ADDRESS_REGS[offset]
        old = getattr(queue, attr)
        setattr(queue, attr, (old & ~(_U32 << shift)) | (value << shift))

    def _write_queue_ready(self, value: int) -> None:
        queue = self._selected_queue()
        if queue is None:
            return
        if not value & 1:
            queue.ready = False  # the driver may always stop a queue
            return
        if queue.ready:
            return
        if self.status & c.STATUS_DRIVER_OK:
            self._violation(f"queue {self.queue_sel} enabled after DRIVER_OK")
            return
        max_size = self.device.queue_max_sizes[self.queue_sel]
        if queue.size > max_size:
            self._violation(f"queue {self.queue_sel} size {queue.size} > QueueNumMax {max_size}")
            return
        try:
            queue.enable()
        except VirtioError as err:
            self._violation(f"queue {self.queue_sel}: {err}")

    def _notify(self, queue_index: int) -> None:
        if self._processing:
            if 0 <= queue_index < len(self.queues):  # bounded: one entry per queue
                self._deferred.add(queue_index)  # re-entered from process(): run it after
            return
        self._processing = True
        try:
            self._process_queue(queue_index)
            rounds = 0
            while self._deferred:
                rounds += 1
                if rounds > MAX_DEFERRED_ROUNDS:
                    log.warning("virtio device %d keeps re-triggering itself; deferred work dropped",
                                self.device.device_id)
                    self._deferred.clear()
                    break
                for index in sorted(self._deferred):
                    self._deferred.discard(index)
                    self._process_queue(index)
        finally:
            self._processing = False

    def _process_queue(self, queue_index: int) -> None:
        if not self._running or not 0 <= queue_index < len(self.queues):
            return  # 4.2.2: notifications before DRIVER_OK are ignored
        queue = self.queues[queue_index]
        if not queue.ready:
            return
        try:
            added = False
            while True:
                consumed_from = queue.next_avail
                added |= self.device.process(queue_index, queue)
                # Look again only if buffers arrived while we worked *and* the
                # device takes buffers now: one that leaves them queued (an rx
                # queue with no input yet) would otherwise spin here forever.
                # Each round needs new guest buffers, so the guest bounds it.
                if not queue.publish_avail_event() or queue.next_avail == consumed_from:
                    break
            if added and queue.needs_interrupt():
                self._raise(c.MMIO_INT_VRING)
        except (VirtioError, GuestMemoryError) as err:
            self._violation(f"queue {queue_index}: {err}")

    # -- device configuration space ---------------------------------------------

    def _read_config(self, offset: int, size: int) -> int:
        config = self.device.config
        if size not in CONFIG_ACCESS_SIZES or offset + size > len(config):
            return 0
        return int.from_bytes(config[offset : offset + size], "little")

    def _write_config(self, offset: int, size: int, value: int) -> None:
        if size not in CONFIG_ACCESS_SIZES or offset + size > len(self.device.config):
            return
        if self.status & c.STATUS_DEVICE_NEEDS_RESET:
            return
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        self.device.write_config(offset, data)
