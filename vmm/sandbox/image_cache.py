"""The sandbox's warm snapshot, kept on disk for the next process.

A fresh `vmm exec` that boots the sandbox guest spends ~4 ms of guest boot
(ten virtqueues, the console handshake: ~30 exits) and ~3 ms more making the
VM before the program can start; restoring a snapshot of the guest waiting at
"ready" skips both. But decoding a snapshot's state file imports construct
(~24 ms). So the process that builds the warm snapshot (vmm/sandbox/warm.py)
also keeps it here, in ~/.cache/vmm/sandbox/KEY/: ``mem``, the guest's RAM
as the snapshot wrote it (sparse), and ``records``, the decoded records in
plain form (vmm/snapshot/records.py) with the bundle's ROOM and TOP, by
marshal. A later process reads a few KB, checks the records as load.py
checks any snapshot's, and maps ``mem`` copy-on-write into each clone.

KEY hashes everything an entry depends on: the entry format, vmm's version
and the size and modification time of each of its modules (a changed device
model must not restore an old state), the guest binary's identity, the RAM
size, the warm command line and the console's ports, and the host's kernel
and architecture (the host CPU is checked on every restore, load.check_host).
An entry that is not this user's own, is writable by others or is not in the
expected shape is ignored, and replaced by the next build.
"""

from __future__ import annotations

import os
import stat
import threading

from .. import user_cache

ENTRY_FORMAT = 1
KEEP_ENTRIES = 8  # per user: one per RAM size and guest binary in use
RECORDS_MAX = 1 << 20  # bytes: a sandbox guest's records are a few KB
STALE_BUILD_S = 3600  # a build directory older than this was left by a crash

_sources: bytes | None = None


def cache_base() -> str:
    return user_cache.cache_dir("sandbox")


# Subpackages no restore runs through: their changes keep the entries.
UNRELATED_SUBPACKAGES = ("api", "bench", "jail", "_build", "__pycache__")


_SOURCES_CAP = 1 << 18  # bytes of "path, size, mtime" lines: ~100 files take ~6 KB
_sources_lock = threading.Lock()
_walking = False  # start_source_identity() began a walk no one has taken yet


