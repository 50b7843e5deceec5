"""The Linux bzImage loader (boot/linux.py, bzimage_layout.py, unpack.py) on a hostile image.

Input: one flag byte (unpack the kernel in the VMM, or enter the image's own
decompressor), then the bzImage file. Contract: a refusal is a ConfigError
(KernelImageError and its kinds) with a one-line message, never anything
else (construct's, zlib's, lzma's errors included); a case's memory stays
within a few times the guest's RAM size, whatever the payload claims or
unpacks to (peak RSS); a load writes guest RAM only at the kernel
(or its segments), the command line, the initrd, the zero page and the
boot page tables and GDT.
"""

from __future__ import annotations

import os
import resource

from vmm.boot import linux
from vmm.errors import ConfigError
from vmm.x86 import layout, long_mode

from .guard import confined, quiet_logs, scratch_dir
from .ram import check_zero_outside, zeroed_ram

quiet_logs()
RAM = 8 << 20
INITRD = b"070701initramfs\n" * 16
# What one case may add to the process's peak RSS: the image, what it unpacks
# to (at most the guest's RAM) and a few copies of it.
GROWTH_LIMIT = 6 * RAM
_dir: str | None = None


def _rss() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _path() -> tuple[str, str]:
    global _dir
    if _dir is None:
        _dir = scratch_dir("bzimage")
    return _dir, os.path.join(_dir, "bzImage")


def _one_line(err: Exception) -> None:
    assert str(err) and "\n" not in str(err), repr(err)


def test_one_input(data: bytes) -> None:
    rss, peak = _rss(), _peak()
    try:
        _case(data)
    finally:
        if _peak() > peak:  # this case raised the peak: by no more than its bound
            assert _peak() - rss <= GROWTH_LIMIT + len(data) * 4, f"a bzImage of {len(data)} bytes took {(_peak() - rss) >> 20} MiB"


def _case(data: bytes) -> None:
    directory, path = _path()
    unpack = not data[:1] or not data[0] & 1
    with open(path, "wb") as f:
        f.write(data[1:])
    with confined(directory):
        try:
            boot = linux.LinuxBoot(path, INITRD, RAM, unpack=unpack)
        except ConfigError as err:
            _one_line(err)
            return
    if boot.vmlinux is not None:
        placed = [(s.paddr, s.memsz) for s in boot.vmlinux.segments]
    else:
        placed = [(boot.load_addr, len(boot.image.kernel))]
    assert all(a + n <= RAM for a, n in placed), placed
    with zeroed_ram(RAM) as memory:
        try:
            boot.load(memory, "console=ttyS0 panic=-1")
        except ConfigError as err:
            _one_line(err)
            return
        allowed = placed + [
            (layout.CMDLINE_ADDR, layout.CMDLINE_MAX), (boot.initrd_addr, len(INITRD)),
            (linux.BOOT_PARAMS_ADDR, 4096), (long_mode.GDT_ADDR, 0x100),
            (long_mode.PML4_ADDR, 4096), (long_mode.PDPT_ADDR, 4096), (long_mode.PD_ADDR, 4 * 4096),
        ]
        check_zero_outside(memory, allowed)
