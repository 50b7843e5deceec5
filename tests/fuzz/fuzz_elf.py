"""The ELF/PVH loader (boot/elf.py, loader.py, protocol.PvhBoot) on a hostile kernel file.

Input: the kernel file's bytes. Contract: a file is refused with a
ConfigError (KernelImageError and its kinds) whose message is one line, or
loaded; loading refuses (ConfigError) or writes guest RAM only where its
segments, the boot structures and the initrd go; parse_kernel agrees with
load_kernel on what a file holds.
"""

from __future__ import annotations

import os

from vmm.boot.elf import parse_kernel
from vmm.boot.loader import BOOT_STRUCTURES
from vmm.boot.protocol import PvhBoot
from vmm.errors import ConfigError
from vmm.x86 import layout

from .guard import confined, quiet_logs, scratch_dir
from .ram import check_zero_outside, zeroed_ram

quiet_logs()
RAM = 4 << 20
INITRD = b"initrd: an initramfs would be here\n" * 8
_dir: str | None = None


def _path() -> tuple[str, str]:
    global _dir
    if _dir is None:
        _dir = scratch_dir("elf")
    return _dir, os.path.join(_dir, "kernel.elf")


def _one_line(err: Exception) -> None:
    assert str(err) and "\n" not in str(err), repr(err)


def test_one_input(data: bytes) -> None:
    directory, path = _path()
    with open(path, "wb") as f:
        f.write(data)
    try:
        parsed = parse_kernel(data, path)
    except ConfigError as err:
        _one_line(err)
        parsed = None
    with confined(directory):
        try:
            boot = PvhBoot(path, INITRD, RAM)
        except ConfigError as err:
            _one_line(err)
            return
    kernel = boot.kernel
    assert parsed is not None, "load_kernel took a file parse_kernel refuses"
    assert (parsed.pvh_entry, parsed.segments) == (kernel.pvh_entry, kernel.segments)
    assert all(s.guest_addr >= layout.HIGH_MEMORY and s.guest_addr + s.memsz <= RAM for s in kernel.segments)
    with zeroed_ram(RAM) as memory:
        try:
            boot.load(memory, "console=ttyS0 quiet")
        except ConfigError as err:
            _one_line(err)
            return
        allowed = [(s.guest_addr, s.memsz) for s in kernel.segments]
        allowed += [(low, high - low) for _, low, high in BOOT_STRUCTURES]
        top = layout.ram_regions(RAM)[0][1]
        allowed.append((top - len(INITRD) - 4096, len(INITRD) + 4096))
        check_zero_outside(memory, allowed)
