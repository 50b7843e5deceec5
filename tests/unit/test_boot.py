"""ELF parsing and the PVH start info, without a VM."""

import os
import time

import pytest

from vmm.boot.elf import PT_LOAD, PT_NOTE, XEN_ELFNOTE_PHYS32_ENTRY, KernelImage, Segment, load_kernel, parse_kernel
from vmm.boot.files import InputFile
from vmm.boot.protocol import select_boot
from vmm.boot.loader import check_kernel_placement, load_initrd, load_pvh, memory_map
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


# --- hostile and impossible kernels (issue 8, item 6) ---------------------------

def xen_note64(entry: int) -> bytes:
    return NoteHeader.build(dict(namesz=4, descsz=8, type=XEN_ELFNOTE_PHYS32_ENTRY)) + b"Xen\0" + entry.to_bytes(8, "little")


def make_elf_segments(segments, entry=0x100000, notes=None) -> bytes:
    """An ELF64 with one PT_LOAD per (paddr, data, memsz) and a PT_NOTE holding the PVH entry."""
    notes = xen_note(entry) if notes is None else notes
    phnum = len(segments) + 1
    offset = 64 + phnum * 56
    headers, body = b"", b""
    for paddr, data, memsz in segments:
        headers += Elf64ProgramHeader.build(
            dict(type=PT_LOAD, flags=5, offset=offset + len(body), vaddr=paddr, paddr=paddr, filesz=len(data), memsz=memsz, align=0x1000)
        )
        body += data
    headers += Elf64ProgramHeader.build(
        dict(type=PT_NOTE, flags=4, offset=offset + len(body), vaddr=0, paddr=0, filesz=len(notes), memsz=len(notes), align=4)
    )
    body += notes
    header = Elf64Header.build(
        dict(
            ident=dict(elf_class=2, data=1, version=1, pad=bytes(9)),
            type=2, machine=62, version=1, entry=entry, phoff=64, shoff=0, flags=0,
            ehsize=64, phentsize=56, phnum=phnum, shentsize=64, shnum=0, shstrndx=0,
        )
    )
    return header + headers + body


@pytest.mark.parametrize(
    "segments, entry, notes, message",
    [
        ([(0x100000, b"a" * 16, 0x2000), (0x101000, b"b" * 16, 0x1000)], 0x100000, None, r"segments 0 \(0x100000-0x102000\) and 1 \(0x101000-0x102000\) overlap"),
        ([(0x200000, b"a", 0x1000), (0x100000, b"b", 0x100001)], 0x100000, None, "segments 1 .* and 0 .* overlap"),
        ([(0x100000, b"a", 0x1000)], 0x1_0000_0000, xen_note64(0x1_0000_0000), "at or above 4 GiB"),
        ([(0x100000, b"a", 0x1000)], 0x1234_5678_9000, xen_note64(0x1234_5678_9000), "at or above 4 GiB"),
        ([(0x100000, b"a", 0x1000)], 0x300000, None, "PVH entry 0x300000 lies outside every loadable segment"),
        ([(0xFFFF_FFFF_FFFF_F000, b"a", 0x2000)], 0x100000, None, "wraps past 2\\^64"),
    ],
)
def test_impossible_layouts_are_refused_by_name(segments, entry, notes, message):
    with pytest.raises(KernelImageError, match=message) as info:
        parse_kernel(make_elf_segments(segments, entry, notes), "k.elf")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "addr, what",
    [(0x6000, "start info"), (0x6800, "module list"), (0x7400, "memory map"), (0x2F000, "command line")],
)
def test_segment_over_a_boot_structure_is_refused(addr, what):
    memory = GuestMemory(layout.ram_regions(4 << 20))
    kernel = parse_kernel(make_elf_segments([(addr, b"\x90", 0x100)], entry=addr))
    # below 1 MiB is refused too; the boot structure is named when the segment also covers one
    with pytest.raises(KernelImageError) as info:
        check_kernel_placement(kernel.segments, kernel.pvh_entry, memory.size, "k")
    assert "below 1 MiB" in str(info.value)
    with pytest.raises(KernelImageError, match=f"overlaps the PVH {what}"):
        check_kernel_placement_from_1mib(kernel, memory.size)


def check_kernel_placement_from_1mib(kernel, ram_size):
    # The 1 MiB rule comes first; moving it aside shows the boot structure check on its own.
    from unittest import mock

    with mock.patch.object(layout, "HIGH_MEMORY", 0):
        check_kernel_placement(kernel.segments, kernel.pvh_entry, ram_size, "k")


