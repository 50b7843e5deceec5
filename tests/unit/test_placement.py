"""vmm/sandbox/placement.py: the host's reading of a program's load segments."""

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from vmm.memory import GuestMemory
from vmm.sandbox import placement

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")


def elf(e_type=2, loads=((0x400000, 0, 0x200, 0x200),), interp=False) -> bytes:
    """A minimal ELF: (vaddr, offset, filesz, memsz) per PT_LOAD."""
    phdrs = [(1, 5, off, va, va, fs, ms, 0x1000) for va, off, fs, ms in loads]
    if interp:
        phdrs.append((3, 4, 0, 0, 0, 1, 1, 1))
    head = EHDR.pack(b"\x7fELF\x02\x01\x01" + bytes(9), e_type, 62, 1, 0x400000, 64, 0, 0, 64, 56, len(phdrs), 0, 0, 0)
    body = head + b"".join(PHDR.pack(*p) for p in phdrs)
    return body + bytes(max(0x3000 - len(body), 0))


def test_an_executable_is_placed_at_its_addresses_and_static_pie_at_the_guests_base():
    image = elf(loads=((0x400000, 0, 0x200, 0x200), (0x401000, 0x1000, 0x100, 0x5000)))
    assert placement.segments(image) == (0x400000, 0x406000, [(0x400000, 0, 0x200), (0x401000, 0x1000, 0x100)])
    pie = elf(e_type=3, loads=((0, 0, 0x200, 0x200),))
    assert placement.segments(pie) == (placement.STATIC_PIE_BASE, placement.STATIC_PIE_BASE + 0x1000, [(placement.STATIC_PIE_BASE, 0, 0x200)])


def test_what_the_guest_refuses_is_not_placed():
    assert placement.segments(elf(interp=True)) is None  # dynamic
    assert placement.segments(elf(loads=((0x400000, 0, 0x300, 0x200),))) is None  # filesz > memsz
    assert placement.segments(elf(loads=((0x400000, 0x2f00, 0x200, 0x200),))) is None  # past the file's end
    assert placement.segments(elf(e_type=3, loads=((0x1000, 0, 0x200, 0x200),))) is None  # PIE not at 0
    assert placement.segments(elf(loads=((2**64 - 0x100, 0, 0x10, 0x200),))) is None  # wraps
    assert placement.segments(b"\x7fELF") is None


def test_segments_are_written_only_inside_the_allowed_range():
    memory = GuestMemory([(0, 16 << 20)])
    image = elf(loads=((0x400000, 0, 0x200, 0x200),))
    memory.write(0x800000, image)
    assert placement.place_program(memory, 0x800000, len(image), 0x100000, 0x700000) == (0x400000, 0x401000)
    assert memory.read(0x400000, 0x200) == image[:0x200]
    assert placement.place_program(memory, 0x800000, len(image), 0x500000, 0x700000) == (0, 0)  # below the floor
    assert placement.place_program(memory, 0x800000, len(image), 0x100000, 0x400800) == (0, 0)  # past the limit
    memory.close()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 4))
def test_any_bytes_give_a_plan_inside_its_span_or_none(data, header_type):
    image = bytearray(elf(e_type=2 + header_type % 2))
    image[64 : 64 + len(data)] = data  # program headers from the fuzzer
    plan = placement.segments(bytes(image))
    if plan is not None:
        start, end, loads = plan
        assert start % 4096 == 0 and end % 4096 == 0 and start < end
        for addr, offset, length in loads:
            assert start <= addr and addr + length <= end and offset + length <= len(image)
