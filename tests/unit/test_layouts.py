"""vmm's struct layouts against the construct declarations in tests/layouts.py.

Each field gets a distinct value, so a swapped, missized or misplaced field
shows up as a mismatch in one direction or the other.
"""

import re

import pytest

from vmm.boot import elf, pvh
from vmm.devices import exit_device
from vmm.devices.virtio import block, queue

from .. import layouts


def flatten(parsed) -> dict:
    """construct's parse result as {field: value}, nested structs flattened."""
    flat = {}
    for name, value in parsed.items():
        if name.startswith("_"):
            continue
        if hasattr(value, "items"):
            flat.update(flatten(value))
        else:
            flat[name] = value
    return flat


PAIRS = [
    (elf.Elf64ProgramHeader, layouts.Elf64ProgramHeader),
    (elf.Elf32ProgramHeader, layouts.Elf32ProgramHeader),
    (elf.NoteHeader, layouts.NoteHeader),
    (pvh.ModlistEntry, layouts.ModlistEntry),
    (pvh.MemmapEntry, layouts.MemmapEntry),
    (exit_device.FaultRecord, layouts.FaultRecord),
    (block.BLOCK_CONFIG, layouts.BlockConfig),
]


def distinct_values(layout) -> dict:
    """A different value for every field: field i gets i + 1 (bytes fields: that byte repeated)."""
    codes = re.findall(r"(\d*)([a-zA-Z])", layout.struct.format.lstrip("<"))
    values = {}
    for number, (name, (count, code)) in enumerate(zip(layout.fields._fields, codes)):
        values[name] = bytes([number + 1] * int(count)) if code == "s" else number + 1
    return values


@pytest.mark.parametrize("ours, reference", PAIRS, ids=[ours.fields.__name__ for ours, _ in PAIRS])
def test_layout_agrees_with_the_construct_declaration(ours, reference):
    assert ours.size == reference.sizeof()
    values = distinct_values(ours)
    packed = ours.pack(**values)
    assert flatten(reference.parse(packed)) == values
    assert ours.unpack_from(packed)._asdict() == values


def test_start_info_and_elf_headers_agree():
    info = dict(magic=pvh.HVM_START_MAGIC, version=1, flags=2, nr_modules=3, modlist_paddr=4, cmdline_paddr=5,
                rsdp_paddr=6, memmap_paddr=7, memmap_entries=8, reserved=9)
    packed = pvh.StartInfo.pack(**info)
    assert flatten(layouts.StartInfo.parse(packed)) == info
    for ours, reference in ((elf.Elf64Header, layouts.Elf64Header), (elf.Elf32Header, layouts.Elf32Header)):
        header = dict(type=2, machine=62, version=1, entry=0x100000, phoff=64, shoff=7, flags=8, ehsize=9,
                      phentsize=10, phnum=11, shentsize=12, shnum=13, shstrndx=14)
        ident = dict(elf_class=2, data=1, version=1, pad=bytes(9))
        parsed = ours.unpack_from(reference.build(dict(ident=ident, **header)))
        assert parsed.magic == elf.ELF_MAGIC and (parsed.elf_class, parsed.data, parsed.ident_version) == (2, 1, 1)
        assert {name: getattr(parsed, name) for name in header} == header


def test_virtqueue_wire_formats_agree():
    descriptor = layouts.Descriptor.build(dict(addr=1, len=2, flags=3, next=4))
    assert queue._DESC.unpack(descriptor) == (1, 2, 3, 4) and queue.DESC_SIZE == len(descriptor)
    assert layouts.UsedElem.parse(queue._USED_ELEM.pack(5, 6)) == dict(id=5, len=6)
    assert queue.USED_ELEM_SIZE == layouts.UsedElem.sizeof()
    assert block.HEADER_SIZE == layouts.BlockRequestHeader.sizeof()
    header = layouts.BlockRequestHeader.build(dict(type=1, reserved=2, sector=3))
    assert block.REQUEST_HEADER.unpack(header) == (1, 2, 3)
