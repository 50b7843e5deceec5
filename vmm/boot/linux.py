"""The Linux x86 boot protocol for a bzImage, entered at its 64-bit entry point.

Documentation/arch/x86/boot.rst: the file is a boot sector and real-mode
setup code (``setup_sects`` sectors after the first), then the protected-mode
kernel. A 64-bit loader copies the protected-mode part to its load address,
fills a zero page (``boot_params``) holding the setup header, the E820 map,
the command line pointer and the initrd, and jumps to load address + 0x200 in
long mode with RSI pointing at the zero page. The real-mode code never runs.

By default (``LinuxBoot(unpack=True)``) the VMM goes one step further: it
unpacks the compressed kernel inside the bzImage itself and enters that
kernel's own 64-bit entry, skipping the guest's decompressor stub, which is
slow in this platform's ring-0 emulator (see unpack.py). The zero page is
the same either way. Kernels compressed in a format not unpacked here
(zstd, LZO) are entered at load address + 0x200 as above.

protocol.select_boot imports this module only for a bzImage: the layouts
need construct, which the bundled guest's start path must not load.
"""

from __future__ import annotations

import os

from ..errors import ConfigError, KernelImageError
from ..memory import GuestMemory
from ..x86 import layout

MIN_PROTOCOL = 0x206  # cmdline_size; older kernels also lack the 64-bit entry anyway
XLOADFLAGS_PROTOCOL = 0x20C  # 2.12: xloadflags, which announces the 64-bit entry
ENTRY_64_OFFSET = 0x200
BOOT_PARAMS_ADDR = 0x7000
HEAP_END_PTR = 0xFE00  # the usual value: the real-mode heap/stack never runs here anyway
PAGE = 4096


def _align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


class BzImage:
    """A parsed bzImage: its setup header and protected-mode kernel, checked."""

    def __init__(self, path: str, data: bytes):
        from .bzimage_layout import (
            BOOT_FLAG,
            HDRS_MAGIC,
            LOADED_HIGH,
            SETUP_HEADER_OFFSET,
            XLF_KERNEL_64,
            SetupHeader,
        )

        self.path = path
        if len(data) < SETUP_HEADER_OFFSET + SetupHeader.sizeof():
            raise KernelImageError(f"{path}: too short for a bzImage")
        hdr = SetupHeader.parse(data[SETUP_HEADER_OFFSET:])
        if hdr.header != HDRS_MAGIC or hdr.boot_flag != BOOT_FLAG:
            raise KernelImageError(f"{path}: not a bzImage (no HdrS setup header)")
        version = f"{hdr.version >> 8}.{hdr.version & 0xFF:02d}"
        if hdr.version < MIN_PROTOCOL:
            raise KernelImageError(f"{path}: boot protocol {version} is too old (vmm needs 2.06 or later)")
        if not hdr.loadflags & LOADED_HIGH:
            raise KernelImageError(f"{path}: a zImage (loads below 1 MiB); vmm boots only bzImages")
        if hdr.version < XLOADFLAGS_PROTOCOL or not hdr.xloadflags & XLF_KERNEL_64:
            raise KernelImageError(f"{path}: kernel has no 64-bit entry point (boot protocol {version})")
        setup_sects = hdr.setup_sects or 4
        kernel_offset = (setup_sects + 1) * 512
        kernel_size = hdr.syssize * 16
        if kernel_offset >= len(data) or kernel_size == 0 or kernel_offset + kernel_size > len(data):
            raise KernelImageError(f"{path}: setup_sects/syssize point past the end of the file")
        # the header copied into the zero page runs to 0x202 + the jump's offset byte
        header_end = min(0x202 + data[0x201], SETUP_HEADER_OFFSET + SetupHeader.sizeof())
        self.setup_header = data[SETUP_HEADER_OFFSET:header_end]
        self.kernel = data[kernel_offset : kernel_offset + kernel_size]
        self.hdr = hdr
        self.version = version
        self.alignment = hdr.kernel_alignment if hdr.kernel_alignment else 2 << 20
        if self.alignment & (self.alignment - 1):
            raise KernelImageError(f"{path}: kernel_alignment 0x{self.alignment:x} is not a power of two")
        # init_size covers the decompressor's whole footprint; never less than the image
        self.init_size = max(hdr.init_size, len(self.kernel))

    def unpacked(self):
        """The kernel inside, decompressed and parsed (unpack.Vmlinux), or None if
        its compression is not one the VMM unpacks or the header has no payload fields."""
        from .unpack import decompress_payload, parse_vmlinux

        hdr = self.hdr
        if hdr.version < 0x208 or hdr.payload_length == 0:
            return None
        if hdr.payload_offset + hdr.payload_length > len(self.kernel):
            raise KernelImageError(f"{self.path}: payload_offset/payload_length point past the kernel")
        elf = decompress_payload(self.kernel[hdr.payload_offset : hdr.payload_offset + hdr.payload_length])
        return None if elf is None else parse_vmlinux(elf)

    def load_address(self, low_ram_end: int) -> int:
        """Where the protected-mode kernel goes: pref_address if it may move and
        fits, else 1 MiB rounded up to its alignment (1 MiB itself if it cannot move)."""
        hdr = self.hdr
        if not hdr.relocatable_kernel:
            address = layout.HIGH_MEMORY
        elif hdr.pref_address >= layout.HIGH_MEMORY and hdr.pref_address % self.alignment == 0 and hdr.pref_address + self.init_size <= low_ram_end:
            address = hdr.pref_address
        else:
            address = _align_up(layout.HIGH_MEMORY, self.alignment)
        end = address + self.init_size
        if end > low_ram_end:
            raise ConfigError(
                f"{self.path} needs guest RAM up to 0x{end:x} ({-(-end >> 20)} MiB) to unpack itself; "
                f"give the VM more memory (--mem)"
            )
        return address


