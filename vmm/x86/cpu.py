"""x86-64 vCPU policy: CPUID, MSRs, FPU, and the PVH entry state."""

from __future__ import annotations

from ..kvm import Vcpu

# CPUID
HYPERVISOR_BASE = 0x40000000
HYPERVISOR_TIMING = 0x40000010  # EAX: TSC kHz, EBX: APIC bus kHz (VMware/QEMU convention)
CPUID_1_ECX_HYPERVISOR = 1 << 31
CPUID_1_ECX_TSC_DEADLINE = 1 << 24
KVM_APIC_BUS_KHZ = 1_000_000  # KVM's emulated local APIC timer runs at 1 GHz
# CPUID bits hidden from Linux guests on a software KVM (only there), whose ring-0
# emulator cannot execute the instructions they announce: {(leaf, subleaf): {register: mask}}.
# KVM_SET_CPUID2 changes only what KVM_GET_SUPPORTED_CPUID lists (CX16 is there;
# XSAVE, SSSE3, POPCNT, SMAP are not and pass through from the hardware), so the
# kernel options in x86/platform.py do the rest.
CPUID_1_ECX_SSSE3, CPUID_1_ECX_CX16, CPUID_1_ECX_POPCNT = 1 << 9, 1 << 13, 1 << 23
CPUID_1_ECX_XSAVE, CPUID_1_ECX_OSXSAVE = 1 << 26, 1 << 27
CPUID_7_EBX_SMAP = 1 << 20
# KVM's paravirtual features that work by hypercall: on this software KVM a
# hypercall from a second vCPU never completes (its RIP stays on the vmmcall),
# so an SMP Linux hung in its first PV IPI (__send_ipi_mask) at CPU bring-up.
# Hidden, Linux sends IPIs through the in-kernel local APIC instead.
KVM_FEATURE_PV_UNHALT, KVM_FEATURE_PV_SEND_IPI, KVM_FEATURE_PV_SCHED_YIELD = 1 << 7, 1 << 11, 1 << 13
KVM_HYPERCALL_FEATURES = KVM_FEATURE_PV_UNHALT | KVM_FEATURE_PV_SEND_IPI | KVM_FEATURE_PV_SCHED_YIELD
LINUX_HIDDEN_FEATURES = {
    (1, 0): {"ecx": CPUID_1_ECX_SSSE3 | CPUID_1_ECX_CX16 | CPUID_1_ECX_POPCNT | CPUID_1_ECX_XSAVE | CPUID_1_ECX_OSXSAVE},
    (7, 0): {"ebx": CPUID_7_EBX_SMAP},
    (HYPERVISOR_BASE + 1, 0): {"eax": KVM_HYPERCALL_FEATURES},
}

# MSRs
MSR_IA32_SYSENTER_CS = 0x174
MSR_IA32_SYSENTER_ESP = 0x175
MSR_IA32_SYSENTER_EIP = 0x176
MSR_IA32_MISC_ENABLE = 0x1A0
MSR_MTRR_DEF_TYPE = 0x2FF
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_CSTAR = 0xC0000083
MSR_SYSCALL_MASK = 0xC0000084
MSR_KERNEL_GS_BASE = 0xC0000102
MISC_ENABLE_FAST_STRING = 1
MTRR_ENABLE_WRITEBACK = (1 << 11) | 6

# Control registers / flags
CR0_PE = 1 << 0
CR0_ET = 1 << 4
RFLAGS_RESERVED = 1 << 1
X87_FCW_RESET = 0x37F
MXCSR_RESET = 0x1F80
XCR0_X87 = 1


