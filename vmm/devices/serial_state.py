"""16550A registers (names from the PC16550D datasheet) and the UART's state record.

``SerialState`` is everything needed to rebuild a Uart16550 exactly;
``check_state`` refuses a record no UART could be in (a corrupt or forged
snapshot), field by field, against the limits the device itself keeps.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..record import record

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


class SerialState(record("SerialState", [name for name, _ in _SERIAL_FIELDS], defaults=[d for _, d in _SERIAL_FIELDS])):
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
