"""One exception hierarchy for the whole VMM.

Every error carries a one-line message meant for a user; the CLI prints it as
``vmm: <message>`` and exits with the error's ``exit_status``.
"""

from __future__ import annotations

# Exit statuses of the `vmm` command. A guest powers off with 0-127 (the range
# QEMU's isa-debug-exit can also report); the VMM's own outcomes lie above it.
EXIT_USAGE = 2  # bad input before the VM starts
EXIT_GUEST_CRASHED = 240  # guest fault report, triple fault, failed vCPU entry
EXIT_TIMEOUT = 241  # --timeout elapsed
EXIT_VMM_FAILURE = 242  # the VMM itself failed while the VM ran
GUEST_STATUS_MAX = 127


class VmmError(Exception):
    """Base class. ``str(err)`` is a complete one-line message."""

    exit_status = EXIT_VMM_FAILURE


class ConfigError(VmmError):
    """The user asked for something impossible (bad option, file, size)."""

    exit_status = EXIT_USAGE


class KvmUnavailableError(ConfigError):
    """/dev/kvm is missing or not accessible."""


class KernelImageError(ConfigError):
    """The kernel file is missing, not an ELF, or has no PVH entry."""


class NoPvhNoteError(KernelImageError):
    """A well-formed ELF without the PVH entry note: maybe another boot protocol's kernel."""


class KvmError(VmmError):
    """An ioctl failed; the message names the ioctl and the errno."""

    def __init__(self, ioctl: str, errno: int, detail: str = ""):
        import os

        self.ioctl = ioctl
        self.errno = errno
        extra = f" ({detail})" if detail else ""
        super().__init__(f"{ioctl} failed: {os.strerror(errno)} (errno {errno}){extra}")


class GuestMemoryError(VmmError):
    """A guest physical address range lies outside guest RAM."""
