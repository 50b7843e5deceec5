"""A minimal MC146818 CMOS clock at ports 0x70 (index) / 0x71 (data).

Enough for a guest to read the wall clock at boot (Linux's mach_get_cmos_time):
the time registers in BCD, 24-hour mode, from the host's UTC clock at each
read; status A with no update in progress; status D "battery good". Writes
to the time are ignored (the guest's clock is the host's); the other bytes of
the 128-byte CMOS RAM are kept, so a guest reads back what it wrote.
"""

from __future__ import annotations

import time

INDEX, DATA = 0, 1
RTC_BASE, RTC_SPAN = 0x70, 2
SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR = 0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09
STATUS_A, STATUS_B, STATUS_C, STATUS_D = 0x0A, 0x0B, 0x0C, 0x0D
CENTURY = 0x32
STATUS_B_24H = 0x02  # 24-hour mode; bit 2 clear: BCD
STATUS_D_VALID = 0x80
DIVIDER_32KHZ = 0x26


def _bcd(value: int) -> int:
    return ((value // 10) << 4) | (value % 10)


class CmosRtc:
    def __init__(self, clock=time.time):
        self._clock = clock
        self._index = 0
        self._ram = bytearray(128)
        self._ram[STATUS_A], self._ram[STATUS_B], self._ram[STATUS_D] = DIVIDER_32KHZ, STATUS_B_24H, STATUS_D_VALID

    def state(self) -> dict:
        """The selected index and the CMOS RAM (the time is the host's, never saved)."""
        return {"index": self._index, "ram": bytes(self._ram)}

    @classmethod
    def from_state(cls, state: dict, clock=time.time) -> "CmosRtc":
        ram = state.get("ram", b"")
        index = state.get("index", 0)
        if not isinstance(ram, (bytes, bytearray)) or len(ram) != 128 or not isinstance(index, int) or not 0 <= index < 128:
            raise ValueError("CMOS state: ram must be 128 bytes and index 0-127")
        rtc = cls(clock)
        rtc._index, rtc._ram[:] = index, ram
        return rtc

    def _time_register(self, index: int) -> int | None:
        t = time.gmtime(self._clock())
        values = {SECONDS: t.tm_sec, MINUTES: t.tm_min, HOURS: t.tm_hour, WEEKDAY: (t.tm_wday + 1) % 7 + 1,
                  DAY: t.tm_mday, MONTH: t.tm_mon, YEAR: t.tm_year % 100, CENTURY: t.tm_year // 100}
        value = values.get(index)
        return None if value is None else _bcd(value)

    def read(self, offset: int, size: int) -> int:
        if offset == INDEX:
            return 0xFF
        value = self._time_register(self._index)
        if value is not None:
            return value
        if self._index == STATUS_C:
            return 0  # no interrupt flags: the RTC never raises IRQ 8 here
        return self._ram[self._index]

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == INDEX:
            self._index = value & 0x7F  # bit 7 is the NMI mask
        elif self._time_register(self._index) is None and self._index not in (STATUS_C, STATUS_D):
            self._ram[self._index] = value & 0xFF
