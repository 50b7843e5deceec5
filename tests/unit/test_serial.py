"""The 16550A model, driven register by register with no VM."""

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmm.cli import INPUT_BACKLOG_LIMIT
from vmm.devices.serial import INPUT_BACKLOG_MAX, RX_FIFO_SIZE, SerialState, SerialStateError, Uart16550, check_state
from vmm.errors import EXIT_USAGE

RBR = THR = DLL = 0
IER = DLM = 1
IIR = FCR = 2
LCR, MCR, LSR, MSR, SCR = 3, 4, 5, 6, 7

DR, OE, THRE, TEMT = 0x01, 0x02, 0x20, 0x40
DTR, RTS, OUT1, OUT2, LOOP = 0x01, 0x02, 0x04, 0x08, 0x10


class Harness:
    """A UART with its output and IRQ line recorded."""

    def __init__(self, state=None):
        self.output = bytearray()
        self.irq_events = []
        self.space_calls = 0
        kwargs = dict(on_input_space=self._space)
        if state is None:
            self.uart = Uart16550(self.output.extend, self.irq_events.append, **kwargs)
        else:
            self.uart = Uart16550.from_state(state, self.output.extend, self.irq_events.append, **kwargs)

    def _space(self):
        self.space_calls += 1

    def r(self, offset):
        return self.uart.read(offset, 1)

    def w(self, offset, value):
        self.uart.write(offset, 1, value)

    def drain(self, limit=100_000):
        """Read like a guest driver: while LSR.DR, read RBR."""
        got = bytearray()
        while self.r(LSR) & DR:
            got.append(self.r(RBR))
            assert len(got) <= limit
        return bytes(got)


def test_reset_values():
    h = Harness()
    assert [h.r(off) for off in range(8)] == [0x00, 0x00, 0x01, 0x00, 0x00, 0x60, 0xB0, 0x00]
    assert h.irq_events == [] and h.output == b""
    assert h.uart.state() == SerialState()


def test_dlab_switches_offsets_0_and_1_to_the_divisor_latch():
    h = Harness()
    h.w(IER, 0x05)
    h.w(LCR, 0x83)
    h.w(DLL, 0x0C)
    h.w(DLM, 0x01)
    assert (h.r(DLL), h.r(DLM)) == (0x0C, 0x01)
    assert h.output == b""  # a DLL write is not a transmission
    assert h.r(IIR) == 0x01  # offset 2 ignores DLAB
    h.w(LCR, 0x03)
    assert (h.r(IER), h.r(LCR)) == (0x05, 0x03)
    h.w(LCR, 0x80)
    assert (h.r(DLL), h.r(DLM)) == (0x0C, 0x01)


@pytest.mark.parametrize("value", [0x00, 0x5A, 0xA5, 0xFF])
def test_register_masks(value):
    h = Harness()
    h.w(LCR, value)
    h.w(SCR, value)
    assert (h.r(LCR), h.r(SCR)) == (value, value)
    h.w(LCR, 0)
    h.w(IER, value)
    assert h.r(IER) == value & 0x0F
    h.w(MCR, value)
    assert h.r(MCR) == value & 0x1F  # Linux's SuperIO probe checks upper MCR bits don't stick


def test_writes_to_status_registers_are_ignored():
    h = Harness()
    h.w(LSR, 0xFF)
    h.w(MSR, 0x00)
    assert (h.r(LSR), h.r(MSR)) == (0x60, 0xB0)


def test_fifo_enable_is_reflected_in_iir():
    h = Harness()
    h.w(FCR, 0x01)
    assert h.r(IIR) == 0xC1
    h.w(FCR, 0x21)  # Linux's 16750 probe: IIR bit 5 must stay 0 on a 16550A
    assert h.r(IIR) == 0xC1
    h.w(FCR, 0x00)
    assert h.r(IIR) == 0x01


def test_output_bytes_in_order():
    h = Harness()
    for byte in b"hello\r\n\x00\xff":
        h.w(THR, byte)
    assert h.output == b"hello\r\n\x00\xff"
    assert h.r(LSR) & (THRE | TEMT) == THRE | TEMT


