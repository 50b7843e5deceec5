"""The Linux x86 boot protocol's structures, declared with construct.

From Documentation/arch/x86/boot.rst (the real-mode kernel header) and
zero-page.rst (struct boot_params, "the zero page"). Offsets in comments are
from the start of the file / of boot_params. This module imports construct:
only a Linux bzImage boot loads it, never the bundled guest's start path.
"""

from __future__ import annotations

from construct import Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Padding, Struct

SETUP_HEADER_OFFSET = 0x1F1  # where the header starts, in the file and in boot_params
HDRS_MAGIC = b"HdrS"
BOOT_FLAG = 0xAA55

# loadflags
LOADED_HIGH = 0x01  # the protected-mode kernel loads at 1 MiB (a bzImage)
KEEP_SEGMENTS = 0x40
CAN_USE_HEAP = 0x80  # heap_end_ptr is valid
# xloadflags
XLF_KERNEL_64 = 0x01  # has the 64-bit entry point at load address + 0x200
XLF_CAN_BE_LOADED_ABOVE_4G = 0x02

TYPE_OF_LOADER_UNDEFINED = 0xFF  # a boot loader with no assigned id
E820_MAX_ENTRIES_ZEROPAGE = 128

SetupHeader = Struct(
    "setup_sects" / Int8ul,  # 0x1f1: 512-byte sectors of real-mode code after the boot sector; 0 means 4
    "root_flags" / Int16ul,
    "syssize" / Int32ul,  # protected-mode code size, in 16-byte paragraphs
    "ram_size" / Int16ul,
    "vid_mode" / Int16ul,
    "root_dev" / Int16ul,
    "boot_flag" / Int16ul,  # 0x1fe: 0xAA55
    "jump" / Int16ul,  # 0x200: a short jmp; its second byte + 0x202 is the header's end
    "header" / Bytes(4),  # 0x202: "HdrS"
    "version" / Int16ul,  # 0x206: boot protocol, major << 8 | minor
    "realmode_swtch" / Int32ul,
    "start_sys_seg" / Int16ul,
    "kernel_version" / Int16ul,
    "type_of_loader" / Int8ul,  # 0x210
    "loadflags" / Int8ul,  # 0x211
    "setup_move_size" / Int16ul,
    "code32_start" / Int32ul,
    "ramdisk_image" / Int32ul,  # 0x218
    "ramdisk_size" / Int32ul,  # 0x21c
    "bootsect_kludge" / Int32ul,
    "heap_end_ptr" / Int16ul,  # 0x224
    "ext_loader_ver" / Int8ul,
    "ext_loader_type" / Int8ul,
    "cmd_line_ptr" / Int32ul,  # 0x228
    "initrd_addr_max" / Int32ul,  # 0x22c: highest address the initrd may occupy
    "kernel_alignment" / Int32ul,  # 0x230 (2.05+)
    "relocatable_kernel" / Int8ul,  # 0x234 (2.05+)
    "min_alignment" / Int8ul,  # 0x235 (2.10+): log2
    "xloadflags" / Int16ul,  # 0x236 (2.12+)
    "cmdline_size" / Int32ul,  # 0x238 (2.06+): longest command line, without the NUL
    "hardware_subarch" / Int32ul,
    "hardware_subarch_data" / Int64ul,
    "payload_offset" / Int32ul,  # 0x248 (2.08+)
    "payload_length" / Int32ul,
    "setup_data" / Int64ul,  # 0x250 (2.09+)
    "pref_address" / Int64ul,  # 0x258 (2.10+)
    "init_size" / Int32ul,  # 0x260 (2.10+): bytes the kernel needs from its load address on
    "handover_offset" / Int32ul,
    "kernel_info_offset" / Int32ul,  # 0x268 (2.15+)
)
assert SetupHeader.sizeof() == 0x26C - SETUP_HEADER_OFFSET

E820Entry = Struct("addr" / Int64ul, "size" / Int64ul, "type" / Int32ul)

BootParams = Struct(
    Padding(0x070),  # screen_info, apm_bios_info, tboot_addr, ist_info
    "acpi_rsdp_addr" / Int64ul,  # 0x070 (2.14+)
    Padding(0x1E8 - 0x078),
    "e820_entries" / Int8ul,  # 0x1e8
    Padding(SETUP_HEADER_OFFSET - 0x1E9),
    "hdr" / Bytes(SetupHeader.sizeof()),  # 0x1f1: the kernel's setup header, as filled by the loader
    Padding(0x2D0 - 0x26C),
    "e820_table" / E820Entry[E820_MAX_ENTRIES_ZEROPAGE],  # 0x2d0
    Padding(0x1000 - 0x2D0 - E820_MAX_ENTRIES_ZEROPAGE * E820Entry.sizeof()),
)
assert BootParams.sizeof() == 0x1000
