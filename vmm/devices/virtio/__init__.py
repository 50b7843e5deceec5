"""virtio devices: split virtqueues, the virtio-mmio transport, virtio-blk.

Device models know nothing of KVM: the machine wires a
:class:`VirtioMmioTransport` onto the MMIO bus and gives it an interrupt
callback; the transport drives a :class:`VirtioDevice`.
"""

# The names below load their modules on first use (PEP 562): a sandbox needs
# the console and the transport, not virtio-blk (~1.5 ms at a cold start).
_HOMES = {
    "BlockState": "block", "VirtioBlock": "block", "VirtioDevice": "device",
    "TransportInterrupt": "mmio", "TransportState": "mmio", "VirtioMmioTransport": "mmio",
    **dict.fromkeys(("Buffer", "ChainError", "ChainTooLong", "DescriptorChain", "QueueError", "QueueState",
                     "SplitQueue", "StateError", "VirtioError"), "queue"),
}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = __import__(f"{__name__}.{home}", fromlist=[name])  # importlib itself costs an import
    value = getattr(module, name)
    globals()[name] = value
    return value


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
