"""A Linux guest snapshotted mid-boot and restored: it carries on printing.

Skips without Debian's cloud kernel (tests/linux/fetch_kernel.sh). Linux does
not yet reach userspace under vmm on this platform (see PLATFORM.md), so the
proof is that the restored kernel goes on from where it stopped: its next
boot message arrives, and none printed before the snapshot is printed again.
"""

from __future__ import annotations

import re

import pytest

from tests.linux.test_debian_kernel import BUDGET_S, CMDLINE, cached_kernel
from vmm import MicroVM, VmConfig
from vmm.persist import restore, snapshot

pytestmark = pytest.mark.kvm


@pytest.fixture(scope="module")
def kernel() -> str:
    path = cached_kernel()
    if path is None:
        pytest.skip("no Debian cloud kernel: run tests/linux/fetch_kernel.sh")
    return path


def test_linux_restored_mid_boot_carries_on(kernel, tmp_path):
    state, mem = tmp_path / "linux.state", tmp_path / "linux.mem"
    with MicroVM(VmConfig(kernel=kernel, cmdline=CMDLINE, mem_mib=256)) as vm:
        vm.expect("BIOS-provided physical RAM map:", timeout=BUDGET_S)
        vm.pause()
        snapshot(vm, str(state), str(mem))
        before = vm.output
    clone = restore(str(state), str(mem), timeout=BUDGET_S * 2)
    try:
        clone.expect(re.compile(rb"ACPI: RSDP 0x0*E0000"), timeout=BUDGET_S)
        after = clone.output
    finally:
        clone.close()
    assert b"Command line:" in before and b"Command line:" not in after  # nothing printed twice
    assert b"BIOS-provided physical RAM map:" not in after
