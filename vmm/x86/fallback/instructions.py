"""Carry out the instructions this platform's ring-0 emulator gives up on.

``Fallback.execute(code)`` decodes the bytes of an emulation-failure exit,
performs the instruction on the vCPU (registers, FPU state, guest memory
through the guest's page tables) and advances RIP, or queues the exception
the instruction raises. Semantics from the Intel SDM vol. 2 entries of each
instruction. Anything it does not know raises ``Unsupported``: the VM then
stops as before, naming the bytes.

Atomicity: ``lock cmpxchg16b`` is done while this vCPU is out of KVM_RUN and
under a lock shared by every fallback, so it is atomic against the other
vCPUs' fallbacks but not against their natively running code; Linux uses it
on per-CPU data (SLUB's freelists, percpu cmpxchg_double), where the other
side is the same CPU.
"""

from __future__ import annotations

import threading

from ...errors import GuestMemoryError
from .decode import REGISTER_NAMES, DecodeError, Instruction, decode
from .pagewalk import LinearMemory, PageFault

VECTOR_BP, VECTOR_UD, VECTOR_NM, VECTOR_GP, VECTOR_PF = 3, 6, 7, 13, 14
CR0_EM, CR0_TS, CR4_OSFXSR = 1 << 2, 1 << 3, 1 << 9
RFLAGS_CF, RFLAGS_PF, RFLAGS_AF, RFLAGS_ZF, RFLAGS_SF, RFLAGS_OF = 1, 1 << 2, 1 << 4, 1 << 6, 1 << 7, 1 << 11
RFLAGS_AC = 1 << 18
MXCSR_WRITABLE = 0xFFFF  # bits 31:16 are reserved: ldmxcsr of any of them raises #GP(0)
MASKS = {2: 0xFFFF, 4: 0xFFFF_FFFF, 8: 0xFFFF_FFFF_FFFF_FFFF}

_memory_lock = threading.Lock()


class Unsupported(Exception):
    """An instruction the fallback does not carry out."""


class _Raise(Exception):
    def __init__(self, vector: int, error_code: int | None = None):
        self.vector, self.error_code = vector, error_code


def describe(code: bytes) -> str:
    return " ".join(f"{b:02x}" for b in code)


class Fallback:
    """Instruction fallback for one vCPU; ``counts`` by instruction name."""

    def __init__(self, vcpu, memory):
        self.vcpu, self.memory = vcpu, memory
        self.counts: dict[str, int] = {}

    def execute(self, code: bytes) -> str:
        """Carry out the instruction in ``code`` (bytes from RIP on); returns its name."""
        try:
            insn = decode(code)
        except DecodeError as err:
            raise Unsupported(f"cannot decode {describe(code)}: {err}") from None
        handler = _HANDLERS.get(insn.opcode)
        name = handler(self, insn, None) if handler else None
        if name is None:
            raise Unsupported(f"no fallback for instruction {describe(code[: insn.length or len(code)])}")
        regs, sregs = self.vcpu.get_regs(), self.vcpu.get_sregs()
        try:
            handler(self, insn, (regs, sregs))
            regs.rip = (regs.rip + insn.length) & MASKS[8]
            self.vcpu.set_regs(regs)
        except _Raise as fault:  # a fault: RIP stays on the instruction
            self.vcpu.queue_exception(fault.vector, fault.error_code)
        except PageFault as fault:
            sregs.cr2 = fault.address
            self.vcpu.set_sregs(sregs)
            self.vcpu.queue_exception(VECTOR_PF, fault.error_code)
        except GuestMemoryError:  # the guest's tables point outside its RAM
            self.vcpu.queue_exception(VECTOR_GP, 0)
        self.counts[name] = self.counts.get(name, 0) + 1
        return name

    # -- helpers ----------------------------------------------------------------
    def _linear(self, sregs) -> LinearMemory:
        return LinearMemory(self.memory, sregs.cr0, sregs.cr3, user=(sregs.cs.selector & 3) == 3)

    @staticmethod
    def _address(insn: Instruction, regs, sregs) -> int:
        return insn.effective_address(regs, {0x64: sregs.fs.base, 0x65: sregs.gs.base})


# Each handler is called twice: with state None to name the instruction (None:
# not one the fallback knows), then with (regs, sregs) to carry it out.

def _int3(fb: Fallback, insn: Instruction, state):
    if state is None:
        return "int3"
    # #BP is a trap: delivered with RIP after the int3, which the caller sets
    fb.vcpu.queue_exception(VECTOR_BP)


def _fwait(fb: Fallback, insn: Instruction, state):
    return "fwait"  # no x87 exception is ever left pending here: nothing to check