def guest_cpuid(supported: list[tuple], vcpu_index: int, vcpu_count: int, tsc_khz: int, hidden: dict | None = None) -> list[tuple]:
    """KVM's supported CPUID with what a VMM must fill in for its guest, less the ``hidden`` bits."""
    entries = []
    for function, index, flags, eax, ebx, ecx, edx in supported:
        masks = (hidden or {}).get((function, index))
        if masks:
            eax &= ~masks.get("eax", 0)
            ebx &= ~masks.get("ebx", 0)
            ecx &= ~masks.get("ecx", 0)
            edx &= ~masks.get("edx", 0)
        if function == 1:
            ecx |= CPUID_1_ECX_HYPERVISOR
            # initial APIC id, logical processor count, CLFLUSH line size (8 * 8 bytes)
            ebx = (vcpu_index << 24) | (max(vcpu_count, 1) << 16) | (8 << 8) | (ebx & 0xFF)
        elif function in (0xB, 0x1F):
            edx = vcpu_index  # x2APIC id
        elif function == 0xA:
            eax = ebx = ecx = edx = 0  # no virtual PMU: guests must not program counters
        elif function == HYPERVISOR_BASE:
            eax = max(eax, HYPERVISOR_TIMING)
        elif function == HYPERVISOR_TIMING:
            continue  # replaced below
        entries.append((function, index, flags, eax, ebx, ecx, edx))
    if tsc_khz:
        entries.append((HYPERVISOR_TIMING, 0, 0, tsc_khz, KVM_APIC_BUS_KHZ, 0, 0))
    return entries


def boot_msrs(supported: set[int]) -> dict[int, int]:
    """MSR values at power-on, limited to those this KVM lets us set."""
    wanted = {
        MSR_IA32_SYSENTER_CS: 0,
        MSR_IA32_SYSENTER_ESP: 0,
        MSR_IA32_SYSENTER_EIP: 0,
        MSR_STAR: 0,
        MSR_CSTAR: 0,
        MSR_KERNEL_GS_BASE: 0,
        MSR_SYSCALL_MASK: 0,
        MSR_LSTAR: 0,
        MSR_IA32_MISC_ENABLE: MISC_ENABLE_FAST_STRING,
        MSR_MTRR_DEF_TYPE: MTRR_ENABLE_WRITEBACK,
    }
    return {index: value for index, value in wanted.items() if index in supported}


def _flat_segment(segment, selector: int, code: bool) -> None:
    segment.base, segment.limit, segment.selector = 0, 0xFFFFFFFF, selector
    segment.type = 0xB if code else 0x3  # execute/read or read/write, accessed
    segment.present, segment.dpl, segment.db, segment.s, segment.l, segment.g = 1, 0, 1, 1, 0, 1
    segment.avl, segment.unusable = 0, 0


def set_pvh_entry_state(vcpu: Vcpu, entry: int, start_info_addr: int) -> None:
    """Registers as the PVH ABI defines them at the 32-bit entry point.

    32-bit protected mode, paging off, flat 4 GiB CS (execute/read) and data
    segments, %ebx = start info, CR0 = PE|ET, CR4 = 0, EFER = 0, and a 32-bit
    TSS loaded in TR.
    """
    sregs = vcpu.get_sregs()
    _flat_segment(sregs.cs, 0x10, code=True)
    for segment in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        _flat_segment(segment, 0x18, code=False)
    tr = sregs.tr
    tr.base, tr.limit, tr.selector, tr.type = 0, 0x67, 0x20, 0xB  # busy 32-bit TSS
    tr.present, tr.dpl, tr.db, tr.s, tr.l, tr.g, tr.unusable = 1, 0, 0, 0, 0, 0, 0
    sregs.cr0 = CR0_PE | CR0_ET
    sregs.cr3 = sregs.cr4 = sregs.efer = 0
    vcpu.set_sregs(sregs)

    regs = vcpu.get_regs()
    for name in ("rax", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"):
        setattr(regs, name, 0)
    regs.rip, regs.rbx, regs.rflags = entry, start_info_addr, RFLAGS_RESERVED
    vcpu.set_regs(regs)


def configure_vcpu(vcpu: Vcpu, *, supported_cpuid, supported_msrs: set[int], vcpu_count: int, has_xcrs: bool, hidden_cpuid: dict | None = None) -> None:
    vcpu.set_cpuid(guest_cpuid(supported_cpuid, vcpu.index, vcpu_count, vcpu.tsc_khz(), hidden_cpuid))
    vcpu.set_msrs(boot_msrs(supported_msrs))
    vcpu.set_fpu(X87_FCW_RESET, MXCSR_RESET)
    if has_xcrs:
        vcpu.set_xcr0(XCR0_X87)
