"""Programs kept laid out in the user's cache, for warm clones to map, not copy.

A warm run writes its program into the clone's RAM twice: the file, into the
bundle (the guest's /bin/PROG, page-aligned there: bundle.py), and its PT_LOAD
segments where the guest's loader would put them (placement.py). For a glibc
hello that is ~190 pages each, ~0.9 ms of a `vmm exec`. From a program's
second run on this machine both come from one file in ~/.cache/vmm/programs/:
a header page, the program padded to whole pages, then its laid-out span;
each clone maps the parts copy-on-write (the page cache shares them; the
guest faults in only the pages it touches).

Keyed by the program's identity (path, device, inode, size, modification and
change times): a rebuilt or rewritten program is a new entry, never a stale
one. A program's first run leaves a marker and its second writes the entry,
so a one-off run pays a file creation, not a copy. An entry is written whole
and renamed into place, never changed after: unlike the user's own file, it
cannot be truncated under a clone that maps it. One that is not the user's
own, is writable by others or is not in the expected shape is not used.
"""

from __future__ import annotations

import os
import stat
import threading

from .. import user_cache
from .placement import PAGE

MAGIC = b"VMMPROG1"
HEADER = 32  # magic, program size, span start, span end (u64 each, little-endian)
MAX_PROGRAM = 256 << 20  # larger programs are copied every run
KEEP_BYTES = 1 << 30  # entries kept per user, oldest removed first
KEEP_MARKERS = 4096
OPEN_ENTRIES = 16  # descriptors a process keeps open

_lock = threading.Lock()
_open: dict[str, Entry] = {}


class Entry:
    """An open entry: ``fd``, the program's ``size`` and its laid-out ``span``."""

    def __init__(self, fd: int, size: int, span: tuple[int, int]):
        self.fd, self.size, self.span = fd, size, span

    program_offset = PAGE

    @property
    def span_offset(self) -> int:
        return PAGE + _pages(self.size)


def _pages(n: int) -> int:
    return -(-n // PAGE) * PAGE


def _base() -> str:
    return user_cache.cache_dir("programs")


def file_identity(path, st: os.stat_result) -> tuple:
    """What names a regular file's bytes here: path, device, inode, size, modification and change times."""
    return (os.fsdecode(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def ran_before(path) -> bool:
    """Whether the file at ``path``, unchanged, has an entry: it ran in a sandbox
    here, so it passed the runner's checks (an ELF the guest can run)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and lookup(file_identity(path, st)) is not None


def _key(identity: tuple) -> str:
    return user_cache.key(repr(identity).encode())


def lookup(identity: tuple) -> Entry | None:
    """The entry of the program ``identity`` names (bundle.py's exec_identity), or None."""
    key = _key(identity)
    with _lock:
        entry = _open.get(key)
    if entry is not None:
        return entry
    try:
        fd = os.open(os.path.join(_base(), key), os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    entry = _check(fd, identity)
    if entry is None:
        os.close(fd)
        return None
    with _lock:
        _open[key] = entry
        while len(_open) > OPEN_ENTRIES:
            os.close(_open.pop(next(iter(_open))).fd)  # clones keep their own mappings
    return entry


def _check(fd: int, identity: tuple) -> Entry | None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or not user_cache.trusted(st):
        return None
    header = os.pread(fd, HEADER, 0)
    if len(header) != HEADER or header[:8] != MAGIC:
        return None
    size, start, end = (int.from_bytes(header[i : i + 8], "little") for i in (8, 16, 24))
    if size != identity[3] or (start | end) % PAGE or not start < end or st.st_size != PAGE + _pages(size) + end - start:
        return None
    return Entry(fd, size, (start, end))


def note_run(identity: tuple, memory, program_addr: int, span: tuple[int, int]) -> None:
    """After a run that copied the program into a paused clone's RAM (at
    ``program_addr``, its segments at ``span``): leave a marker the first time,
    and the second time make the entry from those very bytes. Failures leave
    no entry (the next run copies again)."""
    size = identity[3]
    if span == (0, 0) or size > MAX_PROGRAM or span[1] - span[0] > MAX_PROGRAM:
        return
    base, key = _base(), _key(identity)
    path = os.path.join(base, key)
    marker, temporary = path + ".seen", None
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        if not user_cache.trusted(os.stat(base)) or os.path.exists(path):
            return
        if not os.path.exists(marker):
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            return
        temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            header = MAGIC + b"".join(n.to_bytes(8, "little") for n in (size, *span))
            _pwrite_all(fd, header, 0)
            _pwrite_all(fd, memory.view(program_addr, size), PAGE)
            _pwrite_all(fd, memory.view(span[0], span[1] - span[0]), PAGE + _pages(size))
            os.ftruncate(fd, PAGE + _pages(size) + span[1] - span[0])
        finally:
            os.close(fd)
        os.rename(temporary, path)
        os.unlink(marker)
    except (OSError, ValueError):
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass
        return
    _evict(base)


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        if done <= 0:
            raise OSError("short write")
        view, offset = view[done:], offset + done


def _evict(base: str) -> None:
    entries, markers = [], []
    try:
        with os.scandir(base) as found:
            for item in found:
                st = item.stat(follow_symlinks=False)
                (markers if item.name.endswith(".seen") else entries).append((st.st_mtime, item.name, st.st_size))
    except OSError:
        return
    total, doomed = 0, []
    for _, name, size in sorted(entries, reverse=True):
        total += size
        if total > KEEP_BYTES:
            doomed.append(name)
    doomed += [name for _, name, _ in sorted(markers, reverse=True)[KEEP_MARKERS:]]
    for name in doomed:
        try:
            os.unlink(os.path.join(base, name))
        except OSError:
            pass
