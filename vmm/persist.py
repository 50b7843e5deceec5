"""Pause, snapshot, restore, clone: the public interface (vmm/snapshot/ does the work).

    vm.pause()
    snapshot(vm, "vm.state", "vm.mem")            # full: every page with data
    vm.resume() ...; vm.pause()
    snapshot(vm, "d1.state", "d1.mem", diff=True) # only pages changed since the last snapshot
    merge_diff("d1.mem", "vm.mem")                # vm.mem now holds d1's memory
    clone = restore("d1.state", "vm.mem")         # a started MicroVM, same devices

A restored VM maps the memory file MAP_PRIVATE: its pages load lazily and
are copied on write, so many restores of one snapshot (clones) share the
pages none of them changed through the page cache.
"""

from __future__ import annotations

from .snapshot.format import SnapshotError
from .snapshot.memory_file import merge_diff
from .snapshot.save import snapshot as _snapshot

__all__ = ["SnapshotError", "merge_diff", "restore", "snapshot"]


def snapshot(vm, state_path: str, mem_path: str, *, diff: bool = False) -> None:
    """Write the paused ``vm`` to ``state_path`` (its state) and ``mem_path`` (its RAM).

    The VM must be paused (VmmError otherwise) and stays paused. ``diff``
    writes only the pages changed since this VM's previous snapshot (or the
    snapshot it was restored from); lay it onto that snapshot's memory file
    with merge_diff() before restoring. Both files are replaced atomically.
    """
    _snapshot(vm, state_path, mem_path, diff=diff)


def restore(state_path: str, mem_path: str, *, resume: bool = True, allow_disk_change: bool = False,
            console_options: dict | None = None, timeout=None, serial_log: str | None = None, **microvm_kwargs):
    """A started MicroVM from a snapshot (its vCPUs paused unless ``resume``).

    Refused with a SnapshotError (one line, exit status 2): a state file
    that is truncated, corrupt, tampered with or from another vmm version or
    CPU; a memory file of another size; a disk whose contents or
    modification time changed since the snapshot (unless
    ``allow_disk_change``). ``console_options`` are the callbacks a
    virtio-console device gets (VirtioConsole.from_state); ``timeout`` and
    ``serial_log`` are as in VmConfig; other keywords go to MicroVM
    (output, output_fd, capture, ...).
    """
    from .machine import MicroVM
    from .snapshot.load import prepare_restore

    from .errors import ConfigError

    try:
        prepared = prepare_restore(state_path, mem_path, allow_disk_change=allow_disk_change,
                                   console_options=console_options, timeout=timeout, serial_log=serial_log)
        vm = MicroVM(prepared.config, prepared=prepared, **microvm_kwargs)
    except SnapshotError:
        raise
    except ConfigError as err:  # a device record refused by its from_state(), a disk gone, ...
        raise SnapshotError(f"snapshot {state_path}: {err}") from None
    try:
        vm.start(paused=not resume)
    except BaseException:
        vm.close()
        raise
    return vm
