"""Virtio devices on the MMIO bus: slots, interrupts and queue notifications.

Each device gets the next (address, IRQ) slot, a transport on the MMIO bus,
an irqfd for its interrupt, and per queue an ioeventfd whose notifications
the event loop serves, or the vCPU at the guest's idle exit when the loop is
late for them (vmm/notify_route.py chooses, by measured load). The queue
set-up registers are coalesced: KVM keeps those writes in a ring and the vCPU
replays them in order (vmm/kvm/coalesced.py).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms on every start)

from .record import record
from .x86 import layout

if TYPE_CHECKING:
    from .builder import AssembledVm, MachineHooks


class VirtioSlot(record("VirtioSlot", "device transport addr irq irq_fd routes", defaults=((),))):
    """A virtio device placed on the MMIO bus, with its interrupt eventfd and
    its queues' notify routes (none without ioeventfd)."""

    __slots__ = ()

    @property
    def cmdline_entry(self) -> str:
        """Its `virtio_mmio.device=` entry: the syntax Linux and the bundled guest read."""
        return f"virtio_mmio.device={layout.VIRTIO_MMIO_SIZE // 1024}K@0x{self.addr:x}:{self.irq}"



def _add_virtio_device(
    parts: AssembledVm, slots: layout.DeviceSlots, device, use_ioeventfd: bool, hooks: MachineHooks, transport_state=None
) -> VirtioSlot:
    """Place a device in the next slot. Its used-buffer interrupt goes through
    an irqfd: KVM injects it without a vCPU thread or a KVM_IRQ_LINE per interrupt.
    With ``transport_state`` (a snapshot's), the transport is rebuilt from it."""
    from .devices.virtio.constants import MMIO_QUEUE_NOTIFY
    from .devices.virtio.mmio import VirtioMmioTransport

    addr, irq = slots.allocate(type(device).__name__)
    irq_fd = parts.eventfd()
    parts.vm.add_irqfd(irq_fd, irq)

    def interrupt(level: bool, fd=irq_fd) -> None:
        if level:
            os.eventfd_write(fd, 1)  # an edge on the (ISA, edge-triggered) pin

    if transport_state is None:
        transport = VirtioMmioTransport(device, parts.memory, interrupt, on_host_work=hooks.wake)
    else:
        transport = VirtioMmioTransport.from_state(device, parts.memory, interrupt, transport_state)
        transport.on_host_work = hooks.wake
    parts.mmio_bus.register(addr, layout.VIRTIO_MMIO_SIZE, transport)
    if use_ioeventfd:
        # Each queue's notifications start on an ioeventfd and move to the
        # MMIO exit while the I/O thread is late for them (vmm/notify_route.py).
        from .notify_route import PINNED, NotifyRoute

        routes = []
        for queue_index in range(len(device.queue_max_sizes)):
            notify_fd = parts.eventfd()
            register = functools.partial(
                parts.vm.add_ioeventfd, notify_fd, addr + MMIO_QUEUE_NOTIFY, 4, datamatch=queue_index
            )
            on_ioeventfd = PINNED != "exit"
            if on_ioeventfd:
                register()
            route = NotifyRoute(register, functools.partial(register, remove=True), parts.loop.call_soon, on_ioeventfd)
            routes.append(route)
            parts.loop.register(notify_fd, _notifier(notify_fd, transport, queue_index, hooks.wake, route))
            parts.notify_queues.append((notify_fd, transport, queue_index, route))
        transport.on_exit_notify = lambda index, seconds: routes[index].served(seconds) if index < len(routes) else None
        slot_routes = tuple(routes)
    else:
        slot_routes = ()
    register = getattr(device, "register_events", None)
    if register is not None:
        register(parts.loop)
    slot = VirtioSlot(device, transport, addr, irq, irq_fd, slot_routes)
    parts.virtio.append(slot)
    return slot


# Virtio-mmio registers whose writes only configure a queue (QueueSel..QueueReady,
# the ring addresses): coalesced, see vmm/kvm/coalesced.py. QueueNotify (0x50)
# and everything after it up to the ring addresses stay ordinary exits.
COALESCED_SPANS = ((0x030, 0x018), (0x080, 0x028))


def _coalesce_queue_setup(parts: AssembledVm) -> None:
    from .kvm.coalesced import KVM_CAP_COALESCED_MMIO, CoalescedMmio

    page = parts.kvm.check_extension(KVM_CAP_COALESCED_MMIO)
    if not parts.virtio or not parts.vcpus or not page or (page + 1) * 4096 > parts.kvm.vcpu_mmap_size:
        return
    ring = CoalescedMmio(parts.vm.fd, parts.vcpus[0]._run_map, page, parts.mmio_bus)
    try:
        for slot in parts.virtio:
            for offset, size in COALESCED_SPANS:
                ring.add_zone(slot.addr + offset, size)
    except OSError:
        return  # without it every write exits: slower, still right
    parts.mmio_bus.drain_coalesced = ring.drain
    for slot in parts.virtio:
        slot.transport.before_notify = ring.drain


def _serve_pending(notify_queues: list, late: bool) -> bool:
    """Serve, on this (vCPU) thread, every queue whose ioeventfd holds a
    notification the I/O thread has not taken; whether there was one."""
    served = False
    for fd, transport, queue_index, route in notify_queues:
        try:
            os.eventfd_read(fd)
        except BlockingIOError:
            continue
        start = time.perf_counter()
        transport.notify(queue_index)
        route.served(time.perf_counter() - start)
        if late:
            route.late()
        served = True
    return served


def _idle_serving_late_notifies(notify_queues: list, idle: Callable[[float], None]) -> Callable[[float], None]:
    """The guest's idle exit. A guest idles when it has nothing left but to
    wait; if a queue's ioeventfd still holds a notification then, the I/O
    thread is late for it: serve it here on the vCPU thread and return at
    once (the guest finds its answers), and tell the queue's route."""

    def on_idle(seconds: float) -> None:
        if not _serve_pending(notify_queues, late=True):
            idle(seconds)

    return on_idle


def _power_off_serving_notifies(notify_queues: list, power_off: Callable[[int], None]) -> Callable[[int], None]:
    """The guest's power-off. Every notification it made before is served
    first: what it sent (the sandbox's last output and its exit line) is never
    lost to the I/O thread being late, so the guest need not wait for its
    queues before it powers off. One the I/O thread took already is finished
    by the time the VM is closed (closing joins that thread)."""

    def on_power_off(status: int) -> None:
        _serve_pending(notify_queues, late=False)
        power_off(status)

    return on_power_off


def _notifier(fd: int, transport, queue_index: int, wake: Callable[[], None], route) -> Callable[[], None]:
    def on_notify() -> None:
        try:
            os.eventfd_read(fd)
        except BlockingIOError:
            return
        drain = getattr(transport, "before_notify", None)
        if drain is not None:
            drain()  # queue set-up the guest wrote before this notify, still in the ring
        start = time.perf_counter()
        transport.notify(queue_index)
        route.served(time.perf_counter() - start)
        wake()  # a guest may be idling until this request completes

    return on_notify