def _tree() -> tuple[bytes, bytes]:
    """(vmm's directory, the subpackages to leave out) for vmm_tree_stats."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.fsencode(root), "".join(name + "\n" for name in UNRELATED_SUBPACKAGES).encode()


def start_source_identity() -> None:
    """Begin the walk _source_identity() needs on a thread of C's own, without
    the GIL: `vmm exec` calls this as it starts, and its imports hide the walk."""
    global _walking
    from ..kvm._kvm_cffi import lib

    with _sources_lock:
        if _sources is None and not _walking:
            _walking = lib.vmm_tree_stats_start(*_tree(), _SOURCES_CAP) == 0


def _source_identity() -> bytes | None:
    """(path, size, mtime) of every module and extension of the vmm package that
    a restore can run (~100 files, walked in C: vmm/kvm/ffi_build.py): a change
    to any of them (a device model's state, the restore path) makes new keys."""
    global _sources, _walking
    from ..kvm._kvm_cffi import ffi, lib

    with _sources_lock:
        if _sources is None:
            cap = _SOURCES_CAP
            out = ffi.new("char[]", cap)
            length = lib.vmm_tree_stats_finish(out, cap) if _walking else -3
            _walking = False
            while length in (-2, -3):  # not started, or more files than room: walk here
                if length == -2:
                    cap *= 4
                    out = ffi.new("char[]", cap)
                length = lib.vmm_tree_stats(*_tree(), out, cap)
            if length < 0:
                return None  # the sources are out of sight (a jail's empty root): no key, no cache
            _sources = ffi.buffer(out, length)[:]
        return _sources


def entry_key(mem_mib: int, guest: tuple, cmdline: str, ports: tuple) -> str | None:
    """``guest`` is warm.guest_identity() of the guest binary; None where vmm's
    own files cannot be seen (then nothing is cached)."""
    sources = _source_identity()
    if sources is None:
        return None
    from ..snapshot.records import vmm_version

    uname = os.uname()
    parts = (ENTRY_FORMAT, vmm_version(), guest, mem_mib, cmdline, ports, uname.release, uname.machine)
    return user_cache.key(repr(parts).encode() + sources)


def load(key: str, mem_bytes: int):
    """(header, body, room, top, mem_fd) of the entry ``key``, or None. The
    records come back as attribute records (records.from_plain); mem_fd is
    the caller's to close. An entry there but not fit to use is removed, so
    the next build can take its place."""
    import marshal

    from ..snapshot.records import from_plain

    directory = os.path.join(cache_base(), key)
    try:
        st = os.stat(directory)
    except OSError:
        return None  # none yet
    fd = -1
    try:
        if not user_cache.trusted(st):
            raise ValueError("not private")
        with open(os.path.join(directory, "records"), "rb") as f:
            st = os.fstat(f.fileno())
            if not user_cache.trusted(st) or not stat.S_ISREG(st.st_mode) or st.st_size > RECORDS_MAX:
                raise ValueError("records not private")
            data = f.read(RECORDS_MAX + 1)
        fd = os.open(os.path.join(directory, "mem"), os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        st = os.fstat(fd)
        if not user_cache.trusted(st) or not stat.S_ISREG(st.st_mode) or st.st_size != mem_bytes:
            raise ValueError("memory file not private or of another size")
        fmt, stored_key, header, body, room, top = marshal.loads(data)
        if fmt != ENTRY_FORMAT or stored_key != key or not isinstance(header, dict) or not isinstance(body, dict) \
                or type(room) is not int or type(top) is not int:
            raise ValueError("not an entry of this format")
    except (OSError, EOFError, ValueError, TypeError):
        if fd >= 0:
            os.close(fd)
        forget(key)
        return None
    return from_plain(header), from_plain(body), room, top, fd


def build_directory() -> str | None:
    """A private directory for a build, inside the cache (so keep() can rename
    it into place), or None where the cache cannot be written."""
    import tempfile

    base = cache_base()
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        if not user_cache.trusted(os.stat(base)):
            return None
        return tempfile.mkdtemp(prefix=".build-", dir=base)
    except OSError:
        return None


def keep(directory: str, key: str, header, body, room: int, top: int) -> None:
    """Make ``directory`` (holding the build's ``mem``) the entry ``key``; any
    failure leaves the cache as it was (the directory is the caller's to remove)."""
    import marshal

    from ..snapshot.records import to_plain

    data = marshal.dumps((ENTRY_FORMAT, key, to_plain(header), to_plain(body), room, top))
    try:
        fd = os.open(os.path.join(directory, "records"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(os.path.join(directory, "mem"), 0o600)
        for name in os.listdir(directory):  # the build's state file: the records say it all
            if name not in ("mem", "records"):
                os.unlink(os.path.join(directory, name))
        os.rename(directory, os.path.join(cache_base(), key))  # whole, or not at all: another process may have won
    except OSError:
        return
    _evict(key)


def forget(key: str) -> None:
    """Remove the entry ``key`` (it failed to restore on this host)."""
    import shutil

    shutil.rmtree(os.path.join(cache_base(), key), ignore_errors=True)


def _evict(newest: str) -> None:
    """Keep the KEEP_ENTRIES most recent entries, and no build left by a crash."""
    import shutil
    import time

    base = cache_base()
    try:
        with os.scandir(base) as entries:
            found = [(entry.stat().st_mtime, entry.name) for entry in entries if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return
    now = time.time()
    entries = sorted((item for item in found if not item[1].startswith(".")), reverse=True)
    doomed = [name for _, name in entries[KEEP_ENTRIES:] if name != newest]
    doomed += [name for mtime, name in found if name.startswith(".build-") and now - mtime > STALE_BUILD_S]
    for name in doomed:
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)
