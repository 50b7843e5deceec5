"""Every field of a snapshot is untrusted: truncated, corrupted, tampered or
mismatched files get one SnapshotError line (exit status 2), never a crash."""

import shutil
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
from tests.snapshot.helpers import boot, rebuild, resign
from vmm import DiskConfig
from vmm.disk_image import build_disk_image
from vmm.errors import EXIT_USAGE
from vmm.persist import SnapshotError, restore, snapshot
from vmm.snapshot import format as fmt

pytestmark = pytest.mark.kvm


@pytest.fixture(scope="module")
def real_snapshot(guest_elf, tmp_path_factory):
    """A guest with a read-only disk, snapshotted mid-count: (state bytes, mem path, dir)."""
    where = tmp_path_factory.mktemp("snap")
    src = where / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    disk = where / "disk.img"
    build_disk_image(src, disk, 2)
    vm = boot(guest_elf, mem_mib=32, devices=(DiskConfig(str(disk), read_only=True),))
    try:
        vm.send("ls\r")
        vm.expect("a.txt")
        vm.expect("$ ")
        vm.send("count 100000 5\r")
        vm.expect("count 3\r\n")
        vm.pause()
        snapshot(vm, str(where / "vm.state"), str(where / "vm.mem"))
    finally:
        vm.close()
    return (where / "vm.state").read_bytes(), where / "vm.mem", where


def refused(tmp_path, data: bytes, mem, match: str | None = None) -> SnapshotError:
    path = tmp_path / "bad.state"
    path.write_bytes(data)
    with pytest.raises(SnapshotError) as info:
        restore(str(path), str(mem), resume=False).close()
    message = str(info.value)
    assert "\n" not in message and info.value.exit_status == EXIT_USAGE
    if match is not None:
        assert match in message, message
    return info.value


def test_the_real_snapshot_restores(real_snapshot, tmp_path):
    data, mem, _ = real_snapshot
    (tmp_path / "ok.state").write_bytes(data)
    vm = restore(str(tmp_path / "ok.state"), str(mem))
    try:
        vm.expect("count 10\r\n", timeout=30)
    finally:
        vm.close()


@pytest.mark.parametrize("keep", [0, 10, fmt.Header.sizeof(), fmt.Header.sizeof() + 100, -1])
def test_truncated(real_snapshot, tmp_path, keep):
    data, mem, _ = real_snapshot
    refused(tmp_path, data[:keep] if keep >= 0 else data[:-1], mem)


def test_corrupted_byte_fails_the_checksum(real_snapshot, tmp_path):
    data, mem, _ = real_snapshot
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x40
    refused(tmp_path, bytes(bad), mem, "checksum mismatch")


def test_not_a_snapshot(real_snapshot, tmp_path):
    _, mem, _ = real_snapshot
    refused(tmp_path, b"\x7fELF" + bytes(200), mem, "not a vmm snapshot")


@pytest.mark.parametrize(
    "header, match",
    [
        ({"format_version": fmt.FORMAT_VERSION + 1}, "format version"),
        ({"vmm_version": "9.9.9"}, "made by vmm '9.9.9'"),
        ({"cpu_vendor": "OtherVendor!"}, "this host's is"),
        ({"cpu_signature": 0x12345}, "family/model/stepping"),
    ],
)
def test_mismatched_header(real_snapshot, tmp_path, header, match):
    data, mem, _ = real_snapshot
    refused(tmp_path, resign(data, **header), mem, match)


def _set(path, value):
    def change(body):
        obj = body
        for part in path[:-1]:
            obj = obj[part]
        obj[path[-1]] = value

    return change


@pytest.mark.parametrize(
    "path, value, match",
    [
        (("virtio", 0, "transport", "queues", 0, "desc_addr"), 1 << 40, "outside guest RAM"),
        (("virtio", 0, "transport", "queues", 0, "size"), 3, "power of two"),
        (("virtio", 0, "transport", "status"), 0x80 | 0x04, "status"),
        (("virtio", 0, "addr"), 0xD0005000, "expected 0xd0000000"),
        (("virtio", 0, "device", "size"), 4096, "bytes now"),
        (("virtio", 0, "device", "path"), b"/nonexistent/disk.img", "no such file"),
        (("machine", "mem_size"), 64 << 20, "RAM regions"),
        (("machine", "mem_size"), (1 << 40), "more than this host has"),
        (("uart", "rx_fifo"), bytes(100), "RX FIFO"),
        (("platform", "pit"), b"\x01", "PIT"),
    ],
)
def test_tampered_field(real_snapshot, tmp_path, path, value, match):
    data, mem, _ = real_snapshot
    refused(tmp_path, rebuild(data, _set(path, value)), mem, match)


def _regs_with(field: str, value: int):
    from vmm.kvm._kvm_cffi import ffi

    def change(body):
        blob = bytearray(body.vcpus[0].regs if field in ("rip", "rflags") else body.vcpus[0].sregs)
        kind = "struct kvm_regs *" if field in ("rip", "rflags") else "struct kvm_sregs *"
        setattr(ffi.cast(kind, ffi.from_buffer(blob)), field, value)
        body.vcpus[0]["regs" if field in ("rip", "rflags") else "sregs"] = bytes(blob)

    return change


@pytest.mark.parametrize(
    "field, value, match",
    [("rip", 0x0000800000000000, "canonical"), ("rflags", 1 << 40, "RFLAGS"), ("efer", 1 << 10, "long mode")],
)
def test_tampered_registers(real_snapshot, tmp_path, field, value, match):
    data, mem, _ = real_snapshot
    refused(tmp_path, rebuild(data, _regs_with(field, value)), mem, match)


