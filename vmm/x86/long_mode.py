"""Enter a kernel directly in 64-bit long mode, as Linux's 64-bit boot protocol asks.

The VMM writes a GDT and identity-mapped page tables (the first 4 GiB in
2 MiB pages) into low guest RAM, then sets the vCPU's registers: paging and
PAE on, EFER.LME|LMA, CS a flat 64-bit code segment (selector 0x10, Linux's
__BOOT_CS), the data segments flat (0x18, __BOOT_DS), interrupts off.
"""

from __future__ import annotations

from ..memory import GuestMemory

# Where the boot structures go: below the EBDA, clear of the zero page (0x7000)
# and the command line (0x20000).
GDT_ADDR = 0x500
PML4_ADDR = 0x9000
PDPT_ADDR = 0xA000
PD_ADDR = 0xB000  # four page directories, 0xB000-0xEFFF
IDENTITY_MAPPED = 4 << 30
BOOT_STACK_TOP = 0x1F000  # a stack for the entry code, in the free pages below the command line

BOOT_CS, BOOT_DS, BOOT_TR = 0x10, 0x18, 0x20
# null, null, code (L=1), data, in the encoding of a segment descriptor
GDT_ENTRIES = (0, 0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF)

PTE_PRESENT, PTE_WRITE, PTE_LARGE = 0x1, 0x2, 0x80
CR0_PE, CR0_ET, CR0_PG = 1 << 0, 1 << 4, 1 << 31
CR4_PAE = 1 << 5
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
RFLAGS_RESERVED = 1 << 1  # and IF clear: interrupts off


def write_boot_tables(memory: GuestMemory) -> int:
    """Write the GDT and the identity map; returns CR3."""
    memory.write(GDT_ADDR, b"".join(entry.to_bytes(8, "little") for entry in GDT_ENTRIES))
    directories = IDENTITY_MAPPED >> 30
    memory.write(PML4_ADDR, (PDPT_ADDR | PTE_PRESENT | PTE_WRITE).to_bytes(8, "little") + bytes(4096 - 8))
    pdpt = b"".join((PD_ADDR + i * 4096 | PTE_PRESENT | PTE_WRITE).to_bytes(8, "little") for i in range(directories))
    memory.write(PDPT_ADDR, pdpt + bytes(4096 - len(pdpt)))
    large = PTE_PRESENT | PTE_WRITE | PTE_LARGE
    memory.write(PD_ADDR, b"".join(((i << 21) | large).to_bytes(8, "little") for i in range(directories * 512)))
    return PML4_ADDR


def _segment(segment, selector: int, code: bool) -> None:
    segment.base, segment.limit, segment.selector = 0, 0xFFFFFFFF, selector
    segment.type = 0xB if code else 0x3  # execute/read or read/write, accessed
    segment.present, segment.dpl, segment.s, segment.g = 1, 0, 1, 1
    segment.l, segment.db = (1, 0) if code else (0, 1)
    segment.avl, segment.unusable = 0, 0


def set_long_mode_entry_state(vcpu, entry: int, rsi: int, cr3: int) -> None:
    """Registers at a 64-bit entry point: long mode, paging on, RSI as given."""
    sregs = vcpu.get_sregs()
    _segment(sregs.cs, BOOT_CS, code=True)
    for segment in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        _segment(segment, BOOT_DS, code=False)
    tr = sregs.tr
    tr.base, tr.limit, tr.selector, tr.type = 0, 0x67, BOOT_TR, 0xB  # busy 64-bit TSS
    tr.present, tr.dpl, tr.db, tr.s, tr.l, tr.g, tr.unusable = 1, 0, 0, 0, 0, 0, 0
    sregs.gdt.base, sregs.gdt.limit = GDT_ADDR, len(GDT_ENTRIES) * 8 - 1
    sregs.idt.base, sregs.idt.limit = 0, 0
    sregs.cr0 = CR0_PE | CR0_ET | CR0_PG
    sregs.cr3 = cr3
    sregs.cr4 = CR4_PAE
    sregs.efer = EFER_LME | EFER_LMA
    vcpu.set_sregs(sregs)

    regs = vcpu.get_regs()
    for name in ("rax", "rbx", "rcx", "rdx", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"):
        setattr(regs, name, 0)
    regs.rip, regs.rsi, regs.rsp, regs.rflags = entry, rsi, BOOT_STACK_TOP, RFLAGS_RESERVED
    vcpu.set_regs(regs)
