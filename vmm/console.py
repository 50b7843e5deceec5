"""The host terminal side of the serial console.

`EscapeFilter` is a sans-IO state machine for the QEMU-style escape: Ctrl-A x
quits, Ctrl-A Ctrl-A (or Ctrl-A a) sends one Ctrl-A, Ctrl-A h prints help.
`RawTerminal` puts a tty in raw mode and always restores it.
"""

from __future__ import annotations

import os
import select

ESCAPE = 0x01  # Ctrl-A
HELP = (
    "\r\nC-a x    quit the VM\r\n"
    "C-a C-a  send C-a to the guest\r\n"
    "C-a s    snapshot (with --snapshot-path and --mem-file-path)\r\n"
    "C-a h    this help\r\n"
)


class EscapeFilter:
    def __init__(self):
        self._pending_escape = False

    def feed(self, data: bytes) -> tuple[bytes, list[str]]:
        """Returns (bytes for the guest, host commands: 'quit', 'help' or 'snapshot')."""
        to_guest = bytearray()
        commands: list[str] = []
        for byte in data:
            if self._pending_escape:
                self._pending_escape = False
                if byte in (ord("x"), ord("X")):
                    commands.append("quit")
                    break
                if byte in (ESCAPE, ord("a")):
                    to_guest.append(ESCAPE)
                elif byte in (ord("h"), ord("?")):
                    commands.append("help")
                elif byte in (ord("s"), ord("S")):
                    commands.append("snapshot")
                else:  # not an escape after all: pass both through
                    to_guest += bytes((ESCAPE, byte))
            elif byte == ESCAPE:
                self._pending_escape = True
            else:
                to_guest.append(byte)
        return bytes(to_guest), commands


class RawTerminal:
    """Context manager: raw mode on a tty fd (no echo, no signals), restored on exit."""

    def __init__(self, fd: int):
        self.fd = fd
        self._saved = None

    def __enter__(self):
        if os.isatty(self.fd):
            import termios  # here: `vmm exec` never needs a raw terminal
            import tty

            self._saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None
        return False


def write_all(fd: int, data: bytes, give_up=lambda: False) -> None:
    """All of ``data`` to ``fd``: a slow reader slows the guest, nothing is dropped.

    Waits for room rather than blocking in write(2), so that ``give_up()``
    (the VM is stopping) can end the wait. A closed reader (EPIPE, EBADF) is
    ignored: the guest keeps running and its output goes nowhere.
    """
    view = memoryview(data)
    while view:
        try:
            _, writable, _ = select.select([], [fd], [], 0.2)
            if not writable:
                if give_up():
                    return
                continue
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            continue
        except (OSError, ValueError):
            return
