"""virtio-blk end to end: host-made disks read in the guest, guest writes read on the host."""

import hashlib
import os
import re
import signal
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import ROOT
from vmm import DiskConfig, MicroVM, VmConfig
from vmm.disk_image import build_disk_image

pytestmark = pytest.mark.kvm
PROMPT = "$ "
# queue notifications by ioeventfd on the I/O thread (default), or at the MMIO exit
BOTH_NOTIFY_PATHS = pytest.mark.parametrize("ioeventfd", [True, False], ids=["ioeventfd", "vcpu-thread"])


def run_command(vm, line: str, timeout: float = 30) -> str:
    vm.send(line + "\r")
    start = vm.expect(line + "\r\n", timeout).end()  # the shell's echo of the line
    prompt = vm.expect("$ ", timeout)  # literal: searched incrementally, unlike a lazy regex
    return vm.output[start : prompt.start()].decode()


def boot(guest_elf, *disks: DiskConfig, ioeventfd: bool = True) -> MicroVM:
    vm = MicroVM(VmConfig(kernel=str(guest_elf), mem_mib=64, devices=disks, timeout=120, ioeventfd=ioeventfd)).start()
    vm.expect(PROMPT, timeout=20)
    return vm


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "hello.txt").write_text("hello from the host\n")
    # every printable byte, several lines: a byte-for-byte check of the data path
    (src / "docs" / "table.txt").write_text("".join(chr(c) for c in range(32, 127)) * 3 + "\nline two\n")
    (src / "big.bin.txt").write_text("".join(f"{i:06d}\n" for i in range(20000)))  # 140 KiB, many sectors
    return src


@pytest.fixture
def image(tmp_path, source):
    path = tmp_path / "disk.img"
    build_disk_image(source, path, 4)
    return path


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_disks_lists_capacity_id_and_mode(guest_elf, image, tmp_path):
    other = tmp_path / "second.img"
    other.write_bytes(bytes(1 << 20))
    vm = boot(guest_elf, DiskConfig(str(image)), DiskConfig(str(other), read_only=True))
    try:
        out = run_command(vm, "disks")
    finally:
        vm.close()
    assert re.search(r"disk 0: 8192 sectors .*disk\.img.*rw", out), out
    assert re.search(r"disk 1: 2048 sectors .*second\.img.*ro", out), out


@BOTH_NOTIFY_PATHS
def test_host_files_listed_and_read_back_byte_for_byte(guest_elf, image, source, ioeventfd):
    vm = boot(guest_elf, DiskConfig(str(image)), ioeventfd=ioeventfd)
    try:
        listing = run_command(vm, "ls")
        for name in ("hello.txt", "docs/", "docs/table.txt", "big.bin.txt"):
            assert name in listing, listing
        for name in ("hello.txt", "docs/table.txt", "big.bin.txt"):
            shown = run_command(vm, f"cat {name}").replace("\r\n", "\n")
            assert shown == (source / name).read_text(), name
        assert "no such file" in run_command(vm, "cat missing.txt")
    finally:
        vm.close()


@BOTH_NOTIFY_PATHS
def test_guest_write_is_a_valid_tar_member_after_sync(guest_elf, image, ioeventfd):
    vm = boot(guest_elf, DiskConfig(str(image)), ioeventfd=ioeventfd)
    try:
        run_command(vm, "write notes/new.txt written in the guest")
        run_command(vm, "sync")
        assert run_command(vm, "cat notes/new.txt").replace("\r\n", "\n") == "written in the guest\n"
        vm.send("exit 0\r")
        assert vm.wait(10).status == 0
    finally:
        vm.close()
    with tarfile.open(image) as archive:
        assert archive.extractfile("notes/new.txt").read() == b"written in the guest\n"
        assert archive.extractfile("hello.txt").read() == b"hello from the host\n"
    listing = subprocess.run(["tar", "-tf", str(image)], capture_output=True, check=True).stdout.decode()
    assert "notes/new.txt" in listing


