"""The virtio-mmio transport's state record and the checks a restored one must pass.

A record comes from a snapshot file: untrusted. ``check_registers`` refuses
register values the transport's state machine could never have reached;
``VirtioMmioTransport.from_state`` then checks what depends on the device.
"""

from __future__ import annotations

from ...record import record
from . import constants as c
from .queue import StateError, check_bool, check_uint

# 4.2.2: DeviceFeaturesSel / DriverFeaturesSel pick a 32-bit word; two cover
# the 64 feature bits (a larger selector is stored clamped to this).
FEATURE_WORDS = 2

STATUS_BITS = (
    c.STATUS_ACKNOWLEDGE | c.STATUS_DRIVER | c.STATUS_FEATURES_OK | c.STATUS_DRIVER_OK
    | c.STATUS_DEVICE_NEEDS_RESET | c.STATUS_FAILED
)
# 3.1.1: each of these needs the one before it (the state machine enforces it).
_STATUS_ORDER = (c.STATUS_ACKNOWLEDGE, c.STATUS_DRIVER, c.STATUS_FEATURES_OK, c.STATUS_DRIVER_OK)
_INTERRUPT_BITS = c.MMIO_INT_VRING | c.MMIO_INT_CONFIG


class TransportState(
    record(
        "TransportState",
        "status device_features_sel driver_features_sel driver_features unknown_feature_bits "
        "queue_sel interrupt_status config_generation acked_features queues",
    )
):
    """The transport's registers and its queues' states (a tuple of QueueState)."""

    __slots__ = ()


def check_registers(state, queue_count: int) -> None:
    """StateError unless ``state``'s registers are ones the transport can hold."""
    if not isinstance(state, TransportState):
        raise StateError(f"virtio state: transport record is a {type(state).__name__}, not a TransportState")
    status = check_uint("status", state.status, 8)
    if status & ~STATUS_BITS:
        raise StateError(f"virtio state: status 0x{status:02x} has bits no device sets")
    for before, after in zip(_STATUS_ORDER, _STATUS_ORDER[1:]):
        if status & after and not status & before:
            raise StateError(f"virtio state: status 0x{status:02x} has bit 0x{after:x} without 0x{before:x}")
    for name, value in (("device_features_sel", state.device_features_sel),
                        ("driver_features_sel", state.driver_features_sel)):
        if check_uint(name, value, 32) > FEATURE_WORDS:
            raise StateError(f"virtio state: {name} {value} > {FEATURE_WORDS}")
    check_uint("driver_features", state.driver_features, 64)
    check_bool("unknown_feature_bits", state.unknown_feature_bits)
    if check_uint("queue_sel", state.queue_sel, 32) > queue_count:
        raise StateError(f"virtio state: queue_sel {state.queue_sel} past the {queue_count} queues")
    if check_uint("interrupt_status", state.interrupt_status, 32) & ~_INTERRUPT_BITS:
        raise StateError(f"virtio state: interrupt_status 0x{state.interrupt_status:x} has unknown bits")
    check_uint("config_generation", state.config_generation, 32)
    check_uint("acked_features", state.acked_features, 64)
