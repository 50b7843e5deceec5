"""vmm: a minimal virtual machine monitor in Python on Linux KVM."""

from .config import DiskConfig, VmConfig
from .errors import ConfigError, GuestCrashedError, KvmError, VmmError

__all__ = ["ConfigError", "DiskConfig", "GuestCrashedError", "KvmError", "MicroVM", "VmConfig", "VmOutcome", "VmmError"]


def __getattr__(name):
    # The machine pulls in the compiled KVM bindings: load it only when asked for.
    if name in ("MicroVM", "VmOutcome"):
        from . import machine

        return getattr(machine, name)
    raise AttributeError(name)
