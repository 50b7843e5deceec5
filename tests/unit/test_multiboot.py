"""Multiboot v1: finding the header, both load forms, the information structure; no VM."""

import re
import struct

import pytest
from construct import Int32ul, Int64ul, Struct

from vmm.boot import multiboot
from vmm.boot.multiboot import (
    BOOTLOADER_MAGIC,
    HEADER_MAGIC,
    find_header,
    load_multiboot,
    parse_multiboot,
)
from vmm.boot.protocol import MultibootBoot, PvhBoot, select_boot
from vmm.errors import ConfigError, KernelImageError
from vmm.memory import GuestMemory
from vmm.x86 import layout

from .test_boot import make_elf, xen_note

# The spec's structures read a second time, with construct.
SPEC_LAYOUTS = {
    "Header": Struct(*(name / Int32ul for name in "magic flags checksum header_addr load_addr load_end_addr bss_end_addr entry_addr".split())),
    "Info": Struct(*(name / Int32ul for name in (
        "flags mem_lower mem_upper boot_device cmdline mods_count mods_addr syms0 syms1 syms2 syms3 "
        "mmap_length mmap_addr drives_length drives_addr config_table boot_loader_name apm_table").split())),
    "Module": Struct("mod_start" / Int32ul, "mod_end" / Int32ul, "string" / Int32ul, "reserved" / Int32ul),
    "MmapEntry": Struct("size" / Int32ul, "base_addr" / Int64ul, "length" / Int64ul, "type" / Int32ul),
}


@pytest.mark.parametrize("name", SPEC_LAYOUTS)
def test_layouts_match_the_spec(name):
    ours, spec = getattr(multiboot, name), SPEC_LAYOUTS[name]
    values = {field: i + 1 for i, field in enumerate(ours.fields._fields)}
    assert ours.size == spec.sizeof()
    assert dict((k, v) for k, v in spec.parse(ours.pack(**values)).items() if not k.startswith("_")) == values


def header(flags=0x3, fields=None, checksum=None):
    checksum = -(HEADER_MAGIC + flags) & 0xFFFFFFFF if checksum is None else checksum
    data = struct.pack("<III", HEADER_MAGIC, flags, checksum)
    if fields is not None:
        data += struct.pack("<5I", *fields)
    return data


def kludge_image(load_addr=0x100000, pad=8, code=b"\xf4" * 32, bss=0x100, entry=None, load_end=None):
    """A flat image: `pad` bytes, the header (flag 16), then code; loaded at load_addr."""
    header_addr = load_addr + pad
    size = pad + 32 + len(code)
    fields = (header_addr, load_addr, load_addr + size if load_end is None else load_end, load_addr + size + bss if bss else 0, entry or header_addr + 32)
    return bytes(pad) + header(0x10003, fields) + code


def test_header_search_rules():
    assert find_header(bytes(16) + header())[0] == 16
    assert find_header(bytes(8190) + header()) is None  # not 4-byte aligned
    assert find_header(bytes(8180) + header())[0] == 8180  # the last place it fits in 8 KiB
    assert find_header(bytes(8184) + header()) is None  # must lie wholly in the first 8192 bytes
    assert find_header(header(checksum=0)) is None
    assert find_header(b"\x02\xb0\xad\x1b") is None


def test_elf_form_loads_by_program_headers():
    image = make_elf(code=header() + b"\xf4" * 8, memsz=0x3000, notes=b"", entry=0x10000C)
    kernel = parse_multiboot(image, "k")
    assert (kernel.form, kernel.entry, kernel.flags) == ("ELF", 0x10000C, 0x3)
    (segment,) = kernel.segments
    assert (segment.guest_addr, segment.memsz, len(segment.data)) == (0x100000, 0x3000, 20)


def test_address_fields_load_a_flat_image():
    image = kludge_image()
    kernel = parse_multiboot(image, "k")
    assert (kernel.form, kernel.entry) == ("a.out kludge", 0x100008 + 32)
    (segment,) = kernel.segments
    assert (segment.guest_addr, segment.data, segment.memsz) == (0x100000, image, len(image) + 0x100)


