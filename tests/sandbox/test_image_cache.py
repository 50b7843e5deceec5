"""The sandbox's warm snapshot kept on disk (vmm/sandbox/image_cache.py): the
first `vmm exec` keeps it, later processes restore it instead of booting, and
an entry that is damaged, foreign or refused by this host is replaced."""

import marshal
import os
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from vmm.sandbox import image_cache
from vmm.snapshot.records import Record, from_plain, to_plain


def vmm_exec(cache, *args, env=None):
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), **(env or {})}
    return subprocess.run([sys.executable, "-m", "vmm", "exec", "--stats", *args], capture_output=True, env=env,
                          cwd=ROOT, timeout=120)


def entries(cache) -> list:
    base = cache / "vmm" / "sandbox"
    return sorted(p for p in base.iterdir() if not p.name.startswith(".")) if base.exists() else []


def mmio_exits(stderr: bytes) -> int:
    """MMIO exits of the run (the console's set-up at boot is ~30 of them)."""
    line = re.search(rb"vmm: exits: (.*)", stderr)
    assert line, stderr
    found = re.search(rb"mmio (\d+)", line.group(1))
    return int(found.group(1)) if found else 0


@pytest.mark.kvm
def test_the_first_exec_keeps_the_snapshot_and_later_ones_restore_it(compile_prog, tmp_path):
    program = compile_prog("showargs")
    first = vmm_exec(tmp_path, "--", program, "one")
    assert first.returncode == 0 and b"one" in first.stdout, first.stderr
    [entry] = entries(tmp_path)
    assert sorted(os.listdir(entry)) == ["mem", "records"]
    assert entry.stat().st_mode & 0o777 == 0o700
    assert all((entry / name).stat().st_mode & 0o077 == 0 for name in ("mem", "records"))
    again = vmm_exec(tmp_path, "--", program, "two")
    assert again.returncode == 0 and b"two" in again.stdout, again.stderr
    assert mmio_exits(again.stderr) == 0  # no boot: the console was set up before the snapshot
    cold = vmm_exec(tmp_path, "--cold", "--", program, "three")
    assert cold.returncode == 0 and b"three" in cold.stdout, cold.stderr
    assert mmio_exits(cold.stderr) >= 10
    assert entries(tmp_path) == [entry]
    other_size = vmm_exec(tmp_path, "--mem", "64", "--", program, "four")  # a snapshot per RAM size
    assert other_size.returncode == 0 and b"four" in other_size.stdout
    assert len(entries(tmp_path)) == 2


def _rewrite_records(entry, change) -> None:
    path = entry / "records"
    fmt, key, header, body, room, top = marshal.loads(path.read_bytes())
    header, body, room, top = change(header, body, room, top)
    path.write_bytes(marshal.dumps((fmt, key, header, body, room, top)))


@pytest.mark.kvm
@pytest.mark.parametrize("damage", ["garbage", "group-writable", "short-memory", "room-past-ram", "bad-register",
                                    "short-register-struct", "a-float", "a-disk", "foreign-cpu"])
