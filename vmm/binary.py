"""Fixed little-endian C layouts with named fields, on the struct module.

vmm used construct for these once; importing construct costs ~40 ms (it
pulls in hashlib's OpenSSL, pdb and inspect), more than QEMU takes to boot
the guest. struct plus a named tuple reads the same and imports in well
under a millisecond. tests/layouts.py declares every layout again with
construct, so the tests check these against a second reading of the specs.
"""

from __future__ import annotations

import struct

from .record import record


class Layout:
    """A C struct: ``pack(**fields)`` (omitted fields are zero) and ``unpack_from``."""

    def __init__(self, name: str, fields: str):
        # fields: "name:code name:code ..." with struct codes (Q I H B, or Ns for bytes)
        names, codes = zip(*(item.split(":") for item in fields.split()))
        self.struct = struct.Struct("<" + "".join(codes))
        self.size = self.struct.size
        self._spec = (name, names, tuple(bytes(int(code[:-1])) if code.endswith("s") else 0 for code in codes))
        self._fields = None

    @property
    def fields(self):
        """The record type, made on first use: most layouts are never used in a given run."""
        if self._fields is None:
            name, names, defaults = self._spec
            self._fields = record(name, names, defaults=defaults)
        return self._fields

    def pack(self, **values) -> bytes:
        return self.struct.pack(*self.fields(**values))

    def unpack_from(self, buffer, offset: int = 0):
        """Raises struct.error if ``buffer`` holds fewer than ``size`` bytes from ``offset``."""
        return self.fields._make(self.struct.unpack_from(buffer, offset))
