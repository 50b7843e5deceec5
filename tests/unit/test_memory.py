import pytest
from hypothesis import given, strategies as st

from vmm.errors import GuestMemoryError
from vmm.memory import GuestMemory

LAYOUT = [(0, 0x4000), (0x10000, 0x2000)]


def test_read_write_within_regions():
    mem = GuestMemory(LAYOUT)
    mem.write(0x3FF0, b"0123456789abcdef")
    mem.write_int(0x10000, 8, 0x1122334455667788)
    assert mem.read(0x3FF0, 16) == b"0123456789abcdef"
    assert mem.read_int(0x10000, 4) == 0x55667788
    assert mem.size == 0x6000


@given(addr=st.integers(min_value=-5, max_value=1 << 64), length=st.integers(min_value=-1, max_value=1 << 20))
def test_every_range_is_inside_one_region_or_refused(addr, length):
    mem = GuestMemory(LAYOUT)
    inside = length >= 0 and addr >= 0 and any(a <= addr and addr + length <= a + s for a, s in LAYOUT)
    assert mem.contains(addr, length) == inside
    if inside:
        assert len(mem.view(addr, length)) == length
    else:
        with pytest.raises(GuestMemoryError):
            mem.view(addr, length)


def test_range_spanning_two_regions_is_refused():
    mem = GuestMemory([(0, 0x1000), (0x1000, 0x1000)])
    with pytest.raises(GuestMemoryError):
        mem.read(0xFF0, 0x20)


def test_bad_layouts():
    for layout in ([(0, 100)], [(1, 0x1000)], [(0, 0x2000), (0x1000, 0x1000)]):
        with pytest.raises(ValueError):
            GuestMemory(layout)


def test_view_to_fill_over_a_snapshot_file_gives_private_writable_memory(tmp_path):
    """Where RAM maps a snapshot's file, a big blob's whole huge pages are replaced by
    anonymous memory: what is written reads back, the file is untouched, and the
    bytes around the blob still come from the file."""
    import os

    from vmm.memory import HUGE_PAGE, GuestMemory

    size = 16 << 20
    path = tmp_path / "mem"
    path.write_bytes(b"\xab" * size)
    fd = os.open(path, os.O_RDONLY)
    try:
        memory = GuestMemory([(0, size)], backing_fd=fd)
    finally:
        os.close(fd)
    start, length = HUGE_PAGE + 4096, 6 << 20
    blob = os.urandom(length)
    memory.write(start, blob)
    assert memory.read(start, length) == blob
    assert memory.read(start - 4096, 4096) == b"\xab" * 4096
    assert memory.read(start + length, 4096) == b"\xab" * 4096
    memory.close()
    assert path.read_bytes() == b"\xab" * size
