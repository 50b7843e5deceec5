"""The i8042 keyboard controller, driven as Linux's i8042 and atkbd drivers drive it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vmm.devices.i8042 import (
    CTR_KBD_INT,
    CTR_TRANSLATE,
    CTRL_ALT_DEL_SET1,
    CTRL_ALT_DEL_SET2,
    OUTPUT_LIMIT,
    I8042,
)

DATA, CMD = 0, 4


class Kbc:
    def __init__(self):
        self.resets = 0
        self.edges = 0
        self.dev = I8042(self._reset, self._irq)

    def _reset(self):
        self.resets += 1

    def _irq(self, level):
        self.edges += bool(level)

    def command(self, byte, *args):
        self.dev.write(CMD, 1, byte)
        for arg in args:
            self.dev.write(DATA, 1, arg)

    def to_keyboard(self, *data):
        for byte in data:
            self.dev.write(DATA, 1, byte)

    def drain(self):
        out = []
        while self.dev.read(CMD, 1) & 1:
            out.append(self.dev.read(DATA, 1))
        return out


def test_linux_probe_sequence():
    kbc = Kbc()
    assert kbc.drain() == []  # i8042_flush: nothing waiting
    kbc.command(0xAA)
    assert kbc.drain() == [0x55]  # controller self-test passed
    kbc.command(0x20)
    ctr = kbc.drain()[0]
    assert ctr & CTR_TRANSLATE and ctr & CTR_KBD_INT
    ctr &= ~CTR_KBD_INT
    kbc.command(0x60, ctr)  # interrupts off while probing, as Linux does
    kbc.edges = 0
    kbc.command(0x20)
    assert kbc.drain() == [ctr]
    kbc.command(0xD3, 0x5A)
    assert kbc.drain() == []  # AUX loop-back: no mouse answers
    kbc.command(0xA9)
    assert kbc.drain() == [0xFF]
    kbc.command(0xAB)
    assert kbc.drain() == [0x00]  # keyboard interface fine
    assert kbc.edges == 0  # nothing raised while KBD_INT was off


def test_keyboard_answers_atkbd_commands():
    kbc = Kbc()
    kbc.to_keyboard(0xF2)
    assert kbc.drain() == [0xFA, 0xAB, 0x41]  # translated MF2 id
    kbc.command(0x60, 0x05)  # translation off
    kbc.to_keyboard(0xF2)
    assert kbc.drain() == [0xFA, 0xAB, 0x83]
    kbc.to_keyboard(0xED, 0x07)  # LEDs: ack the command and its argument
    assert kbc.drain() == [0xFA, 0xFA]
    kbc.to_keyboard(0xF0, 0x00)  # which scan code set?
    assert kbc.drain() == [0xFA, 0xFA, 2]
    kbc.to_keyboard(0xEE)
    assert kbc.drain() == [0xEE]
    kbc.to_keyboard(0xFF)
    assert kbc.drain() == [0xFA, 0xAA]


def test_ctrl_alt_del_in_the_set_the_guest_reads_with_an_edge_per_byte():
    kbc = Kbc()
    assert kbc.dev.send_ctrl_alt_del()
    assert kbc.drain() == list(CTRL_ALT_DEL_SET1)
    assert kbc.edges == len(CTRL_ALT_DEL_SET1)
    kbc.command(0x60, CTR_KBD_INT)  # no translation: set 2 reaches the guest
    assert kbc.dev.send_ctrl_alt_del()
    assert kbc.drain() == list(CTRL_ALT_DEL_SET2)


def test_ctrl_alt_del_is_refused_when_the_keyboard_is_disabled_or_the_buffer_full():
    kbc = Kbc()
    kbc.command(0xAD)
    assert not kbc.dev.send_ctrl_alt_del()
    kbc.command(0xAE)
    while kbc.dev.send_ctrl_alt_del():
        pass  # the guest reads nothing: the keyboard's buffer fills, and the VMM keeps no more
    assert len(kbc.dev._output) <= OUTPUT_LIMIT and kbc.drain()[: len(CTRL_ALT_DEL_SET1)] == list(CTRL_ALT_DEL_SET1)


def test_reset_by_command_and_by_output_port():
    kbc = Kbc()
    kbc.command(0xD1, 0x03)
    assert kbc.resets == 0
    kbc.command(0xD1, 0x02)
    kbc.command(0xFE)
    assert kbc.resets == 2


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 2, 3, 4]), st.booleans(), st.integers(0, 0xFFFFFFFF)), max_size=200))
def test_any_access_sequence_is_answered_and_bounded(accesses):
    kbc = Kbc()
    for offset, is_write, value in accesses:
        if is_write:
            kbc.dev.write(offset, 1, value)
        else:
            assert 0 <= kbc.dev.read(offset, 1) <= 0xFF
        assert len(kbc.dev._output) <= OUTPUT_LIMIT
