"""What a virtio device model provides to a transport.

A device knows its ID, the features it offers, its queues and its config
space; the transport (virtio-mmio here) owns status, feature negotiation,
queue setup and interrupts. Devices know nothing of KVM.

Life cycle, as the transport and the machine drive it:

- ``register_events(loop)``: once, before the VM runs (optional hook).
- ``activate(memory, queues, interrupt)``: at DRIVER_OK.
- ``process(queue_index, queue)``: on every notify (guest QueueNotify,
  ioeventfd) or ``interrupt.trigger(queue_index)``, under the transport's lock.
- ``reset()``: the driver wrote Status 0 (the device may be activated again).
- ``close()``: the VM is gone; release fds and threads. Idempotent.
"""

from __future__ import annotations

from ...memory import GuestMemory
from .constants import VIRTIO_F_VERSION_1
from .queue import DEFAULT_MAX_CHAIN_LEN, SplitQueue

# The ``interrupt`` handle given to activate() is a mmio.TransportInterrupt:
#   interrupt.trigger(queue_index): host-side "there is work on this queue";
#       runs process() as a guest notify would, then raises the used-buffer
#       interrupt if the driver wants one (EVENT_IDX / NO_INTERRUPT honoured).
#       A no-op unless the device is running and the queue is ready.
#   interrupt.config_changed(): new config generation + config-change interrupt.
# Both are safe from any thread, including from inside process().
#
# The ``loop`` given to register_events() offers loop.register(fd, callback)
# and loop.unregister(fd); callback() takes no arguments and runs on the
# event-loop thread. (No typing.Protocol: this module is on the start path.)


class VirtioDevice:
    device_id: int = 0
    features: int = 1 << VIRTIO_F_VERSION_1  # u64 offered to the driver
    queue_max_sizes: tuple[int, ...] = ()
    # Buffers per descriptor chain the device can use; longer chains (and
    # indirect tables) are refused unwalked and answered as faulty.
    max_chain_len: int = DEFAULT_MAX_CHAIN_LEN

    def __init__(self) -> None:
        # Set by the transport once the driver's choice is accepted (FEATURES_OK).
        self.acked_features = 0

    @property
    def config(self) -> bytes:
        """The device-specific configuration space, little-endian (read by the driver)."""
        return b""

    def write_config(self, offset: int, data: bytes) -> None:
        """A driver write into config space; most fields are read-only, so ignore."""

    def register_events(self, loop) -> None:
        """Called once before the VM runs; devices that wait on host fds
        register them here (``loop.register(fd, callback)``). Default: none."""

    def activate(self, memory: GuestMemory, queues: list[SplitQueue], interrupt) -> None:
        """DRIVER_OK: the queues are configured (those with ``ready`` set may be used).

        Keep ``interrupt`` to signal host-side work (``interrupt.trigger(i)``)
        or a config change (``interrupt.config_changed()``).
        """

    def reset(self) -> None:
        """The driver reset the device: forget everything negotiated."""
        self.acked_features = 0

    def close(self) -> None:
        """Release host resources (fds, worker threads). Idempotent."""

    def process(self, queue_index: int, queue: SplitQueue) -> bool:
        """Handle available chains of ``queue``; True if used entries were added.

        Runs under the transport's lock. May raise the typed errors of
        :mod:`.queue` (QueueError, GuestMemoryError) when the ring itself is
        broken; the transport catches them.
        """
        return False
