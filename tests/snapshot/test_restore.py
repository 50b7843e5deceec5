"""Snapshot and restore on the real guest: a count carries on exactly, across processes."""

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.snapshot.helpers import assert_consecutive, boot, counts
from vmm import DiskConfig
from vmm.disk_image import build_disk_image
from vmm.errors import VmmError
from vmm.persist import SnapshotError, merge_diff, restore, snapshot

pytestmark = pytest.mark.kvm


def count_then_snapshot(vm, state, mem, after: int, **kwargs) -> bytes:
    vm.send("count 1000000 5\r")
    vm.expect(f"count {after}\r\n", timeout=30)
    vm.pause()
    snapshot(vm, str(state), str(mem), **kwargs)
    return vm.output


def test_count_carries_on_in_another_process(guest_elf, tmp_path):
    state, mem = tmp_path / "vm.state", tmp_path / "vm.mem"
    vm = boot(guest_elf)
    try:
        before = count_then_snapshot(vm, state, mem, after=40)
    finally:
        vm.close()
    # The memory file is sparse: 128 MiB of RAM, a small part of it on disk.
    assert mem.stat().st_size == 128 << 20
    assert mem.stat().st_blocks * 512 < 16 << 20
    run = subprocess.run(
        [sys.executable, "-m", "vmm", "restore", str(state), str(mem), "--timeout", "2"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60, cwd=ROOT,
    )
    assert run.returncode == 241, run.stderr  # the timeout: the count was still going
    after = run.stdout
    assert counts(after)[-1] > 60, "the restored guest should have counted on for 2 s"
    numbers = counts(before.split(b"count 1000000 5\r\n", 1)[1] + after)
    assert_consecutive(numbers)


def test_snapshot_needs_a_paused_vm(guest_elf, tmp_path):
    with boot(guest_elf, mem_mib=32) as vm:
        with pytest.raises(VmmError, match="paused"):
            snapshot(vm, str(tmp_path / "s"), str(tmp_path / "m"))
        vm.pause()
        with pytest.raises(SnapshotError, match="full snapshot first"):
            snapshot(vm, str(tmp_path / "s"), str(tmp_path / "m"), diff=True)
        with pytest.raises(SnapshotError, match="different files"):
            snapshot(vm, str(tmp_path / "s"), str(tmp_path / "s"))


def test_clones_of_one_snapshot_each_carry_on(guest_elf, tmp_path):
    state, mem = tmp_path / "vm.state", tmp_path / "vm.mem"
    vm = boot(guest_elf, mem_mib=64)
    try:
        before = count_then_snapshot(vm, state, mem, after=10)
    finally:
        vm.close()
    last = counts(before)[-1]
    clones = [restore(str(state), str(mem), timeout=60) for _ in range(3)]
    try:
        for clone in clones:
            clone.expect(f"count {last + 20}\r\n", timeout=30)
            assert_consecutive(counts(clone.output), start=last + 1)
            clone.send("x")  # each clone has its own UART: input goes to one only
    finally:
        for clone in clones:
            clone.close()


def test_diff_snapshot_merged_onto_its_base(guest_elf, tmp_path):
    base_state, base_mem = tmp_path / "base.state", tmp_path / "base.mem"
    diff_state, diff_mem = tmp_path / "diff.state", tmp_path / "diff.mem"
    vm = boot(guest_elf)
    try:
        count_then_snapshot(vm, base_state, base_mem, after=5)
        vm.resume()
        vm.expect("count 30\r\n", timeout=30)
        vm.pause()
        snapshot(vm, str(diff_state), str(diff_mem), diff=True)
        before = vm.output
    finally:
        vm.close()
    # Only the pages the guest changed in between: a few, not the kernel's.
    assert diff_mem.stat().st_blocks * 512 < base_mem.stat().st_blocks * 512
    assert diff_mem.stat().st_blocks * 512 <= 256 << 10
    merge_diff(str(diff_mem), str(base_mem))
    clone = restore(str(diff_state), str(base_mem), timeout=60)
    try:
        clone.expect("count 45\r\n", timeout=30)
        clone.pause()
        with pytest.raises(SnapshotError, match="restored from"):
            snapshot(clone, str(tmp_path / "x.state"), str(base_mem), diff=True)
        clone.resume()
        numbers = counts(before.split(b"count 1000000 5\r\n", 1)[1] + clone.output)
        assert_consecutive(numbers)
        # A restored VM snapshots again (full, from its file-backed RAM), and that restores too.
        clone.pause()
        snapshot(clone, str(tmp_path / "again.state"), str(tmp_path / "again.mem"))
        upto = counts(clone.output)[-1]
    finally:
        clone.close()
    again = restore(str(tmp_path / "again.state"), str(tmp_path / "again.mem"), timeout=60)
    try:
        again.expect(f"count {upto + 5}\r\n", timeout=30)
        assert_consecutive(counts(again.output), start=upto + 1)
    finally:
        again.close()


@pytest.fixture
def disk(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.txt").write_text("hello from the host\n")
    (src / "big.txt").write_text("".join(f"{i:06d}\n" for i in range(3000)))
    path = tmp_path / "disk.img"
    build_disk_image(src, path, 4)
    return path


def run_command(vm, line: str) -> bytes:
    """The command's output, up to the next prompt."""
    vm.send(line + "\r")
    echo = vm.expect(line + "\r\n", timeout=30)
    # Literals: a lazy regex over a long output is searched again on every chunk (quadratic).
    prompt = vm.expect("$ ", timeout=60)
    return bytes(prompt.string[echo.end() : prompt.start()])


def test_flushed_disk_write_is_there_after_restore(guest_elf, tmp_path, disk):
    state, mem = tmp_path / "vm.state", tmp_path / "vm.mem"
    vm = boot(guest_elf, devices=(DiskConfig(str(disk)),))
    try:
        run_command(vm, "write note.txt written before the snapshot")
        run_command(vm, "sync")
        vm.pause()
        snapshot(vm, str(state), str(mem))
    finally:
        vm.close()  # releases the disk's lock
    clone = restore(str(state), str(mem), timeout=60)
    try:
        clone.send("\r")
        clone.expect("$ ", timeout=30)
        assert run_command(clone, "cat note.txt").replace(b"\r\n", b"\n") == b"written before the snapshot\n"
        assert b"hello.txt" in run_command(clone, "ls")
    finally:
        clone.close()


def test_changed_disk_is_refused_unless_allowed(guest_elf, tmp_path, disk):
    state, mem = tmp_path / "vm.state", tmp_path / "vm.mem"
    vm = boot(guest_elf, mem_mib=32, devices=(DiskConfig(str(disk)),))
    try:
        vm.pause()
        snapshot(vm, str(state), str(mem))
    finally:
        vm.close()
    with open(disk, "r+b") as f:
        f.write(b"X")  # the first block: the fingerprint changes
    with pytest.raises(SnapshotError, match="changed since the snapshot .*allow"):
        restore(str(state), str(mem))
    restore(str(state), str(mem), allow_disk_change=True).close()
    os.unlink(disk)
    with pytest.raises(SnapshotError, match="no such file"):
        restore(str(state), str(mem))


def test_pause_during_disk_reads_loses_nothing(guest_elf, tmp_path, disk):
    state, mem = tmp_path / "vm.state", tmp_path / "vm.mem"
    vm = boot(guest_elf, devices=(DiskConfig(str(disk), read_only=True),))
    try:
        vm.send("cat big.txt\r")
        vm.expect("000100\r\n", timeout=30)
        vm.pause()
        snapshot(vm, str(state), str(mem))
        before = vm.output.split(b"cat big.txt\r\n", 1)[1]
    finally:
        vm.close()
    clone = restore(str(state), str(mem), timeout=60)
    try:
        clone.expect("002999\r\n", timeout=60)
        after = clone.output
    finally:
        clone.close()
    lines = (before + after).replace(b"\r\n", b"\n").split(b"\n")
    assert lines[:3000] == [b"%06d" % i for i in range(3000)]


def test_paused_time_does_not_count_towards_the_timeout(guest_elf):
    from vmm import MicroVM, VmConfig

    vm = MicroVM(VmConfig(kernel=str(guest_elf), mem_mib=32, timeout=2.0)).start()
    try:
        vm.expect("$ ", timeout=30)
        vm.pause()
        time.sleep(2.5)
        assert not vm.is_finished(), "the timeout fired while the VM was paused"
        vm.resume()
        assert vm.wait(10).reason == "timeout"
    finally:
        vm.close()


def test_restore_paused_then_resume(guest_elf, tmp_path):
    state, mem = tmp_path / "vm.state", tmp_path / "vm.mem"
    vm = boot(guest_elf, mem_mib=32)
    try:
        before = count_then_snapshot(vm, state, mem, after=3)
    finally:
        vm.close()
    clone = restore(str(state), str(mem), resume=False, timeout=60)
    try:
        assert clone.paused
        time.sleep(0.3)
        assert counts(clone.output) == []
        clone.resume()
        clone.expect("count 10\r\n", timeout=30)
        assert_consecutive(counts(before.split(b"count 1000000 5\r\n", 1)[1] + clone.output))
    finally:
        clone.close()


def test_two_vcpus_and_no_ioeventfd(guest_elf, tmp_path):
    """Every vCPU's state (the second waits for INIT/SIPI in its LAPIC) and the config come back."""
    state, mem = tmp_path / "vm.state", tmp_path / "vm.mem"
    vm = boot(guest_elf, mem_mib=64, vcpus=2, ioeventfd=False)
    try:
        before = count_then_snapshot(vm, state, mem, after=5)
    finally:
        vm.close()
    clone = restore(str(state), str(mem), timeout=60)
    try:
        assert len(clone.vcpus) == 2 and clone.config.vcpus == 2 and clone.config.ioeventfd is False
        clone.expect("count 15\r\n", timeout=30)
        assert_consecutive(counts(before.split(b"count 1000000 5\r\n", 1)[1] + clone.output))
    finally:
        clone.close()


def test_cli_signals_snapshot_then_restore(guest_elf, tmp_path):
    """SIGUSR1 snapshots and the VM goes on; SIGUSR2 snapshots and stops it (status 0)."""
    import signal

    state, mem = tmp_path / "cli.state", tmp_path / "cli.mem"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmm", "run", "--kernel", str(guest_elf), "--mem", "32",
         "--snapshot-path", str(state), "--mem-file-path", str(mem)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )
    proc.stdin.write(b"count 1000000 5\n")
    proc.stdin.flush()
    out = b""
    while b"count 10\r\n" not in out:
        out += os.read(proc.stdout.fileno(), 4096)
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 30  # the main thread takes the signal when it next runs: late under load
    while not (state.exists() and mem.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.exists() and mem.exists()
    seen = len(counts(out))
    while len(counts(out)) < seen + 30:  # it went on
        out += os.read(proc.stdout.fileno(), 4096)
    proc.send_signal(signal.SIGUSR2)
    rest, err = proc.communicate(timeout=30)
    out += rest
    assert proc.returncode == 0, err
    assert err.count(b"snapshot written to") == 2
    run = subprocess.run([sys.executable, "-m", "vmm", "restore", str(state), str(mem), "--timeout", "0.5"],
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=60, cwd=ROOT)
    assert run.returncode == 241, run.stderr
    assert_consecutive(counts(out.split(b"count 1000000 5\r\n", 1)[1] + run.stdout))


def _ram_digest(vm) -> str:
    import hashlib

    digest = hashlib.sha256()
    for region in vm.memory.regions:
        digest.update(region.mapping[:])
    return digest.hexdigest()


def test_diff_holds_every_changed_page_the_devices_wrote_too(guest_elf, tmp_path, disk):
    """Guest RAM after base + diff is byte for byte the RAM at the diff, though
    the disk's reads wrote guest buffers that KVM's dirty log never sees."""
    base_state, base_mem = tmp_path / "base.state", tmp_path / "base.mem"
    diff_state, diff_mem = tmp_path / "diff.state", tmp_path / "diff.mem"
    vm = boot(guest_elf, mem_mib=64, devices=(DiskConfig(str(disk), read_only=True),))
    try:
        vm.pause()
        snapshot(vm, str(base_state), str(base_mem))
        vm.resume()
        run_command(vm, "cat big.txt")
        vm.pause()
        snapshot(vm, str(diff_state), str(diff_mem), diff=True)
        expected = _ram_digest(vm)
    finally:
        vm.close()
    merge_diff(str(diff_mem), str(base_mem))
    clone = restore(str(diff_state), str(base_mem), resume=False)
    try:
        assert _ram_digest(clone) == expected
    finally:
        clone.close()
    # and the full snapshot alone, restored, is the RAM at the base: the diff was needed
    assert base_mem.stat().st_size == 64 << 20


def test_a_failed_snapshot_means_the_next_must_be_full(guest_elf, tmp_path):
    with boot(guest_elf, mem_mib=32) as vm:
        vm.pause()
        snapshot(vm, str(tmp_path / "a.state"), str(tmp_path / "a.mem"))
        with pytest.raises(SnapshotError, match="cannot write"):
            snapshot(vm, str(tmp_path / "b.state"), str(tmp_path / "missing" / "b.mem"), diff=True)
        with pytest.raises(SnapshotError, match="full snapshot first"):
            snapshot(vm, str(tmp_path / "c.state"), str(tmp_path / "c.mem"), diff=True)
        snapshot(vm, str(tmp_path / "d.state"), str(tmp_path / "d.mem"))
        snapshot(vm, str(tmp_path / "e.state"), str(tmp_path / "e.mem"), diff=True)
