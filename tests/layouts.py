"""The binary layouts vmm reads and writes, declared a second time with construct.

vmm itself uses struct (vmm/binary.py) because importing construct costs
~27 ms of start-up. These declarations, written from the specs, are the
tests' independent reading: tests build guest-side structures and parse vmm's
output with them, and test_layouts.py checks both readings agree field by field.
"""

from construct import Bytes, Const, Int8ul, Int16ul, Int32ul, Int64ul, Struct

# ELF (System V ABI; the PVH entry is a Xen note)
ElfIdent = Struct(
    "magic" / Const(b"\x7fELF"),
    "elf_class" / Int8ul,
    "data" / Int8ul,
    "version" / Int8ul,
    "pad" / Bytes(9),
)


def _elf_header(word):
    return Struct(
        "ident" / ElfIdent,
        "type" / Int16ul,
        "machine" / Int16ul,
        "version" / Int32ul,
        "entry" / word,
        "phoff" / word,
        "shoff" / word,
        "flags" / Int32ul,
        "ehsize" / Int16ul,
        "phentsize" / Int16ul,
        "phnum" / Int16ul,
        "shentsize" / Int16ul,
        "shnum" / Int16ul,
        "shstrndx" / Int16ul,
    )


Elf64Header = _elf_header(Int64ul)
Elf32Header = _elf_header(Int32ul)
Elf64ProgramHeader = Struct(
    "type" / Int32ul,
    "flags" / Int32ul,
    "offset" / Int64ul,
    "vaddr" / Int64ul,
    "paddr" / Int64ul,
    "filesz" / Int64ul,
    "memsz" / Int64ul,
    "align" / Int64ul,
)
Elf32ProgramHeader = Struct(
    "type" / Int32ul,
    "offset" / Int32ul,
    "vaddr" / Int32ul,
    "paddr" / Int32ul,
    "filesz" / Int32ul,
    "memsz" / Int32ul,
    "flags" / Int32ul,
    "align" / Int32ul,
)
NoteHeader = Struct("namesz" / Int32ul, "descsz" / Int32ul, "type" / Int32ul)

# Xen PVH: xen/include/public/arch-x86/hvm/start_info.h, version 1
StartInfo = Struct(
    "magic" / Const(0x336EC578, Int32ul),
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
ModlistEntry = Struct("paddr" / Int64ul, "size" / Int64ul, "cmdline_paddr" / Int64ul, "reserved" / Int64ul)
MemmapEntry = Struct("addr" / Int64ul, "size" / Int64ul, "type" / Int32ul, "reserved" / Int32ul)

# The guest's fault report to the exit device (guest/README.md)
FaultRecord = Struct(
    "vector" / Int64ul,
    "error_code" / Int64ul,
    "rip" / Int64ul,
    "cs" / Int64ul,
    "rflags" / Int64ul,
    "rsp" / Int64ul,
    "ss" / Int64ul,
)

# virtio 1.x: 2.7.5 struct virtq_desc, 2.7.8 struct virtq_used_elem
Descriptor = Struct("addr" / Int64ul, "len" / Int32ul, "flags" / Int16ul, "next" / Int16ul)
UsedElem = Struct("id" / Int32ul, "len" / Int32ul)

# virtio 1.x 5.2.6 struct virtio_blk_req header, 5.2.4 struct virtio_blk_config
BlockRequestHeader = Struct("type" / Int32ul, "reserved" / Int32ul, "sector" / Int64ul)
BlockConfig = Struct(
    "capacity" / Int64ul,
    "size_max" / Int32ul,
    "seg_max" / Int32ul,
    "geometry" / Struct("cylinders" / Int16ul, "heads" / Int8ul, "sectors" / Int8ul),
    "blk_size" / Int32ul,
    "topology" / Struct(
        "physical_block_exp" / Int8ul,
        "alignment_offset" / Int8ul,
        "min_io_size" / Int16ul,
        "opt_io_size" / Int32ul,
    ),
    "writeback" / Int8ul,
    "unused0" / Int8ul,
    "num_queues" / Int16ul,
    "max_discard_sectors" / Int32ul,
    "max_discard_seg" / Int32ul,
    "discard_sector_alignment" / Int32ul,
    "max_write_zeroes_sectors" / Int32ul,
    "max_write_zeroes_seg" / Int32ul,
    "write_zeroes_may_unmap" / Int8ul,
    "unused1" / Bytes(3),
)
