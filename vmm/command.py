"""The `vmm` command's entry point (the script vmm/_build/scripts/vmm, and
``python -m vmm``): garbage collection paused while it starts (vmm/startup.py)."""

from .startup import pause_collection

pause_collection()

from .cli import console_main  # noqa: E402 (after the pause: the imports are most of what it spares)

__all__ = ["console_main"]
