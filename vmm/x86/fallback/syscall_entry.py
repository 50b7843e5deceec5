"""Complete a guest ring-3 `syscall` that this platform leaves at CPL3.

On a PVM KVM, `syscall` executed by native guest ring-3 code loads RIP from
LSTAR, RCX/R11 and the masked RFLAGS, but not CS/SS: the vCPU stays at CPL3
and its first fetch at LSTAR (a supervisor page) page-faults. Linux then sees
a user #PF on its own entry code and kills the process. A breakpoint on LSTAR
itself never fires from native ring 3, so the VMM watches the #PF handler's
entry instead (a KVM_SET_GUEST_DEBUG hardware breakpoint), recognises the
case (RIP == CR2 == LSTAR in the pushed frame, CS.RPL 3) and finishes the
SYSCALL transition itself: CS/SS from STAR[47:32], RSP back to the user's,
RIP = LSTAR, the RFLAGS the syscall left. Any other page fault is let
through: disarm, single-step past the handler's first instruction (RF does
not suppress a re-fire in the emulated ring 0), re-arm.
"""

from __future__ import annotations

from ...errors import GuestMemoryError
from ..cpu import MSR_LSTAR, MSR_STAR
from .pagewalk import LinearMemory, PageFault

VECTOR_PF = 14
EFER_SCE = 1
DR7_G0 = 1 << 1
DR7_FIXED = 0x600  # GE and the always-one bit 10, as QEMU sets them
GATE_SIZE = 16


def gate_offset(gate: bytes) -> int:
    """The handler address in a 16-byte 64-bit IDT gate descriptor."""
    low = int.from_bytes(gate[0:2], "little")
    mid = int.from_bytes(gate[6:8], "little")
    high = int.from_bytes(gate[8:12], "little")
    return low | (mid << 16) | (high << 32)


class SyscallCompletion:
    def __init__(self, vcpu, memory, lib):
        self.vcpu, self.memory, self.lib = vcpu, memory, lib
        self.handler = 0  # the #PF handler the breakpoint is on (0: not armed)
        self.lstar = 0
        self.stepping = False
        self.completed = 0  # syscalls completed by the VMM
        self.passed = 0  # other page faults let through

    def refresh(self) -> None:
        """(Re)arm on the guest's current #PF handler once it has set LSTAR; cheap
        enough to call on every fallback exit, which is how the VMM notices Linux
        installing its final IDT."""
        if self.stepping:
            return
        sregs = self.vcpu.get_sregs()
        if not sregs.efer & EFER_SCE or sregs.idt.limit < (VECTOR_PF + 1) * GATE_SIZE - 1:
            return
        try:
            gate = LinearMemory(self.memory, sregs.cr0, sregs.cr3).read(sregs.idt.base + VECTOR_PF * GATE_SIZE, GATE_SIZE)
        except (PageFault, GuestMemoryError):
            return
        handler = gate_offset(gate)
        if handler and handler != self.handler:
            self.lstar = self.vcpu.get_msrs([MSR_LSTAR]).get(MSR_LSTAR, 0)
            self.handler = handler
            self._arm()

    def _arm(self) -> None:
        lib = self.lib
        self.vcpu.set_guest_debug(lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_USE_HW_BP,
                                  [self.handler, 0, 0, 0, 0, 0, 0, DR7_FIXED | DR7_G0])

    def on_debug_exit(self, pc: int) -> bool:
        """A KVM_EXIT_DEBUG; False if it is not one of ours."""
        lib = self.lib
        if self.stepping:  # past the handler's first instruction: re-arm
            self.stepping = False
            self._arm()
            return True
        if not self.handler or pc != self.handler:
            return False
        if self._complete_syscall():
            self.completed += 1
            return True
        self.passed += 1
        self.stepping = True
        self.vcpu.set_guest_debug(lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_SINGLESTEP)
        return True

    def _complete_syscall(self) -> bool:
        regs, sregs = self.vcpu.get_regs(), self.vcpu.get_sregs()
        if not self.lstar:
            self.lstar = self.vcpu.get_msrs([MSR_LSTAR]).get(MSR_LSTAR, 0)
        if sregs.cr2 != self.lstar:
            return False
        try:
            frame = LinearMemory(self.memory, sregs.cr0, sregs.cr3).read(regs.rsp, 48)
        except (PageFault, GuestMemoryError):
            return False
        _error, rip, cs, rflags, user_rsp, _ss = (int.from_bytes(frame[i : i + 8], "little") for i in range(0, 48, 8))
        if rip != self.lstar or cs & 3 != 3:
            return False
        star = self.vcpu.get_msrs([MSR_STAR]).get(MSR_STAR, 0)
        kernel_cs = (star >> 32) & 0xFFFC
        _kernel_segment(sregs.cs, kernel_cs, code=True)
        _kernel_segment(sregs.ss, kernel_cs + 8, code=False)
        regs.rip, regs.rsp, regs.rflags = self.lstar, user_rsp, rflags
        self.vcpu.set_sregs(sregs)
        self.vcpu.set_regs(regs)
        return True


def _kernel_segment(segment, selector: int, code: bool) -> None:
    """The flat segments SYSCALL loads (SDM: CS 64-bit execute/read, SS read/write, DPL 0)."""
    segment.selector, segment.base, segment.limit = selector, 0, 0xFFFFFFFF
    segment.type = 0xB if code else 0x3
    segment.present, segment.dpl, segment.s, segment.g, segment.avl, segment.unusable = 1, 0, 1, 1, 0, 0
    segment.l, segment.db = (1, 0) if code else (0, 1)