def test_entry_outside_guest_ram_is_a_config_error_before_anything_is_written():
    memory = GuestMemory(layout.ram_regions(4 << 20))
    kernel = parse_kernel(make_elf_segments([(0x100000, b"\x90", 0x1000), (0x800000, b"\x90", 0x1000)], entry=0x800000))
    with pytest.raises(ConfigError, match="--mem"):
        load_pvh(memory, kernel, "k", "", None)
    assert memory.read(0x100000, 1) == b"\0"  # nothing loaded


def test_entry_in_the_mmio_hole_is_refused():
    memory = GuestMemory(layout.ram_regions(4 << 30))
    kernel = KernelImage(0xD000_0000, (Segment(0x100000, b"\x90", 0x1000),))
    with pytest.raises(ConfigError, match="PVH entry 0xd0000000 is outside guest RAM"):
        load_pvh(memory, kernel, "k", "", None)
    memory.close()


def test_adjacent_segments_are_fine():
    kernel = parse_kernel(make_elf_segments([(0x100000, b"a", 0x1000), (0x101000, b"b", 0x1000)]))
    memory = GuestMemory(layout.ram_regions(4 << 20))
    load_pvh(memory, kernel, "k", "", None)
    assert memory.read(0x100000, 1) == b"a" and memory.read(0x101000, 1) == b"b"


# --- the command line the guest keeps (issue 8, item 7) ---------------------------

def test_final_command_line_over_2047_bytes_is_refused_with_the_lengths():
    memory = GuestMemory(layout.ram_regions(4 << 20))
    kernel = parse_kernel(make_elf())
    user = "x" * 2000
    final = user + " virtio_mmio.device=4K@0xd0000000:5" * 2
    with pytest.raises(ConfigError) as info:
        load_pvh(memory, kernel, "k", final, None, user_cmdline_length=len(user))
    message = str(info.value)
    assert f"{len(final)} bytes" in message and "2000 yours" in message and "at most 2047" in message
    with pytest.raises(ConfigError, match=f"is {len(final)} bytes .*at most 2047"):
        load_pvh(memory, kernel, "k", final, None)
    assert layout.COMMAND_LINE_SIZE == 2048


def test_command_line_of_exactly_2047_bytes_is_kept_whole():
    memory = GuestMemory(layout.ram_regions(4 << 20))
    load_pvh(memory, parse_kernel(make_elf()), "k", "y" * 2047, None)
    assert memory.read(layout.CMDLINE_ADDR, 2048) == b"y" * 2047 + b"\0"


@pytest.mark.parametrize("cmdline, message", [("a\udcffb", "not valid UTF-8"), ("a\0b", "NUL")])
def test_malformed_command_line_is_a_config_error(cmdline, message):
    memory = GuestMemory(layout.ram_regions(4 << 20))
    with pytest.raises(ConfigError, match=message):
        load_pvh(memory, parse_kernel(make_elf()), "k", cmdline, None)


# --- kernel and initrd files (issue 8, item 4) ---------------------------------------

@pytest.mark.parametrize("what", ["kernel", "initrd"])
@pytest.mark.parametrize("kind", ["device", "fifo", "directory"])
def test_non_regular_inputs_are_refused_without_reading(tmp_path, what, kind):
    path = {"device": "/dev/zero", "directory": str(tmp_path)}.get(kind)
    if kind == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)  # nobody writes: an ordinary open would block forever
    kernel_file = tmp_path / "k.elf"
    kernel_file.write_bytes(make_elf())
    with pytest.raises(ConfigError, match="not a regular file" if kind != "directory" else "is a directory"):
        if what == "kernel":
            load_kernel(path)
        else:
            load_initrd(path, parse_kernel(make_elf()), 64 << 20)


def test_sparse_initrd_too_big_is_refused_before_reading(tmp_path):
    big = tmp_path / "initrd"
    with open(big, "wb") as f:
        f.truncate(2 << 30)  # sparse: reading it would take seconds and 2 GiB
    kernel = parse_kernel(make_elf())
    started = time.monotonic()
    with pytest.raises(ConfigError, match="initrd of 2147483648 bytes does not fit"):
        load_initrd(str(big), kernel, 64 << 20)
    with pytest.raises(ConfigError, match="does not fit"):
        select_boot(str(_write(tmp_path / "k.elf", make_elf())), str(big), 64 << 20)
    assert time.monotonic() - started < 2


def _write(path, data):
    path.write_bytes(data)
    return path


