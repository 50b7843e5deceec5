"""Coalesced MMIO: register writes that KVM queues in a ring instead of exiting.

Each VM exit costs 25-80 us here, and a virtio-mmio driver configures each
queue with about ten register writes (QueueSel, QueueNum, six ring address
halves, QueueReady). Writes into a coalesced zone do not leave KVM_RUN: the
kernel appends them to a ring page shared with us (the vCPU mmap, at the page
offset KVM_CAP_COALESCED_MMIO returns), and we replay them, in order, before
handling the next exit of any kind and before any queue notification. So a
device sees every write in the guest's order, just later; a read still exits
and finds every earlier write applied. QueueNotify stays an ioeventfd and
stays out of the zones, as does everything whose write must act at once
(Status, InterruptACK, feature selection).

The ring is written by the kernel, not the guest, but its indexes are still
bounded before use.
"""

from __future__ import annotations

import fcntl
import mmap
import struct
import threading

KVM_CAP_COALESCED_MMIO = 15
# _IOW(KVMIO, 0x67, struct kvm_coalesced_mmio_zone): {u64 addr; u32 size; u32 pad}
KVM_REGISTER_COALESCED_MMIO = 0x4010AE67
_ZONE = struct.Struct("<QII")
_HEADER = struct.Struct("<II")  # first (ours to advance), last (the kernel's)
_ENTRY = struct.Struct("<QII8s")  # phys_addr, len, pad, data[8]
RING_ENTRIES = (mmap.PAGESIZE - _HEADER.size) // _ENTRY.size  # KVM_COALESCED_MMIO_MAX


class CoalescedMmio:
    """The VM's ring of coalesced writes, replayed into ``bus`` by ``drain()`` (any thread)."""

    def __init__(self, vm_fd: int, run_map, page_offset: int, bus):
        self._vm_fd = vm_fd
        self._map = run_map  # no memoryview kept: the vCPU closes this map when it goes
        self._base = page_offset * mmap.PAGESIZE
        self._bus = bus
        self._lock = threading.Lock()

    def add_zone(self, addr: int, size: int) -> None:
        fcntl.ioctl(self._vm_fd, KVM_REGISTER_COALESCED_MMIO, _ZONE.pack(addr, size, 0))

    def drain(self) -> None:
        ring, base = self._map, self._base
        try:
            if ring[base : base + 4] == ring[base + 4 : base + 8]:  # first == last: nothing waits
                return
            with self._lock:
                first, last = _HEADER.unpack_from(ring, base)
                if last >= RING_ENTRIES:
                    return  # not a ring index: leave it alone
                while first != last:
                    first %= RING_ENTRIES
                    addr, length, _, data = _ENTRY.unpack_from(ring, base + _HEADER.size + first * _ENTRY.size)
                    first = (first + 1) % RING_ENTRIES
                    struct.pack_into("<I", ring, base, first)  # the slot is free once read
                    if 0 < length <= 8:
                        self._bus.write(addr, length, int.from_bytes(data[:length], "little"))
        except ValueError:
            return  # the vCPU's map is closed: the VM is gone