def test_a_damaged_or_refused_entry_is_replaced(compile_prog, tmp_path, damage):
    program = compile_prog("exitcode")
    assert vmm_exec(tmp_path, "--", program, "3").returncode == 3
    [entry] = entries(tmp_path)
    if damage == "garbage":
        (entry / "records").write_bytes(os.urandom(300))
    elif damage == "group-writable":
        (entry / "records").chmod(0o620)
    elif damage == "short-memory":
        os.truncate(entry / "mem", 1 << 20)
    elif damage == "room-past-ram":
        _rewrite_records(entry, lambda h, b, room, top: (h, b, room, 1 << 40))
    elif damage == "bad-register":  # rip made non-canonical: load.py's checks refuse it, as for any snapshot
        def bad_rip(h, b, room, top):
            regs = bytearray(b["vcpus"][0]["regs"])
            regs[128:136] = (0x8000_0000_0000).to_bytes(8, "little")  # struct kvm_regs: rip after 16 u64s
            b["vcpus"][0]["regs"] = bytes(regs)
            return h, b, room, top
        _rewrite_records(entry, bad_rip)
    elif damage == "short-register-struct":  # C would read past it: refused before any cast
        def short_regs(h, b, room, top):
            b["vcpus"][0]["regs"] = b["vcpus"][0]["regs"][:16]
            return h, b, room, top
        _rewrite_records(entry, short_regs)
    elif damage == "a-float":  # marshal keeps more types than a decoded snapshot holds
        _rewrite_records(entry, lambda h, b, room, top: (h, {**b, "platform": {**b["platform"], "clock": 1.5}}, room, top))
    elif damage == "a-disk":  # a record naming a disk to open: the sandbox's snapshot has none
        def a_disk(h, b, room, top):
            b["virtio"][0]["kind"] = "block"
            b["virtio"][0]["device"] = {"path": b"/etc/passwd", "size": 512, "read_only": False, "disk_id": b"",
                                        "mtime_ns": 0, "fingerprint": bytes(32)}
            return h, b, room, top
        _rewrite_records(entry, a_disk)
    else:  # taken on another CPU: checked only when KVM is opened (load.check_host), then rebuilt
        _rewrite_records(entry, lambda h, b, room, top: ({**h, "cpu_signature": h["cpu_signature"] ^ 0xF0}, b, room, top))
    result = vmm_exec(tmp_path, "--", program, "5")
    assert (result.returncode, result.stdout) == (5, b""), result.stderr
    [entry] = entries(tmp_path)  # a fresh one in its place
    assert (entry / "records").stat().st_mode & 0o077 == 0
    assert os.path.getsize(entry / "mem") == 128 << 20
    assert mmio_exits(vmm_exec(tmp_path, "--", program, "6").stderr) == 0  # and it restores