def test_only_the_low_byte_of_a_write_is_used():
    h = Harness()
    h.uart.write(THR, 4, 0x12345641)
    h.uart.write(SCR, 2, -1)
    assert h.output == b"A" and h.r(SCR) == 0xFF


def test_input_waits_for_rts():
    h = Harness()
    h.uart.enqueue_input(b"abc")
    assert not h.r(LSR) & DR and h.uart.input_backlog == 3
    h.w(MCR, DTR | OUT2)
    assert not h.r(LSR) & DR
    h.w(MCR, DTR | RTS | OUT2)
    assert h.drain() == b"abc" and h.uart.input_backlog == 0


def test_without_fifos_one_byte_at_a_time_moves_from_the_backlog():
    h = Harness()
    h.w(MCR, RTS)
    h.uart.enqueue_input(b"xyz")
    assert h.uart.input_backlog == 2
    assert h.r(RBR) == ord("x") and h.uart.input_backlog == 1


def test_input_survives_fifo_clear_at_guest_init():
    h = Harness()
    h.uart.enqueue_input(b"typed early")
    # Linux-like init: clear and enable FIFOs, then raise DTR/RTS/OUT2.
    h.w(FCR, 0x01)
    h.w(FCR, 0x07)
    h.w(FCR, 0x00)
    h.w(FCR, 0x87)
    h.w(MCR, DTR | RTS | OUT2)
    assert h.drain() == b"typed early"


def test_fifo_clear_discards_only_the_fifo_and_refills_from_the_backlog():
    h = Harness()
    h.w(FCR, 0x01)
    h.w(MCR, RTS)
    data = bytes(range(40))
    h.uart.enqueue_input(data)
    assert h.uart.input_backlog == 24
    h.w(FCR, 0x03)
    assert h.uart.input_backlog == 8
    assert h.drain() == data[16:]


@pytest.mark.parametrize("fcr", [0x00, 0x01, 0xC1])
def test_a_thousand_bytes_arrive_completely_and_in_order(fcr):
    h = Harness()
    h.w(FCR, fcr)
    h.w(MCR, DTR | RTS | OUT2)
    data = bytes((i * 7 + 3) & 0xFF for i in range(1000))
    h.uart.enqueue_input(data)
    assert h.drain() == data
    assert h.uart.input_backlog == 0


def test_input_space_is_signalled_when_the_guest_makes_room():
    h = Harness()
    h.w(FCR, 0x01)
    h.uart.enqueue_input(b"a" * 20)
    assert h.space_calls == 0  # not accepting yet, and enqueue itself never signals
    h.w(MCR, RTS)
    assert h.space_calls == 1
    h.r(RBR)
    assert h.space_calls == 2
    h.w(MCR, RTS | LOOP)
    h.r(RBR)
    assert h.space_calls == 2  # loopback: host input is on hold, room is no use to it


@pytest.mark.parametrize("trigger_bits, level", [(0x00, 1), (0x40, 4), (0x80, 8), (0xC0, 14)])
def test_rx_trigger_levels_and_timeout_indication(trigger_bits, level):
    h = Harness()
    h.w(FCR, trigger_bits | 0x01)
    h.w(IER, 0x01)
    h.w(MCR, RTS | OUT2)
    h.uart.enqueue_input(b"x" * (level - 1))
    expected_below = 0xCC if level > 1 else 0xC1
    assert h.r(IIR) == expected_below
    h.uart.enqueue_input(b"x")
    assert h.r(IIR) == 0xC4
    h.r(RBR)
    assert h.r(IIR) == (0xCC if level > 1 else 0xC1)
    h.drain()
    assert h.r(IIR) == 0xC1 and h.irq_events[-1] is False


