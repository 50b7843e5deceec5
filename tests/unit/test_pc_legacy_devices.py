"""The CMOS clock and the i8042 reset line Linux guests get."""

from __future__ import annotations

import calendar

from vmm.devices.cmos_rtc import CmosRtc
from vmm.devices.i8042 import I8042


def read_cmos(rtc: CmosRtc, index: int) -> int:
    rtc.write(0, 1, index | 0x80)  # with the NMI mask bit, as Linux writes it
    return rtc.read(1, 1)


def test_cmos_time_is_the_hosts_utc_in_bcd():
    when = calendar.timegm((2026, 11, 30, 23, 59, 58, 0, 0, 0))  # a Monday
    rtc = CmosRtc(clock=lambda: when)
    fields = [read_cmos(rtc, i) for i in (0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32)]
    assert fields == [0x58, 0x59, 0x23, 0x02, 0x30, 0x11, 0x26, 0x20]
    assert not read_cmos(rtc, 0x0A) & 0x80  # no update in progress
    assert read_cmos(rtc, 0x0B) & 0x02 and not read_cmos(rtc, 0x0B) & 0x04  # 24 h, BCD
    assert read_cmos(rtc, 0x0D) == 0x80


def test_cmos_ram_keeps_what_the_guest_writes_but_not_the_time():
    rtc = CmosRtc(clock=lambda: 0)
    rtc.write(0, 1, 0x40)
    rtc.write(1, 1, 0xAB)
    rtc.write(0, 1, 0x00)
    rtc.write(1, 1, 0x99)
    assert read_cmos(rtc, 0x40) == 0xAB and read_cmos(rtc, 0x00) == 0x00


def test_i8042_reset_command_resets_and_nothing_else_does():
    resets = []
    kbc = I8042(lambda: resets.append(1))
    assert kbc.read(4, 1) & 0x3 == 0  # both buffers empty: Linux's wait loop ends at once
    kbc.write(0, 1, 0xFE)  # the data port: not a command
    kbc.write(4, 1, 0xAD)
    assert resets == []
    kbc.write(4, 1, 0xFE)
    assert resets == [1]


def test_cmos_state_round_trips_and_bad_state_is_refused():
    import pytest

    rtc = CmosRtc(clock=lambda: 0)
    rtc.write(0, 1, 0x40)
    rtc.write(1, 1, 0x5A)
    copy = CmosRtc.from_state(rtc.state(), clock=lambda: 0)
    assert copy.read(1, 1) == 0x5A and copy.state() == rtc.state()
    with pytest.raises(ValueError):
        CmosRtc.from_state({"index": 200, "ram": bytes(128)})
    with pytest.raises(ValueError):
        CmosRtc.from_state({"index": 0, "ram": bytes(5)})
