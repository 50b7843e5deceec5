"""What a descriptor chain resolves to, and the typed errors of the virtio layer.

A chain is the buffers of one request (each a view into guest RAM, checked)
or the typed fault that makes it malformed (``chain.fault``): devices answer
a faulty chain instead of following it. ``StateError`` and the checks beside
it guard state records restored from snapshot files.
"""

from __future__ import annotations

from ...errors import ConfigError, VmmError
from ...record import record


class VirtioError(VmmError):
    """Base of the typed errors a virtio transport catches at its boundary."""


class QueueError(VirtioError):
    """The driver broke the queue protocol; the device must be reset."""


class ChainError(VirtioError):
    """One descriptor chain is malformed (answered, not followed).

    Each subclass is one kind of fault; ``str(err)`` is the message for logs.
    """


class NextOutOfRange(ChainError):
    """A NEXT index points past the end of its table."""


class ChainLoop(ChainError):
    """The chain visits more descriptors than its table holds."""


class ChainTooLong(ChainError):
    """More buffers than the device's max_chain_len (direct or indirect)."""


class ChainTooLarge(ChainError):
    """The chain's buffers add up to more than MAX_CHAIN_BYTES."""


class WrongDirection(ChainError):
    """A device-readable buffer after a device-writable one (2.7.4.2)."""


class BufferOutsideRam(ChainError):
    """A buffer, or an indirect table, lies outside guest RAM."""


class BadIndirect(ChainError):
    """An INDIRECT descriptor breaks 2.7.5.3: not negotiated, nested, with
    NEXT, or a length that is not a non-zero multiple of 16."""


class StateError(ConfigError, ValueError):
    """A state record (from a snapshot file: untrusted) that no device could
    have been in; the message names the field. Exit status 2, like bad input."""


def check_uint(name: str, value, bits: int) -> int:
    """``value`` if it is an int in [0, 2^bits), else StateError."""
    if type(value) is not int or not 0 <= value < 1 << bits:
        raise StateError(f"virtio state: {name} {value!r:.40} is not a u{bits}")
    return value


def check_bool(name: str, value) -> bool:
    if type(value) is not bool:
        raise StateError(f"virtio state: {name} {value!r:.40} is not a bool")
    return value


class Buffer(record("Buffer", "addr length writable view")):
    """One guest buffer: its range, whether it is device-writable
    (VIRTQ_DESC_F_WRITE), and a view straight into guest RAM."""

    __slots__ = ()


class DescriptorChain:
    """The buffers of one request, or the fault that makes it malformed.

    An invalid chain keeps the buffers resolved before the fault (each inside
    guest RAM, at most max_chain_len of them), so a device may still report a
    status in the last one.
    """

    __slots__ = ("head", "buffers", "fault")

    def __init__(self, head: int, buffers: list[Buffer] | None = None, fault: ChainError | None = None):
        self.head = head
        self.buffers = [] if buffers is None else buffers
        self.fault = fault

    def __repr__(self) -> str:
        return f"DescriptorChain(head={self.head}, buffers={self.buffers!r}, fault={self.fault!r})"

    @property
    def valid(self) -> bool:
        return self.fault is None

    @property
    def error(self) -> str | None:
        """The fault as a one-line message for logs (None when valid)."""
        return None if self.fault is None else f"descriptor chain {self.head}: {self.fault}"

    @property
    def readable_buffers(self) -> list[Buffer]:
        return [b for b in self.buffers if not b.writable]

    @property
    def writable_buffers(self) -> list[Buffer]:
        return [b for b in self.buffers if b.writable]
