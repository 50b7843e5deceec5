"""Boot Linux once, restore it many times: a snapshot of the microVM kernel's
userspace, taken while its command sleeps, restored twice; each clone wakes
from the sleep (the guest's clock and timer interrupts carry on), finishes the
command and powers off with its status, and prints nothing twice.
"""

from __future__ import annotations

import pytest

from tests.linux.microvm_kernel import BOOT_BUDGET_S, require_microvm_kernel
from vmm import MicroVM, VmConfig
from vmm.linux_cmd import build_linux_initramfs, linux_cmdline, static_busybox
from vmm.persist import restore, snapshot

pytestmark = [pytest.mark.kvm, pytest.mark.linux]


def test_a_linux_userspace_snapshot_restores_many_times(tmp_path):
    bzimage, _ = require_microvm_kernel()
    busybox = static_busybox()
    if busybox is None:
        pytest.skip("no static busybox on the host (apt-get install busybox-static)")
    command = ["sh", "-c", "echo ready for the snapshot; sleep 3; echo awake after the restore; exit 5"]
    config = VmConfig(kernel=bzimage, cmdline=linux_cmdline(command), initrd=build_linux_initramfs(bzimage, None, busybox), mem_mib=256)
    state, mem = tmp_path / "linux.state", tmp_path / "linux.mem"
    with MicroVM(config) as vm:
        vm.expect("ready for the snapshot", timeout=BOOT_BUDGET_S)
        vm.pause()
        snapshot(vm, str(state), str(mem))
        assert b"awake after the restore" not in vm.output  # still asleep when paused
    for _ in range(2):
        clone = restore(str(state), str(mem), timeout=BOOT_BUDGET_S)
        try:
            clone.expect("awake after the restore", timeout=BOOT_BUDGET_S)
            outcome = clone.wait(BOOT_BUDGET_S)
            after = clone.output
        finally:
            clone.close()
        assert (outcome.reason, outcome.status) == ("poweroff", 5), (outcome, after[-2000:])
        assert b"ready for the snapshot" not in after and b"Linux version" not in after  # nothing printed twice
        assert b"sh exited with status 5" in after