def _group15(fb: Fallback, insn: Instruction, state):
    if insn.prefixes & {0x66, 0xF2, 0xF3}:
        return None
    if insn.mod == 3:  # lfence, mfence, sfence: this vCPU is stopped, memory is ordered
        return {5: "lfence", 6: "mfence", 7: "sfence"}.get(insn.reg)
    name = {2: "ldmxcsr", 3: "stmxcsr", 7: "clflush"}.get(insn.reg)
    if state is None or name == "clflush":
        return name
    regs, sregs = state
    if sregs.cr0 & CR0_EM or not sregs.cr4 & CR4_OSFXSR:  # SDM: #UD, SSE not enabled
        raise _Raise(VECTOR_UD)
    if sregs.cr0 & CR0_TS:
        raise _Raise(VECTOR_NM)
    linear, address = fb._linear(sregs), Fallback._address(insn, regs, sregs)
    if name == "stmxcsr":
        linear.write(address, (fb.vcpu.get_mxcsr() & 0xFFFF_FFFF).to_bytes(4, "little"))
        return name
    value = int.from_bytes(linear.read(address, 4), "little")
    if value & ~MXCSR_WRITABLE:
        raise _Raise(VECTOR_GP, 0)
    fb.vcpu.set_mxcsr(value)
    return name


def _group7(fb: Fallback, insn: Instruction, state):
    if insn.mod != 3 or insn.reg != 1 or insn.rm not in (2, 3):
        return None
    name = "clac" if insn.rm == 2 else "stac"
    if state is not None:
        regs, _ = state
        regs.rflags = regs.rflags & ~RFLAGS_AC if name == "clac" else regs.rflags | RFLAGS_AC
    return name


def _read_operand(fb: Fallback, insn: Instruction, regs, sregs, size: int) -> int:
    if insn.is_memory:
        return int.from_bytes(fb._linear(sregs).read(Fallback._address(insn, regs, sregs), size), "little")
    return getattr(regs, REGISTER_NAMES[insn.rm]) & MASKS[size]


def _write_register(regs, number: int, size: int, value: int) -> None:
    name = REGISTER_NAMES[number]
    if size == 2:  # a 16-bit write keeps bits 63:16; a 32-bit one zero-extends
        value = (getattr(regs, name) & ~0xFFFF) | (value & 0xFFFF)
    setattr(regs, name, value & MASKS[8])


def _popcnt(fb: Fallback, insn: Instruction, state):
    if 0xF3 not in insn.prefixes:
        return None
    if state is None:
        return "popcnt"
    regs, sregs = state
    size = insn.operand_size
    source = _read_operand(fb, insn, regs, sregs, size)
    _write_register(regs, insn.reg, size, bin(source).count("1"))
    flags = regs.rflags & ~(RFLAGS_OF | RFLAGS_SF | RFLAGS_ZF | RFLAGS_AF | RFLAGS_CF | RFLAGS_PF)
    regs.rflags = flags | (RFLAGS_ZF if source == 0 else 0)
    return "popcnt"


def _cmpxchg8b_16b(fb: Fallback, insn: Instruction, state):
    if insn.reg != 1 or not insn.is_memory:
        return None
    wide = insn.rex_w
    name = "cmpxchg16b" if wide else "cmpxchg8b"
    if state is None:
        return name
    regs, sregs = state
    half = 8 if wide else 4
    address = Fallback._address(insn, regs, sregs)
    if wide and address % 16:
        raise _Raise(VECTOR_GP, 0)
    mask = MASKS[half]
    expected = (regs.rax & mask) | ((regs.rdx & mask) << (8 * half))
    replacement = (regs.rbx & mask) | ((regs.rcx & mask) << (8 * half))
    linear = fb._linear(sregs)
    with _memory_lock:
        current = int.from_bytes(linear.read(address, 2 * half), "little")
        if current == expected:
            linear.write(address, replacement.to_bytes(2 * half, "little"))
            regs.rflags |= RFLAGS_ZF
        else:
            # the SDM: the destination is written back either way (a locked cycle);
            # writing back what is there changes nothing but faults on a read-only page
            linear.write(address, current.to_bytes(2 * half, "little"))
            regs.rflags &= ~RFLAGS_ZF
            regs.rax = current & mask  # 32-bit forms zero-extend into RAX/RDX
            regs.rdx = (current >> (8 * half)) & mask
    return name


_HANDLERS = {
    (1, 0xCC): _int3,
    (1, 0x9B): _fwait,
    (2, 0xAE): _group15,
    (2, 0x01): _group7,
    (2, 0xB8): _popcnt,
    (2, 0xC7): _cmpxchg8b_16b,
}
