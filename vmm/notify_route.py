"""Which path a virtqueue's notifications take, chosen by measured load (issue 15).

A QueueNotify write can be served two ways:

- at the MMIO exit, on the vCPU thread: no thread hand-off, the guest finds
  its answers the moment it resumes; but the vCPU runs no guest code while
  the device works;
- by ioeventfd: KVM signals an eventfd without leaving the kernel and the
  I/O thread serves it while the guest runs on; but the guest waits for that
  thread to be scheduled, wake up and take the GIL, which on a busy host
  costs more than the work itself.

Measured here (vmm bench blk / blk-busy): a batch of 4 KiB reads takes
10-20 us to serve, and the exit path serves ~2x the IOPS of the ioeventfd
path (~4x on a busy host); 1 MiB requests take milliseconds per batch, long
enough that stalling the vCPU for them matters more than the hand-off.

So each queue starts on the exit path and is moved to ioeventfd when its
batches get heavy (the moving average of the time to serve one notify above
HEAVY_S), and back when they get light (below LIGHT_S). Registering or
removing an ioeventfd costs KVM a synchronize_srcu (~4 ms measured), so a
queue switches at most once per MIN_BATCHES notifies, and the ioctl runs on
the event-loop thread, never on a vCPU. Nothing here knows about KVM: the
caller passes the assign/deassign callables.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

HEAVY_S = 1e-3  # a vCPU held this long per notify: hand the queue to the I/O thread
LIGHT_S = 250e-6  # cheaper than a hand-off on a busy host: serve it at the exit
MIN_BATCHES = 8  # notifies in one mode before the next switch may be asked
_WEIGHT = 0.25  # of the newest sample in the moving average


class NotifyRoute:
    """One queue's choice between the exit path and ioeventfd."""

    def __init__(self, assign: Callable[[], None], deassign: Callable[[], None], schedule: Callable[[Callable[[], None]], None]):
        """``assign``/``deassign`` register/remove the queue's ioeventfd;
        ``schedule(fn)`` runs fn on the event-loop thread (loop.call_soon)."""
        self._assign, self._deassign, self._schedule = assign, deassign, schedule
        self.via_ioeventfd = False
        self.average_s = 0.0
        self.switches = 0
        self._batches = 0
        self._pending = False  # a switch is scheduled
        self._lock = threading.Lock()

    def served(self, seconds: float) -> None:
        """One notify took ``seconds`` to serve (on whichever thread served it)."""
        with self._lock:
            self.average_s += (seconds - self.average_s) * _WEIGHT
            self._batches += 1
            if self._pending or self._batches < MIN_BATCHES:
                return
            heavy = self.average_s > HEAVY_S if not self.via_ioeventfd else self.average_s >= LIGHT_S
            if heavy == self.via_ioeventfd:
                return
            self._pending = True
        self._schedule(self._switch)

    def _switch(self) -> None:
        to_ioeventfd = not self.via_ioeventfd
        (self._assign if to_ioeventfd else self._deassign)()
        with self._lock:
            self.via_ioeventfd = to_ioeventfd
            self.switches += 1
            self._batches = 0
            self._pending = False
