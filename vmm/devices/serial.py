"""16550A UART (the PC serial port) as registers plus an input queue.

Written from the National/TI PC16550D datasheet. Like rust-vmm's vm-superio
``Serial``, the model knows nothing of KVM: the machine injects ``output``
(where transmitted bytes go) and ``irq`` (set the interrupt line level), and
feeds host input with ``enqueue_input``. The bus drives ``read``/``write`` at
offsets 0-7 from the base port.

Simplifications, each chosen so a guest never waits or loses data:
  * Transmission is instant: a THR write goes straight to ``output``, so THR
    and the transmitter are always empty (LSR.THRE and LSR.TEMT stay set) and
    the TX FIFO never holds anything.
  * Host input is flow controlled like RTS/CTS: it waits in a backlog until
    the guest asserts RTS (and loopback is off), then moves into the RX FIFO
    as room appears. So it is never overrun; OE only happens in loopback.
    PE/FE/BI and LSR bit 7 never set. The backlog holds at most
    INPUT_BACKLOG_MAX bytes: past that enqueue_input refuses the rest, and the
    host must wait for ``on_input_space`` (a guest that never reads cannot
    make the host buffer without bound).

Every buffer is bounded: the RX FIFO by RX_FIFO_SIZE, the backlog by
INPUT_BACKLOG_MAX, and nothing is buffered on the way out. ``from_state``
checks every field of a record against the same limits.
  * With no baud-rate timer, the FIFO character-timeout indication is
    reported whenever data sits below the trigger level.

Threading: the vCPU thread calls read/write, a host thread enqueue_input; one
lock guards all state. ``irq`` is called with the lock held (so concurrent
level changes reach the line in order) and must not call back into the
device. ``output`` and ``on_input_space`` are called after the lock is
released, so a slow sink never blocks host input and the host may refill
(call ``enqueue_input``) from ``on_input_space``.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Callable

from ..errors import ConfigError

REGISTER_SPAN = 8  # offsets 0-7 from the base port
RX_FIFO_SIZE = 16  # the 16550's receive FIFO; one byte with FIFOs off (16450 mode)

# Host input accepted ahead of the guest. The CLI stops reading stdin once
# 64 KiB wait (and reads 4 KiB at a time), so it never reaches this; an API
# caller may paste up to 1 MiB at once and must wait for room after that.
INPUT_BACKLOG_MAX = 1 << 20

IER_RX_DATA, IER_THR_EMPTY, IER_LINE_STATUS, IER_MODEM_STATUS = 0x01, 0x02, 0x04, 0x08
IER_WRITABLE = 0x0F

IIR_NO_INTERRUPT = 0x01  # bit 0 is 0 when an interrupt is pending
IIR_MODEM_STATUS, IIR_THR_EMPTY, IIR_RX_DATA, IIR_LINE_STATUS = 0x00, 0x02, 0x04, 0x06
IIR_RX_TIMEOUT = 0x0C
IIR_FIFOS_ENABLED = 0xC0
IIR_SOURCE_MASK = 0x0F

FCR_ENABLE_FIFOS, FCR_CLEAR_RX, FCR_CLEAR_TX = 0x01, 0x02, 0x04
FCR_TRIGGER_MASK = 0xC0
RX_TRIGGER_LEVELS = {0x00: 1, 0x40: 4, 0x80: 8, 0xC0: 14}

LCR_DLAB = 0x80  # divisor latch access: offsets 0/1 become DLL/DLM

MCR_DTR, MCR_RTS, MCR_OUT1, MCR_OUT2, MCR_LOOPBACK = 0x01, 0x02, 0x04, 0x08, 0x10
MCR_WRITABLE = 0x1F

LSR_DATA_READY, LSR_OVERRUN = 0x01, 0x02
LSR_THR_EMPTY, LSR_TRANSMITTER_EMPTY = 0x20, 0x40

MSR_DELTA_CTS, MSR_DELTA_DSR, MSR_TRAILING_EDGE_RI, MSR_DELTA_DCD = 0x01, 0x02, 0x04, 0x08
MSR_DELTAS = 0x0F
MSR_CTS, MSR_DSR, MSR_RI, MSR_DCD = 0x10, 0x20, 0x40, 0x80
MSR_CONNECTED_LINE = MSR_CTS | MSR_DSR | MSR_DCD  # what a cabled, ready peer shows


# A named tuple, not a dataclass: importing dataclasses costs ~10 ms of start-up.
_SERIAL_FIELDS = (
    ("divisor_latch_low", 0),  # the datasheet leaves DLL/DLM undefined at reset
    ("divisor_latch_high", 0),
    ("ier", 0),
    ("lcr", 0),
    ("mcr", 0),
    ("msr", MSR_CONNECTED_LINE),  # line bits and the delta bits not yet read
    ("scr", 0),
    ("fifo_control", 0),  # the FCR bits that persist: FIFO enable (bit 0), RX trigger (bits 7:6)
    ("overrun", False),  # LSR.OE, until LSR is read
    ("thr_interrupt_pending", False),
    ("rx_fifo", b""),
    ("input_backlog", b""),  # host input accepted but not yet in the RX FIFO
    ("irq_level", False),  # the level last given to irq()
)


class SerialState(namedtuple("SerialState", [name for name, _ in _SERIAL_FIELDS], defaults=[d for _, d in _SERIAL_FIELDS])):
    """Everything needed to rebuild a Uart16550 exactly. Defaults are the reset state.

    There is no TX FIFO field: transmission is instant, so it is always empty.
    """

    __slots__ = ()


class SerialStateError(ConfigError):
    """A SerialState no UART could be in (a corrupt or forged snapshot record)."""


_REGISTER_FIELDS = ("divisor_latch_low", "divisor_latch_high", "ier", "lcr", "mcr", "msr", "scr", "fifo_control")
_BOOLEAN_FIELDS = ("overrun", "thr_interrupt_pending", "irq_level")


def check_state(state) -> SerialState:
    """``state`` as a SerialState if a UART could be in it, else SerialStateError.

    Registers must be bytes (0-255; bits a register does not keep are then
    masked off on load), flags real booleans, the RX FIFO no longer than the
    FIFO mode allows, the backlog within INPUT_BACKLOG_MAX, and host input may
    only wait in the backlog while the guest cannot take it.
    """
    try:
        fields = tuple(state)
    except TypeError:
        raise SerialStateError(f"UART state is a {type(state).__name__}, not a record") from None
    if len(fields) != len(_SERIAL_FIELDS):
        raise SerialStateError(f"UART state has {len(fields)} fields, expected {len(_SERIAL_FIELDS)}")
    state = SerialState(*fields)
    for name in _REGISTER_FIELDS:
        value = getattr(state, name)
        if type(value) is not int or not 0 <= value <= 0xFF:
            raise SerialStateError(f"UART state: {name} is {value!r}, not a byte value 0-255")
    for name in _BOOLEAN_FIELDS:
        value = getattr(state, name)
        if type(value) is not bool:
            raise SerialStateError(f"UART state: {name} is {value!r}, not a boolean")
    for name in ("rx_fifo", "input_backlog"):
        if not isinstance(getattr(state, name), (bytes, bytearray)):
            raise SerialStateError(f"UART state: {name} is a {type(getattr(state, name)).__name__}, not bytes")
    capacity = RX_FIFO_SIZE if state.fifo_control & FCR_ENABLE_FIFOS else 1
    if len(state.rx_fifo) > capacity:
        raise SerialStateError(f"UART state: RX FIFO holds {len(state.rx_fifo)} bytes, more than its {capacity}")
    if len(state.input_backlog) > INPUT_BACKLOG_MAX:
        raise SerialStateError(f"UART state: input backlog of {len(state.input_backlog)} bytes exceeds {INPUT_BACKLOG_MAX}")
    accepting = state.mcr & (MCR_RTS | MCR_LOOPBACK) == MCR_RTS
    if accepting and state.input_backlog and len(state.rx_fifo) < capacity:
        raise SerialStateError("UART state: host input waits in the backlog while the RX FIFO has room and RTS is set")
    return state


class Uart16550:
    def __init__(
        self,
        output: Callable[[bytes], None],
        irq: Callable[[bool], None] | None = None,
        *,
        on_input_space: Callable[[], None] | None = None,
        on_plain_transmit: Callable[[bool], None] | None = None,
    ) -> None:
        self._output = output
        self._irq = irq
        self._on_input_space = on_input_space
        self._on_plain_transmit = on_plain_transmit
        self._plain_transmit: bool | None = None
        self._lock = threading.Lock()
        self._load(SerialState())
        self._report_plain_transmit()

    # --- bus side (vCPU thread) --------------------------------------------
    def read(self, offset: int, size: int = 1) -> int:
        """Read the register at offset. Wider reads return that one byte, upper bytes 0."""
        if not 0 <= offset < REGISTER_SPAN:
            return 0xFF
        made_room = False
        with self._lock:
            divisor_latch = self._lcr & LCR_DLAB
            if offset == 0:
                if divisor_latch:
                    return self._divisor_latch_low
                value, made_room = self._read_rbr()
            elif offset == 1:
                return self._divisor_latch_high if divisor_latch else self._ier
            elif offset == 2:
                value = self._interrupt_identification()
                # Reading IIR acknowledges a THRE interrupt, but only when it is the one reported.
                if value & IIR_SOURCE_MASK == IIR_THR_EMPTY:
                    self._thr_interrupt_pending = False
            elif offset == 3:
                return self._lcr
            elif offset == 4:
                return self._mcr
            elif offset == 5:
                value = LSR_THR_EMPTY | LSR_TRANSMITTER_EMPTY
                if self._rx_fifo:
                    value |= LSR_DATA_READY
                if self._overrun:
                    value |= LSR_OVERRUN
                    self._overrun = False
            elif offset == 6:
                value = self._msr
                self._msr &= ~MSR_DELTAS
            else:
                return self._scr
            self._update_irq()
        if made_room and self._on_input_space is not None:
            self._on_input_space()
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        """Write the low byte of value to the register at offset."""
        if not 0 <= offset < REGISTER_SPAN:
            return
        value &= 0xFF
        transmitted = None
        made_room = False
        with self._lock:
            divisor_latch = self._lcr & LCR_DLAB
            if offset == 0:
                if divisor_latch:
                    self._divisor_latch_low = value
                else:
                    transmitted = self._write_thr(value)
            elif offset == 1:
                if divisor_latch:
                    self._divisor_latch_high = value
                else:
                    self._write_ier(value)
            elif offset == 2:
                made_room = self._write_fcr(value)
            elif offset == 3:
                self._lcr = value
            elif offset == 4:
                made_room = self._write_mcr(value)
            elif offset == 7:
                self._scr = value
            # Offsets 5 and 6 (LSR, MSR) are status; the datasheet reserves writes for factory test.
            self._update_irq()
        if transmitted is not None:
            self._output(bytes((transmitted,)))
        if made_room and self._on_input_space is not None:
            self._on_input_space()
        if offset in (1, 3, 4):
            self._report_plain_transmit()

    @property
    def plain_transmit(self) -> bool:
        """Whether a THR write now does nothing but send its byte to ``output``.

        True unless the divisor latch is selected, loopback is on or the THR
        empty interrupt is enabled. While it holds, a caller may transmit THR
        writes itself (the VMM does so in C) without changing the model's state.
        """
        return not (self._lcr & LCR_DLAB or self._mcr & MCR_LOOPBACK or self._ier & IER_THR_EMPTY)

    def _report_plain_transmit(self) -> None:
        plain = self.plain_transmit
        if plain != self._plain_transmit:
            self._plain_transmit = plain
            if self._on_plain_transmit is not None:
                self._on_plain_transmit(plain)

    # --- host side -----------------------------------------------------------
    def enqueue_input(self, data: bytes) -> int:
        """Bytes arriving on the line; returns how many were accepted.

        Accepted bytes are never dropped: they wait until the guest takes them.
        Bytes that would take the backlog past INPUT_BACKLOG_MAX are refused
        (not accepted, nothing kept); ``on_input_space`` says when to retry.
        """
        if not data:
            return 0
        with self._lock:
            room = INPUT_BACKLOG_MAX - len(self._backlog)
            if room <= 0:
                return 0
            accepted = data[:room] if len(data) > room else data
            self._backlog += accepted
            self._move_backlog_to_fifo()
            self._update_irq()
        return len(accepted)

    @property
    def input_backlog(self) -> int:
        """Bytes accepted by enqueue_input not yet moved into the RX FIFO."""
        with self._lock:
            return len(self._backlog)

    def state(self) -> SerialState:
        with self._lock:
            return SerialState(
                divisor_latch_low=self._divisor_latch_low,
                divisor_latch_high=self._divisor_latch_high,
                ier=self._ier,
                lcr=self._lcr,
                mcr=self._mcr,
                msr=self._msr,
                scr=self._scr,
                fifo_control=self._fifo_control,
                overrun=self._overrun,
                thr_interrupt_pending=self._thr_interrupt_pending,
                rx_fifo=bytes(self._rx_fifo),
                input_backlog=bytes(self._backlog),
                irq_level=self._irq_level,
            )

    @classmethod
    def from_state(
        cls,
        state: SerialState,
        output: Callable[[bytes], None],
        irq: Callable[[bool], None] | None = None,
        *,
        on_input_space: Callable[[], None] | None = None,
        on_plain_transmit: Callable[[bool], None] | None = None,
    ) -> "Uart16550":
        """Rebuild a device. irq is not called: the line is taken to already be at
        state.irq_level, as it is when the interrupt controller is restored too.
        Raises SerialStateError for a record no UART could be in (see check_state)."""
        state = check_state(state)
        device = cls(output, irq, on_input_space=on_input_space, on_plain_transmit=on_plain_transmit)
        with device._lock:
            device._load(state)
        device._report_plain_transmit()
        return device

    # --- internals (called with the lock held) -------------------------------
    def _load(self, s: SerialState) -> None:
        self._divisor_latch_low = s.divisor_latch_low & 0xFF
        self._divisor_latch_high = s.divisor_latch_high & 0xFF
        self._ier = s.ier & IER_WRITABLE
        self._lcr = s.lcr & 0xFF
        self._mcr = s.mcr & MCR_WRITABLE
        self._msr = s.msr & 0xFF
        self._scr = s.scr & 0xFF
        self._fifo_control = s.fifo_control & (FCR_ENABLE_FIFOS | FCR_TRIGGER_MASK)
        self._overrun = bool(s.overrun)
        self._thr_interrupt_pending = bool(s.thr_interrupt_pending)
        self._rx_fifo = bytearray(s.rx_fifo)
        self._backlog = bytearray(s.input_backlog)  # del from the front of a bytearray is cheap
        self._irq_level = bool(s.irq_level)

    def _rx_capacity(self) -> int:
        # Without FIFOs the 16550 behaves as a 16450: a one-byte receiver buffer.
        return RX_FIFO_SIZE if self._fifo_control & FCR_ENABLE_FIFOS else 1

    def _rx_trigger_level(self) -> int:
        if not self._fifo_control & FCR_ENABLE_FIFOS:
            return 1
        return RX_TRIGGER_LEVELS[self._fifo_control & FCR_TRIGGER_MASK]

    def _move_backlog_to_fifo(self) -> bool:
        """Move host input into the RX FIFO as far as flow control and room allow.
        Returns whether the guest is accepting host input at all."""
        if self._mcr & (MCR_RTS | MCR_LOOPBACK) != MCR_RTS:
            return False  # RTS low means "don't send"; loopback disconnects the line
        room = self._rx_capacity() - len(self._rx_fifo)
        if room > 0 and self._backlog:
            self._rx_fifo += self._backlog[:room]
            del self._backlog[:room]
        return True

    def _read_rbr(self) -> tuple[int, bool]:
        if not self._rx_fifo:
            return 0, False  # a real chip would return the stale byte; nothing relies on it
        value = self._rx_fifo.pop(0)
        return value, self._move_backlog_to_fifo()

    def _write_thr(self, value: int) -> int | None:
        # Writing THR acknowledges a THRE interrupt; the byte leaves at once, so THR
        # is empty again and the interrupt re-arms. Updating the line in between
        # gives an edge-triggered PIC a fresh edge per byte, as the real chip does
        # once its shift register takes the byte.
        self._thr_interrupt_pending = False
        self._update_irq()
        self._thr_interrupt_pending = bool(self._ier & IER_THR_EMPTY)
        if not self._mcr & MCR_LOOPBACK:
            return value
        if len(self._rx_fifo) < self._rx_capacity():
            self._rx_fifo.append(value)
        else:
            # Overrun. In FIFO mode the datasheet drops the new byte; in 16450 mode it
            # would overwrite the old one, but we keep the old one in both so a host
            # byte already received can never be destroyed by loopback traffic.
            self._overrun = True
        return None

    def _write_ier(self, value: int) -> None:
        value &= IER_WRITABLE
        enabling_thre = value & ~self._ier & IER_THR_EMPTY
        self._ier = value
        if not value & IER_THR_EMPTY:
            self._thr_interrupt_pending = False
        elif enabling_thre:
            # THR is always empty, so enabling ETBEI interrupts at once. Linux's
            # THRE probe (enable, read IIR, disable, enable again) expects this.
            self._thr_interrupt_pending = True

    def _write_fcr(self, value: int) -> bool:
        enable = value & FCR_ENABLE_FIFOS
        clear_rx = enable != self._fifo_control & FCR_ENABLE_FIFOS  # mode changes empty the FIFOs
        if enable:
            self._fifo_control = value & (FCR_ENABLE_FIFOS | FCR_TRIGGER_MASK)
            clear_rx |= bool(value & FCR_CLEAR_RX)
            # FCR_CLEAR_TX: nothing to do, the TX FIFO is always empty.
        else:
            # The other FCR bits are only programmed while bit 0 is written as 1.
            self._fifo_control &= ~FCR_ENABLE_FIFOS
        if not clear_rx:
            return False
        self._rx_fifo.clear()
        return self._move_backlog_to_fifo()

    def _write_mcr(self, value: int) -> bool:
        old_lines = self._msr & ~MSR_DELTAS
        was_accepting = self._mcr & (MCR_RTS | MCR_LOOPBACK) == MCR_RTS
        self._mcr = value & MCR_WRITABLE
        new_lines = self._modem_lines()
        changed = old_lines ^ new_lines
        deltas = (changed >> 4) & (MSR_DELTA_CTS | MSR_DELTA_DSR | MSR_DELTA_DCD)
        if old_lines & ~new_lines & MSR_RI:
            deltas |= MSR_TRAILING_EDGE_RI  # RI reports only its falling edge
        self._msr = new_lines | (self._msr & MSR_DELTAS) | deltas
        if was_accepting:
            return False
        return self._move_backlog_to_fifo()  # RTS rose or loopback ended: host input flows again

    def _modem_lines(self) -> int:
        if not self._mcr & MCR_LOOPBACK:
            return MSR_CONNECTED_LINE
        # Loopback wires the modem outputs back to the inputs:
        # RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD.
        mcr = self._mcr
        return ((mcr & MCR_RTS) << 3) | ((mcr & MCR_DTR) << 5) | ((mcr & (MCR_OUT1 | MCR_OUT2)) << 4)

    def _interrupt_identification(self) -> int:
        fifo_bits = IIR_FIFOS_ENABLED if self._fifo_control & FCR_ENABLE_FIFOS else 0
        ier = self._ier
        if ier & IER_LINE_STATUS and self._overrun:
            return fifo_bits | IIR_LINE_STATUS
        if ier & IER_RX_DATA and self._rx_fifo:
            if len(self._rx_fifo) >= self._rx_trigger_level():
                return fifo_bits | IIR_RX_DATA
            return fifo_bits | IIR_RX_TIMEOUT
        if ier & IER_THR_EMPTY and self._thr_interrupt_pending:
            return fifo_bits | IIR_THR_EMPTY
        if ier & IER_MODEM_STATUS and self._msr & MSR_DELTAS:
            return fifo_bits | IIR_MODEM_STATUS
        return fifo_bits | IIR_NO_INTERRUPT

    def _update_irq(self) -> None:
        # On the PC, OUT2 gates the UART's interrupt output onto the ISA IRQ line.
        pending = not self._interrupt_identification() & IIR_NO_INTERRUPT
        level = pending and bool(self._mcr & MCR_OUT2)
        if level != self._irq_level:
            self._irq_level = level
            if self._irq is not None:
                self._irq(level)
