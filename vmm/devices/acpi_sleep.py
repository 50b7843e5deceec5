"""Hardware-reduced ACPI sleep registers: how a Linux guest's `poweroff` stops the VM.

The FADT points SLEEP_CONTROL_REG and SLEEP_STATUS_REG at two byte-wide I/O
ports (ACPI 6.4, 4.8.3.7-8). To enter a sleep state the OS writes SLP_TYPx
(bits 2-4, the value \\_S5_ names) with SLP_EN (bit 5) to the control
register; S5 is soft-off, so the device reports a power-off with status 0.
Any other sleep state is ignored (the VM keeps running, as if it woke at once).
"""

from __future__ import annotations

from collections.abc import Callable

CONTROL, STATUS = 0, 1
SLP_TYP_SHIFT, SLP_TYP_MASK = 2, 0x7
SLP_EN = 1 << 5
WAK_STS = 1 << 7


class AcpiSleepControl:
    def __init__(self, power_off: Callable[[int], None], soft_off_type: int):
        self._power_off = power_off
        self._soft_off_type = soft_off_type

    def read(self, offset: int, size: int) -> int:
        # status: "woken" at once, so an OS polling for the wake after a sleep it asked for goes on
        return WAK_STS if offset == STATUS else 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == CONTROL and value & SLP_EN and (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK == self._soft_off_type:
            self._power_off(0)
