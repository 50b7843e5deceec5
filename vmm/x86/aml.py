"""A small AML encoder: enough of ACPI's machine language to describe a microVM.

ACPI 6.x, chapter 20 (AML grammar) and 6.4 (resource descriptors). Each
function returns the encoded bytes of one term; callers nest them:

    scope("\\_SB_", [device("COM1", [name("_HID", eisa_id("PNP0501")), ...])])

Only static objects: names, integers, strings, packages, buffers, resource
templates, scopes and devices; no methods (nothing here runs in the guest).
"""

from __future__ import annotations

# Opcodes (ACPI 6.4, 20.3)
ZERO_OP, ONE_OP, ONES_OP = 0x00, 0x01, 0xFF
BYTE_PREFIX, WORD_PREFIX, DWORD_PREFIX, STRING_PREFIX, QWORD_PREFIX = 0x0A, 0x0B, 0x0C, 0x0D, 0x0E
NAME_OP, SCOPE_OP, BUFFER_OP, PACKAGE_OP = 0x08, 0x10, 0x11, 0x12
EXT_OP_PREFIX, DEVICE_OP = 0x5B, 0x82
ROOT_CHAR, PARENT_PREFIX, DUAL_NAME_PREFIX, MULTI_NAME_PREFIX = 0x5C, 0x5E, 0x2E, 0x2F

# Resource descriptor tags (ACPI 6.4, 6.4.2 small, 6.4.3 large)
IRQ_NO_FLAGS_TAG = 0x22  # small item 0x04, length 2
IO_TAG = 0x47  # small item 0x08, length 7
END_TAG = 0x79  # small item 0x0F, length 1
MEMORY32_FIXED_TAG = 0x86  # large item 0x06
EXTENDED_INTERRUPT_TAG = 0x89  # large item 0x09

_NAME_CHARS = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def name_seg(segment: str) -> bytes:
    """A 4-character NameSeg, padded with '_' (leading character not a digit)."""
    raw = segment.encode("ascii").upper()
    if not 1 <= len(raw) <= 4 or not set(raw) <= _NAME_CHARS or raw[:1].isdigit():
        raise ValueError(f"bad AML name segment {segment!r}")
    return raw.ljust(4, b"_")


def name_string(path: str) -> bytes:
    """A NameString: optional '\\' or '^' prefixes, then segments separated by '.'."""
    prefix = b""
    while path[:1] in ("\\", "^"):
        prefix += path[:1].encode()
        path = path[1:]
    segments = [name_seg(s) for s in path.split(".")] if path else []
    if not segments:
        return prefix + b"\x00"  # NullName
    if len(segments) == 1:
        return prefix + segments[0]
    if len(segments) == 2:
        return prefix + bytes([DUAL_NAME_PREFIX]) + b"".join(segments)
    return prefix + bytes([MULTI_NAME_PREFIX, len(segments)]) + b"".join(segments)


def pkg_length(body_length: int) -> bytes:
    """The PkgLength encoding of a body; the length counts its own bytes too."""
    if body_length + 1 < 0x40:
        return bytes([body_length + 1])
    for extra in (1, 2, 3):
        total = body_length + 1 + extra
        if total < 1 << (4 + 8 * extra):
            lead = (extra << 6) | (total & 0x0F)
            return bytes([lead]) + (total >> 4).to_bytes(extra, "little")
    raise ValueError(f"AML package of {body_length} bytes is too long")


def integer(value: int) -> bytes:
    """The shortest integer encoding (Zero, One, Ones, Byte/Word/DWord/QWordConst)."""
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"AML integer {value} out of range")
    if value == 0:
        return bytes([ZERO_OP])
    if value == 1:
        return bytes([ONE_OP])
    for prefix, size in ((BYTE_PREFIX, 1), (WORD_PREFIX, 2), (DWORD_PREFIX, 4), (QWORD_PREFIX, 8)):
        if value < 1 << (8 * size):
            return bytes([prefix]) + value.to_bytes(size, "little")
    raise AssertionError("unreachable")


def dword(value: int) -> bytes:
    """A DWordConst even for small values (EISA ids are always 32 bits)."""
    return bytes([DWORD_PREFIX]) + value.to_bytes(4, "little")


