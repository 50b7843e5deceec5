"""Unpack a bzImage's compressed kernel in the VMM instead of in the guest.

A bzImage carries its real kernel (an ELF ``vmlinux``) compressed, at
payload_offset/payload_length in the protected-mode part, with the
uncompressed size in the payload's last 4 bytes. Normally the guest's own
decompressor stub unpacks it; on this platform that stub runs in KVM's ring-0
instruction emulator (~1 us an instruction): for Debian's 6.1 kernel (LZ4)
its command line came 105 s after start, against 18 s when the VMM unpacks
it (in ~2 s of Python) and enters the kernel's own 64-bit entry point (startup_64,
which head_64.S documents as an entry "directly from a 64bit bootloader"),
as a vmlinux loader does. The price: no KASLR (only the stub randomises).

Formats: gzip, xz, lzma, bzip2 (the standard library) and LZ4's legacy frame
(Debian's choice; decoded here). zstd and LZO are left to the guest's stub.
"""

from __future__ import annotations

import struct

from ..errors import KernelImageError
from ..record import record

LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
MAX_UNPACKED = 1 << 30  # a kernel image, not a disk: refuse to allocate more for one

ElfSegment = record("ElfSegment", "paddr data memsz")
Vmlinux = record("Vmlinux", "entry segments")  # entry: a physical address


def _lz4_block(src: bytes, pos: int, end: int, out: bytearray, limit: int) -> None:
    """Decode one LZ4 block src[pos:end] onto the end of ``out``, which may not pass ``limit``."""
    while pos < end:
        token = src[pos]
        pos += 1
        length = token >> 4
        if length == 15:
            while True:
                if pos >= end:
                    raise ValueError("truncated literal length")
                extra = src[pos]
                pos += 1
                length += extra
                if extra != 255:
                    break
        if pos + length > end or len(out) + length > limit:
            raise ValueError("literals run past the block or the output limit")
        out += src[pos : pos + length]
        pos += length
        if pos >= end:
            return  # the last sequence has literals only
        if pos + 2 > end:
            raise ValueError("truncated match offset")
        offset = src[pos] | src[pos + 1] << 8
        pos += 2
        length = (token & 15) + 4
        if length == 19:
            while True:
                if pos >= end:
                    raise ValueError("truncated match length")
                extra = src[pos]
                pos += 1
                length += extra
                if extra != 255:
                    break
        if offset == 0 or offset > len(out) or len(out) + length > limit:
            raise ValueError("match offset or length out of range")
        start = len(out) - offset
        if offset >= length:
            out += out[start : start + length]
        else:  # overlapping: the match repeats its last `offset` bytes
            pattern = bytes(out[start:])
            out += (pattern * (length // offset + 1))[:length]


def lz4_legacy_decompress(data: bytes, expected_size: int) -> bytes:
    """Decode an LZ4 legacy frame (magic, then blocks each preceded by a u32 size)."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        if data[pos : pos + 4] == LZ4_LEGACY_MAGIC:  # a frame (concatenated frames repeat it)
            pos += 4
            continue
        if pos + 4 > len(data):
            break
        (size,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if size > len(data) - pos:
            raise ValueError("LZ4 block runs past the payload")
        _lz4_block(data, pos, pos + size, out, expected_size)
        pos += size
        if len(out) == expected_size:
            break
    return bytes(out)


def decompress_payload(payload: bytes, limit: int = MAX_UNPACKED) -> bytes | None:
    """The vmlinux inside a bzImage payload, or None if its format is not one unpacked here.

    ``limit``: the most it may unpack to (the guest's RAM: a larger kernel could not be placed)."""
    if len(payload) < 8:
        return None
    (size,) = struct.unpack_from("<I", payload, len(payload) - 4)  # the build appends the size
    limit = min(limit, MAX_UNPACKED)
    if size > limit:
        raise KernelImageError(f"the kernel's payload claims {size} bytes unpacked (more than {limit >> 20} MiB)")
    body = payload[:-4]
    if size == 0 and body.startswith((LZ4_LEGACY_MAGIC, b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x5d\x00\x00", b"BZh")):
        # zlib takes a max_length of 0 as "no limit": refuse before unpacking anything
        raise KernelImageError("the kernel's payload claims 0 bytes unpacked")
    try:
        if body.startswith(LZ4_LEGACY_MAGIC):
            result = lz4_legacy_decompress(body, size)
        elif body.startswith(b"\x1f\x8b"):
            import zlib

            try:
                result = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body, size)
            except zlib.error as err:  # not a ValueError: its own class
                raise ValueError(str(err)) from None
        elif body.startswith(b"\xfd7zXZ\x00") or body.startswith(b"\x5d\x00\x00"):
            import lzma

            decoder = lzma.LZMADecompressor(lzma.FORMAT_XZ if body[0] == 0xFD else lzma.FORMAT_ALONE)
            try:
                result = decoder.decompress(body, size)
            except lzma.LZMAError as err:  # not a ValueError either
                raise ValueError(str(err)) from None
        elif body.startswith(b"BZh"):
            import bz2

            result = bz2.BZ2Decompressor().decompress(body, size)
        else:
            return None
    except (ValueError, EOFError, OSError) as err:
        raise KernelImageError(f"the kernel's compressed payload is corrupt: {err}") from None
    if len(result) != size:
        raise KernelImageError(f"the kernel's payload unpacks to {len(result)} bytes, not the {size} it declares")
    return result


def parse_vmlinux(elf: bytes) -> Vmlinux:
    """The PT_LOAD segments at their physical addresses, and the physical entry point."""
    try:
        if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
            raise KernelImageError("the kernel's payload is not a 64-bit little-endian ELF")
        entry, phoff = struct.unpack_from("<QQ", elf, 24)
        phentsize, phnum = struct.unpack_from("<HH", elf, 54)
        if phentsize != 56 or phnum == 0 or phoff + phnum * 56 > len(elf):
            raise KernelImageError("the kernel's payload has no usable ELF program headers")
        segments, phys_entry = [], None
        for i in range(phnum):
            kind, _flags, offset, vaddr, paddr, filesz, memsz = struct.unpack_from("<IIQQQQQ", elf, phoff + i * 56)
            if kind != 1 or memsz == 0:  # PT_LOAD only
                continue
            if filesz > memsz or offset + filesz > len(elf):
                raise KernelImageError(f"the kernel's ELF segment {i} is malformed")
            segments.append(ElfSegment(paddr, elf[offset : offset + filesz], memsz))
            # x86-64 vmlinux links e_entry as a physical address (phys_startup_64); take a virtual one too
            if paddr <= entry < paddr + memsz:
                phys_entry = entry
            elif phys_entry is None and vaddr <= entry < vaddr + memsz:
                phys_entry = paddr + (entry - vaddr)
    except (struct.error, IndexError):  # IndexError: it ends inside e_ident
        raise KernelImageError("the kernel's payload is a truncated ELF") from None
    if phys_entry is None:
        raise KernelImageError("the kernel's ELF entry point lies in no loadable segment")
    return Vmlinux(phys_entry, tuple(segments))