def test_rx_interrupt_without_fifos():
    h = Harness()
    h.w(IER, 0x01)
    h.w(MCR, RTS | OUT2)
    h.uart.enqueue_input(b"ab")
    assert h.r(IIR) == 0x04 and h.irq_events == [True]
    assert h.r(RBR) == ord("a")
    assert h.r(IIR) == 0x04  # "b" moved in at once
    assert h.r(RBR) == ord("b")
    assert h.r(IIR) == 0x01 and h.irq_events == [True, False]


def test_thre_interrupt_on_enable_cleared_by_iir_read_and_rearmed_by_thr_write():
    h = Harness()
    h.w(IER, 0x02)
    assert h.r(IIR) == 0x02
    assert h.r(IIR) == 0x01  # that read acknowledged it
    h.w(IER, 0x02)
    assert h.r(IIR) == 0x01  # ETBEI already set: no new edge
    h.w(THR, ord("a"))
    assert h.r(IIR) == 0x02
    # Linux's THRE probe: enable, read IIR, disable, enable again -> pending again.
    h.w(IER, 0x00)
    assert h.r(IIR) == 0x01
    h.w(IER, 0x02)
    assert h.r(IIR) == 0x02


def test_thr_write_gives_a_fresh_irq_edge():
    h = Harness()
    h.w(MCR, OUT2)
    h.w(IER, 0x02)
    assert h.irq_events == [True]
    h.w(THR, ord("a"))  # guest didn't ack via IIR: the line still pulses
    assert h.irq_events == [True, False, True]
    h.r(IIR)
    assert h.irq_events == [True, False, True, False]
    h.w(THR, ord("b"))
    assert h.irq_events == [True, False, True, False, True]
    assert h.output == b"ab"


def test_irq_is_gated_by_out2_and_reported_only_on_change():
    h = Harness()
    h.w(IER, 0x0F)
    assert h.r(IIR) == 0x02 and h.irq_events == []
    h.w(IER, 0x00)
    h.w(IER, 0x0F)
    h.w(MCR, OUT2)
    assert h.irq_events == [True]
    h.w(SCR, 1)
    h.w(LCR, 3)
    h.r(LSR)
    assert h.irq_events == [True]
    h.w(MCR, 0)
    assert h.irq_events == [True, False]
    h.w(MCR, OUT2)
    h.r(IIR)  # acks THRE, nothing else pending
    assert h.irq_events == [True, False, True, False]


def test_interrupt_priority():
    h = Harness()
    h.w(FCR, 0x01)
    h.w(MCR, LOOP | OUT2 | RTS)  # entering loopback changes the modem lines: deltas set
    for byte in range(17):
        h.w(THR, byte)  # the 17th overruns
    h.w(IER, 0x0F)
    assert h.r(IIR) == 0xC6  # line status
    assert h.r(LSR) == DR | OE | THRE | TEMT
    assert h.r(LSR) == DR | THRE | TEMT  # reading LSR cleared OE
    assert h.r(IIR) == 0xC4  # received data
    assert h.drain() == bytes(range(16))
    assert h.r(IIR) == 0xC2  # THR empty
    assert h.r(IIR) == 0xC0  # modem status
    msr = h.r(MSR)
    assert msr & 0x0F and msr & 0xF0 == 0x90  # CTS from RTS, DCD from OUT2
    assert h.r(IIR) == 0xC1 and h.irq_events[-1] is False


def test_loopback_echoes_without_output():
    h = Harness()
    h.w(MCR, LOOP)
    h.w(THR, ord("z"))
    assert h.output == b"" and h.r(LSR) & DR
    assert h.r(RBR) == ord("z")
    h.w(MCR, 0)
    h.w(THR, ord("q"))
    assert h.output == b"q" and not h.r(LSR) & DR


def test_loopback_msr_mirrors_mcr_with_deltas():
    h = Harness()
    h.w(MCR, LOOP | 0x0A)  # Linux's loopback probe: expects MSR & 0xF0 == 0x90
    assert h.r(MSR) & 0xF0 == 0x90
    h.w(MCR, LOOP | DTR | RTS | OUT1 | OUT2)
    assert h.r(MSR) == 0xF0 | 0x02 | 0x00  # DSR rose; RI rose (no trailing edge yet)
    assert h.r(MSR) == 0xF0  # reading cleared the deltas
    h.w(MCR, LOOP)
    assert h.r(MSR) == 0x0F  # all fell: DCTS, DDSR, TERI, DDCD
    h.w(MCR, 0)
    assert h.r(MSR) == 0xB0 | 0x0B  # back on the line: CTS, DSR, DCD rose; RI did not fall


