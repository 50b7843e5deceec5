"""Which path a virtqueue's notifications take, chosen by measured load (issue 15).

A QueueNotify write can be served two ways:

- by ioeventfd: KVM signals an eventfd without leaving the kernel and the
  I/O thread serves it while the guest runs on. When that thread gets a CPU
  at once this is the fastest path by far (measured: ~600k 4 KiB reads/s);
  but the guest then waits for it to be scheduled, wake up and take the GIL,
  and on a busy host that wait costs more than the work (~90k/s);
- at the MMIO exit, on the vCPU thread: one exit per batch and no hand-off,
  so it degrades gently with load (~150-170k/s here), but the vCPU runs no
  guest code while the device works.

So each queue starts on ioeventfd, and the machine watches for the I/O
thread being *late*: a guest that idles (it has nothing left to do but wait)
while the queue's eventfd still holds an unconsumed notification. The vCPU
thread then serves it itself at once (so a late hand-off costs one idle exit,
not a scheduler's wait), and when a quarter of a window's notifies were late
the queue moves to the exit path. From there it goes back to ioeventfd when
its batches get heavy (stalling the vCPU for HEAVY_S per notify is worse than
any hand-off) or, every PROBE_NOTIFIES notifies, to see whether the host has
calmed down.

Registering or removing an ioeventfd costs KVM a synchronize_srcu (~4 ms
measured), so switches are rare by construction and the ioctl runs on the
event-loop thread, never on a vCPU. Nothing here knows about KVM: the caller
passes the assign/deassign callables.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

WINDOW = 32  # notifies per decision on the ioeventfd path
LATE_SHARE = 8  # ... of which 1 in this many late: move to the exit path (a late one
# costs the guest its 100 us spin and an idle exit: about three batches at the exit)
PROBE_NOTIFIES = 512  # notifies on the exit path before trying ioeventfd again
HEAVY_S = 1e-3  # a vCPU held this long per notify (moving average): back to ioeventfd
_WEIGHT = 0.25  # of the newest sample in the moving average
# VMM_NOTIFY_ROUTE=exit or =ioeventfd pins every queue to one path (measurements).
PINNED = os.environ.get("VMM_NOTIFY_ROUTE", "adaptive")


class NotifyRoute:
    """One queue's choice between ioeventfd and the exit path."""

    def __init__(
        self,
        assign: Callable[[], None],
        deassign: Callable[[], None],
        schedule: Callable[[Callable[[], None]], None],
        via_ioeventfd: bool = True,
    ):
        """``assign``/``deassign`` register/remove the queue's ioeventfd (the
        caller has done whichever ``via_ioeventfd`` says); ``schedule(fn)`` runs
        fn on the event-loop thread (loop.call_soon)."""
        self._assign, self._deassign, self._schedule = assign, deassign, schedule
        self.via_ioeventfd = via_ioeventfd
        self.average_s = 0.0
        self.switches = 0
        self.late_total = 0
        self._notifies = 0  # in the current window / exit-path stretch
        self._late = 0
        self._pending = False  # a switch is scheduled
        self._lock = threading.Lock()

    def served(self, seconds: float) -> None:
        """One notify took ``seconds`` to serve (on whichever thread served it)."""
        with self._lock:
            self.average_s += (seconds - self.average_s) * _WEIGHT
            self._notifies += 1
            if self._pending or PINNED != "adaptive":
                return
            if self.via_ioeventfd:
                if self._notifies < WINDOW:
                    return
                move = self._late * LATE_SHARE >= self._notifies
                self._notifies = self._late = 0  # next window
            else:
                move = self.average_s > HEAVY_S or self._notifies >= PROBE_NOTIFIES
            if not move:
                return
            self._pending = True
        self._schedule(self._switch)

    def late(self) -> None:
        """The guest idled while this queue's ioeventfd held a notification
        the I/O thread had not taken yet (the vCPU served it instead)."""
        with self._lock:
            self._late += 1
            self.late_total += 1

    def _switch(self) -> None:
        to_ioeventfd = not self.via_ioeventfd
        (self._assign if to_ioeventfd else self._deassign)()
        with self._lock:
            self.via_ioeventfd = to_ioeventfd
            self.switches += 1
            self._notifies = self._late = 0
            self._pending = False
