"""ELF parsing and the PVH start info, without a VM."""

import pytest

from vmm.boot.elf import PT_LOAD, PT_NOTE, XEN_ELFNOTE_PHYS32_ENTRY, parse_kernel
from vmm.boot.loader import load_pvh, memory_map
from vmm.boot.pvh import E820_RAM, HVM_START_MAGIC
from vmm.errors import ConfigError, KernelImageError
from vmm.memory import GuestMemory
from vmm.x86 import layout

from ..layouts import Elf64Header, Elf64ProgramHeader, MemmapEntry, ModlistEntry, NoteHeader, StartInfo


def xen_note(entry: int, note_type: int = XEN_ELFNOTE_PHYS32_ENTRY, name: bytes = b"Xen\0") -> bytes:
    padded = name + b"\0" * (-len(name) % 4)
    return NoteHeader.build(dict(namesz=len(name), descsz=4, type=note_type)) + padded + entry.to_bytes(4, "little")


def make_elf(code=b"\xf4" * 16, paddr=0x100000, memsz=None, notes=None, entry=0x100000) -> bytes:
    notes = xen_note(entry) if notes is None else notes
    phoff, phnum = 64, 2
    code_off = phoff + phnum * 56
    note_off = code_off + len(code)
    header = Elf64Header.build(
        dict(
            ident=dict(elf_class=2, data=1, version=1, pad=bytes(9)),
            type=2, machine=62, version=1, entry=entry, phoff=phoff, shoff=0, flags=0,
            ehsize=64, phentsize=56, phnum=phnum, shentsize=64, shnum=0, shstrndx=0,
        )
    )
    load = Elf64ProgramHeader.build(
        dict(type=PT_LOAD, flags=5, offset=code_off, vaddr=paddr, paddr=paddr, filesz=len(code), memsz=memsz or len(code), align=0x1000)
    )
    note = Elf64ProgramHeader.build(
        dict(type=PT_NOTE, flags=4, offset=note_off, vaddr=0, paddr=0, filesz=len(notes), memsz=len(notes), align=4)
    )
    return header + load + note + code + notes


def test_parses_segments_and_pvh_entry():
    kernel = parse_kernel(make_elf(memsz=0x2000, entry=0x100004))
    assert kernel.pvh_entry == 0x100004
    (segment,) = kernel.segments
    assert (segment.guest_addr, segment.memsz, len(segment.data)) == (0x100000, 0x2000, 16)


@pytest.mark.parametrize(
    "image, message",
    [
        (b"MZ\x90\x00" * 20, "not an ELF file"),
        (make_elf()[:40], "truncated or malformed"),
        (make_elf()[:70], "program headers lie past the end"),
        (make_elf(notes=xen_note(0x100000, note_type=17)), "no PVH entry note"),
        (make_elf(notes=xen_note(0x100000, name=b"Linux\0")), "no PVH entry note"),
        (make_elf(notes=b""), "no PVH entry note"),
        (make_elf()[:-30], "past the end of the file"),
    ],
)
def test_bad_images_get_one_line_errors(image, message):
    with pytest.raises(KernelImageError, match=message) as info:
        parse_kernel(image, "k.elf")
    assert "\n" not in str(info.value)


def test_start_info_memory_map_cmdline_and_initrd():
    memory = GuestMemory(layout.ram_regions(16 << 20))
    kernel = parse_kernel(make_elf(code=b"\x90\x90", memsz=0x3000))
    addr = load_pvh(memory, kernel, "k", "console=ttyS0 quiet", b"INITRD" * 100)
    info = StartInfo.parse(memory.read(addr, StartInfo.sizeof()))
    assert info.magic == HVM_START_MAGIC and info.version == 1
    cmdline = memory.read(info.cmdline_paddr, 32)
    assert cmdline.split(b"\0")[0] == b"console=ttyS0 quiet"
    entries = [MemmapEntry.parse(memory.read(info.memmap_paddr + i * 24, 24)) for i in range(info.memmap_entries)]
    ram = sum(e.size for e in entries if e.type == E820_RAM)
    assert ram == (16 << 20) - (layout.HIGH_MEMORY - layout.EBDA_START)
    assert info.nr_modules == 1
    module = ModlistEntry.parse(memory.read(info.modlist_paddr, 32))
    assert memory.read(module.paddr, module.size) == b"INITRD" * 100
    assert module.paddr % 4096 == 0 and module.paddr + module.size <= 16 << 20
    assert memory.read(0x100000, 3) == b"\x90\x90\x00"


def test_memory_above_the_hole_is_mapped_high():
    entries = memory_map(4 << 30)
    assert (4 << 30, 1 << 30, E820_RAM) in entries
    assert layout.ram_regions(4 << 30) == [(0, 3 << 30), (4 << 30, 1 << 30)]


def test_kernel_larger_than_ram_is_a_config_error():
    memory = GuestMemory(layout.ram_regions(2 << 20))
    kernel = parse_kernel(make_elf(memsz=4 << 20))
    with pytest.raises(ConfigError, match="--mem"):
        load_pvh(memory, kernel, "k", "", None)


def test_kernel_below_1mib_is_refused():
    memory = GuestMemory(layout.ram_regions(4 << 20))
    kernel = parse_kernel(make_elf(paddr=0x8000, entry=0x8000))
    with pytest.raises(KernelImageError, match="below 1 MiB"):
        load_pvh(memory, kernel, "k", "", None)
