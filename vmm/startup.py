"""The end of the `vmm` command's start-up, and the cyclic garbage collector until then.

Starting a command creates ~100k objects that live as long as the process
(modules, functions, classes, device models); the collector would walk them
several times over before the VM even runs: 1-2 ms of a `vmm exec` here, in
pauses of up to a millisecond. vmm/command.py (the command's entry point)
pauses collection before the first import; ``vm_running`` (the main thread's
seccomp filter, then ``resume_collection``) is called once the VM runs, and
``resume_collection`` alone by commands without a VM: what exists then is
frozen (never walked again) and collection goes on for what the run creates.
A process that imports vmm as a library is left alone: only the command pauses.
"""

from __future__ import annotations

import gc

_paused = False


def pause_collection() -> None:
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def vm_running() -> None:
    """The command's VM runs: the main thread's seccomp filter, where the process
    switch is on (vmm/seccomp.py), and the end of its start-up (collection resumes)."""
    from .seccomp import filter_main_thread

    filter_main_thread()
    resume_collection()


def resume_collection() -> None:
    """The VM runs: collect again (a no-op unless pause_collection() paused it)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
