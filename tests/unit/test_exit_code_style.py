"""`vmm run --exit-code-style`: the command's status for each way a VM ends."""

import pytest

from vmm.cli import exit_status
from vmm.errors import EXIT_GUEST_CRASHED, EXIT_TIMEOUT
from vmm.outcome import StopReason, VmOutcome


@pytest.mark.parametrize(
    "outcome, vmm_status, qemu_status",
    [
        (VmOutcome(0, StopReason.POWEROFF), 0, 1),
        (VmOutcome(5, StopReason.POWEROFF), 5, 11),
        (VmOutcome(127, StopReason.POWEROFF), 127, 255),
        (VmOutcome(EXIT_TIMEOUT, StopReason.TIMEOUT, "late"), EXIT_TIMEOUT, 124),
        (VmOutcome(EXIT_GUEST_CRASHED, StopReason.CRASH, "triple fault"), EXIT_GUEST_CRASHED, EXIT_GUEST_CRASHED),
        (VmOutcome(0, StopReason.QUIT), 0, 0),
    ],
)
def test_statuses(outcome, vmm_status, qemu_status):
    assert exit_status(outcome) == exit_status(outcome, "vmm") == vmm_status
    assert exit_status(outcome, "qemu") == qemu_status
