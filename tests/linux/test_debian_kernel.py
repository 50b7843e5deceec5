"""Boot Debian's cloud kernel (a bzImage) by the Linux boot protocol.

The kernel is not in the repository: tests/linux/fetch_kernel.sh downloads
it into ~/.cache/vmm/kernels (or $VMM_KERNEL_CACHE). On this platform the
kernel's ring-0 code runs in KVM's instruction emulator, so the budgets are
generous and the test stops once it has seen what it asserts; how far the
kernel gets (it stops later on an instruction the emulator cannot do) is the
next step's business, not this test's.
"""

from __future__ import annotations

import glob
import os
import re

import pytest

from vmm import MicroVM, VmConfig

pytestmark = pytest.mark.kvm

CACHE = os.environ.get("VMM_KERNEL_CACHE", os.path.expanduser("~/.cache/vmm/kernels"))
BUDGET_S = 60  # measured: the command line and e820 map arrive 15-27 s after start
CMDLINE = "earlyprintk=serial,ttyS0 console=ttyS0"


def cached_kernel() -> str | None:
    images = sorted(glob.glob(os.path.join(CACHE, "vmlinuz-*-cloud-amd64")))
    return images[-1] if images else None


@pytest.fixture(scope="module")
def kernel() -> str:
    path = cached_kernel()
    if path is None:
        pytest.skip(f"no Debian cloud kernel in {CACHE}: run tests/linux/fetch_kernel.sh")
    return path


def test_kernel_prints_its_command_line_e820_map_acpi_tables_and_initrd(kernel, tmp_path):
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"\x00" * 300_000)  # never unpacked: the kernel stops long before
    config = VmConfig(kernel=kernel, cmdline=CMDLINE, initrd=str(initrd), mem_mib=256)
    with MicroVM(config) as vm:
        vm.expect(f"Command line: {CMDLINE}", timeout=BUDGET_S)
        vm.expect("BIOS-provided physical RAM map:", timeout=10)
        e820 = vm.expect(re.compile(rb"BIOS-e820: \[mem 0x0*100000-0x0*fffffff\] usable"), timeout=10)
        ramdisk = vm.expect(re.compile(rb"RAMDISK: \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\]"), timeout=BUDGET_S)
        rsdp = vm.expect(re.compile(rb"ACPI: RSDP 0x0*E0000 000024 \(v02"), timeout=BUDGET_S)
        madt = vm.expect(re.compile(rb"ACPI: Using ACPI \(MADT\) for SMP configuration"), timeout=BUDGET_S)
    out = vm.output.decode(errors="replace")
    assert e820 and rsdp and madt
    assert "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable" in out
    start, end = (int(x, 16) for x in ramdisk.groups())
    # the kernel rounds the reservation out to pages
    assert start % 4096 == 0 and end - start + 1 >= 300_000
    assert "ACPI: DSDT" in out and "ACPI: FACP" in out and "ACPI: APIC" in out
