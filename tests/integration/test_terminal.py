"""`vmm run` on a real terminal (a pty): raw mode, the Ctrl-A escape, restoring the tty."""

import contextlib
import os
import pty
import select
import sys
import termios
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.kvm


def read_until(fd, needle: bytes, timeout: float = 20) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{needle!r} not seen; got {seen[-300:]!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            seen += chunk
    return seen


@contextlib.contextmanager
def vmm_on_pty():
    """`vmm run` with a pty as its terminal; yields (pid, pty fd), and kills it if still running."""
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "vmm", "run", "--mem", "32"])
    try:
        yield pid, fd
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_interactive_shell_and_ctrl_a_x(guest_elf):
    with vmm_on_pty() as (pid, fd):
        read_until(fd, b"$ ")
        attrs = termios.tcgetattr(fd)
        assert not attrs[3] & termios.ECHO  # raw mode: the guest echoes, not the tty
        os.write(fd, b"echo typed\r")
        read_until(fd, b"typed\r\n")
        os.write(fd, b"\x01h")
        read_until(fd, b"C-a x")
        os.write(fd, b"\x01x")
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_exit_status_from_the_terminal(guest_elf):
    with vmm_on_pty() as (pid, fd):
        read_until(fd, b"$ ")
        os.write(fd, b"exit 3\r")
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 3


def test_ctrl_c_goes_to_the_guest(guest_elf):
    with vmm_on_pty() as (pid, fd):
        read_until(fd, b"$ ")
        os.write(fd, b"echo never\x03")
        read_until(fd, b"^C")
        os.write(fd, b"exit 5\r")
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 5  # Ctrl-C cancelled the line, it did not kill vmm