def test_modem_status_interrupt():
    h = Harness()
    h.w(MCR, LOOP | OUT2)
    h.r(MSR)
    h.w(IER, 0x08)
    assert h.r(IIR) == 0x01
    h.w(MCR, LOOP | OUT2 | RTS)
    assert h.r(IIR) == 0x00 and h.irq_events == [True]
    h.r(MSR)
    assert h.r(IIR) == 0x01 and h.irq_events == [True, False]


@pytest.mark.parametrize("fcr, capacity", [(0x00, 1), (0x01, 16)])
def test_loopback_overrun_keeps_the_received_bytes(fcr, capacity):
    h = Harness()
    h.w(FCR, fcr)
    h.w(MCR, LOOP)
    for byte in range(capacity + 3):
        h.w(THR, 0x40 + byte)
    assert h.r(LSR) & OE
    assert not h.r(LSR) & OE
    assert h.drain() == bytes(0x40 + i for i in range(capacity))


def test_host_input_is_held_during_loopback():
    h = Harness()
    h.w(MCR, RTS | LOOP)
    h.uart.enqueue_input(b"host")
    assert not h.r(LSR) & DR and h.uart.input_backlog == 4
    h.w(THR, ord("!"))
    assert h.drain() == b"!"
    h.w(MCR, RTS)
    assert h.drain() == b"host"


@pytest.mark.parametrize("offset", [-1, 8, 9, 0x3F8, 1 << 40])
def test_out_of_range_offsets_are_harmless(offset):
    h = Harness()
    h.uart.enqueue_input(b"a")
    before = h.uart.state()
    assert h.uart.read(offset, 1) == 0xFF
    h.uart.write(offset, 1, 0xFF)
    assert h.uart.state() == before and h.output == b""


def test_wide_reads_return_the_byte_at_the_offset():
    h = Harness()
    h.w(SCR, 0x42)
    assert h.uart.read(SCR, 4) == 0x42
    assert h.uart.read(LSR, 2) == 0x60


def test_state_round_trip_preserves_behaviour():
    h = Harness()
    h.w(LCR, 0x80)
    h.w(DLL, 0x01)
    h.w(DLM, 0x02)
    h.w(LCR, 0x03)
    h.w(FCR, 0x81)
    h.w(IER, 0x03)
    h.w(SCR, 0x99)
    h.w(MCR, DTR | RTS | OUT2)
    h.uart.enqueue_input(b"0123456789abcdefghij")
    h.r(RBR)
    state = h.uart.state()
    assert state.rx_fifo == b"123456789abcdefg" and state.input_backlog == b"hij"

    restored = Harness(state)
    assert restored.uart.state() == state
    assert restored.irq_events == []  # from_state does not touch the line
    assert [restored.r(off) for off in (IER, IIR, LCR, MCR, LSR, MSR, SCR)] == [
        h.r(off) for off in (IER, IIR, LCR, MCR, LSR, MSR, SCR)
    ]
    assert restored.drain() == b"123456789abcdefghij"
    restored.w(LCR, 0x80)
    assert (restored.r(DLL), restored.r(DLM)) == (0x01, 0x02)


# --- property: random guest and host activity never loses or reorders host input ---

