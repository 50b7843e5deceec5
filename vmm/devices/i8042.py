"""An i8042 keyboard controller with a PS/2 keyboard behind it, no mouse.

Ports 0x60 (data) and 0x64 (status on read, command on write), IRQ 1. Enough
of the controller and the keyboard for Linux's i8042 and atkbd drivers to
probe them, and for the VMM to type Ctrl+Alt+Del (Firecracker's
SendCtrlAltDel), which a Linux guest treats as a request to restart. Command
0xFE pulses the reset line (Linux's reboot=k): the VM stops as "reset".

The guest drives this state machine with arbitrary bytes: every command it
does not know is ignored, the output buffer is bounded, and nothing it writes
is kept beyond one pending parameter byte.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

DATA, STATUS_COMMAND = 0, 4  # offsets from 0x60
I8042_BASE, I8042_SPAN = 0x60, 5
I8042_IRQ = 1

# Status register
STATUS_OUTPUT_FULL = 0x01
STATUS_SYSTEM = 0x04  # self-test passed since power-on
STATUS_LAST_WAS_COMMAND = 0x08
STATUS_UNLOCKED = 0x10  # keyboard not inhibited

# Controller configuration byte ("command byte", CTR)
CTR_KBD_INT = 0x01
CTR_SYSTEM = 0x04
CTR_KBD_DISABLED = 0x10
CTR_AUX_DISABLED = 0x20
CTR_TRANSLATE = 0x40  # scan code set 2 from the keyboard reaches the host as set 1
CTR_AT_POWER_ON = CTR_KBD_INT | CTR_SYSTEM | CTR_AUX_DISABLED | CTR_TRANSLATE

# Controller commands (port 0x64)
CMD_READ_CTR = 0x20
CMD_WRITE_CTR = 0x60
CMD_AUX_DISABLE, CMD_AUX_ENABLE, CMD_AUX_TEST = 0xA7, 0xA8, 0xA9
CMD_SELF_TEST, CMD_KBD_TEST = 0xAA, 0xAB
CMD_KBD_DISABLE, CMD_KBD_ENABLE = 0xAD, 0xAE
CMD_READ_OUTPUT_PORT, CMD_WRITE_OUTPUT_PORT = 0xD0, 0xD1
CMD_WRITE_KBD_BUFFER, CMD_WRITE_AUX_BUFFER, CMD_WRITE_AUX = 0xD2, 0xD3, 0xD4
CMD_PULSE_RESET = 0xFE
SELF_TEST_PASSED, INTERFACE_OK, NO_AUX_DEVICE = 0x55, 0x00, 0xFF
OUTPUT_PORT_DEFAULT = 0x03  # A20 on, not in reset

# Keyboard commands (port 0x60) and its answers
KBD_SET_LEDS, KBD_ECHO, KBD_SCANCODE_SET, KBD_GET_ID = 0xED, 0xEE, 0xF0, 0xF2
KBD_TYPEMATIC, KBD_RESET = 0xF3, 0xFF
KBD_COMMANDS_WITH_ARGUMENT = (KBD_SET_LEDS, KBD_SCANCODE_SET, KBD_TYPEMATIC)
KBD_ACK, KBD_SELF_TEST_PASSED = 0xFA, 0xAA
KBD_ID = (0xAB, 0x83)  # an MF2 keyboard; 0x83 reads 0x41 through translation

# Ctrl, Alt and Delete pressed then released, in scan code set 2 and in set 1
# (what the guest reads when the controller translates).
CTRL_ALT_DEL_SET2 = bytes([0x14, 0x11, 0xE0, 0x71, 0xE0, 0xF0, 0x71, 0xF0, 0x11, 0xF0, 0x14])
CTRL_ALT_DEL_SET1 = bytes([0x1D, 0x38, 0xE0, 0x53, 0xE0, 0xD3, 0xB8, 0x9D])

OUTPUT_LIMIT = 16  # bytes waiting for the guest; a keyboard's own buffer is about that size


class I8042:
    """``reset()`` is called for the pulse-reset command; ``set_irq(level)`` drives IRQ 1."""

    def __init__(self, reset: Callable[[], None], set_irq: Callable[[bool], None] | None = None):
        self._reset = reset
        self._set_irq = set_irq
        self.ctr = CTR_AT_POWER_ON
        self.scancode_set = 2
        self._output: deque[int] = deque()
        self._pending_controller_command: int | None = None  # awaiting its data byte
        self._pending_keyboard_command: int | None = None
        self._last_was_command = False
        self._lock = threading.Lock()  # vCPU threads and the host (send_ctrl_alt_del) at once

    # --- the bus side (any vCPU thread) ------------------------------------
    def read(self, offset: int, size: int) -> int:
        with self._lock:
            return self._read(offset)

    def write(self, offset: int, size: int, value: int) -> None:
        with self._lock:
            self._write(offset, value & 0xFF)

    def _read(self, offset: int) -> int:
        if offset == STATUS_COMMAND:
            return self._status()
        if offset != DATA:
            return 0xFF
        value = self._output.popleft() if self._output else 0
        if self._output:
            self._interrupt()  # the next byte is ready: another edge
        return value

    def _write(self, offset: int, value: int) -> None:
        if offset == STATUS_COMMAND:
            self._last_was_command = True
            self._controller_command(value)
        elif offset == DATA:
            self._last_was_command = False
            self._data(value)

    # --- what the host does -----------------------------------------------
    def send_ctrl_alt_del(self) -> bool:
        """Type Ctrl+Alt+Del; False when the keyboard is disabled or the buffer has no room."""
        with self._lock:
            codes = CTRL_ALT_DEL_SET1 if self.ctr & CTR_TRANSLATE or self.scancode_set == 1 else CTRL_ALT_DEL_SET2
            if self.ctr & CTR_KBD_DISABLED or len(self._output) + len(codes) > OUTPUT_LIMIT:
                return False
            for code in codes:
                self._push(code)
            return True

    # --- internals --------------------------------------------------------
    def _status(self) -> int:
        status = STATUS_UNLOCKED | (self.ctr & CTR_SYSTEM)
        if self._output:
            status |= STATUS_OUTPUT_FULL
        if self._last_was_command:
            status |= STATUS_LAST_WAS_COMMAND
        return status

    def _push(self, byte: int) -> None:
        if len(self._output) >= OUTPUT_LIMIT:
            return  # dropped: a guest that never reads cannot make the VMM keep more
        self._output.append(byte)
        if len(self._output) == 1:
            self._interrupt()

    def _interrupt(self) -> None:
        if self._set_irq is not None and self.ctr & CTR_KBD_INT:
            self._set_irq(True)  # ISA IRQs are edge-triggered: raise, then lower
            self._set_irq(False)

    def _controller_command(self, command: int) -> None:
        self._pending_controller_command = None
        if command == CMD_READ_CTR:
            self._push(self.ctr)
        elif command in (CMD_WRITE_CTR, CMD_WRITE_OUTPUT_PORT, CMD_WRITE_KBD_BUFFER, CMD_WRITE_AUX_BUFFER, CMD_WRITE_AUX):
            self._pending_controller_command = command
        elif command == CMD_SELF_TEST:
            self.ctr |= CTR_SYSTEM
            self._push(SELF_TEST_PASSED)
        elif command == CMD_KBD_TEST:
            self._push(INTERFACE_OK)
        elif command == CMD_AUX_TEST:
            self._push(NO_AUX_DEVICE)
        elif command == CMD_KBD_DISABLE:
            self.ctr |= CTR_KBD_DISABLED
        elif command == CMD_KBD_ENABLE:
            self.ctr &= ~CTR_KBD_DISABLED
        elif command == CMD_AUX_DISABLE:
            self.ctr |= CTR_AUX_DISABLED
        elif command == CMD_AUX_ENABLE:
            self.ctr &= ~CTR_AUX_DISABLED
        elif command == CMD_READ_OUTPUT_PORT:
            self._push(OUTPUT_PORT_DEFAULT)
        elif command == CMD_PULSE_RESET:
            self._reset()
        # anything else: ignored, as many real controllers do

    def _data(self, value: int) -> None:
        command, self._pending_controller_command = self._pending_controller_command, None
        if command == CMD_WRITE_CTR:
            self.ctr = value
        elif command == CMD_WRITE_OUTPUT_PORT:
            if not value & 0x01:  # the reset line driven low
                self._reset()
        elif command == CMD_WRITE_KBD_BUFFER:
            self._push(value)
        elif command in (CMD_WRITE_AUX_BUFFER, CMD_WRITE_AUX):
            pass  # no mouse: nothing answers (the loop-back test fails, as with no AUX port)
        else:
            self._keyboard(value)

    def _keyboard(self, value: int) -> None:
        """A byte for the keyboard: a command, or the argument of the previous one."""
        command, self._pending_keyboard_command = self._pending_keyboard_command, None
        if command == KBD_SCANCODE_SET:
            self._push(KBD_ACK)
            if value == 0:
                self._push(self.scancode_set)
            elif value in (1, 2, 3):
                self.scancode_set = value
            return
        if command is not None:  # the LED or typematic argument
            self._push(KBD_ACK)
            return
        if value == KBD_ECHO:
            self._push(KBD_ECHO)
            return
        self._push(KBD_ACK)
        if value in KBD_COMMANDS_WITH_ARGUMENT:
            self._pending_keyboard_command = value
        elif value == KBD_GET_ID:
            self._push(KBD_ID[0])
            self._push(0x41 if self.ctr & CTR_TRANSLATE else KBD_ID[1])
        elif value == KBD_RESET:
            self.scancode_set = 2
            self._push(KBD_SELF_TEST_PASSED)
