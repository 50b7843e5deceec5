"""virtio-console with VIRTIO_CONSOLE_F_MULTIPORT (virtio 1.x section 5.3).

Named byte-stream ports between host and guest: the sandbox carries a
program's stdin, stdout and stderr over them (the UART costs one VM exit per
byte here; a virtqueue costs one per batch).

Queues: port 0 receive/transmit are 0/1, the control receive/transmit queues
2/3, port N > 0 receive/transmit 2N+2 / 2N+3. "Receive" is the guest's view:
host input goes into the guest's receive buffers.

Handshake (5.3.6.2): the driver sends DEVICE_READY; the device answers
DEVICE_ADD for each port; the driver answers PORT_READY per port; the device
then sends PORT_NAME and PORT_OPEN (whether the host end is connected). The
driver's PORT_OPEN says whether a program in the guest has the port open.
One port may be nominated a console (CONSOLE_PORT, before its name; Linux
makes it an hvc terminal); :meth:`resize` sends it RESIZE.

Host -> guest: :meth:`write` appends to the port's backlog (at most
``max_input_backlog`` bytes each; it returns how much it took, 0 when full,
never blocks). The backlog goes into the guest's receive buffers only while
the guest has the port open, as QEMU does: Linux's driver throws away data
that arrives on a port nobody opened. :meth:`close_port` ends the stream: once
the backlog is delivered the device sends PORT_OPEN(port, 0), which a guest
reads as end of file. :meth:`wait_writable` and the ``on_writable`` callback
tell the host when a full backlog has room again.

Guest -> host: each transmit chain's bytes go to ``on_output(port, data)``,
synchronously and in order, in pieces of at most OUTPUT_PIECE bytes; empty
chains produce no call. A sink that cannot take more calls
:meth:`pause_output` (from the callback if it likes) and
:meth:`resume_output` later: meanwhile the guest's chains stay in its ring,
so its writes wait and the device holds none of its data. (Host-side sink
state, not part of state().)

Everything the guest writes is hostile: control messages are checked (size,
event, port id, order); unknown or repeated ones are ignored, so the device
queues at most a bounded number of control messages whatever the guest does.
Ring features: INDIRECT_DESC and EVENT_IDX (the queue code honours both).
"""

from __future__ import annotations

import struct
import threading
from collections import deque
from collections.abc import Callable, Sequence

from ...errors import ConfigError, GuestMemoryError, VmmError
from ...log import get_logger
from ...memory import GuestMemory
from ...record import record
from . import constants as c
from .device import VirtioDevice
from .queue import DescriptorChain, QueueError, SplitQueue, StateError, check_bool, check_uint

log = get_logger("vmm.virtio.console")

VIRTIO_ID_CONSOLE = 3
# 5.3.3 feature bits
VIRTIO_CONSOLE_F_SIZE = 0
VIRTIO_CONSOLE_F_MULTIPORT = 1
VIRTIO_CONSOLE_F_EMERG_WRITE = 2

# 5.3.6.2 control events
DEVICE_READY = 0
DEVICE_ADD = 1
DEVICE_REMOVE = 2
PORT_READY = 3
CONSOLE_PORT = 4
RESIZE = 5
PORT_OPEN = 6
PORT_NAME = 7

# struct virtio_console_control: id u32, event u16, value u16.
CONTROL = struct.Struct("<IHH")
# struct virtio_console_config: cols u16, rows u16, max_nr_ports u32, emerg_wr u32
# (cols before rows, as Linux and QEMU lay it out).
CONFIG = struct.Struct("<HHII")
# struct virtio_console_resize, after a RESIZE message: cols u16, rows u16.
RESIZE_SIZE = struct.Struct("<HH")

QUEUE_SIZE = 256
MAX_PORTS = 31  # 64 queues: more than any sandbox needs
MAX_NAME_BYTES = 120  # a PORT_NAME message fits a 128-byte control buffer
DEFAULT_INPUT_BACKLOG = 1 << 20  # per port
MAX_INPUT_BACKLOG = 1 << 30  # the most a caller (or a snapshot) may ask for
OUTPUT_PIECE = 1 << 20  # largest single on_output call
CONTROL_RX, CONTROL_TX = 2, 3


class ConsoleError(VmmError):
    """Misuse of the host side of a console (unknown port, write after close)."""


class PortClosedError(ConsoleError):
    """write() to a port whose host end was closed with close_port()."""