HOST = st.binary(max_size=24).map(lambda b: bytes(x & 0x7F for x in b))  # host bytes: 0x00-0x7f
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.integers(-2, 10), st.sampled_from([1, 2, 4])),
        st.tuples(st.just("write"), st.integers(-2, 10), st.integers(-300, 0x1FF)),
        st.tuples(st.just("write"), st.sampled_from([FCR, MCR, IER, LCR]), st.integers(0, 0xFF)),
        # Bias towards a guest that accepts input and reads it, so bytes actually flow.
        st.tuples(st.just("write"), st.just(MCR), st.sampled_from([RTS, DTR | RTS | OUT2, RTS | LOOP])),
        st.tuples(st.just("write"), st.just(LCR), st.just(0x03)),
        st.tuples(st.just("read"), st.sampled_from([RBR, RBR, LSR]), st.just(1)),
        st.tuples(st.just("input"), HOST),
    ),
    max_size=120,
)


def _host_bytes_pending(uart):
    """Host bytes still inside the device, oldest first (loopback bytes are >= 0x80)."""
    state = uart.state()
    return bytes(b for b in state.rx_fifo if b < 0x80) + state.input_backlog


@settings(max_examples=500, deadline=None)
@given(OPERATIONS)
def test_random_activity_never_raises_loses_or_reorders_host_input(operations):
    h = Harness()
    uart = h.uart
    enqueued = bytearray()
    gone = 0  # enqueued[:gone] have left the device: read by the guest or discarded by FCR

    for op in operations:
        before = uart.state()
        fifo_host_before = sum(1 for b in before.rx_fifo if b < 0x80)
        if op[0] == "input":
            enqueued += op[1]
            uart.enqueue_input(op[1])
        elif op[0] == "read":
            value = uart.read(op[1], op[2])
            assert 0 <= value <= 0xFF
        else:
            _, offset, value = op
            if offset == THR:
                value |= 0x80  # tag loopback traffic so it can't pass for host input
            uart.write(offset, 1, value)

        pending = _host_bytes_pending(uart)
        assert pending == bytes(enqueued[len(enqueued) - len(pending):]), "host input reordered"
        left = len(enqueued) - len(pending) - gone
        assert left >= 0
        if op[0] == "read" and op[1] == RBR and not before.lcr & 0x80:
            assert left <= 1
            if left:
                assert value == enqueued[gone]
        elif op[0] == "write" and op[1] == FCR:
            assert left <= fifo_host_before  # only bytes already in the FIFO can be cleared
        else:
            assert left == 0, f"{op} lost host input"
        gone += left

        check_state(uart.state())  # every state the device reaches is one it can be restored from

        # The IRQ line only ever changes, and matches what the registers say.
        assert all(a != b for a, b in zip(h.irq_events, h.irq_events[1:]))
        state = uart.state()
        if h.irq_events:
            assert h.irq_events[0] is True and h.irq_events[-1] == state.irq_level

    # A guest that finally behaves gets everything still pending.
    pending = _host_bytes_pending(uart)
    h.w(LCR, 0x03)
    h.w(MCR, DTR | RTS | OUT2)
    received = bytes(b for b in h.drain() if b < 0x80)
    assert received == pending and uart.input_backlog == 0