@pytest.mark.parametrize(
    "image, message",
    [
        (header(flags=0x3 | 0x8), "requires features vmm does not know (flags 0x8)"),
        (header() + bytes(64), "not an ELF"),
        (kludge_image(load_end=0x100000 + 4096), "lies past the end of the file"),
        (kludge_image(load_end=0xFFFFF), "load_end_addr lies below load_addr"),
        (bytes(8) + header(0x10003, (0x100000, 0x100010, 0, 0, 0x100000)), "load_addr 0x100010 lies above header_addr"),
        (header(0x10003, (0x100010, 0x100000, 0, 0, 0x100000)), "reaches before the start of the file"),
        (header(0x10003, (0x100000, 0x100000, 0, 0x100004, 0x100000)), "bss_end_addr lies below"),
        (header(0x10003), "cut short"),
    ],
)
def test_malformed_headers_get_one_line(image, message):
    with pytest.raises(KernelImageError, match=re.escape(message)):
        parse_multiboot(image, "k")


@pytest.fixture
def memory():
    mem = GuestMemory(layout.ram_regions(16 << 20))
    yield mem
    mem.close()


def test_information_structure(memory):
    kernel = parse_multiboot(kludge_image(), "k")
    info_addr = load_multiboot(memory, kernel, "/boot/k", "a b=c", b"MODULE", "/boot/m args")
    info = multiboot.Info.fields._make(struct.unpack_from("<18I", memory.read(info_addr, multiboot.Info.size)))
    assert info.flags == (1 << 0) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9)
    assert (info.mem_lower, info.mem_upper) == (639, 15 * 1024)
    assert memory.read(info.cmdline, 14) == b"/boot/k a b=c\0"
    assert memory.read(info.boot_loader_name, 4) == b"vmm\0"
    assert info.mods_count == 1
    module = multiboot.Module.unpack_from(memory.read(info.mods_addr, 16))
    assert module.mod_start % 4096 == 0 and module.mod_end - module.mod_start == 6
    assert memory.read(module.mod_start, 6) == b"MODULE"
    assert memory.read(module.string, 13) == b"/boot/m args\0"
    table = memory.read(info.mmap_addr, info.mmap_length)
    entries = [multiboot.MmapEntry.unpack_from(table, at) for at in range(0, len(table), 24)]
    assert all(e.size == 20 for e in entries)
    assert (entries[0].base_addr, entries[0].length, entries[0].type) == (0, 0x9FC00, 1)
    assert (entries[-1].base_addr, entries[-1].base_addr + entries[-1].length, entries[-1].type) == (0x100000, 16 << 20, 1)
    assert memory.read(0x100000, 8) == bytes(8)  # the image itself, bss zeroed after it
    assert BOOTLOADER_MAGIC == 0x2BADB002


def test_kernel_below_1_mib_or_outside_ram_is_refused(memory):
    with pytest.raises(KernelImageError, match="below 1 MiB"):
        load_multiboot(memory, parse_multiboot(kludge_image(load_addr=0x8000), "k"), "k", "", None, None)
    with pytest.raises(ConfigError, match="give the VM more memory"):
        load_multiboot(memory, parse_multiboot(kludge_image(load_addr=0x2000000), "k"), "k", "", None, None)


def test_select_boot_prefers_pvh_then_multiboot(tmp_path):
    both = tmp_path / "both"
    both.write_bytes(make_elf(code=header() + b"\xf4" * 8))  # a PVH note and a Multiboot header
    assert isinstance(select_boot(str(both), None, 64 << 20), PvhBoot)
    flat = tmp_path / "flat"
    flat.write_bytes(kludge_image())
    boot = select_boot(str(flat), None, 64 << 20)
    assert isinstance(boot, MultibootBoot) and boot.description == "multiboot (a.out kludge)"
    elf = tmp_path / "elf"
    elf.write_bytes(make_elf(code=header() + b"\xf4" * 8, notes=xen_note(0x100000, note_type=17)))
    assert select_boot(str(elf), None, 64 << 20).description == "multiboot (ELF)"


@pytest.mark.parametrize("content, what", [(b"\x7fELF" + bytes(60), "an ELF with no PVH entry note"), (b"#!/bin/sh\n", "not an ELF file")])
def test_unrecognised_kernel_names_the_formats_looked_for(tmp_path, content, what):
    path = tmp_path / "k"
    path.write_bytes(make_elf(notes=b"") if what.startswith("an ELF") else content)
    with pytest.raises(KernelImageError) as raised:
        select_boot(str(path), None, 64 << 20)
    message = str(raised.value)
    assert what in message and "XEN_ELFNOTE_PHYS32_ENTRY" in message and "Multiboot header (magic 0x1BADB002" in message
    assert "\n" not in message
