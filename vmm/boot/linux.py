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

    def unpacked(self, limit: int | None = None):
        """The kernel inside, decompressed and parsed (unpack.Vmlinux), or None if
        its compression is not one the VMM unpacks or the header has no payload fields.
        ``limit``: the most bytes it may unpack to (the guest's low RAM)."""
        from .unpack import decompress_payload, parse_vmlinux

        hdr = self.hdr
        if hdr.version < 0x208 or hdr.payload_length == 0:
            return None
        if hdr.payload_offset + hdr.payload_length > len(self.kernel):
            raise KernelImageError(f"{self.path}: payload_offset/payload_length point past the kernel")
        payload = self.kernel[hdr.payload_offset : hdr.payload_offset + hdr.payload_length]
        elf = decompress_payload(payload) if limit is None else decompress_payload(payload, limit)
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


def plan_kernel(image: BzImage, low_end: int) -> tuple[int, int, int]:
    """Where the protected-mode kernel (decompressor and payload) goes, checked.

    Returns (entry point, load address, end of the memory it will use)."""
    load_addr = image.load_address(low_end)
    return load_addr + ENTRY_64_OFFSET, load_addr, load_addr + image.init_size


def plan_vmlinux(image: BzImage, vmlinux, low_end: int) -> tuple[int, int, int]:
    """Check an unpacked kernel's segments (at their physical addresses) against low RAM.

    Returns (entry point, lowest address, end of the image)."""
    end = max(s.paddr + s.memsz for s in vmlinux.segments)
    for segment in vmlinux.segments:
        if segment.paddr < layout.HIGH_MEMORY:
            raise KernelImageError(f"{image.path}: kernel segment at 0x{segment.paddr:x} lies below 1 MiB")
    if end > low_end:
        raise ConfigError(f"{image.path} needs guest RAM up to 0x{end:x} ({-(-end >> 20)} MiB); give the VM more memory (--mem)")
    return vmlinux.entry, min(s.paddr for s in vmlinux.segments), end


def initrd_address(size: int, image: BzImage, kernel_end: int, low_end: int) -> int:
    """As high as it may go, page-aligned: below initrd_addr_max (the highest address
    its last byte may have) and the end of low RAM, above the kernel."""
    top = min(low_end, image.hdr.initrd_addr_max + 1)
    addr = (top - size) & ~(PAGE - 1)
    if size > top or addr < kernel_end:
        raise ConfigError(
            f"initrd of {size} bytes does not fit in guest RAM below 0x{top:x} beside the kernel; "
            f"give the VM more memory (--mem)"
        )
    return addr


def check_cmdline(image: BzImage, cmdline: str, user_cmdline_length: int | None) -> bytes:
    from .loader import encode_cmdline

    encoded = encode_cmdline(cmdline)
    limit = min(image.hdr.cmdline_size, layout.CMDLINE_MAX - 1)
    if len(encoded) > limit:
        yours = f", {user_cmdline_length} of them yours" if user_cmdline_length not in (None, len(encoded)) else ""
        raise ConfigError(f"kernel command line is {len(encoded)} bytes{yours}; this kernel takes at most {limit} (cmdline_size)")
    return encoded


def zero_page(image: BzImage, load_addr: int, mem_size: int, ramdisk: tuple[int, int], acpi_rsdp: int | None) -> bytes:
    """boot_params: the kernel's setup header as a loader fills it, the E820 map, the RSDP."""
    from .bzimage_layout import CAN_USE_HEAP, E820_MAX_ENTRIES_ZEROPAGE, TYPE_OF_LOADER_UNDEFINED, BootParams, SetupHeader
    from .loader import memory_map

    entries = memory_map(mem_size)[:E820_MAX_ENTRIES_ZEROPAGE]
    setup = SetupHeader.parse(image.setup_header + bytes(SetupHeader.sizeof() - len(image.setup_header)))
    setup.type_of_loader = TYPE_OF_LOADER_UNDEFINED
    setup.loadflags = (setup.loadflags | CAN_USE_HEAP) & 0xFF
    setup.heap_end_ptr = HEAP_END_PTR - 0x200
    setup.cmd_line_ptr = layout.CMDLINE_ADDR
    setup.ramdisk_image, setup.ramdisk_size = ramdisk
    setup.code32_start = load_addr
    # only the bytes the kernel's own header has: a later field must stay what the kernel says
    filled = SetupHeader.build(setup)[: len(image.setup_header)]
    table = [dict(addr=a, size=s, type=t) for a, s, t in entries]
    table += [dict(addr=0, size=0, type=0)] * (E820_MAX_ENTRIES_ZEROPAGE - len(table))
    return BootParams.build(
        dict(
            acpi_rsdp_addr=acpi_rsdp or 0,
            e820_entries=len(entries),
            hdr=filled + bytes(SetupHeader.sizeof() - len(filled)),
            e820_table=table,
        )
    )


class LinuxBoot:
    """A Linux bzImage, booted by the x86 boot protocol at its 64-bit entry point."""

    name = "linux"
    uses_acpi = True  # distribution kernels find virtio-mmio devices in the DSDT

    def __init__(self, kernel_path: str, initrd: str | bytes | None, ram_size: int, *, unpack: bool = True):
        """Reads and places everything against ``ram_size`` bytes of guest RAM before any KVM object exists.

        ``unpack``: decompress the kernel in the VMM when its format allows (see unpack.py)
        rather than run the bzImage's own decompressor in the guest."""
        from .protocol import _read_within

        self.kernel_path = kernel_path
        self.image = image = BzImage(kernel_path, _read_within(kernel_path, "kernel", KernelImageError, ram_size))
        self.description = f"linux (bzImage, boot protocol {image.version})"
        low_end = layout.ram_regions(ram_size)[0][1]
        self.vmlinux = image.unpacked(limit=low_end) if unpack else None
        if self.vmlinux is not None:
            self.entry, self.load_addr, kernel_end = plan_vmlinux(image, self.vmlinux, low_end)
        else:
            self.entry, self.load_addr, kernel_end = plan_kernel(image, low_end)
        self.initrd = _read_within(initrd, "initrd", ConfigError, ram_size) if isinstance(initrd, str) else initrd
        self.initrd_addr = initrd_address(len(self.initrd), image, kernel_end, low_end) if self.initrd else 0

    def load(self, memory: GuestMemory, cmdline: str, user_cmdline_length: int | None = None, acpi_rsdp: int | None = None):
        """Write the kernel, command line, initrd, zero page and page tables; the long-mode entry state."""
        from ..x86.long_mode import write_boot_tables
        from .protocol import LongModeEntry

        encoded = check_cmdline(self.image, cmdline, user_cmdline_length)
        if self.vmlinux is not None:
            for segment in self.vmlinux.segments:
                memory.write(segment.paddr, segment.data)
                tail = segment.memsz - len(segment.data)
                if tail:  # the bss
                    memory.view(segment.paddr + len(segment.data), tail)[:] = bytes(tail)
        else:
            memory.write(self.load_addr, self.image.kernel)
        memory.write(layout.CMDLINE_ADDR, encoded + b"\0")
        if self.initrd:
            memory.write(self.initrd_addr, self.initrd)
        ramdisk = (self.initrd_addr, len(self.initrd)) if self.initrd else (0, 0)
        memory.write(BOOT_PARAMS_ADDR, zero_page(self.image, self.load_addr, memory.size, ramdisk, acpi_rsdp))
        return LongModeEntry(self.entry, BOOT_PARAMS_ADDR, write_boot_tables(memory))
