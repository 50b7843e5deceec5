"""What a virtio device model provides to a transport.

A device knows its ID, the features it offers, its queues and its config
space; the transport (virtio-mmio here) owns status, feature negotiation,
queue setup and interrupts. Devices know nothing of KVM.
"""

from __future__ import annotations

from ...memory import GuestMemory
from .constants import VIRTIO_F_VERSION_1
from .queue import SplitQueue


class VirtioDevice:
    device_id: int = 0
    features: int = 1 << VIRTIO_F_VERSION_1  # u64 offered to the driver
    queue_max_sizes: tuple[int, ...] = ()

    def __init__(self) -> None:
        # Set by the transport once the driver's choice is accepted (FEATURES_OK).
        self.acked_features = 0

    @property
    def config(self) -> bytes:
        """The device-specific configuration space, little-endian (read by the driver)."""
        return b""

    def write_config(self, offset: int, data: bytes) -> None:
        """A driver write into config space; most fields are read-only, so ignore."""

    def activate(self, memory: GuestMemory, queues: list[SplitQueue]) -> None:
        """DRIVER_OK: the queues are configured (those with ``ready`` set may be used)."""

    def reset(self) -> None:
        """The driver reset the device: forget everything negotiated."""
        self.acked_features = 0

    def process(self, queue_index: int, queue: SplitQueue) -> bool:
        """Handle every available chain of ``queue``; True if used entries were added.

        May raise the typed errors of :mod:`.queue` (QueueError, GuestMemoryError)
        when the ring itself is broken; the transport catches them.
        """
        return False