def test_sigkill_after_sync_loses_nothing(guest_elf, image):
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmm", "run", "--disk", str(image)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )
    proc.stdin.write(b"write durable.txt survives a kill\nsync\necho synced-marker\n")
    proc.stdin.flush()
    seen = b""
    while b"synced-marker\r\n" not in seen.replace(b"echo synced-marker", b""):
        chunk = os.read(proc.stdout.fileno(), 4096)
        assert chunk, proc.stderr.read()
        seen += chunk
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    with tarfile.open(image) as archive:
        assert archive.extractfile("durable.txt").read() == b"survives a kill\n"


@BOTH_NOTIFY_PATHS
def test_read_only_disk_stays_byte_identical(guest_elf, image, ioeventfd):
    before = sha256(image)
    vm = boot(guest_elf, DiskConfig(str(image), read_only=True), ioeventfd=ioeventfd)
    try:
        assert "read-only" in run_command(vm, "write evil.txt should not land")
        out = run_command(vm, "rawwrite 0 0 overwrite the first sector")
        assert "status 1" in out or "IOERR" in out, out  # the device itself refuses
        run_command(vm, "sync")
        run_command(vm, "blkbench 0 1")
        assert "hello.txt" in run_command(vm, "ls")
    finally:
        vm.close()
    assert sha256(image) == before


def test_two_disks_at_once(guest_elf, image, tmp_path):
    second_src = tmp_path / "second"
    second_src.mkdir()
    (second_src / "only-on-two.txt").write_text("disk two\n")
    second = tmp_path / "two.img"
    build_disk_image(second_src, second, 2)
    vm = boot(guest_elf, DiskConfig(str(image)), DiskConfig(str(second)))
    try:
        assert "only-on-two.txt" not in run_command(vm, "ls 0")
        assert "only-on-two.txt" in run_command(vm, "ls 1")
        assert run_command(vm, "cat 1:only-on-two.txt").replace("\r\n", "\n") == "disk two\n"
        run_command(vm, "write 1:from-guest.txt to disk two")
        run_command(vm, "sync")
    finally:
        vm.close()
    with tarfile.open(second) as archive:
        assert archive.extractfile("from-guest.txt").read() == b"to disk two\n"
    with tarfile.open(image) as archive:
        assert "from-guest.txt" not in archive.getnames()


def test_blkbench_reports_figures(guest_elf, tmp_path):
    scratch = tmp_path / "scratch.img"
    scratch.write_bytes(os.urandom(1 << 20) * 4)
    before = sha256(scratch)
    vm = boot(guest_elf, DiskConfig(str(scratch)))
    try:
        out = run_command(vm, "blkbench 0 4", timeout=120)
    finally:
        vm.close()
    for phase in ("read", "write", "randread"):
        assert re.search(rf"blkbench: {phase} .*\d+(\.\d+)? (MiB/s|IOPS)", out), out
    assert sha256(scratch) == before  # blkbench writes back what it read


@pytest.mark.parametrize(
    "disk_arg, message",
    [
        ("/nonexistent/disk.img", "no such file"),
        ("{odd}", "not a multiple of 512"),
        ("{image},rw,extra", "unknown disk option"),
    ],
)
def test_bad_disks_get_one_line_and_status_2(run_vmm, guest_elf, image, tmp_path, disk_arg, message):
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"x" * 1000)
    result = run_vmm("run", "--disk", disk_arg.format(odd=odd, image=image))
    assert result.returncode == 2, result.stderr
    err = result.stderr.decode().strip()
    assert "\n" not in err and err.startswith("vmm: ") and message in err, err


