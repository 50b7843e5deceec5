"""The part of an i8042 keyboard controller a guest uses to reset the machine.

Ports 0x60 (data) and 0x64 (status/command). The only command acted on is
0xFE, "pulse the reset line": Linux's reboot=k writes it after waiting for the
input buffer to drain (status bit 1 clear, which it always is here), and the
VM stops with the reason "reset". No keyboard or mouse: reads of the data port
give 0, the status port says both buffers are empty.
"""

from __future__ import annotations

from collections.abc import Callable

DATA, STATUS_COMMAND = 0, 4  # offsets from 0x60
I8042_BASE, I8042_SPAN = 0x60, 5
CMD_PULSE_RESET = 0xFE


class I8042:
    def __init__(self, reset: Callable[[], None]):
        self._reset = reset

    def read(self, offset: int, size: int) -> int:
        return 0  # data 0; status: output buffer empty, input buffer empty

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == STATUS_COMMAND and value & 0xFF == CMD_PULSE_RESET:
            self._reset()
