"""A small stand-in for atheris.FuzzedDataProvider: typed values out of the input bytes.

Values come off the front of the data in order; once it runs out, every
value is zero (and byte strings are empty), so any input is a valid case and
the replay of a saved input needs no fuzzing engine.
"""

from __future__ import annotations


class Provider:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def bytes(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + max(n, 0)]
        self.pos += len(out)
        return out

    def rest(self) -> bytes:
        return self.bytes(self.remaining)

    def uint(self, nbytes: int) -> int:
        return int.from_bytes(self.bytes(nbytes), "little")

    def u8(self) -> int:
        return self.uint(1)

    def u16(self) -> int:
        return self.uint(2)

    def u32(self) -> int:
        return self.uint(4)

    def u64(self) -> int:
        return self.uint(8)

    def bool(self) -> bool:
        return bool(self.u8() & 1)

    def below(self, n: int) -> int:
        """An int in [0, n) (n > 0), from as few bytes as n needs."""
        width = max(1, (n.bit_length() + 7) // 8)
        return self.uint(width) % n

    def pick(self, choices):
        return choices[self.below(len(choices))]
