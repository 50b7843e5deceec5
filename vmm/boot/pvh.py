"""The Xen PVH boot ABI: hvm_start_info, its module list and memory map.

Layouts follow xen/include/public/arch-x86/hvm/start_info.h (version 1).
"""

from __future__ import annotations

from ..binary import Layout

HVM_START_MAGIC = 0x336EC578
E820_RAM, E820_RESERVED = 1, 2

StartInfo = Layout(
    "StartInfo",
    "magic:I version:I flags:I nr_modules:I modlist_paddr:Q cmdline_paddr:Q rsdp_paddr:Q "
    "memmap_paddr:Q memmap_entries:I reserved:I",
)
ModlistEntry = Layout("ModlistEntry", "paddr:Q size:Q cmdline_paddr:Q reserved:Q")
MemmapEntry = Layout("MemmapEntry", "addr:Q size:Q type:I reserved:I")
