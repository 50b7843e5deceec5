"""The VMM's instruction fallback (vmm/x86/fallback): decoding, the page walk,
and each instruction against its documented semantics, on a fake vCPU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vmm.memory import GuestMemory
from vmm.x86.fallback.decode import decode
from vmm.x86.fallback.instructions import RFLAGS_AC, RFLAGS_CF, RFLAGS_ZF, Fallback, Unsupported
from vmm.x86.fallback.pagewalk import LinearMemory, PageFault, translate
from vmm.x86.fallback.syscall_entry import gate_offset

PML4, PDPT, PD, PT = 0x1000, 0x2000, 0x3000, 0x4000
DATA_PAGE = 0x10000  # where the 4 KiB page at DATA_VA lives
DATA_VA = 0x40_0000_0000 + 0x5000  # 256 GiB: PML4 entry 0, PDPT entry 256, PD 0, PT 5
CR0 = (1 << 31) | (1 << 16) | 1  # PG, WP, PE
REGS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")


def entry(addr: int, flags: int = 0x3) -> bytes:
    return (addr | flags).to_bytes(8, "little")


def build_memory() -> GuestMemory:
    """Page tables: DATA_VA -> DATA_PAGE (4 KiB, writable), the next page read-only,
    a 2 MiB page at 0x20_0000 (VA 0x20_0000 identity) and a 1 GiB page at VA 1 GiB -> 0."""
    mem = GuestMemory([(0, 4 << 20)])
    mem.write(PML4 + 0 * 8, entry(PDPT))
    mem.write(PDPT + 0 * 8, entry(PD))
    mem.write(PDPT + 1 * 8, entry(0, 0x83))  # 1 GiB page: VA 1 GiB -> PA 0
    mem.write(PDPT + 256 * 8, entry(0x8000))  # VA 256 GiB -> a second PD at 0x8000
    mem.write(0x8000 + 0 * 8, entry(PT))
    mem.write(PD + 1 * 8, entry(0x20_0000, 0x83))  # 2 MiB page: VA 2 MiB -> PA 2 MiB
    mem.write(PT + 5 * 8, entry(DATA_PAGE))
    mem.write(PT + 6 * 8, entry(DATA_PAGE + 0x1000, 0x1))  # read-only
    return mem


class FakeVcpu:
    def __init__(self, **regs):
        self.regs = SimpleNamespace(**{name: 0 for name in REGS})
        self.regs.rflags = 2
        for name, value in regs.items():
            setattr(self.regs, name, value)
        seg = lambda: SimpleNamespace(base=0, selector=0x10)  # noqa: E731
        self.sregs = SimpleNamespace(cr0=CR0, cr2=0, cr3=PML4, cr4=1 << 9, cs=seg(), fs=seg(), gs=seg())
        self.fpu = SimpleNamespace(mxcsr=0x1F80)
        self.exceptions: list[tuple] = []

    def get_regs(self):
        return SimpleNamespace(**vars(self.regs))

    def set_regs(self, regs):
        self.regs = regs

    def get_sregs(self):
        return self.sregs

    def set_sregs(self, sregs):
        self.sregs = sregs

    def get_mxcsr(self):
        return self.fpu.mxcsr

    def set_mxcsr(self, value):
        self.fpu.mxcsr = value

    def queue_exception(self, vector, error_code=None):
        self.exceptions.append((vector, error_code))


def run(code: bytes, memory=None, **regs):
    vcpu = FakeVcpu(rip=0x1000, **regs)
    fb = Fallback(vcpu, memory or build_memory())
    name = fb.execute(code)
    return vcpu, fb, name


# -- the page walk ----------------------------------------------------------------

def test_page_walk_4k_2m_1g_pages():
    mem = build_memory()
    assert translate(mem, CR0, PML4, DATA_VA + 0x123) == DATA_PAGE + 0x123
    assert translate(mem, CR0, PML4, 0x20_0000 + 0x1234) == 0x20_1234
    assert translate(mem, CR0, PML4, (1 << 30) + 0x3456) == 0x3456


def test_page_walk_faults_with_the_cpus_error_codes():
    mem = build_memory()
    with pytest.raises(PageFault) as not_present:
        translate(mem, CR0, PML4, DATA_VA + 0x3000, write=True)
    assert not_present.value.error_code == 0x2 and not_present.value.address == DATA_VA + 0x3000
    with pytest.raises(PageFault) as read_only:
        translate(mem, CR0, PML4, DATA_VA + 0x1000, write=True)
    assert read_only.value.error_code == 0x3
    with pytest.raises(PageFault) as user:
        translate(mem, CR0, PML4, DATA_VA, user=True)
    assert user.value.error_code == 0x5  # present, user, read
    # CR0.WP clear: a supervisor write to a read-only page goes through
    assert translate(mem, CR0 & ~(1 << 16), PML4, DATA_VA + 0x1000, write=True) == DATA_PAGE + 0x1000


def test_linear_access_splits_at_a_page_boundary():
    mem = build_memory()
    lin = LinearMemory(mem, CR0, PML4)
    lin.write(DATA_VA + 0xFFC, b"\x11" * 4)
    assert lin.read(DATA_VA + 0xFFC, 4) == b"\x11" * 4
    with pytest.raises(PageFault):  # the second page is read-only: nothing is written
        lin.write(DATA_VA + 0xFFE, b"\x22" * 4)
    assert mem.read(DATA_PAGE + 0xFFE, 2) == b"\x11\x11"


def test_a_page_table_outside_ram_is_refused():
    from vmm.errors import GuestMemoryError

    mem = GuestMemory([(0, 1 << 20)])
    mem.write(0x1000, entry(0x7FFF_0000))
    with pytest.raises(GuestMemoryError):
        translate(mem, CR0, 0x1000, 0x1234)


# -- the decoder ------------------------------------------------------------------

@pytest.mark.parametrize(
    "code, length, base, index, scale, disp, rip_relative",
    [
        (bytes.fromhex("0fae10"), 3, 0, None, 1, 0, False),              # ldmxcsr (%rax)
        (bytes.fromhex("0fae5424f8"), 5, 4, None, 1, -8, False),         # ldmxcsr -8(%rsp)
        (bytes.fromhex("410fae9588000000"), 8, 13, None, 1, 0x88, False),  # ldmxcsr 0x88(%r13)
        (bytes.fromhex("0fae1588776655"), 7, None, None, 1, 0x55667788, True),  # rip-relative
        (bytes.fromhex("480fc70cc8"), 5, 0, 1, 8, 0, False),             # cmpxchg16b (%rax,%rcx,8)
        (bytes.fromhex("4a0fc70c2500100000"), 9, None, 12, 1, 0x1000, False),  # no base, index r12
        (bytes.fromhex("0fae5d00"), 4, 5, None, 1, 0, False),            # stmxcsr 0(%rbp): mod 1
    ],
)
def test_decoder_modrm_sib_rex_displacements(code, length, base, index, scale, disp, rip_relative):
    insn = decode(code + b"\x90\x90")
    assert (insn.length, insn.base, insn.index, insn.scale, insn.disp, insn.rip_relative) == (length, base, index, scale, disp, rip_relative)


def test_effective_address_rip_relative_is_from_the_next_instruction():
    insn = decode(bytes.fromhex("0fae1510000000"))
    assert insn.effective_address(SimpleNamespace(rip=0x1000)) == 0x1000 + 7 + 0x10


def test_truncated_instruction_is_unsupported():
    with pytest.raises(Unsupported):
        run(bytes.fromhex("480fc7"))


# -- the instructions ---------------------------------------------------------------

def test_int3_advances_rip_and_injects_bp():
    vcpu, fb, name = run(b"\xcc\x90")
    assert name == "int3" and vcpu.regs.rip == 0x1001 and vcpu.exceptions == [(3, None)]
    assert fb.counts == {"int3": 1}


def test_fwait_is_a_no_op():
    vcpu, _, name = run(b"\x9b\x90", rax=5)
    assert name == "fwait" and vcpu.regs.rip == 0x1001 and vcpu.regs.rax == 5 and not vcpu.exceptions


def test_ldmxcsr_and_stmxcsr_through_the_page_tables():
    mem = build_memory()
    mem.write_int(DATA_PAGE + 0x10, 4, 0x1FA0)
    vcpu, _, name = run(bytes.fromhex("0fae5010"), mem, rax=DATA_VA)  # ldmxcsr 0x10(%rax)
    assert name == "ldmxcsr" and vcpu.fpu.mxcsr == 0x1FA0 and vcpu.regs.rip == 0x1004
    vcpu, _, name = run(bytes.fromhex("0fae5b20"), mem, rbx=DATA_VA)  # stmxcsr 0x20(%rbx)
    assert name == "stmxcsr" and mem.read_int(DATA_PAGE + 0x20, 4) == 0x1F80


def test_ldmxcsr_with_reserved_bits_raises_gp_and_keeps_rip():
    mem = build_memory()
    mem.write_int(DATA_PAGE, 4, 0x10000)
    vcpu, _, _ = run(bytes.fromhex("0fae10"), mem, rax=DATA_VA)
    assert vcpu.exceptions == [(13, 0)] and vcpu.regs.rip == 0x1000 and vcpu.fpu.mxcsr == 0x1F80


def test_ldmxcsr_without_osfxsr_is_undefined():
    vcpu = FakeVcpu(rip=0x1000, rax=DATA_VA)
    vcpu.sregs.cr4 = 0
    Fallback(vcpu, build_memory()).execute(bytes.fromhex("0fae10"))
    assert vcpu.exceptions == [(6, None)] and vcpu.regs.rip == 0x1000


def test_stmxcsr_to_a_read_only_page_injects_pf_with_cr2():
    vcpu, _, _ = run(bytes.fromhex("0fae18"), rax=DATA_VA + 0x1000)
    assert vcpu.exceptions == [(14, 0x3)] and vcpu.sregs.cr2 == DATA_VA + 0x1000 and vcpu.regs.rip == 0x1000


def test_clac_stac():
    vcpu, _, name = run(bytes.fromhex("0f01cb"))
    assert name == "stac" and vcpu.regs.rflags & RFLAGS_AC and vcpu.regs.rip == 0x1003
    vcpu, _, name = run(bytes.fromhex("0f01ca"), rflags=2 | RFLAGS_AC)
    assert name == "clac" and not vcpu.regs.rflags & RFLAGS_AC


@pytest.mark.parametrize(
    "code, source, expected",
    [
        (bytes.fromhex("f3480fb8c1"), 0xFFFF_0000_0000_0001, 17),  # popcnt %rcx,%rax
        (bytes.fromhex("f30fb8c1"), 0xFFFF_0000_0000_0001, 1),     # 32-bit: low half only
    ],
)
def test_popcnt_register(code, source, expected):
    vcpu, _, name = run(code, rcx=source, rax=0xDEAD_BEEF_DEAD_BEEF, rflags=2 | RFLAGS_CF)
    assert name == "popcnt" and vcpu.regs.rax == expected and not vcpu.regs.rflags & (RFLAGS_CF | RFLAGS_ZF)


def test_popcnt_16_bit_keeps_the_upper_bits_and_zero_sets_zf():
    vcpu, _, _ = run(bytes.fromhex("66f30fb8c1"), rcx=0xFFFF_0000, rax=0x1234_5678)
    assert vcpu.regs.rax == 0x1234_0000 and vcpu.regs.rflags & RFLAGS_ZF


def test_popcnt_from_memory_with_r8_destination():
    mem = build_memory()
    mem.write_int(DATA_PAGE + 8, 8, 0xFF)
    vcpu, _, _ = run(bytes.fromhex("f34c0fb84608"), mem, rsi=DATA_VA)  # popcnt 8(%rsi),%r8
    assert vcpu.regs.r8 == 8


def test_lock_cmpxchg16b_equal_stores_rcx_rbx():
    mem = build_memory()
    mem.write(DATA_PAGE + 0x40, (0x1111).to_bytes(8, "little") + (0x2222).to_bytes(8, "little"))
    vcpu, fb, name = run(bytes.fromhex("f0480fc70f"), mem, rdi=DATA_VA + 0x40, rax=0x1111, rdx=0x2222, rbx=0x3333, rcx=0x4444)
    assert name == "cmpxchg16b" and vcpu.regs.rflags & RFLAGS_ZF and vcpu.regs.rip == 0x1005
    assert mem.read(DATA_PAGE + 0x40, 16) == (0x3333).to_bytes(8, "little") + (0x4444).to_bytes(8, "little")
    assert fb.counts == {"cmpxchg16b": 1}


def test_lock_cmpxchg16b_unequal_loads_rdx_rax():
    mem = build_memory()
    mem.write(DATA_PAGE + 0x40, (0x5555).to_bytes(8, "little") + (0x6666).to_bytes(8, "little"))
    vcpu, _, _ = run(bytes.fromhex("f0480fc70f"), mem, rdi=DATA_VA + 0x40, rax=1, rdx=2, rbx=3, rcx=4, rflags=2 | RFLAGS_ZF)
    assert not vcpu.regs.rflags & RFLAGS_ZF and (vcpu.regs.rax, vcpu.regs.rdx) == (0x5555, 0x6666)
    assert mem.read_int(DATA_PAGE + 0x40, 8) == 0x5555


def test_cmpxchg16b_misaligned_raises_gp():
    vcpu, _, _ = run(bytes.fromhex("f0480fc70f"), rdi=DATA_VA + 8)
    assert vcpu.exceptions == [(13, 0)] and vcpu.regs.rip == 0x1000


def test_cmpxchg8b_uses_edx_eax():
    mem = build_memory()
    mem.write_int(DATA_PAGE, 8, 0x0000_0002_0000_0001)
    vcpu, _, name = run(bytes.fromhex("f00fc70f"), mem, rdi=DATA_VA, rax=1, rdx=2, rbx=7, rcx=8)
    assert name == "cmpxchg8b" and mem.read_int(DATA_PAGE, 8) == 0x0000_0008_0000_0007


def test_unknown_instruction_is_reported_with_its_bytes():
    with pytest.raises(Unsupported, match="0f 0b"):
        run(bytes.fromhex("0f0b"))


def test_gate_offset():
    gate = bytes.fromhex("8012 1000 008e 2081 ffffffff 00000000".replace(" ", ""))
    assert gate_offset(gate) == 0xFFFFFFFF81201280


# -- the ring-3 syscall completion ----------------------------------------------------

class DebugVcpu(FakeVcpu):
    """A vCPU stopped on the #PF handler's breakpoint, with MSRs and a guest-debug log."""

    def __init__(self, lstar: int, **regs):
        super().__init__(**regs)
        self.msrs = {0xC0000082: lstar, 0xC0000081: (0x23 << 48) | (0x10 << 32)}
        self.debug: list[tuple] = []
        self.sregs.efer = 1
        self.sregs.ss = SimpleNamespace(base=0, selector=0x18)
        self.sregs.idt = SimpleNamespace(base=DATA_VA, limit=4095)

    def get_msrs(self, indices):
        return {i: self.msrs[i] for i in indices if i in self.msrs}

    def set_guest_debug(self, control, debugreg=None):
        self.debug.append((control, debugreg))


