"""The CPUID a Linux guest sees: measured by a real-mode guest executing `cpuid`.

On this platform (PVM) a guest's CPUID shows KVM_SET_CPUID2's value only for
the bits KVM_GET_SUPPORTED_CPUID lists; every other bit is the hardware's.
That is why hiding XSAVE by CPUID alone did not stop Linux using it: XSAVE is
not in the supported table, so the guest sees the host CPU's XSAVE bit
whatever the VMM sets, and the kernel needs `noxsave` (x86/platform.py).
"""

from __future__ import annotations

import mmap

import pytest

from vmm.kvm import Kvm
from vmm.kvm._kvm_cffi import lib
from vmm.x86.cpu import CPUID_1_ECX_CX16, LINUX_HIDDEN_FEATURES, guest_cpuid

pytestmark = pytest.mark.kvm

# real mode at 0x1000: cpuid(1) -> out 0x500, ecx; hlt
CPUID_1_ECX = bytes.fromhex("66b801000000" "0fa2" "6689c8" "ba0005" "66ef" "f4")


def guest_leaf1_ecx(kvm: Kvm, hidden) -> int:
    vm = kvm.create_vm()
    ram = mmap.mmap(-1, 1 << 20)
    try:
        vm.add_memory(0, ram)
        ram[0x1000 : 0x1000 + len(CPUID_1_ECX)] = CPUID_1_ECX
        vcpu = vm.create_vcpu(0)
        vcpu.set_cpuid(guest_cpuid(kvm.supported_cpuid(), 0, 1, 0, hidden))
        sregs = vcpu.get_sregs()
        sregs.cs.base, sregs.cs.selector = 0, 0
        vcpu.set_sregs(sregs)
        regs = vcpu.get_regs()
        regs.rip = 0x1000
        vcpu.set_regs(regs)
        assert vcpu.run() == 0 and vcpu.exit.reason == lib.KVM_EXIT_IO and vcpu.exit.addr == 0x500
        value = vcpu.exit.value
        vcpu.close()
        return value
    finally:
        vm.close()


def test_linux_guests_do_not_see_cx16():
    kvm = Kvm()
    try:
        supported = [e for e in kvm.supported_cpuid() if e[0] == 1][0]
        if not supported[5] & CPUID_1_ECX_CX16:
            pytest.skip("this KVM does not offer CX16 at all")
        assert guest_leaf1_ecx(kvm, None) & CPUID_1_ECX_CX16
        assert not guest_leaf1_ecx(kvm, LINUX_HIDDEN_FEATURES) & CPUID_1_ECX_CX16
    finally:
        kvm.close()
