"""The snapshot loader (snapshot/format.py, load.py) on a hostile state file and memory file.

Input: one flag byte, then the state file's body (signed here with a valid
header and checksum, so the fuzzer reaches the body's checks; with flag bit
0 the bytes are the whole file, header included). The memory file and the
disk the snapshot names live in a scratch directory (a path outside it is
refused as EACCES). After prepare_restore, everything that needs no KVM is
rebuilt: guest RAM mapped from the memory file, the UART, each virtio
transport with its device.
Contract: only ConfigError (SnapshotError, StateError, SerialStateError...)
escapes, with a one-line message; nothing is left open; the disk is not
changed by a restore.
"""

from __future__ import annotations

import hashlib
import os

from vmm.devices.serial import Uart16550
from vmm.devices.virtio.mmio import VirtioMmioTransport
from vmm.errors import ConfigError
from vmm.memory import GuestMemory
from vmm.snapshot import format as fmt
from vmm.snapshot import load
from vmm.snapshot.records import vmm_version
from vmm.x86 import layout

from .guard import confined, quiet_logs, scratch_dir

quiet_logs()
DISK_BYTES = 64 << 10
DISK_NAME = "disk.img"  # the seed snapshot's disk, by this relative path
# Other things a snapshot may name, beside it: the same disk under a name no
# message may print raw, a directory and a FIFO.
ODD_DISK_NAME = "disk\nimg"
MEM_LIMIT = 256 << 20  # larger guests are checked, not mapped (the file is sparse either way)
_dir: str | None = None


_DISK = bytes((i * 13 + (i >> 9)) & 0xFF for i in range(DISK_BYTES))


def disk_content() -> bytes:
    return _DISK


def _scratch() -> str:
    global _dir
    if _dir is None:
        _dir = scratch_dir("snapshot")
        for name in (DISK_NAME, ODD_DISK_NAME):
            with open(os.path.join(_dir, name), "wb") as f:
                f.write(disk_content())
        os.mkdir(os.path.join(_dir, "dir"))
        os.mkfifo(os.path.join(_dir, "fifo"))
    return _dir


def sign(body: bytes) -> bytes:
    header = dict(vmm_version=vmm_version(), cpu_vendor="AuthenticAMD", cpu_signature=0x00A00F11)
    return fmt.Header.build(dict(header, magic=fmt.MAGIC, format_version=fmt.FORMAT_VERSION, body_length=len(body),
                                 body_sha256=hashlib.sha256(body).digest())) + body


def _one_line(err: Exception) -> None:
    assert str(err) and "\n" not in str(err), repr(err)


def _mem_size(body: bytes) -> int:
    """The guest RAM size the body claims (Machine: two ids, a kind byte, then mem_size)."""
    return int.from_bytes(body[33:41], "little") if len(body) >= 41 else 0


def test_one_input(data: bytes) -> None:
    directory = _scratch()
    flags, rest = (data[0], data[1:]) if data else (0, b"")
    state = rest if flags & 1 else sign(rest)
    state_path, mem_path = os.path.join(directory, "vm.state"), os.path.join(directory, "vm.mem")
    with open(state_path, "wb") as f:
        f.write(state)
    claimed = _mem_size(rest if not flags & 1 else rest[fmt.Header.sizeof():])
    with open(mem_path, "wb") as f:  # sparse: the size the body asks for, when it is a sane one
        f.truncate(claimed if claimed <= MEM_LIMIT and flags & 4 == 0 else 2 << 20)
    fds_before = len(os.listdir("/proc/self/fd"))
    old_cwd = os.getcwd()
    os.chdir(directory)
    try:
        with confined(directory, writable=[]):
            _restore(state_path, mem_path, allow_disk_change=not flags & 2)
    finally:
        os.chdir(old_cwd)
    assert len(os.listdir("/proc/self/fd")) == fds_before, "a refused or closed restore left a file open"
    with open(os.path.join(directory, DISK_NAME), "rb") as f:
        assert f.read() == disk_content(), "restoring changed the disk"


def _restore(state_path: str, mem_path: str, allow_disk_change: bool) -> None:
    try:
        restored = load.prepare_restore(state_path, mem_path, allow_disk_change=allow_disk_change)
    except ConfigError as err:
        _one_line(err)
        return
    memory = None
    try:
        size = restored.config.mem_mib << 20
        if size > MEM_LIMIT:
            return
        memory = GuestMemory(layout.ram_regions(size), backing_fd=restored.mem_fd)
        Uart16550.from_state(restored.serial_state, lambda data: None, lambda level: None)
        for device, state in zip(restored.devices, restored.transport_states):
            transport = VirtioMmioTransport.from_state(device, memory, lambda level: None, state)
            assert transport.state() == state
    except ConfigError as err:
        _one_line(err)
    finally:
        restored.close()
        if memory is not None:
            memory.close()
