"""The Multiboot loader (boot/multiboot.py) on a hostile kernel image.

Input: the image's bytes (the header search covers its first 8 KiB; an ELF
or the a.out kludge's load addresses). Contract: no header is None, a bad
one a KernelImageError with a one-line message; a parsed kernel's segments
lie below 4 GiB, with no more file bytes than memory; loading refuses
(ConfigError) or writes guest RAM only at its segments, the information
structure, command line, module list, memory map and the initrd.
"""

from __future__ import annotations

from vmm.boot import multiboot as mb
from vmm.errors import ConfigError, KernelImageError
from vmm.x86 import layout

from .guard import quiet_logs
from .ram import check_zero_outside, zeroed_ram

quiet_logs()
RAM = 4 << 20
INITRD = b"module bytes\n" * 16
PATH = "/boot/fuzzed-kernel"


def test_one_input(data: bytes) -> None:
    try:
        kernel = mb.parse_multiboot(data, PATH)
    except KernelImageError as err:
        assert str(err) and "\n" not in str(err)
        return
    if kernel is None:
        assert mb.find_header(data) is None
        return
    for s in kernel.segments:
        assert len(s.data) <= s.memsz and s.guest_addr + s.memsz <= 1 << 32, s[:1] + (len(s.data), s.memsz)
    with zeroed_ram(RAM) as memory:
        initrd = INITRD if data[-1:] != b"\0" else None
        try:
            info = mb.load_multiboot(memory, kernel, PATH, "console=ttyS0 a=b", initrd, "/boot/module arg")
        except ConfigError as err:
            assert str(err) and "\n" not in str(err)
            return
        assert info == mb.INFO_ADDR
        allowed = [(s.guest_addr, s.memsz) for s in kernel.segments]
        allowed += [
            (mb.INFO_ADDR, mb.Info.size), (mb.BOOT_LOADER_NAME_ADDR, len(mb.BOOT_LOADER_NAME)),
            (mb.MODULES_ADDR, mb.Module.size), (mb.MMAP_ADDR, 8 * mb.MmapEntry.size),
            (layout.CMDLINE_ADDR, layout.CMDLINE_MAX),
        ]
        if initrd is not None:
            top = memory.regions[0].end
            allowed.append((top - len(initrd) - 4096, len(initrd) + 4096))
        check_zero_outside(memory, allowed)