def rx_queue(port: int) -> int:
    """Index of a port's receive queue (guest's view: host -> guest)."""
    return 0 if port == 0 else 2 * port + 2


def tx_queue(port: int) -> int:
    return 1 if port == 0 else 2 * port + 3


def queue_port(queue_index: int) -> tuple[int, bool] | None:
    """(port, is_receive_queue) for a data queue; None for the control queues."""
    if queue_index in (CONTROL_RX, CONTROL_TX):
        return None
    if queue_index < 2:
        return 0, queue_index == 0
    return (queue_index - 2) // 2, queue_index % 2 == 0


def control_message(port: int, event: int, value: int = 0, extra: bytes = b"") -> bytes:
    return CONTROL.pack(port, event, value) + extra


class PortState(record("PortState", "name guest_ready guest_open host_open eof_sent backlog")):
    """One port in a snapshot. ``eof_sent``: PORT_OPEN(0) went to the guest."""

    __slots__ = ()


class ConsoleState(
    record(
        "ConsoleState",
        "cols rows max_input_backlog console_port acked_features device_ready ports control_pending",
    )
):
    """The device in a snapshot; every field is checked again by from_state()."""

    __slots__ = ()


class _Port:
    __slots__ = (
        "name", "guest_ready", "guest_open", "host_open", "eof_sent", "told_connected", "backlog", "output_paused",
    )

    def __init__(self, name: str):
        self.name = name
        self.guest_ready = False  # PORT_READY(1) seen since the last reset
        self.guest_open = False  # the guest's last PORT_OPEN value
        self.host_open = True  # until close_port()
        self.eof_sent = False
        self.told_connected = False  # the guest was sent PORT_OPEN(1) and not yet (0)
        self.backlog = bytearray()
        self.output_paused = False  # pause_output(): transmit chains stay in the ring


