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


def _pvh_elf(path, extra_notes: bytes) -> str:
    """A minimal PVH ELF: the PHYS32_ENTRY note, ``extra_notes`` and a `jmp .`."""
    import struct

    notes = _note(b"Xen", 18, struct.pack("<I", 0x100000)) + extra_notes
    code = b"\xeb\xfe"
    phoff, notes_off, code_off = 64, 64 + 2 * 56, 64 + 2 * 56 + len(notes)
    ehdr = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x100000, phoff, 0, 0, 64, 56, 2, 64, 0, 0)
    phdrs = struct.pack("<IIQQQQQQ", 4, 4, notes_off, 0, 0, len(notes), len(notes), 4)
    phdrs += struct.pack("<IIQQQQQQ", 1, 5, code_off, 0x100000, 0x100000, len(code), len(code), 0x1000)
    path.write_bytes(ehdr + phdrs + notes + code)
    return str(path)


def _note(owner: bytes, kind: int, desc: bytes) -> bytes:
    import struct

    name = owner + b"\0"
    return struct.pack("<III", len(name), len(desc), kind) + name + bytes(-len(name) % 4) + desc + bytes(-len(desc) % 4)


def test_a_vmlinux_built_without_xen_is_still_linux_by_its_linux_notes(tmp_path):
    """The microVM kernel has no XEN_ELFNOTE_GUEST_OS (no CONFIG_XEN), only kbuild's
    notes owned by "Linux" (the build salt): it must still get ACPI and the
    platform's kernel options when booted by PVH."""
    from vmm.boot.protocol import PvhBoot

    linux = _pvh_elf(tmp_path / "vmlinux", _note(b"Linux", 0x100, b"salt"))
    other = _pvh_elf(tmp_path / "guest.elf", _note(b"GNU", 3, b"build-id"))
    assert PvhBoot(linux, None, 64 << 20).uses_acpi
    assert not PvhBoot(other, None, 64 << 20).uses_acpi
