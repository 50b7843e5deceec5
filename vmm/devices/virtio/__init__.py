"""virtio devices: split virtqueues, the virtio-mmio transport, virtio-blk.

Device models know nothing of KVM: the machine wires a
:class:`VirtioMmioTransport` onto the MMIO bus and gives it an interrupt
callback; the transport drives a :class:`VirtioDevice`.
"""

from .block import VirtioBlock
from .device import VirtioDevice
from .mmio import TransportInterrupt, VirtioMmioTransport
from .queue import (
    Buffer,
    ChainError,
    DescriptorChain,
    QueueError,
    SplitQueue,
    VirtioError,
)

__all__ = [
    "Buffer",
    "ChainError",
    "DescriptorChain",
    "QueueError",
    "SplitQueue",
    "TransportInterrupt",
    "VirtioBlock",
    "VirtioDevice",
    "VirtioError",
    "VirtioMmioTransport",
]