class FakeLib:
    KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP = 1, 2, 0x20000


def armed_completion(lstar: int, kernel_rsp: int, frame: list[int], cr2: int):
    from vmm.x86.fallback.syscall_entry import SyscallCompletion

    mem = build_memory()
    handler = 0xFFFFFFFF81A00000
    gate = (handler & 0xFFFF).to_bytes(2, "little") + b"\x10\x00\x00\x8e" + ((handler >> 16) & 0xFFFF).to_bytes(2, "little")
    gate += (handler >> 32).to_bytes(4, "little") + bytes(4)
    mem.write(DATA_PAGE + 14 * 16, gate)
    mem.write(DATA_PAGE + (kernel_rsp - DATA_VA), b"".join(v.to_bytes(8, "little") for v in frame))
    vcpu = DebugVcpu(lstar, rip=handler, rsp=kernel_rsp, rcx=0x401234, r11=0x246)
    vcpu.sregs.cr2 = cr2
    completion = SyscallCompletion(vcpu, mem, FakeLib)
    completion.refresh()
    assert completion.handler == handler and vcpu.debug[-1][1][0] == handler
    return vcpu, completion, handler


def test_a_user_syscall_left_at_cpl3_is_completed_at_the_pf_entry():
    lstar = 0xFFFFFFFF81C00080
    # the #PF frame: error code, RIP, CS, RFLAGS, RSP, SS (pushed by the fault on the fetch at LSTAR)
    vcpu, completion, handler = armed_completion(lstar, DATA_VA + 0x800, [15, lstar, 0x33, 0x2, 0x7FFF_F000, 0x2B], cr2=lstar)
    assert completion.on_debug_exit(handler)
    assert vcpu.regs.rip == lstar and vcpu.regs.rsp == 0x7FFF_F000 and vcpu.regs.rflags == 0x2
    assert (vcpu.regs.rcx, vcpu.regs.r11) == (0x401234, 0x246)  # as the syscall left them
    assert vcpu.sregs.cs.selector == 0x10 and vcpu.sregs.cs.dpl == 0 and vcpu.sregs.cs.l == 1
    assert vcpu.sregs.ss.selector == 0x18 and vcpu.sregs.ss.dpl == 0
    assert completion.completed == 1


def test_any_other_page_fault_is_single_stepped_past_and_the_breakpoint_rearmed():
    lstar = 0xFFFFFFFF81C00080
    vcpu, completion, handler = armed_completion(lstar, DATA_VA + 0x800, [6, 0x401000, 0x33, 0x202, 0x7FFF_F000, 0x2B], cr2=0x500000)
    assert completion.on_debug_exit(handler)
    assert vcpu.regs.rip == handler and completion.completed == 0
    assert vcpu.debug[-1][0] == FakeLib.KVM_GUESTDBG_ENABLE | FakeLib.KVM_GUESTDBG_SINGLESTEP
    assert completion.on_debug_exit(handler + 4)  # the single step
    assert vcpu.debug[-1][0] & FakeLib.KVM_GUESTDBG_USE_HW_BP and vcpu.debug[-1][1][0] == handler
    assert not completion.on_debug_exit(0x1234)  # not ours: the VM's own business
