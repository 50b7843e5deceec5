"""Disk images are locked as QEMU locks them: read-write exclusive, read-only shared."""

import subprocess
import sys

import pytest

from vmm.devices.virtio import VirtioBlock
from vmm.errors import ConfigError


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "locked.img"
    path.write_bytes(bytes(8 * 512))
    return path


def test_two_read_write_refused(disk):
    first = VirtioBlock(disk)
    with pytest.raises(ConfigError) as info:
        VirtioBlock(disk)
    message = str(info.value)
    assert message.startswith(f"disk {disk}: another VM (or this one) has it open")
    assert "\n" not in message
    first.close()
    VirtioBlock(disk).close()  # closing released the lock


def test_two_read_only_share(disk):
    a = VirtioBlock(disk, read_only=True)
    b = VirtioBlock(disk, read_only=True)
    a.close()
    b.close()


@pytest.mark.parametrize("first_ro", [False, True])
def test_read_write_and_read_only_refused(disk, first_ro):
    first = VirtioBlock(disk, read_only=first_ro)
    with pytest.raises(ConfigError, match="another VM"):
        VirtioBlock(disk, read_only=not first_ro)
    first.close()


def test_refused_open_leaks_no_fd(disk, tmp_path):
    import os

    first = VirtioBlock(disk)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(ConfigError):
            VirtioBlock(disk)
    assert len(os.listdir("/proc/self/fd")) == before
    first.close()


HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY if sys.argv[2] == "sh" else os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_SH if sys.argv[2] == "sh" else fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(disk):
    """Another process holding the image's lock ("ex" or "sh") until the test ends."""
    procs = []

    def hold(kind):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(disk), kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout.readline() == "locked\n"
        return proc

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=10)


def test_other_process_writer_blocks_both(disk, holder):
    holder("ex")
    with pytest.raises(ConfigError, match="another VM"):
        VirtioBlock(disk)
    with pytest.raises(ConfigError, match="another VM .* open read-write"):
        VirtioBlock(disk, read_only=True)


def test_other_process_reader_allows_readers_only(disk, holder):
    holder("sh")
    VirtioBlock(disk, read_only=True).close()
    with pytest.raises(ConfigError, match="another VM"):
        VirtioBlock(disk)


def test_lock_released_when_the_other_process_exits(disk, holder):
    proc = holder("ex")
    proc.stdin.close()
    proc.wait(timeout=10)
    VirtioBlock(disk).close()


# -- through the command line: one clear line, status 2 -----------------------------------


def test_same_disk_twice_on_one_command_line(run_vmm, guest_elf, disk):
    result = run_vmm("run", "--disk", str(disk), "--disk", f"{disk},ro")
    assert result.returncode == 2, result.stderr
    err = result.stderr.decode().strip()
    assert err == f"vmm: disk {disk}: another VM (or this one) has it open read-write", err


@pytest.mark.kvm
def test_second_vm_on_a_disk_in_use(run_vmm, guest_elf, disk):
    import os
    import select
    import time

    from tests.conftest import ROOT

    first = subprocess.Popen(
        [sys.executable, "-m", "vmm", "run", "--disk", str(disk)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )
    try:
        seen, deadline = b"", time.monotonic() + 60
        while b"$ " not in seen and time.monotonic() < deadline:  # the first VM is up
            if select.select([first.stdout], [], [], 1)[0]:
                chunk = os.read(first.stdout.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
        assert b"$ " in seen, (seen, first.poll())
        second = run_vmm("run", "--disk", f"{disk},ro")
        assert second.returncode == 2
        assert second.stderr.decode().strip() == f"vmm: disk {disk}: another VM (or this one) has it open read-write"
        first.stdin.write(b"exit 3\n")
        first.stdin.flush()
        assert first.wait(timeout=60) == 3
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert run_vmm("run", "--disk", str(disk), stdin="exit 5\n").returncode == 5  # released


def test_messages_stay_one_line_for_odd_file_names(tmp_path):
    odd = tmp_path / "two\nlines.img"
    with pytest.raises(ConfigError) as info:
        VirtioBlock(odd)
    assert "\n" not in str(info.value) and "no such file" in str(info.value)
    odd.write_bytes(bytes(512))
    first = VirtioBlock(odd)
    with pytest.raises(ConfigError) as info:
        VirtioBlock(odd)
    assert "\n" not in str(info.value) and "another VM" in str(info.value)
    first.close()