def test_threaded_enqueue_and_read_keep_order():
    h = Harness()
    h.w(FCR, 0xC1)
    h.w(MCR, DTR | RTS | OUT2)
    data = bytes((i * 31 + i // 256) & 0xFF for i in range(50_000))

    def produce():
        for start in range(0, len(data), 97):
            h.uart.enqueue_input(data[start : start + 97])

    producer = threading.Thread(target=produce)
    producer.start()
    got = bytearray()
    spins = 0
    while len(got) < len(data):
        if h.r(LSR) & DR:
            got.append(h.r(RBR))
        else:
            spins += 1
            assert spins < 10_000_000
    producer.join()
    assert got == data and h.uart.input_backlog == 0


def test_plain_transmit_is_reported_on_every_change():
    """While plain, the VMM transmits THR writes itself: the flag must never lag."""
    reports = []
    uart = Uart16550(lambda data: None, on_plain_transmit=reports.append)
    assert reports == [True] and uart.plain_transmit
    uart.write(1, 1, 0x02)  # ETBEI: a THR write must now re-arm the THRE interrupt
    uart.write(1, 1, 0x02)  # no change, no report
    uart.write(1, 1, 0x00)
    uart.write(3, 1, 0x80)  # DLAB: offset 0 is the divisor latch
    uart.write(3, 1, 0x03)
    uart.write(4, 1, 0x10)  # loopback: THR bytes go to the RX FIFO
    uart.write(4, 1, 0x0B)
    assert reports == [True, False, True, False, True, False, True]


def test_plain_transmit_survives_state_round_trip():
    uart = Uart16550(lambda data: None)
    uart.write(1, 1, 0x02)
    reports = []
    Uart16550.from_state(uart.state(), lambda data: None, on_plain_transmit=reports.append)
    assert reports[-1] is False


# --- limits: every buffer the host or a snapshot can fill is bounded ---


def test_input_backlog_is_bounded_and_refused_bytes_are_not_kept():
    h = Harness()  # reset: RTS low, so nothing moves into the RX FIFO
    assert h.uart.enqueue_input(b"a" * (INPUT_BACKLOG_MAX - 1)) == INPUT_BACKLOG_MAX - 1
    assert h.uart.enqueue_input(b"bcd") == 1  # only what fits
    assert h.uart.enqueue_input(b"e") == 0
    assert h.uart.input_backlog == INPUT_BACKLOG_MAX
    h.w(MCR, RTS)  # 16450 mode: one byte moves into the receiver buffer
    assert h.space_calls == 1 and h.uart.input_backlog == INPUT_BACKLOG_MAX - 1
    assert h.uart.enqueue_input(b"fg") == 1
    state = h.uart.state()
    assert state.rx_fifo == b"a" and state.input_backlog[-2:] == b"bf"


def test_the_cli_never_hits_the_backlog_limit():
    # The CLI reads stdin in 4 KiB chunks while less than INPUT_BACKLOG_LIMIT waits.
    assert INPUT_BACKLOG_MAX >= INPUT_BACKLOG_LIMIT + 4096


def _record(**fields):
    return SerialState(**{"mcr": DTR | RTS | OUT2, "fifo_control": 0xC1, **fields})


def test_records_at_the_limits_restore():
    full_fifo = _record(rx_fifo=bytes(RX_FIFO_SIZE), input_backlog=b"x" * INPUT_BACKLOG_MAX)
    assert Harness(full_fifo).uart.state() == full_fifo
    rts_low = _record(mcr=0, rx_fifo=b"", input_backlog=b"y" * INPUT_BACKLOG_MAX)
    assert Harness(rts_low).uart.input_backlog == INPUT_BACKLOG_MAX
    masked = Harness(_record(ier=0xFF, mcr=0xFF, fifo_control=0xFF)).uart.state()
    assert (masked.ier, masked.mcr, masked.fifo_control) == (0x0F, 0x1F, 0xC1)


@pytest.mark.parametrize(
    "record, complaint",
    [
        (_record(rx_fifo=bytes(RX_FIFO_SIZE + 1)), "RX FIFO holds 17 bytes"),
        (_record(fifo_control=0, rx_fifo=b"ab"), "more than its 1"),
        (_record(mcr=0, input_backlog=bytes(INPUT_BACKLOG_MAX + 1)), "input backlog"),
        (_record(rx_fifo=b"a", input_backlog=b"b"), "RX FIFO has room"),
        (_record(ier=0x100), "ier is 256"),
        (_record(lcr=-1), "lcr is -1"),
        (_record(scr="7"), "scr is '7'"),
        (_record(divisor_latch_low=True), "divisor_latch_low is True"),
        (_record(overrun=1), "overrun is 1"),
        (_record(irq_level=None), "irq_level is None"),
        (_record(rx_fifo="abc"), "rx_fifo is a str"),
        (tuple(_record())[:5], "5 fields"),
        (tuple(_record()) + (0,), "14 fields"),
        (42, "not a record"),
    ],
)
def test_impossible_records_are_refused_with_one_line(record, complaint):
    with pytest.raises(SerialStateError) as err:
        Uart16550.from_state(record, lambda data: None)
    message = str(err.value)
    assert complaint in message and "\n" not in message
    assert err.value.exit_status == EXIT_USAGE
