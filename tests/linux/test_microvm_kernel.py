"""vmm's microVM kernel (guest/linux_kernel/) boots to vmm's init and runs commands.

Marker `linux`, run by `make test-linux` (VMM_TEST_LINUX=1), which builds the
kernel first. Each test is one real boot: bzImage and PVH entry, the kernel's
own log for ACPI, virtio-blk and the UART, a file read from a `vmm mkdisk`
disk, two vCPUs, and busybox's `poweroff -f` / `reboot -f` in the guest.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.linux.microvm_kernel import BOOT_BUDGET_S, ROOT, explain, require_microvm_kernel, vmm_linux

pytestmark = [pytest.mark.kvm, pytest.mark.linux]

@pytest.fixture(scope="module")
def kernels() -> tuple[str, str]:
    return require_microvm_kernel()


@pytest.fixture(scope="module")
def tar_disk(tmp_path_factory) -> str:
    """A `vmm mkdisk` (ustar) disk holding note.txt: busybox tar reads it from /dev/vda."""
    work = tmp_path_factory.mktemp("disk")
    (work / "files").mkdir()
    (work / "files" / "note.txt").write_text("a note from the host disk\n")
    image = work / "disk.img"
    subprocess.run([sys.executable, "-m", "vmm", "mkdisk", "-o", str(image), str(work / "files")], check=True, cwd=ROOT, capture_output=True)
    return str(image)


SCRIPT = "echo hello from the microvm; tar -xOf /dev/vda note.txt; exit 3"


@pytest.mark.parametrize("entry", ["bzimage", "pvh"])
def test_vmm_linux_runs_a_command_reads_a_disk_and_returns_its_status(kernels, tar_disk, entry):
    bzimage, vmlinux = kernels
    kernel = bzimage if entry == "bzimage" else vmlinux
    status, out, err, seconds = vmm_linux(kernel, "sh", "-c", SCRIPT, options=("--disk", f"{tar_disk},ro"))
    why = explain(status, out, err, seconds)
    assert status == 3, why
    assert "hello from the microvm" in out, why
    assert "a note from the host disk" in out, why  # the init's command read /dev/vda
    assert "vmm-init: sh exited with status 3" in out, why
    # the kernel's own log: ACPI tables found, the disk probed through the
    # DSDT's LNRO0005 device, COM1 as ttyS0
    assert "ACPI: DSDT" in out and "ACPI: FACP" in out and "ACPI: APIC" in out, why
    assert "[vda]" in out, why
    assert "ttyS0" in out, why
    assert ("vmm: boot: linux (bzImage" in err) if entry == "bzimage" else ("vmm: boot: pvh" in err), why


def test_two_cpus_come_up(kernels):
    """--cpus 2: Linux brings the second CPU up through the in-kernel LAPIC (INIT/SIPI).
    (It hung here in its first paravirtual IPI until vmm hid KVM's hypercall features.)"""
    bzimage, _ = kernels
    status, out, err, seconds = vmm_linux(bzimage, "sh", "-c", "grep -c ^processor /proc/cpuinfo; exit $(grep -c ^processor /proc/cpuinfo)", options=("--cpus", "2"))
    why = explain(status, out, err, seconds)
    assert status == 2, why
    assert "smp: Brought up 1 node, 2 CPUs" in out, why


def test_poweroff_in_the_guest_ends_vmm_linux_with_status_0(kernels):
    """busybox `poweroff -f`: ACPI S5 through the FADT's sleep control register."""
    bzimage, _ = kernels
    status, out, err, seconds = vmm_linux(bzimage, "sh", "-c", "echo going down; poweroff -f; sleep 30; exit 9")
    why = explain(status, out, err, seconds)
    assert status == 0, why
    assert "going down" in out, why
    assert "exited with status" not in out, why  # it ended the VM, not the init


def test_reboot_in_the_guest_ends_vmm_run_with_status_0(kernels, tmp_path):
    """busybox `reboot -f` under `vmm run` (an initramfs of vmm's init and busybox):
    the i8042 reset (reboot=k) stops the VM with status 0, README's table.
    (`vmm linux` returns 240 for the same reset: its command never finished.)"""
    from vmm.linux_cmd import build_linux_initramfs, linux_cmdline, static_busybox

    bzimage, _ = kernels
    busybox = static_busybox()
    if busybox is None:
        pytest.skip("no static busybox on the host (apt-get install busybox-static)")
    initrd = tmp_path / "initrd"
    initrd.write_bytes(build_linux_initramfs(bzimage, None, busybox))
    cmdline = linux_cmdline(["sh", "-c", "echo going down; reboot -f; sleep 30; exit 9"])
    result = subprocess.run(
        [sys.executable, "-m", "vmm", "run", "--kernel", bzimage, "--initrd", str(initrd), "--cmdline", cmdline, "--mem", "256",
         "--timeout", str(BOOT_BUDGET_S), "--stats"],
        capture_output=True, timeout=BOOT_BUDGET_S + 60, cwd=ROOT,
    )
    out, err = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    why = f"status {result.returncode}\n{err}\n{out[-3000:]}"
    assert result.returncode == 0, why
    assert "going down" in out and "exited with status" not in out, why
    assert "reboot: Restarting system" in out, why
