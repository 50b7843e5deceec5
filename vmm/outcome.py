"""How a VM ended: a status for the CLI, a reason, and a one-line message."""

from __future__ import annotations

from collections import namedtuple
from enum import Enum


class StopReason(str, Enum):
    """Why the VM stopped. A str enum: ``outcome.reason == "poweroff"`` still holds."""

    POWEROFF = "poweroff"  # the guest powered off (exit device, ACPI, KVM system event)
    RESET = "reset"  # the guest asked for a reset or reboot; the VM stops rather than reboots
    CRASH = "crash"  # fault report, triple fault, failed entry, emulation failure
    TIMEOUT = "timeout"
    QUIT = "quit"  # stopped by the host (API, Ctrl-A x, a signal)
    ERROR = "error"  # the VMM itself failed

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:  # VmOutcome(status=5, reason='poweroff', ...) as before
        return repr(self.value)


class VmOutcome(namedtuple("VmOutcome", "status reason message", defaults=("",))):
    """``status`` is the process exit status the CLI uses; ``reason`` a StopReason."""

    __slots__ = ()
