"""A small x86-64 decoder: prefixes, REX, one- and two-byte opcodes, ModRM, SIB, displacements.

Enough to name the instruction an emulation-failure exit stopped on and find
its operands (Intel SDM vol. 2, chapter 2). Only 64-bit mode; no VEX/EVEX
(the instructions the VMM carries out have none).
"""

from __future__ import annotations

REGISTER_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                  "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
LEGACY_PREFIXES = {0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0x66, 0x67}
MAX_LENGTH = 15


class DecodeError(Exception):
    pass


class Instruction:
    """One decoded instruction. ``opcode`` is (map, byte): map 1 = one byte, 2 = 0F xx."""

    __slots__ = ("prefixes", "rex", "opcode", "mod", "reg", "rm", "base", "index", "scale",
                 "disp", "rip_relative", "length", "segment")

    def __init__(self):
        self.prefixes: set[int] = set()
        self.rex = 0
        self.opcode = (0, 0)
        self.mod = self.reg = self.rm = None
        self.base = self.index = None  # register numbers 0-15, or None
        self.scale, self.disp, self.rip_relative, self.length = 1, 0, False, 0
        self.segment = None  # 0x64 (fs) / 0x65 (gs) override, or None

    @property
    def rex_w(self) -> bool:
        return bool(self.rex & 8)

    @property
    def operand_size(self) -> int:
        """Bytes of a general-purpose operand: 8 with REX.W, else 2 with 66, else 4."""
        return 8 if self.rex_w else 2 if 0x66 in self.prefixes else 4

    @property
    def is_memory(self) -> bool:
        return self.mod is not None and self.mod != 3

    def effective_address(self, regs, segment_bases: dict[int, int] | None = None) -> int:
        """The operand's linear address, from the registers (kvm_regs-like: attributes by name)."""
        if not self.is_memory:
            raise DecodeError("no memory operand")
        if self.rip_relative:
            address = regs.rip + self.length + self.disp
        else:
            address = self.disp
            if self.base is not None:
                address += getattr(regs, REGISTER_NAMES[self.base])
            if self.index is not None:
                address += getattr(regs, REGISTER_NAMES[self.index]) * self.scale
        address &= 0xFFFF_FFFF if 0x67 in self.prefixes else 0xFFFF_FFFF_FFFF_FFFF
        if self.segment is not None and segment_bases:
            address = (address + segment_bases.get(self.segment, 0)) & 0xFFFF_FFFF_FFFF_FFFF
        return address


def _signed(data: bytes) -> int:
    return int.from_bytes(data, "little", signed=True)


# Opcodes followed by a ModRM byte, among those the fallback knows: (map, byte).
_HAS_MODRM = {(2, 0xAE), (2, 0xC7), (2, 0xB8), (2, 0x01)}


def decode(code: bytes) -> Instruction:
    insn = Instruction()
    pos = 0
    code = code[:MAX_LENGTH]

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(code):
            raise DecodeError(f"instruction runs past its {len(code)} bytes")
        chunk = code[pos : pos + n]
        pos += n
        return chunk

    while pos < len(code) and code[pos] in LEGACY_PREFIXES:
        byte = take(1)[0]
        insn.prefixes.add(byte)
        if byte in (0x64, 0x65):
            insn.segment = byte
    if pos < len(code) and code[pos] & 0xF0 == 0x40:
        insn.rex = take(1)[0]
    byte = take(1)[0]
    if byte == 0x0F:
        insn.opcode = (2, take(1)[0])
    else:
        insn.opcode = (1, byte)
    if insn.opcode in _HAS_MODRM:
        _modrm(insn, take)
    insn.length = pos
    return insn


def _modrm(insn: Instruction, take) -> None:
    modrm = take(1)[0]
    mod, reg, rm = modrm >> 6, (modrm >> 3) & 7, modrm & 7
    insn.mod, insn.reg = mod, reg | ((insn.rex & 4) << 1)
    if mod == 3:
        insn.rm = rm | ((insn.rex & 1) << 3)
        return
    insn.rm = rm
    if rm == 4:  # a SIB byte follows
        sib = take(1)[0]
        scale, index, base = sib >> 6, (sib >> 3) & 7, sib & 7
        index |= (insn.rex & 2) << 2
        insn.index = None if index == 4 else index  # 100 without REX.X: no index
        insn.scale = 1 << scale
        if base == 5 and mod == 0:
            insn.base, insn.disp = None, _signed(take(4))
            return
        insn.base = base | ((insn.rex & 1) << 3)
    elif rm == 5 and mod == 0:  # RIP-relative in 64-bit mode
        insn.rip_relative, insn.disp = True, _signed(take(4))
        return
    else:
        insn.base = rm | ((insn.rex & 1) << 3)
    if mod == 1:
        insn.disp = _signed(take(1))
    elif mod == 2:
        insn.disp = _signed(take(4))
