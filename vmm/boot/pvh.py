"""The Xen PVH boot ABI: hvm_start_info, its module list and memory map.

Layouts follow xen/include/public/arch-x86/hvm/start_info.h (version 1).
"""

from __future__ import annotations

from construct import Const, Int32ul, Int64ul, Struct

HVM_START_MAGIC = 0x336EC578
E820_RAM, E820_RESERVED = 1, 2

StartInfo = Struct(
    "magic" / Const(HVM_START_MAGIC, Int32ul),
    "version" / Int32ul,
    "flags" / Int32ul,
    "nr_modules" / Int32ul,
    "modlist_paddr" / Int64ul,
    "cmdline_paddr" / Int64ul,
    "rsdp_paddr" / Int64ul,
    "memmap_paddr" / Int64ul,
    "memmap_entries" / Int32ul,
    "reserved" / Int32ul,
)
ModlistEntry = Struct(
    "paddr" / Int64ul,
    "size" / Int64ul,
    "cmdline_paddr" / Int64ul,
    "reserved" / Int64ul,
)
MemmapEntry = Struct(
    "addr" / Int64ul,
    "size" / Int64ul,
    "type" / Int32ul,
    "reserved" / Int32ul,
)