def read_bzimage(path: str) -> BzImage:
    if os.path.exists(path) and not os.path.isfile(path):
        raise KernelImageError(f"kernel {path}: not a regular file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise KernelImageError(f"cannot read kernel {path}: {err.strerror}") from None
    return BzImage(path, data)


def place_kernel(memory: GuestMemory, image: BzImage) -> tuple[int, int, int]:
    """Copy the protected-mode kernel (decompressor and payload) to its load address.

    Returns (entry point, load address, end of the memory it will use)."""
    load_addr = image.load_address(memory.regions[0].end)
    memory.write(load_addr, image.kernel)
    return load_addr + ENTRY_64_OFFSET, load_addr, load_addr + image.init_size


def place_vmlinux(memory: GuestMemory, image: BzImage, vmlinux) -> tuple[int, int, int]:
    """Copy an unpacked kernel's segments to their physical addresses (zeroing their tails).

    Returns (entry point, lowest address, end of the image)."""
    end = max(s.paddr + s.memsz for s in vmlinux.segments)
    for segment in vmlinux.segments:
        if segment.paddr < layout.HIGH_MEMORY:
            raise KernelImageError(f"{image.path}: kernel segment at 0x{segment.paddr:x} lies below 1 MiB")
    if end > memory.regions[0].end:
        raise ConfigError(f"{image.path} needs guest RAM up to 0x{end:x} ({-(-end >> 20)} MiB); give the VM more memory (--mem)")
    for segment in vmlinux.segments:
        memory.write(segment.paddr, segment.data)
        tail = segment.memsz - len(segment.data)
        if tail:
            memory.view(segment.paddr + len(segment.data), tail)[:] = bytes(tail)
    return vmlinux.entry, min(s.paddr for s in vmlinux.segments), end


def fill_zero_page(memory: GuestMemory, image: BzImage, load_addr: int, kernel_end: int, cmdline: str, initrd: bytes | None, acpi_rsdp: int | None = None) -> int:
    """Write the command line, the initrd (above ``kernel_end``) and boot_params; returns boot_params' address."""
    from .bzimage_layout import CAN_USE_HEAP, E820_MAX_ENTRIES_ZEROPAGE, TYPE_OF_LOADER_UNDEFINED, BootParams, SetupHeader
    from .loader import memory_map

    low_end = memory.regions[0].end
    hdr = image.hdr
    encoded = cmdline.encode()
    limit = min(hdr.cmdline_size, layout.CMDLINE_MAX - 1)
    if len(encoded) > limit or b"\0" in encoded:
        raise ConfigError(f"kernel command line too long or malformed (this kernel takes at most {limit} bytes)")
    memory.write(layout.CMDLINE_ADDR, encoded + b"\0")

    ramdisk_image = ramdisk_size = 0
    if initrd:
        # as high as it may go: below initrd_addr_max (its last byte's highest address) and the end of low RAM
        top = min(low_end, hdr.initrd_addr_max + 1)
        ramdisk_image = (top - len(initrd)) & ~(PAGE - 1)
        if ramdisk_image < kernel_end:
            raise ConfigError(
                f"initrd of {len(initrd)} bytes does not fit in guest RAM below 0x{top:x} beside the kernel; "
                f"give the VM more memory (--mem)"
            )
        memory.write(ramdisk_image, initrd)
        ramdisk_size = len(initrd)

    entries = memory_map(memory.size)[:E820_MAX_ENTRIES_ZEROPAGE]
    setup = SetupHeader.parse(image.setup_header + bytes(SetupHeader.sizeof() - len(image.setup_header)))
    setup.type_of_loader = TYPE_OF_LOADER_UNDEFINED
    setup.loadflags = (setup.loadflags | CAN_USE_HEAP) & 0xFF
    setup.heap_end_ptr = HEAP_END_PTR - 0x200
    setup.cmd_line_ptr = layout.CMDLINE_ADDR
    setup.ramdisk_image, setup.ramdisk_size = ramdisk_image, ramdisk_size
    setup.code32_start = load_addr
    # only the bytes the kernel's own header has: a later field must stay what the kernel says
    filled = SetupHeader.build(setup)[: len(image.setup_header)]
    table = [dict(addr=a, size=s, type=t) for a, s, t in entries]
    table += [dict(addr=0, size=0, type=0)] * (E820_MAX_ENTRIES_ZEROPAGE - len(table))
    params = BootParams.build(
        dict(
            acpi_rsdp_addr=acpi_rsdp or 0,
            e820_entries=len(entries),
            hdr=filled + bytes(SetupHeader.sizeof() - len(filled)),
            e820_table=table,
        )
    )
    memory.write(BOOT_PARAMS_ADDR, params)
    return BOOT_PARAMS_ADDR


class LinuxBoot:
    """A Linux bzImage, booted by the x86 boot protocol at its 64-bit entry point."""

    name = "linux"
    uses_acpi = True  # distribution kernels find virtio-mmio devices in the DSDT

    def __init__(self, kernel_path: str, initrd_path: str | None = None, *, unpack: bool = True):
        """``unpack``: decompress the kernel in the VMM when its format allows (see unpack.py),
        rather than run the bzImage's own decompressor in the guest."""
        from .protocol import read_initrd

        self.kernel_path = kernel_path
        self.image = read_bzimage(kernel_path)
        self.initrd = read_initrd(initrd_path) if initrd_path is not None else None
        self.vmlinux = self.image.unpacked() if unpack else None

    def load(self, memory: GuestMemory, cmdline: str, acpi_rsdp: int | None = None):
        from ..x86.long_mode import write_boot_tables
        from .protocol import LongModeEntry

        if self.vmlinux is not None:
            entry, load_addr, kernel_end = place_vmlinux(memory, self.image, self.vmlinux)
        else:
            entry, load_addr, kernel_end = place_kernel(memory, self.image)
        boot_params = fill_zero_page(memory, self.image, load_addr, kernel_end, cmdline, self.initrd, acpi_rsdp)
        cr3 = write_boot_tables(memory)
        return LongModeEntry(entry, boot_params, cr3)
