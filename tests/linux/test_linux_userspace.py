"""The distribution-kernel case: Debian's cloud kernel boots to vmm's init,
runs a command and returns its status.

15-20 minutes per boot on a software KVM (every ring-0 instruction is
emulated; see PLATFORM.md), so these tests carry the `linux` marker and run
only with VMM_TEST_DEBIAN_KERNEL=1 (e.g. `VMM_TEST_DEBIAN_KERNEL=1 make
test-linux`); they skip, saying why, when no kernel is cached
(tests/linux/fetch_kernel.sh). vmm's own microVM kernel is the everyday one
(test_microvm_kernel.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.linux.test_debian_kernel import cached_kernel

pytestmark = [pytest.mark.kvm, pytest.mark.linux]
# measured 2026-11-30 on a shared, loaded 2-core machine: the command's exit at
# 868 s (bzImage) and 1348 s (vmlinux by PVH) after start
BOOT_BUDGET_S = 2400


@pytest.fixture(scope="module")
def kernel() -> str:
    if os.environ.get("VMM_TEST_DEBIAN_KERNEL") != "1":
        pytest.skip("boots Debian's cloud kernel to userspace (15-20 min here): run with VMM_TEST_DEBIAN_KERNEL=1")
    path = cached_kernel()
    if path is None:
        pytest.skip("no Debian cloud kernel cached: run tests/linux/fetch_kernel.sh")
    return path


@pytest.mark.parametrize("entry", ["bzimage", "pvh"])
def test_vmm_linux_runs_a_command_and_returns_its_status(kernel, tmp_path, entry):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(8 << 20))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "vmm", "linux", "--kernel", kernel, *(["--pvh"] if entry == "pvh" else []), "--disk", str(disk), "--stats",
         "--timeout", str(BOOT_BUDGET_S), "--", "sh", "-c", "echo hello from vmm-init; exit 3"],
        capture_output=True, timeout=BOOT_BUDGET_S + 60,
    )
    out = result.stdout.decode(errors="replace")
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 3, f"status {result.returncode} after {time.monotonic() - started:.0f} s\n{err}\n{out[-3000:]}"
    assert "hello from vmm-init" in out
    assert "ACPI: DSDT" in out and "ACPI: FACP" in out  # the tables were found
    assert "ttyS0" in out
    assert "[vda]" in out  # virtio_blk probed the disk (virtio_mmio found it in the DSDT)
    assert "vmm-init: sh exited with status 3" in out
    assert "carried out for the emulator:" in err and "syscall" in err