def test_msr_kvm_does_not_save(real_snapshot, tmp_path):
    data, mem, _ = real_snapshot

    def change(body):
        body.vcpus[0].msrs.append({"index": 0xDEAD0000, "value": 1})

    refused(tmp_path, rebuild(data, change), mem, "MSR 0xdead0000")


def test_memory_file_of_another_size(real_snapshot, tmp_path):
    data, mem, _ = real_snapshot
    small = tmp_path / "small.mem"
    small.write_bytes(bytes(4096))
    (tmp_path / "ok.state").write_bytes(data)
    with pytest.raises(SnapshotError, match="4096 bytes, but the snapshot's guest has"):
        restore(str(tmp_path / "ok.state"), str(small))


def test_cli_refusal_is_one_line_and_status_2(real_snapshot, tmp_path):
    data, mem, _ = real_snapshot
    (tmp_path / "t.state").write_bytes(data[:500])
    run = subprocess.run([sys.executable, "-m", "vmm", "restore", str(tmp_path / "t.state"), str(mem)],
                         capture_output=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert run.returncode == 2
    assert run.stderr.decode().count("\n") == 1 and run.stderr.startswith(b"vmm: snapshot ")


# -- the fuzzer: hypothesis mutating the real file --------------------------------------

def _mutate(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for kind, position, value in edits:
        at = position % (len(buf) + 1)
        if kind == "flip" and buf:
            buf[at % len(buf)] ^= value or 1
        elif kind == "insert":
            buf[at:at] = bytes([value])
        elif kind == "delete" and buf:
            del buf[at % len(buf)]
        elif kind == "truncate":
            del buf[at:]
    return bytes(buf)


EDITS = st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]), st.integers(0, 1 << 20), st.integers(0, 255)),
    min_size=1, max_size=6,
)


def _restore_or_refuse(path, mem) -> None:
    """Either a VM (closed at once, never run) or one SnapshotError line; nothing else."""
    try:
        vm = restore(str(path), str(mem), resume=False)
    except SnapshotError as err:
        assert "\n" not in str(err) and str(err)
        return
    vm.close()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(edits=EDITS)
def test_fuzz_raw_mutations(real_snapshot, edits):
    data, mem, where = real_snapshot
    path = where / "fuzz-raw.state"
    path.write_bytes(_mutate(data, edits))
    _restore_or_refuse(path, mem)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(edits=EDITS)
def test_fuzz_resigned_mutations(real_snapshot, edits):
    """Mutations with a valid checksum again: every parser and check is reached."""
    data, mem, where = real_snapshot
    head = fmt.Header.sizeof()
    body = _mutate(data[head:], edits)
    path = where / "fuzz-signed.state"
    path.write_bytes(resign(data[:head] + body))
    _restore_or_refuse(path, mem)


def _leaves(obj, path=()):
    """Paths to every int, bool and bytes field of a parsed body."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not str(key).startswith("_"):
                yield from _leaves(value, path + (key,))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _leaves(value, path + (index,))
    elif isinstance(obj, (int, bytes)):
        yield path


_VALUES = st.one_of(
    st.integers(0, 255), st.integers(0, (1 << 16) - 1), st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 63) - 1),
    st.sampled_from([0, 1, 2, 0xFFFF, 0xFFFFFFFF, 0xD0000000, 0x7FFFFFFF]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(choice=st.integers(0, 1 << 30), value=_VALUES, blob=st.binary(max_size=64))
def test_fuzz_fields(real_snapshot, choice, value, blob):
    """One field of the parsed state set to another value of its type: the checks behind the parser."""
    data, mem, where = real_snapshot
    body = fmt.Body.parse(data[fmt.Header.sizeof():])
    paths = list(_leaves(body))
    path = paths[choice % len(paths)]
    parent = body
    for part in path[:-1]:
        parent = parent[part]
    old = parent[path[-1]]
    if isinstance(old, bytes):
        new = blob if len(blob) != len(old) or not old else (blob + old)[: len(old)]
    elif isinstance(old, bool):
        new = not old
    else:
        new = value
    parent[path[-1]] = new
    try:
        new_body = fmt.Body.build(body)
    except Exception:  # out of the field's range: not a file anyone can write
        return
    head = fmt.Header.sizeof()
    out = where / "fuzz-field.state"
    out.write_bytes(resign(data[:head] + new_body))
    _restore_or_refuse(out, mem)


def test_a_huge_state_file_is_refused_without_reading_it(real_snapshot, tmp_path):
    import resource
    import time

    _, mem, _ = real_snapshot
    huge = tmp_path / "huge.state"
    with open(huge, "wb") as f:
        f.truncate(1 << 30)  # sparse: costs nothing to make
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(SnapshotError, match="more than any state file"):
        restore(str(huge), str(mem))
    assert time.monotonic() - started < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 << 10  # KiB
    with pytest.raises(SnapshotError, match="not a regular file"):
        restore("/dev/zero", str(mem))
    with pytest.raises(SnapshotError, match="not a regular file"):
        restore(str(tmp_path), str(mem))


def test_fifos_do_not_hang_the_loader(real_snapshot, tmp_path):
    import os

    data, mem, _ = real_snapshot
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(SnapshotError, match="not a regular file"):
        restore(str(fifo), str(mem))
    (tmp_path / "ok.state").write_bytes(data)
    with pytest.raises(SnapshotError, match="not a regular file"):
        restore(str(tmp_path / "ok.state"), str(fifo))
    refused(tmp_path, rebuild(data, _set(("virtio", 0, "device", "path"), os.fsencode(fifo))), mem, "not a regular file")
