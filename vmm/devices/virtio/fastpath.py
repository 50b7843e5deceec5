"""virtio-blk's common request served in C (vmm/kvm/virtio_fast.c).

The Python model in queue.py and block.py is the reference: the C code
serves only chains laid out as drivers lay out ordinary reads and writes
(header, data, status) that the model would serve with one preadv/pwritev,
and stops, leaving the chain in the ring, at the first one that is anything
else; the model then pops it with every check it has. On the same queue
both give the same guest memory, used ring and disk contents
(tests/unit/test_virtio_fastpath.py).

Why: per request the model costs tens of microseconds of Python (resolving
the chain, the views, the answer) under the GIL; C costs about one
microsecond and runs with the GIL released.
"""

from __future__ import annotations

import os

try:
    from ...kvm._kvm_cffi import ffi, lib

    AVAILABLE = hasattr(lib, "vmm_blk_serve")
except ImportError:  # the compiled module is missing: the model serves everything
    AVAILABLE = False

# Data bytes per request served in C: small requests, where per-request cost
# dominates. Larger ones stay with the model (its parallel reads, write-behind).
MAX_DATA_BYTES = (64 << 10) - 512


def enabled() -> bool:
    """The fast path is built in and not switched off (VMM_VIRTIO_FASTPATH=0)."""
    return AVAILABLE and os.environ.get("VMM_VIRTIO_FASTPATH", "1") != "0"


class BlkFastPath:
    """One device's C state: guest RAM's regions, the disk, one queue record."""

    def __init__(self, memory, disk_bytes: int, read_only: bool, max_chain_len: int):
        regions = memory.regions
        self._regions = ffi.new("struct vmm_ram_region[]", len(regions))
        # from_buffer holds an export on each mapping: it stays mapped while
        # this object lives, even if GuestMemory.close() runs meanwhile.
        self._buffers = [ffi.from_buffer("uint8_t[]", r.mapping, require_writable=True) for r in regions]
        for slot, region, buf in zip(self._regions, regions, self._buffers):
            slot.gpa, slot.size, slot.host = region.guest_addr, region.size, buf
        q = self._q = ffi.new("struct vmm_vq *")
        q.regions, q.nregions = self._regions, len(regions)
        q.disk_bytes, q.read_only = disk_bytes, read_only
        q.max_chain_len, q.max_data_bytes = max_chain_len, MAX_DATA_BYTES

    @property
    def requests(self) -> int:
        return self._q.requests

    def serve(self, queue, fd: int) -> int:
        """Serve the common requests at the head of ``queue``'s available ring
        from/to the disk open as ``fd``; returns how many (0: the next chain,
        if any, is the model's)."""
        if not queue.ready or fd < 0:
            return 0
        q = self._q
        q.fd = fd
        q.size, q.desc_addr, q.avail_addr, q.used_addr = queue.size, queue.desc_addr, queue.avail_addr, queue.used_addr
        q.next_avail, q.next_used = queue.next_avail, queue.next_used
        q.indirect = queue.indirect
        served = lib.vmm_blk_serve(q)
        if served > 0:
            queue.next_avail, queue.next_used = q.next_avail, q.next_used
        return max(served, 0)
