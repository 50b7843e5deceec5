"""The cyclic garbage collector while the `vmm` command starts.

Starting a command creates ~100k objects that live as long as the process
(modules, functions, classes, device models); the collector would walk them
several times over before the VM even runs: 1-2 ms of a `vmm exec` here, in
pauses of up to a millisecond. vmm/command.py (the command's entry point)
pauses collection before the first import; ``resume_collection`` is called
once the VM runs: what exists then is frozen (never walked again) and
collection goes on for what the run creates. A process that imports vmm as
a library is left alone: only the command pauses.
"""

from __future__ import annotations

import gc

_paused = False


def pause_collection() -> None:
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_collection() -> None:
    """The VM runs: collect again (a no-op unless pause_collection() paused it)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