@pytest.mark.kvm
def test_without_a_writable_cache_every_exec_still_runs(compile_prog, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    program = compile_prog("exitcode")
    for code in ("7", "8"):
        result = vmm_exec(blocker, "--", program, code)
        assert result.returncode == int(code), result.stderr
        assert mmio_exits(result.stderr) == 0  # a snapshot of its own (made in a temporary directory)


def test_the_key_covers_what_a_snapshot_depends_on(monkeypatch):
    guest = ("/guest.elf", 1, 2, 3, 4)
    base = image_cache.entry_key(128, guest, "console=ttyS0", ("a", "b"))
    assert base == image_cache.entry_key(128, guest, "console=ttyS0", ("a", "b"))
    others = {image_cache.entry_key(64, guest, "console=ttyS0", ("a", "b")),
              image_cache.entry_key(128, guest[:4] + (5,), "console=ttyS0", ("a", "b")),
              image_cache.entry_key(128, guest, "console=ttyS1", ("a", "b")),
              image_cache.entry_key(128, guest, "console=ttyS0", ("a",))}
    monkeypatch.setattr(image_cache, "_sources", image_cache._source_identity() + b"a module edited")
    others.add(image_cache.entry_key(128, guest, "console=ttyS0", ("a", "b")))
    assert base not in others and len(others) == 5
    monkeypatch.setattr(image_cache, "_sources", None)
    monkeypatch.setattr(image_cache, "_tree", lambda: (b"/nonexistent/vmm", b""))
    assert image_cache.entry_key(128, guest, "console=ttyS0", ("a", "b")) is None  # (a jail's empty root)


def test_the_walk_of_vmms_files_in_c(tmp_path):
    """vmm_tree_stats (vmm/kvm/ffi_build.py), on the calling thread or on its own:
    .py and .so files with their sizes and times, in path order; directories
    with a dot in their name, skipped ones and symlinked ones left out; any
    edit shows."""
    from vmm.kvm._kvm_cffi import ffi, lib

    root = tmp_path / "vmm"
    for name in ("a.py", "sub/b.py", "sub/c.so", "sub/notes.txt", "api/x.py", "__pycache__/a.cpython-311.pyc",
                 "pkg.d/y.py", "z/deeper/w.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x" * len(name))
    (root / "linked").symlink_to(root / "sub", target_is_directory=True)
    skip = b"api\n__pycache__\n"

    def walk(background=False, cap=1 << 16):
        out = ffi.new("char[]", cap)
        if background:
            assert lib.vmm_tree_stats_start(bytes(root), skip, cap) == 0
            assert lib.vmm_tree_stats_start(bytes(root), skip, cap) < 0  # one at a time
            length = lib.vmm_tree_stats_finish(out, cap)
        else:
            length = lib.vmm_tree_stats(bytes(root), skip, out, cap)
        return length if length < 0 else ffi.buffer(out, length)[:].decode()

    text = walk()
    paths = [line.split("\t")[0] for line in text.splitlines()]
    assert paths == [str(root / p) for p in ("a.py", "sub/b.py", "sub/c.so", "z/deeper/w.py")]
    st = os.stat(root / "sub/b.py")
    assert f"{root / 'sub/b.py'}\t{st.st_size}\t{st.st_mtime_ns}\n" in text
    assert walk(background=True) == text
    assert lib.vmm_tree_stats_finish(ffi.new("char[]", 16), 16) == -3  # none running
    assert walk(cap=16) == -2 and walk(background=True, cap=16) == -2
    (root / "sub/b.py").write_bytes(b"edited in place")
    assert walk() != text
    assert lib.vmm_tree_stats(bytes(tmp_path / "missing"), skip, ffi.new("char[]", 16), 16) == -1


def test_old_entries_and_abandoned_builds_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    base = tmp_path / "vmm" / "sandbox"
    base.mkdir(parents=True)
    now = time.time()
    for i in range(image_cache.KEEP_ENTRIES + 2):
        (base / f"old{i:02d}").mkdir()
        os.utime(base / f"old{i:02d}", (now - 100 + i, now - 100 + i))
    (base / ".build-crashed").mkdir()
    os.utime(base / ".build-crashed", (now - image_cache.STALE_BUILD_S - 10,) * 2)
    (base / ".build-running").mkdir()
    build = image_cache.build_directory()
    (open(os.path.join(build, "mem"), "wb")).close()
    image_cache.keep(build, "new", Record(a=1), Record(b=[Record(c=b"x")]), 4096, 8192)
    left = sorted(p.name for p in base.iterdir())
    assert left == [".build-running", "new"] + [f"old{i:02d}" for i in range(3, image_cache.KEEP_ENTRIES + 2)]
    header, body, room, top, fd = image_cache.load("new", 0)
    os.close(fd)
    assert (header.a, body.b[0].c, room, top) == (1, b"x", 4096, 8192)


def test_records_keep_their_fields_in_plain_form():
    class Container(dict):  # what construct's decoded records are: dicts with private fields
        pass

    decoded = Container(_io=object(), machine=Container(kind="console", regions=[Container(addr=1, size=2)]),
                        blob=bytearray(b"\x00\x01"), flag=True)
    plain = to_plain(decoded)
    assert plain == {"machine": {"kind": "console", "regions": [{"addr": 1, "size": 2}]}, "blob": b"\x00\x01", "flag": True}
    again = from_plain(marshal.loads(marshal.dumps(plain)))
    assert again.machine.regions[0].size == 2 and again.blob == b"\x00\x01" and again.flag is True
    with pytest.raises(AttributeError):
        again.missing  # noqa: B018


def test_plain_records_are_checked_as_the_parser_would():
    """What the state file's parser guarantees (vmm/snapshot/records.py check_plain):
    KVM structures of this host's sizes (C reads them whole), only plain types."""
    from vmm.snapshot.records import PLATFORM_BLOBS, VCPU_BLOBS, SnapshotError, check_plain, kvm_sizes

    sizes = kvm_sizes()
    good = {"vcpus": [{**{name: bytes(sizes[name]) for name in VCPU_BLOBS}, "msrs": [{"index": 1, "value": 2}]}],
            "platform": {**{name: bytes(sizes["irqchip"]) for name in PLATFORM_BLOBS}, "clock": 5}}
    check_plain({"vmm_version": "0.1.0"}, good, "x")
    bad = [
        {**good, "vcpus": [{**good["vcpus"][0], "regs": bytes(16)}]},
        {**good, "vcpus": [{**good["vcpus"][0], "lapic": "not bytes"}]},
        {**good, "platform": {**good["platform"], "ioapic": bytes(sizes["irqchip"] + 1)}},
        {**good, "platform": {**good["platform"], "clock": 1.5}},
        {**good, 7: "a field named by a number"},
        {**good, "machine": {1, 2}},
        {"vcpus": good["vcpus"]},
    ]
    for body in bad:
        with pytest.raises(SnapshotError):
            check_plain({}, body, "x")
