"""How a VM ended: a status for the CLI, a reason, and a one-line message."""

from __future__ import annotations

from .record import record


class StopReason(str):
    """Why the VM stopped: one of the constants below. A str, so that
    ``outcome.reason == "poweroff"`` holds. Not an Enum: importing enum is
    ~2.5 ms of a `vmm exec` start, and nothing else there needs it."""

    __slots__ = ()
    POWEROFF: StopReason  # the guest powered off (exit device, ACPI, KVM system event)
    RESET: StopReason  # the guest asked for a reset or reboot; the VM stops rather than reboots
    CRASH: StopReason  # fault report, triple fault, failed entry, emulation failure
    TIMEOUT: StopReason
    QUIT: StopReason  # stopped by the host (API, Ctrl-A x, a signal)
    ERROR: StopReason  # the VMM itself failed

    def __new__(cls, value: str):
        if value not in _REASONS:
            raise ValueError(f"{value!r} is not a StopReason")
        return str.__new__(cls, value)

    @property
    def value(self) -> str:  # `name` and `value` as an Enum member has them
        return str(self)

    @property
    def name(self) -> str:
        return self.upper()


_REASONS = ("poweroff", "reset", "crash", "timeout", "quit", "error")
for _reason in _REASONS:
    setattr(StopReason, _reason.upper(), StopReason(_reason))


class VmOutcome(record("VmOutcome", "status reason message", defaults=("",))):
    """``status`` is the process exit status the CLI uses; ``reason`` a StopReason."""

    __slots__ = ()
