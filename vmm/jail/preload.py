"""What the jailed VMM imports before the pivot: afterwards no Python file of the host is visible.

The vmm packages a command can reach are walked and imported whole (a new
module is covered without a list to keep); the standard library's modules
that vmm imports inside functions are named here. tests/integration/test_jail.py
checks that every function-level import in those modules is covered.
"""

from __future__ import annotations

import os

from . import JailError, JailSpec

PROBE_ENV = "VMM_JAIL_PROBE"
# Modules every jailed command needs (the vmm packages are walked, see vmm_modules).
STDLIB_MODULES = (
    "encodings.ascii", "encodings.latin_1", "encodings.unicode_escape", "encodings.utf_8",
    "copy", "errno", "resource", "fcntl", "io", "linecache", "mmap", "queue", "select",
    "_signal", "signal", "stat", "struct", "termios", "threading", "time", "traceback", "tty", "weakref",
    "logging",  # vmm.log imports it on the first message: a vCPU's failure must still be logged
    "concurrent.futures.thread",  # virtio-blk's worker pool, made on the first busy queue
)
KERNEL_LOADER_MODULES = ("bz2", "lzma", "zlib")  # unpacking a bzImage's payload
SANDBOX_MODULES = ("grp", "pwd", "shutil", "subprocess", "tarfile", "tempfile")  # tempfile: --warm's RAM file
# vmm modules a jailed VM never uses (other commands, build and test helpers)
# (vmm linux builds its initramfs before the jail)
SKIP_MODULES = ("vmm.api", "vmm.bench", "vmm.pytest_plugin", "vmm.doctor", "vmm._build", "vmm.kvm.ffi_build",
                "vmm.__main__", "vmm.disk_image", "vmm.jail", "vmm.linux_cmd", "vmm.initramfs")


_libgcc = None


def vmm_modules(spec: JailSpec) -> list[str]:
    import vmm

    skip = list(SKIP_MODULES)
    if not spec.sandbox:
        skip.append("vmm.sandbox")
    if not spec.snapshots:  # (construct: ~50 ms)
        skip += ["vmm.persist", "vmm.snapshot"]
    if spec.bundled_guest_only:
        skip += ["vmm.boot.linux", "vmm.boot.bzimage_layout", "vmm.boot.multiboot", "vmm.boot.unpack",
                 "vmm.x86.acpi", "vmm.x86.aml"]
    root = os.path.dirname(vmm.__file__)
    names = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(("_", "."))]
        package = "vmm" + directory[len(root):].replace(os.sep, ".")
        for file in files:
            if file.endswith(".py"):
                name = package if file == "__init__.py" else f"{package}.{file[:-3]}"
                if not name.startswith(tuple(skip)) and not name.endswith("_build"):
                    names.append(name)
    return names


def preload(spec: JailSpec) -> None:
    """Import now what the jailed run may import later: the host's files go away."""
    from importlib import import_module

    names = [*STDLIB_MODULES, *vmm_modules(spec), *spec.modules]
    if not spec.bundled_guest_only:
        names += KERNEL_LOADER_MODULES
    if os.environ.get(PROBE_ENV) == "1":
        names += ["socket", "vmm.jail.probe"]
    global _libgcc
    try:  # glibc loads it on a thread's first exit (to unwind): load it while it can be found
        import ctypes

        _libgcc = ctypes.CDLL("libgcc_s.so.1")
    except OSError:
        pass
    if spec.sandbox:
        names += SANDBOX_MODULES
    for name in names:
        try:
            import_module(name)
        except ImportError as err:
            if not name.startswith("vmm"):
                continue  # a stripped-down Python: the run will say so if it needs it
            raise JailError(f"--jail: cannot import {name} before the jail: {err}") from None