def write_sparse_kernel(path, size=1 << 30):
    """An ELF whose one segment at 1 MiB takes ``size`` - 4 KiB bytes of file data, from a hole."""
    elf = bytearray(make_elf_segments([(0x100000, b"\x90" * 16, 0x1000)]))
    ph = 64  # segment 0's program header: offset at +8, filesz at +32, memsz at +40
    elf[ph + 8 : ph + 16] = (4096).to_bytes(8, "little")
    elf[ph + 32 : ph + 40] = (size - 4096).to_bytes(8, "little")
    elf[ph + 40 : ph + 48] = (size - 4096).to_bytes(8, "little")
    with open(path, "wb") as f:
        f.write(elf)
        f.truncate(size)
    return path


def test_kernel_too_big_for_ram_is_refused_before_its_data_is_read(tmp_path):
    path = write_sparse_kernel(tmp_path / "k.elf")
    started = time.monotonic()
    with pytest.raises(ConfigError, match="needs guest RAM up to 0x400ff000"):
        load_kernel(str(path), 64 << 20)
    with pytest.raises(ConfigError, match="--mem"):
        select_boot(str(path), None, 64 << 20)
    assert time.monotonic() - started < 2


def test_file_that_grows_while_read_gives_only_the_checked_size(tmp_path):
    path = tmp_path / "initrd"
    path.write_bytes(b"A" * 8192)
    source = InputFile(str(path), "initrd")
    with open(path, "ab") as f:
        f.write(b"B" * (1 << 20))  # grows after the check
    assert source.read(0, source.size) == b"A" * 8192
    with pytest.raises(ConfigError, match="read past its end"):
        source.read(0, source.size + 1)
    source.close()


def test_file_that_shrinks_while_read_is_an_error(tmp_path):
    path = tmp_path / "initrd"
    path.write_bytes(b"A" * 8192)
    with InputFile(str(path), "initrd") as source:
        os.truncate(path, 100)
        with pytest.raises(ConfigError, match="shrank while it was being read"):
            source.read(0, source.size)


def test_load_kernel_and_initrd_from_files(tmp_path):
    kernel = load_kernel(str(_write(tmp_path / "k.elf", make_elf(code=b"\x90" * 5, memsz=0x2000))), 16 << 20)
    assert kernel.segments[0].data == b"\x90" * 5
    assert load_initrd(str(_write(tmp_path / "initrd", b"I" * 5000)), kernel, 16 << 20) == b"I" * 5000
    headers_only = load_kernel(str(tmp_path / "k.elf"), 16 << 20, read_data=False)
    assert headers_only.segments[0].data is None and headers_only.pvh_entry == kernel.pvh_entry


def test_a_linux_vmlinux_is_recognised_by_its_guest_os_note_and_gets_the_rsdp(tmp_path):
    """XEN_ELFNOTE_GUEST_OS "linux" makes a PVH kernel a Linux one (ACPI tables, RSDP in
    the start info); the bundled guest has no such note and gets neither."""
    import struct

    from vmm.boot.protocol import PvhBoot
    from vmm.boot.pvh import StartInfo
    from vmm.memory import GuestMemory
    from vmm.x86 import layout

    def note(kind: int, desc: bytes) -> bytes:
        return struct.pack("<III", 4, len(desc), kind) + b"Xen\0" + desc + bytes(-len(desc) % 4)

    notes = note(18, struct.pack("<I", 0x100000)) + note(6, b"linux\0\0\0")
    code = b"\xeb\xfe"
    phoff, notes_off, code_off = 64, 64 + 2 * 56, 64 + 2 * 56 + len(notes)
    ehdr = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x100000, phoff, 0, 0, 64, 56, 2, 64, 0, 0)
    phdrs = struct.pack("<IIQQQQQQ", 4, 4, notes_off, 0, 0, len(notes), len(notes), 4)
    phdrs += struct.pack("<IIQQQQQQ", 1, 5, code_off, 0x100000, 0x100000, len(code), len(code), 0x1000)
    path = tmp_path / "vmlinux"
    path.write_bytes(ehdr + phdrs + notes + code)
    boot = PvhBoot(str(path), None, 64 << 20)
    assert boot.uses_acpi
    memory = GuestMemory([(0, 64 << 20)])
    boot.load(memory, "console=ttyS0", acpi_rsdp=0xE0000)
    info = StartInfo.unpack_from(memory.read(layout.START_INFO_ADDR, StartInfo.size))
    assert info.rsdp_paddr == 0xE0000
