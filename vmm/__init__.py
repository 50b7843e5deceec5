"""vmm: a minimal virtual machine monitor in Python on Linux KVM."""

# Recorded in snapshots and compared on restore; equal to pyproject.toml's (tests/snapshot/test_version.py).
__version__ = "0.1.0"

# vmm's own modules from one compiled file (vmm/module_pack.py): ~1.5-2 ms of each command's start.
from . import module_pack as _module_pack  # noqa: E402

_module_pack.install(__path__[0])

from .config import DiskConfig, VmConfig
from .errors import ConfigError, KvmError, VmmError

__all__ = ["ConfigError", "DiskConfig", "KvmError", "MicroVM", "StopReason", "VmConfig", "VmOutcome", "VmmError"]


def __getattr__(name):
    # The machine pulls in the compiled KVM bindings: load it only when asked for.
    if name == "MicroVM":
        from .machine import MicroVM

        return MicroVM
    if name in ("VmOutcome", "StopReason"):
        from . import outcome

        return getattr(outcome, name)
    raise AttributeError(name)
