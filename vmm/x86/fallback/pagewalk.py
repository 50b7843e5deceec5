"""Linear -> guest physical address through the guest's 4-level page tables.

Intel SDM vol. 3, 4.5: PML4E, PDPTE (PS: 1 GiB page), PDE (PS: 2 MiB page),
PTE. Each level's present, write and user bits are checked as the CPU would
(supervisor writes honour CR0.WP), and a failure raises ``PageFault`` with
the error code the CPU would push, so the caller can inject #PF.
"""

from __future__ import annotations

from ...errors import GuestMemoryError

PRESENT, WRITABLE, USER, PAGE_SIZE_BIT = 1 << 0, 1 << 1, 1 << 2, 1 << 7
ADDR_MASK = 0x000F_FFFF_FFFF_F000  # bits 51:12 of an entry
CR0_WP = 1 << 16
CR0_PG = 1 << 31
# #PF error code bits
PF_PRESENT, PF_WRITE, PF_USER = 1, 2, 4


class PageFault(Exception):
    def __init__(self, address: int, error_code: int):
        super().__init__(f"page fault at 0x{address:x} (error 0x{error_code:x})")
        self.address, self.error_code = address, error_code


def _canonical(address: int) -> bool:
    top = address >> 47
    return top == 0 or top == 0x1FFFF


def translate(memory, cr0: int, cr3: int, address: int, *, write: bool = False, user: bool = False) -> int:
    """The guest physical address of linear ``address``; raises PageFault, or
    GuestMemoryError when a table lies outside guest RAM."""
    if not cr0 & CR0_PG:
        return address & 0xFFFF_FFFF
    if not _canonical(address):
        raise GuestMemoryError(f"non-canonical address 0x{address:x}")
    error = (PF_WRITE if write else 0) | (PF_USER if user else 0)
    table = cr3 & ADDR_MASK
    writable = user_ok = True
    # (shift of the index, size of a page mapped at this level: 0 = none)
    for shift, large in ((39, 0), (30, 1 << 30), (21, 1 << 21), (12, 1 << 12)):
        entry = int.from_bytes(memory.read(table + ((address >> shift) & 0x1FF) * 8, 8), "little")
        if not entry & PRESENT:
            raise PageFault(address, error)
        writable &= bool(entry & WRITABLE)
        user_ok &= bool(entry & USER)
        if shift == 12 or (large and shift != 39 and entry & PAGE_SIZE_BIT):
            size = 1 << shift
            base = entry & ADDR_MASK & ~(size - 1)
            break
        table = entry & ADDR_MASK
    if user and not user_ok:
        raise PageFault(address, error | PF_PRESENT)
    if write and not writable and (user or cr0 & CR0_WP):
        raise PageFault(address, error | PF_PRESENT)
    return base | (address & (size - 1))


class LinearMemory:
    """Reads and writes at linear addresses, split at page boundaries."""

    def __init__(self, memory, cr0: int, cr3: int, user: bool = False):
        self.memory, self.cr0, self.cr3, self.user = memory, cr0, cr3, user

    def _pieces(self, address: int, length: int, write: bool):
        while length:
            chunk = min(length, 4096 - (address & 0xFFF))
            yield translate(self.memory, self.cr0, self.cr3, address, write=write, user=self.user), chunk
            address, length = (address + chunk) & 0xFFFF_FFFF_FFFF_FFFF, length - chunk

    def read(self, address: int, length: int) -> bytes:
        return b"".join(self.memory.read(paddr, n) for paddr, n in self._pieces(address, length, False))

    def write(self, address: int, data: bytes) -> None:
        pieces = list(self._pieces(address, len(data), True))  # all translated first: no partial write
        offset = 0
        for paddr, n in pieces:
            self.memory.write(paddr, data[offset : offset + n])
            offset += n
