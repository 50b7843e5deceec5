"""The memory file without a VM: sparse writing and merging a diff onto its base."""

import mmap
import os

import pytest

from vmm.memory import GuestMemory
from vmm.persist import SnapshotError, merge_diff
from vmm.snapshot.memory_file import candidate_pages, write_memory_file

PAGE = mmap.PAGESIZE


def test_untouched_and_zero_pages_stay_holes(tmp_path):
    memory = GuestMemory([(0, 256 * PAGE)])
    memory.write(3 * PAGE, b"three")
    memory.write(200 * PAGE + 17, b"two hundred")
    memory.view(50 * PAGE, PAGE)[:] = bytes(PAGE)  # touched, but zero
    path = str(tmp_path / "ram")
    pages = candidate_pages(memory)
    assert pages[0][3] and pages[0][200] and not pages[0][100]  # never touched: not resident
    written = write_memory_file(memory, path, pages, skip_zero=True)
    assert written == 2 * PAGE
    assert os.path.getsize(path) == 256 * PAGE
    assert os.stat(path).st_blocks * 512 <= 4 * PAGE
    with open(path, "rb") as f:
        data = f.read()
    assert data[3 * PAGE : 3 * PAGE + 5] == b"three" and data[200 * PAGE + 17 : 200 * PAGE + 28] == b"two hundred"
    assert data.count(0) == len(data) - len(b"three") - len(b"two hundred")
    memory.close()


def test_file_backed_memory_keeps_its_file_data_and_copies_on_write(tmp_path):
    path = tmp_path / "ram"
    with open(path, "wb") as f:
        f.truncate(16 * PAGE)
        f.seek(5 * PAGE)
        f.write(b"from the file")
    fd = os.open(path, os.O_RDONLY)
    memory = GuestMemory([(0, 16 * PAGE)], backing_fd=fd)
    os.close(fd)
    assert memory.read(5 * PAGE, 13) == b"from the file"
    memory.write(9 * PAGE, b"private")
    assert path.read_bytes()[9 * PAGE : 9 * PAGE + 7] == bytes(7)  # MAP_PRIVATE: the file is untouched
    out = str(tmp_path / "again")
    write_memory_file(memory, out, candidate_pages(memory), skip_zero=True)
    data = open(out, "rb").read()
    assert data[5 * PAGE : 5 * PAGE + 13] == b"from the file" and data[9 * PAGE : 9 * PAGE + 7] == b"private"
    memory.close()


def test_merge_diff_copies_only_the_diff_pages(tmp_path):
    base, diff = tmp_path / "base", tmp_path / "diff"
    base.write_bytes(b"B" * (8 * PAGE))
    with open(diff, "wb") as f:
        f.truncate(8 * PAGE)
        f.seek(2 * PAGE)
        f.write(b"D" * PAGE)
        f.seek(6 * PAGE)
        f.write(bytes(PAGE))  # a page the guest zeroed: written, so it is merged too
    assert merge_diff(str(diff), str(base)) == 2 * PAGE
    data = base.read_bytes()
    assert data[: 2 * PAGE] == b"B" * 2 * PAGE and data[2 * PAGE : 3 * PAGE] == b"D" * PAGE
    assert data[6 * PAGE : 7 * PAGE] == bytes(PAGE) and data[7 * PAGE :] == b"B" * PAGE


def test_merge_refuses_files_of_different_sizes(tmp_path):
    (tmp_path / "a").write_bytes(bytes(PAGE))
    (tmp_path / "b").write_bytes(bytes(2 * PAGE))
    with pytest.raises(SnapshotError, match="differ in size"):
        merge_diff(str(tmp_path / "a"), str(tmp_path / "b"))
    with pytest.raises(SnapshotError, match="No such file"):
        merge_diff(str(tmp_path / "missing"), str(tmp_path / "b"))
