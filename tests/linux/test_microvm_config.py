"""The microVM kernel's config fragment and build script, without building:
what the fragment must keep (each item is something a boot under vmm relies
on) and leave out, and that a changed fragment names a new kernel."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.linux.microvm_kernel import BUILD_SCRIPT

FRAGMENT = os.path.join(os.path.dirname(BUILD_SCRIPT), "microvm.config")

REQUIRED = (
    "64BIT", "SMP", "KVM_GUEST", "PARAVIRT", "PVH", "ACPI", "PNPACPI",
    "VIRTIO_MMIO", "VIRTIO_BLK", "VIRTIO_CONSOLE",
    "SERIAL_8250", "SERIAL_8250_CONSOLE",
    "SERIAL_8250_PNP",  # COM1's IRQ comes from the DSDT under a hardware-reduced FADT
    "DEVPORT",  # vmm-init writes the command's status to port 0xf4 through /dev/port
    "BLK_DEV_INITRD", "DEVTMPFS", "PROC_FS", "SYSFS", "TMPFS", "EXT4_FS", "BINFMT_ELF", "BINFMT_SCRIPT", "HZ_100",
)
LEFT_OUT = ("MODULES", "KALLSYMS", "FTRACE", "KPROBES", "AUDIT", "DEBUG_INFO_BTF", "CPU_MITIGATIONS", "JUMP_LABEL", "RANDOMIZE_BASE")


def fragment_values() -> dict[str, str]:
    values = {}
    with open(FRAGMENT) as f:
        for line in f:
            line = line.strip()
            if line.startswith("CONFIG_"):
                name, value = line[len("CONFIG_"):].split("=", 1)
                values[name] = value
            elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
                values[line[len("# CONFIG_"):-len(" is not set")]] = "n"
    return values


def test_the_fragment_builds_in_what_vmm_guests_need_and_leaves_out_boot_time_work():
    values = fragment_values()
    assert [name for name in REQUIRED if values.get(name) != "y"] == []
    assert [name for name in LEFT_OUT if values.get(name) != "n"] == []


def test_a_changed_fragment_names_a_new_kernel_and_path_builds_nothing(tmp_path):
    for name in ("build.sh", "microvm.config"):
        shutil.copy(os.path.join(os.path.dirname(BUILD_SCRIPT), name), tmp_path / name)
    env = {**os.environ, "VMM_KERNEL_CACHE": str(tmp_path / "cache"), "VMM_BUILD_DIR": str(tmp_path / "build")}

    def path() -> str:
        return subprocess.run([str(tmp_path / "build.sh"), "--path"], env=env, capture_output=True, text=True, check=True).stdout.strip()

    first = path()
    assert os.path.dirname(first) == str(tmp_path / "cache")
    assert os.path.basename(first).startswith("vmlinuz-microvm-")
    assert path() == first  # stable
    with open(tmp_path / "microvm.config", "a") as f:
        f.write("CONFIG_MSDOS_PARTITION=y\n")
    assert path() != first
    assert not (tmp_path / "cache").exists() and not (tmp_path / "build").exists()  # --path builds nothing