def string(text: str) -> bytes:
    raw = text.encode("ascii")
    if b"\0" in raw:
        raise ValueError("AML strings cannot hold NUL")
    return bytes([STRING_PREFIX]) + raw + b"\x00"


def eisa_id(text: str) -> bytes:
    """EISAID("PNP0501"): three letters in 5 bits each and four hex digits, stored big-endian."""
    if len(text) != 7 or not text[:3].isalpha() or not text[:3].isupper():
        raise ValueError(f"bad EISA id {text!r}")
    letters = [ord(c) - 0x40 for c in text[:3]]
    value = (letters[0] << 26) | (letters[1] << 21) | (letters[2] << 16) | int(text[3:], 16)
    return dword(int.from_bytes(value.to_bytes(4, "big"), "little"))


def name(path: str, value: bytes) -> bytes:
    """Name(path, value): value is an encoded data object."""
    return bytes([NAME_OP]) + name_string(path) + value


def package(elements: list[bytes]) -> bytes:
    """Package(){...} of encoded data objects (at most 255)."""
    if len(elements) > 255:
        raise ValueError("AML package of more than 255 elements")
    body = bytes([len(elements)]) + b"".join(elements)
    return bytes([PACKAGE_OP]) + pkg_length(len(body)) + body


def buffer(data: bytes) -> bytes:
    body = integer(len(data)) + data
    return bytes([BUFFER_OP]) + pkg_length(len(body)) + body


def scope(path: str, terms: list[bytes]) -> bytes:
    body = name_string(path) + b"".join(terms)
    return bytes([SCOPE_OP]) + pkg_length(len(body)) + body


def device(path: str, terms: list[bytes]) -> bytes:
    body = name_string(path) + b"".join(terms)
    return bytes([EXT_OP_PREFIX, DEVICE_OP]) + pkg_length(len(body)) + body


# Resource templates: ResourceTemplate() is a Buffer of descriptors ended by an EndTag.


def resource_template(descriptors: list[bytes]) -> bytes:
    # checksum 0: "the resource data is treated as if the checksum is valid"
    return buffer(b"".join(descriptors) + bytes([END_TAG, 0]))


def io(minimum: int, maximum: int, alignment: int, length: int) -> bytes:
    """IO(Decode16, min, max, align, len)."""
    for value, limit in ((minimum, 0xFFFF), (maximum, 0xFFFF), (alignment, 0xFF), (length, 0xFF)):
        if not 0 <= value <= limit:
            raise ValueError("IO descriptor field out of range")
    return bytes([IO_TAG, 1]) + minimum.to_bytes(2, "little") + maximum.to_bytes(2, "little") + bytes([alignment, length])


def irq_no_flags(irqs: list[int]) -> bytes:
    """IRQNoFlags(){...}: ISA IRQs 0-15, edge-triggered, active high, exclusive."""
    mask = 0
    for irq in irqs:
        if not 0 <= irq <= 15:
            raise ValueError(f"ISA IRQ {irq} out of range 0-15")
        mask |= 1 << irq
    return bytes([IRQ_NO_FLAGS_TAG]) + mask.to_bytes(2, "little")


def memory32_fixed(base: int, length: int, writable: bool = True) -> bytes:
    """Memory32Fixed(ReadWrite|ReadOnly, base, length)."""
    if not (0 <= base < 1 << 32 and 0 <= length < 1 << 32):
        raise ValueError("Memory32Fixed range out of 32 bits")
    body = bytes([1 if writable else 0]) + base.to_bytes(4, "little") + length.to_bytes(4, "little")
    return bytes([MEMORY32_FIXED_TAG]) + len(body).to_bytes(2, "little") + body


def interrupt(gsi: int, *, edge: bool = True, active_low: bool = False, shared: bool = False) -> bytes:
    """Interrupt(ResourceConsumer, Edge|Level, ActiveHigh|ActiveLow, Exclusive|Shared){gsi}."""
    if not 0 <= gsi < 1 << 32:
        raise ValueError("interrupt number out of range")
    flags = 0x01 | (0x02 if edge else 0) | (0x04 if active_low else 0) | (0x08 if shared else 0)
    body = bytes([flags, 1]) + gsi.to_bytes(4, "little")
    return bytes([EXTENDED_INTERRUPT_TAG]) + len(body).to_bytes(2, "little") + body