class VirtioConsole(VirtioDevice):
    device_id = VIRTIO_ID_CONSOLE

    def __init__(
        self,
        port_names: Sequence[str],
        *,
        on_output: Callable[[int, bytes], None],
        on_writable: Callable[[int], None] | None = None,
        on_guest_open: Callable[[int, bool], None] | None = None,
        max_input_backlog: int = DEFAULT_INPUT_BACKLOG,
        cols: int = 80,
        rows: int = 24,
        console_port: int | None = None,
    ):
        """``on_output(port, data)``: guest output, called under the transport's lock
        on whatever thread processed the queue; keep it short (hand off slow sinks).
        ``on_writable(port)``: a backlog that was full has room again.
        ``on_guest_open(port, opened)``: the guest opened or closed the port.
        ``console_port``: nominate this port as a text console (CONSOLE_PORT;
        Linux makes it an hvc terminal); only it gets RESIZE messages."""
        super().__init__()
        names = list(port_names)
        if not 1 <= len(names) <= MAX_PORTS:
            raise ConfigError(f"virtio-console: {len(names)} ports (1 to {MAX_PORTS} allowed)")
        for name in names:
            encoded = name.encode() if isinstance(name, str) else b""
            if not encoded or len(encoded) > MAX_NAME_BYTES or b"\0" in encoded:
                raise ConfigError(f"virtio-console: bad port name {name!r} (1 to {MAX_NAME_BYTES} bytes, no NUL)")
        if len(set(names)) != len(names):
            raise ConfigError("virtio-console: port names must be unique")
        if type(max_input_backlog) is not int or not 1 <= max_input_backlog <= MAX_INPUT_BACKLOG:
            raise ConfigError(f"virtio-console: max_input_backlog must be 1 to {MAX_INPUT_BACKLOG} bytes")
        if console_port is not None and not (isinstance(console_port, int) and 0 <= console_port < len(names)):
            raise ConfigError(f"virtio-console: console port {console_port!r} is not one of the ports")
        self.console_port = console_port
        self.port_names = tuple(names)
        self.max_input_backlog = max_input_backlog
        self.cols, self.rows = cols & 0xFFFF, rows & 0xFFFF
        self.features = (
            1 << c.VIRTIO_F_VERSION_1
            | 1 << c.VIRTIO_RING_F_INDIRECT_DESC
            | 1 << c.VIRTIO_RING_F_EVENT_IDX
            | 1 << VIRTIO_CONSOLE_F_MULTIPORT
        )
        self.queue_max_sizes = (QUEUE_SIZE,) * (2 * len(names) + 2)
        self._on_output = on_output
        self._on_writable = on_writable
        self._on_guest_open = on_guest_open
        # Guards ports and control messages: host threads call write() while
        # process() runs under the transport's lock (taken before this one).
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._ports = [_Port(name) for name in names]
        self._control: deque[bytes] = deque()
        # Each port adds at most ADD, CONSOLE_PORT, NAME, OPEN(1) and OPEN(0)
        # between resets: bounded whatever the guest does. RESIZE replaces
        # a RESIZE still waiting rather than queueing behind it.
        self._control_limit = 8 * len(names) + 8
        self._device_ready = False
        self._queues: list[SplitQueue] = []
        self._interrupt = None
        self._closed = False  # close(): wait_writable() stops waiting
        self._restored = False  # from_state(): the next reset is the transport's rebuild

    # -- VirtioDevice -------------------------------------------------------------

    @property
    def config(self) -> bytes:
        return CONFIG.pack(self.cols, self.rows, len(self._ports), 0)

    @property
    def multiport(self) -> bool:
        return bool(self.acked_features & (1 << VIRTIO_CONSOLE_F_MULTIPORT))

    def activate(self, memory: GuestMemory, queues: list[SplitQueue], interrupt) -> None:
        with self._lock:
            self._queues = queues
            self._interrupt = interrupt
            if not self.multiport:
                # 5.3.2: without MULTIPORT only port 0 exists, connected from the start.
                port = self._ports[0]
                port.guest_ready = port.guest_open = port.told_connected = True

    def reset(self) -> None:
        if self._restored:
            # The reset of the transport being rebuilt around a restored device
            # (VirtioMmioTransport.from_state): keep what the record says.
            self._restored = False
            with self._lock:
                self._queues, self._interrupt = [], None
            return
        super().reset()
        with self._lock:
            self._queues = []
            self._interrupt = None
            self._device_ready = False
            self._control.clear()
            for port in self._ports:
                # Undelivered input stays for the next driver; what it was told does not.
                port.guest_ready = port.guest_open = port.told_connected = port.eof_sent = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._interrupt = None
            self._room.notify_all()

    def process(self, queue_index: int, queue: SplitQueue) -> bool:
        if queue_index == CONTROL_TX:
            return self._process_control_tx(queue) if self.multiport else False
        if queue_index == CONTROL_RX:
            return self._fill_control_rx(queue) if self.multiport else False
        where = queue_port(queue_index)
        if where is None or where[0] >= len(self._ports) or (where[0] and not self.multiport):
            return False
        port_id, receive = where
        if receive:
            return self._fill_rx(port_id, queue)
        return self._drain_tx(port_id, queue)

    # -- host side ------------------------------------------------------------------

    def port_id(self, name: str) -> int:
        try:
            return self.port_names.index(name)
        except ValueError:
            raise ConsoleError(f"virtio-console: no port named {name!r}") from None

    def write(self, port_id: int, data) -> int:
        """Queue host input for the guest; returns how many bytes were taken.

        Takes min(len(data), room left in the port's backlog): 0 when the
        backlog is full (see wait_writable). Raises PortClosedError after
        close_port(), ConsoleError for an unknown port.
        """
        port = self._port(port_id)
        data = memoryview(data).cast("B")
        with self._lock:
            if not port.host_open:
                raise PortClosedError(f"virtio-console: port {port_id} ({port.name}) is closed")
            taken = min(len(data), self.max_input_backlog - len(port.backlog))
            if taken <= 0:
                return 0
            port.backlog += data[:taken]
            interrupt = self._interrupt
        if interrupt is not None:
            interrupt.trigger(rx_queue(port_id))
        return taken

    def close_port(self, port_id: int) -> None:
        """The host end is closed: after the backlog, the guest reads end of file."""
        port = self._port(port_id)
        with self._lock:
            if not port.host_open:
                return
            port.host_open = False
            self._maybe_send_eof(port_id, port)
            self._room.notify_all()
            interrupt = self._interrupt
        if interrupt is not None:
            interrupt.trigger(CONTROL_RX)

    def resize(self, cols: int, rows: int) -> None:
        """The console port's terminal changed size: RESIZE to the guest (5.3.6.2)."""
        with self._lock:
            self.cols, self.rows = cols & 0xFFFF, rows & 0xFFFF
            port_id = self.console_port
            if port_id is None or not self.multiport or not self._ports[port_id].guest_ready:
                return
            message = control_message(port_id, RESIZE, 0, RESIZE_SIZE.pack(self.cols, self.rows))
            stale = [m for m in self._control if m[:8] == message[:8]]
            for m in stale:
                self._control.remove(m)
            self._queue_control(message)
            interrupt = self._interrupt
        if interrupt is not None:
            interrupt.trigger(CONTROL_RX)

    def pause_output(self, port_id: int) -> None:
        """Stop taking the guest's output on this port (a sink that is full):
        its transmit chains stay in the ring, so the guest's writes wait, and
        nothing is buffered here. Takes effect between chains."""
        port = self._port(port_id)
        with self._lock:
            port.output_paused = True

    def resume_output(self, port_id: int) -> None:
        """Take the guest's output again, starting with what waited meanwhile."""
        port = self._port(port_id)
        with self._lock:
            if not port.output_paused:
                return
            port.output_paused = False
            interrupt = self._interrupt
        if interrupt is not None:
            interrupt.trigger(tx_queue(port_id))

    def port_open(self, port_id: int) -> bool:
        """Whether the guest has the port open (its last PORT_OPEN said 1)."""
        port = self._port(port_id)
        with self._lock:
            return port.guest_open

    def input_backlog(self, port_id: int) -> int:
        """Host input not yet delivered to the guest, in bytes."""
        port = self._port(port_id)
        with self._lock:
            return len(port.backlog)

    def wait_writable(self, port_id: int, timeout: float | None = None) -> bool:
        """Block until the port's backlog has room (or the port was closed,
        or the device closed); returns whether write() would take data now."""
        port = self._port(port_id)
        with self._room:
            self._room.wait_for(
                lambda: len(port.backlog) < self.max_input_backlog or not port.host_open or self._closed,
                timeout,
            )
            return not self._closed and port.host_open and len(port.backlog) < self.max_input_backlog

    def _port(self, port_id: int) -> _Port:
        if not isinstance(port_id, int) or not 0 <= port_id < len(self._ports):
            raise ConsoleError(f"virtio-console: no port {port_id!r} (ports are 0-{len(self._ports) - 1})")
        return self._ports[port_id]

    # -- guest -> host: data ----------------------------------------------------------

    def _drain_tx(self, port_id: int, queue: SplitQueue) -> bool:
        port = self._ports[port_id]
        added = False
        # Batch by batch (pop_batch bounds the buffers resolved at once), and
        # chain by chain while paused: on_output may pause the port.
        while not port.output_paused:
            chains = queue.pop_batch(1)
            if not chains:
                break
            for chain in chains:
                if chain.valid and not any(b.writable for b in chain.buffers):
                    self._emit(port_id, chain)
                elif not chain.valid:
                    log.debug("virtio-console: port %d: %s", port_id, chain.error)
                else:
                    log.debug("virtio-console: port %d: device-writable buffer on a transmit queue", port_id)
            queue.push_used_many([(chain.head, 0) for chain in chains])  # nothing written into them
            added = True
        return added

    def _emit(self, port_id: int, chain: DescriptorChain) -> None:
        piece = bytearray()
        for buffer in chain.buffers:
            view = buffer.view
            while len(view):
                n = min(len(view), OUTPUT_PIECE - len(piece))
                piece += view[:n]
                view = view[n:]
                if len(piece) == OUTPUT_PIECE:
                    self._on_output(port_id, bytes(piece))
                    piece.clear()
        if piece:
            self._on_output(port_id, bytes(piece))

    # -- host -> guest: data ------------------------------------------------------------

    @staticmethod
    def _pop(queue: SplitQueue):
        """(chain or None, error): a broken ring ends a batch, after the chains
        already popped are answered, and is raised to the transport then."""
        try:
            return queue.pop(), None
        except (QueueError, GuestMemoryError) as err:
            return None, err

    def _fill_rx(self, port_id: int, queue: SplitQueue) -> bool:
        port = self._ports[port_id]
        answers = []
        error = None
        with self._lock:
            if not port.guest_open:
                return False  # held until the guest opens the port
            had_full = len(port.backlog) >= self.max_input_backlog
            taken_total = 0
            with memoryview(port.backlog) as backlog:  # released before the bytearray shrinks
                while taken_total < len(backlog):
                    chain, error = self._pop(queue)
                    if chain is None:
                        break
                    if not chain.valid or any(not b.writable for b in chain.buffers):
                        log.debug("virtio-console: port %d: bad receive chain %d", port_id, chain.head)
                        answers.append((chain.head, 0))
                        continue
                    written = 0
                    for buffer in chain.buffers:
                        n = min(buffer.length, len(backlog) - taken_total)
                        if n <= 0:
                            break
                        buffer.view[:n] = backlog[taken_total : taken_total + n]
                        taken_total += n
                        written += n
                    answers.append((chain.head, written))
            if taken_total:
                del port.backlog[:taken_total]
            eof = self._maybe_send_eof(port_id, port)
            room = had_full and len(port.backlog) < self.max_input_backlog
            if room:
                self._room.notify_all()
            interrupt = self._interrupt
        if answers:
            queue.push_used_many(answers)
        if eof and interrupt is not None:
            interrupt.trigger(CONTROL_RX)
        if room and self._on_writable is not None:
            self._on_writable(port_id)
        if error is not None:
            raise error
        return bool(answers)

    def _maybe_send_eof(self, port_id: int, port: _Port) -> bool:
        """Lock held: the host end is closed and everything delivered: tell the guest."""
        if port.host_open or port.backlog or port.eof_sent or not port.told_connected:
            return False
        if not self.multiport:
            return False  # no control queue to say it on
        port.eof_sent = True
        port.told_connected = False
        return self._queue_control(control_message(port_id, PORT_OPEN, 0))

    # -- control queues ---------------------------------------------------------------

    def _queue_control(self, message: bytes) -> bool:
        """Lock held: append a device -> driver message (dropped past the bound)."""
        if len(self._control) >= self._control_limit:
            log.warning("virtio-console: control queue full, message dropped")
            return False
        self._control.append(message)
        return True

    def _fill_control_rx(self, queue: SplitQueue) -> bool:
        answers = []
        error = None
        with self._lock:
            while self._control:
                chain, error = self._pop(queue)
                if chain is None:
                    break
                writable = chain.writable_buffers if chain.valid else []
                if not writable or len(writable) != len(chain.buffers):
                    answers.append((chain.head, 0))  # malformed: returned, message kept
                    continue
                message = self._control.popleft()
                done = 0
                for buffer in writable:  # a message cut short by small buffers is truncated
                    n = min(buffer.length, len(message) - done)
                    buffer.view[:n] = message[done : done + n]
                    done += n
                    if done == len(message):
                        break
                answers.append((chain.head, done))
        if answers:
            queue.push_used_many(answers)
        if error is not None:
            raise error
        return bool(answers)

    def _process_control_tx(self, queue: SplitQueue) -> bool:
        notices = []  # (port, opened) for on_guest_open, called without our lock
        kicks = set()
        added = False
        while chains := queue.pop_batch():
            with self._lock:
                for chain in chains:
                    message = self._read_control(chain)
                    if message is not None:
                        self._control_event(*message, notices, kicks)
            queue.push_used_many([(chain.head, 0) for chain in chains])
            added = True
        if not added:
            return False
        with self._lock:
            interrupt = self._interrupt
        if interrupt is not None:
            for index in sorted(kicks):
                interrupt.trigger(index)
        if self._on_guest_open is not None:
            for port_id, opened in notices:
                self._on_guest_open(port_id, opened)
        return True

    @staticmethod
    def _read_control(chain: DescriptorChain) -> tuple[int, int, int] | None:
        """(id, event, value) from the first 8 readable bytes, or None if malformed."""
        if not chain.valid or any(b.writable for b in chain.buffers):
            return None
        raw = bytearray()
        for buffer in chain.buffers:
            raw += buffer.view[: CONTROL.size - len(raw)]
            if len(raw) == CONTROL.size:
                return CONTROL.unpack(raw)
        return None

    def _control_event(self, port_id: int, event: int, value: int, notices: list, kicks: set) -> None:
        """Lock held: one driver -> device message. Anything unexpected is ignored."""
        if event == DEVICE_READY:
            if value != 1:
                log.info("virtio-console: driver reported failure (DEVICE_READY %d)", value)
                return
            if self._device_ready:
                return  # answered once per reset
            self._device_ready = True
            for index in range(len(self._ports)):
                self._queue_control(control_message(index, DEVICE_ADD))
            kicks.add(CONTROL_RX)
            return
        if not self._device_ready or port_id >= len(self._ports):
            log.debug("virtio-console: control event %d for port %d ignored", event, port_id)
            return
        port = self._ports[port_id]
        if event == PORT_READY:
            if value != 1:
                log.info("virtio-console: driver could not set up port %d (%s)", port_id, port.name)
                return
            if port.guest_ready:
                return
            port.guest_ready = True
            connected = port.host_open or bool(port.backlog)
            if port_id == self.console_port:
                self._queue_control(control_message(port_id, CONSOLE_PORT, 1))
            self._queue_control(control_message(port_id, PORT_NAME, 0, port.name.encode()))
            self._queue_control(control_message(port_id, PORT_OPEN, int(connected)))
            port.told_connected = connected
            port.eof_sent = not connected
            kicks.add(CONTROL_RX)
        elif event == PORT_OPEN:
            if not port.guest_ready or value not in (0, 1) or bool(value) == port.guest_open:
                return
            port.guest_open = bool(value)
            notices.append((port_id, port.guest_open))
            if port.guest_open and port.backlog:
                kicks.add(rx_queue(port_id))
        else:
            log.debug("virtio-console: control event %d from the driver ignored", event)

    # -- snapshots ----------------------------------------------------------------------

    def state(self) -> ConsoleState:
        """The device's own state (the transport records the queues). Take it paused."""
        with self._lock:
            ports = tuple(
                PortState(p.name, p.guest_ready, p.guest_open, p.host_open, p.eof_sent, bytes(p.backlog))
                for p in self._ports
            )
            return ConsoleState(
                self.cols, self.rows, self.max_input_backlog, self.console_port, self.acked_features,
                self._device_ready, ports, tuple(self._control),
            )

    @classmethod
    def from_state(
        cls,
        state: ConsoleState,
        *,
        on_output: Callable[[int, bytes], None],
        on_writable: Callable[[int], None] | None = None,
        on_guest_open: Callable[[int, bool], None] | None = None,
    ) -> "VirtioConsole":
        """Rebuild a device from an untrusted record; StateError (exit status 2)
        names the first field out of bounds. Hand it to
        VirtioMmioTransport.from_state() next: the reset of that rebuild keeps
        the restored state, and its activate() reconnects the queues."""
        try:
            return cls._restore(state, on_output, on_writable, on_guest_open)
        except StateError:
            raise
        except ConfigError as err:  # what the constructor refuses
            raise StateError(f"virtio-console state: {str(err).removeprefix('virtio-console: ')}") from None
        except (AttributeError, TypeError, ValueError) as err:
            raise StateError(f"virtio-console state: malformed record ({err})") from None

    @classmethod
    def _restore(cls, state, on_output, on_writable, on_guest_open) -> "VirtioConsole":
        if not isinstance(state, ConsoleState):
            raise StateError(f"virtio-console state: a {type(state).__name__}, not a ConsoleState")
        ports = tuple(state.ports)
        if not all(isinstance(p, PortState) for p in ports):
            raise StateError("virtio-console state: ports are not PortState records")
        device = cls(
            [p.name for p in ports], on_output=on_output, on_writable=on_writable, on_guest_open=on_guest_open,
            max_input_backlog=check_uint("max_input_backlog", state.max_input_backlog, 64),
            cols=check_uint("cols", state.cols, 16), rows=check_uint("rows", state.rows, 16),
            console_port=state.console_port,
        )
        acked = check_uint("acked_features", state.acked_features, 64)
        if acked & ~device.features:
            raise StateError(f"virtio-console state: acked features 0x{acked:x} were never offered")
        control = tuple(state.control_pending)
        if len(control) > device._control_limit or any(
            type(m) is not bytes or not CONTROL.size <= len(m) <= CONTROL.size + MAX_NAME_BYTES for m in control
        ):
            raise StateError("virtio-console state: bad pending control messages")
        device.acked_features = acked
        device._device_ready = check_bool("device_ready", state.device_ready)
        device._control.extend(control)
        for port, saved in zip(device._ports, ports):
            if type(saved.backlog) is not bytes or len(saved.backlog) > device.max_input_backlog:
                raise StateError(f"virtio-console state: port {saved.name!r} backlog too large")
            port.guest_ready = check_bool("guest_ready", saved.guest_ready)
            port.guest_open = check_bool("guest_open", saved.guest_open) and port.guest_ready
            port.host_open = check_bool("host_open", saved.host_open)
            port.eof_sent = check_bool("eof_sent", saved.eof_sent)
            port.told_connected = port.guest_ready and not port.eof_sent
            port.backlog = bytearray(saved.backlog)
        device._restored = True
        return device