@pytest.mark.skipif(os.geteuid() != 0 or not __import__("shutil").which("setpriv"), reason="needs root and setpriv to drop CAP_DAC_OVERRIDE")
def test_read_only_file_asked_read_write(guest_elf, image):
    os.chmod(image, 0o444)
    cmd = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m", "vmm", "run"]
    refused = subprocess.run([*cmd, "--disk", str(image)], capture_output=True, cwd=ROOT, timeout=60)
    assert refused.returncode == 2
    assert refused.stderr.decode().strip() == f"vmm: disk {image}: permission denied (use PATH,ro for a read-only disk)"
    allowed = subprocess.run([*cmd, "--disk", f"{image},ro"], input=b"exit 4\n", capture_output=True, cwd=ROOT, timeout=60)
    assert allowed.returncode == 4, allowed.stderr


def test_mkdisk_command(run_vmm, source, tmp_path):
    out = tmp_path / "made.img"
    result = run_vmm("mkdisk", str(source), "-o", str(out), "--size", "3")
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size == 3 << 20
    with tarfile.open(out) as archive:
        assert archive.extractfile("docs/table.txt").read() == (source / "docs" / "table.txt").read_bytes()
    too_small = run_vmm("mkdisk", str(source), "-o", str(tmp_path / "tiny.img"), "--size", "0")
    assert too_small.returncode == 2 and too_small.stderr.decode().count("\n") == 1


def test_every_device_slot_reaches_the_guest(guest_elf, image):
    # The VMM has 17 slots (IRQs 5-23 less the PC's fixed ones); the guest
    # takes as many. The last slot's IRQ is on the IOAPIC only (pin 23).
    from vmm.x86.layout import DeviceSlots

    count = DeviceSlots().capacity
    vm = boot(guest_elf, *(DiskConfig(str(image), read_only=True) for _ in range(count)))
    try:
        listing = run_command(vm, "disks")
        assert listing.count("ro, virtio-mmio") == count, listing
        assert f"disk {count - 1}: " in listing
        assert "hello from the host" in run_command(vm, f"cat {count - 1}:hello.txt")
    finally:
        vm.close()


def test_notify_routes_switching_all_the_time_lose_nothing(guest_elf, image, source, tmp_path, monkeypatch):
    """Every queue flips between ioeventfd and the exit path every few notifies
    (vmm/notify_route.py with tiny windows): each file still reads back byte for
    byte, blkbench's writes leave the disk as it was, and the routes did switch."""
    import time

    from vmm import notify_route, virtio_slots

    real_notifier = virtio_slots._notifier

    def late_notifier(*args):
        serve = real_notifier(*args)

        def late() -> None:  # an I/O thread a busy host schedules late: the guest idles first
            time.sleep(0.002)
            serve()

        return late

    # Without it, on a quiet host the I/O thread is never late and no route moves.
    monkeypatch.setattr(virtio_slots, "_notifier", late_notifier)
    monkeypatch.setattr(notify_route, "PINNED", "adaptive")
    monkeypatch.setattr(notify_route, "WINDOW", 2)
    monkeypatch.setattr(notify_route, "LATE_SHARE", 1000)  # any late notify in a window moves it
    monkeypatch.setattr(notify_route, "PROBE_NOTIFIES", 3)
    scratch = tmp_path / "scratch.img"
    scratch.write_bytes(os.urandom(4 << 20))
    before = sha256(scratch)
    vm = boot(guest_elf, DiskConfig(str(image)), DiskConfig(str(scratch)))
    try:
        for _ in range(3):
            for name in ("hello.txt", "docs/table.txt"):
                shown = run_command(vm, f"cat {name}").replace("\r\n", "\n")
                assert shown == (source / name).read_text(), name
            out = run_command(vm, "blkbench 1 4", timeout=120)
            assert "randread 2000 requests" in out, out
        switches = sum(route.switches for slot in vm._parts.virtio for route in slot.routes)
        # the bundled driver uses event-index notification suppression
        assert all(slot.transport.queues[0].event_idx for slot in vm._parts.virtio)
    finally:
        vm.close()
    assert sha256(scratch) == before
    assert switches >= 2
