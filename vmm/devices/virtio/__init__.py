"""virtio devices: split virtqueues, the virtio-mmio transport, virtio-blk.

Device models know nothing of KVM: the machine wires a
:class:`VirtioMmioTransport` onto the MMIO bus and gives it an interrupt
callback; the transport drives a :class:`VirtioDevice`.
"""

from .block import BlockState, VirtioBlock
from .device import VirtioDevice
from .mmio import TransportInterrupt, TransportState, VirtioMmioTransport
from .queue import (
    Buffer,
    ChainError,
    ChainTooLong,
    DescriptorChain,
    QueueError,
    QueueState,
    SplitQueue,
    StateError,
    VirtioError,
)

__all__ = [
    "BlockState",
    "Buffer",
    "ChainError",
    "ChainTooLong",
    "DescriptorChain",
    "QueueError",
    "QueueState",
    "SplitQueue",
    "StateError",
    "TransportInterrupt",
    "TransportState",
    "VirtioBlock",
    "VirtioDevice",
    "VirtioError",
    "VirtioMmioTransport",
]
