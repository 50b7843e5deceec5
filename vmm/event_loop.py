"""The host side of a VM: one thread, one epoll, callbacks per fd, and timers.

Devices and the machine register an fd with a callback (ioeventfds for queue
notifications, host sockets, console input); the loop thread calls it when
the fd is readable. Nothing here knows about KVM or devices: a callback is any
callable taking no arguments. Timers (``call_later``) and cross-thread calls
(``call_soon``) wake the loop through an eventfd, so they need no thread of
their own.

A callback that raises stops the loop and is reported through ``on_error``:
an exception there is a VMM bug, and the machine turns it into a one-line
outcome rather than letting the thread die silently.
"""

from __future__ import annotations

import heapq
import itertools
import os
import select
import threading
import time
from collections.abc import Callable

from .log import get_logger

log = get_logger("vmm.event_loop")

# A timer further out than this is clamped (epoll's timeout is an int of ms).
MAX_WAIT_S = 3600.0


class TimerHandle:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], None]):
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    def __init__(self, name: str = "vmm-events", on_error: Callable[[BaseException], None] | None = None):
        self.name = name
        self._on_error = on_error
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._epoll.register(self._wakeup, select.EPOLLIN)
        self._lock = threading.Lock()  # guards _soon and _timers
        self._soon: list[Callable[[], None]] = []
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None
        self._started = False  # start() was called: run a thread as soon as there is work
        self._thread_lock = threading.Lock()
        self._stopping = False
        self._closed = False
        self.seccomp_kind: str | None = None  # a filter the thread installs first (vmm/seccomp.py)

    # -- registration (any thread) ------------------------------------------
    def register(self, fd: int, callback: Callable[[], None], events: int = select.EPOLLIN) -> None:
        """Call ``callback()`` on the loop thread whenever ``fd`` is ready."""
        if fd in self._callbacks:
            raise ValueError(f"fd {fd} is already registered")
        self._callbacks[fd] = callback
        self._epoll.register(fd, events)
        self._spawn()

    def unregister(self, fd: int) -> None:
        if self._callbacks.pop(fd, None) is not None and not self._closed:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass  # already closed by its owner

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` on the loop thread at its next turn (thread-safe)."""
        with self._lock:
            self._soon.append(callback)
        self._spawn()
        self._wake()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback()`` on the loop thread after ``delay`` seconds (thread-safe)."""
        handle = TimerHandle(time.monotonic() + max(0.0, delay), callback)
        with self._lock:
            heapq.heappush(self._timers, (handle.when, next(self._sequence), handle))
        self._spawn()
        self._wake()
        return handle

    def barrier(self, timeout: float | None = None) -> bool:
        """Wait until every callback already due has run; False on timeout.

        From the loop thread itself this returns at once (it is, by definition,
        between callbacks of its own).
        """
        if self._thread is None or threading.current_thread() is self._thread or not self._thread.is_alive():
            return True
        done = threading.Event()
        self.call_soon(done.set)
        return done.wait(timeout)

    def run_exclusive(self, work: Callable[[], object], timeout: float | None = None):
        """``work()``'s result, run while no callback of the loop runs (on the
        loop thread if there is one): snapshots read device state and guest RAM
        that host-side callbacks could change. Raises what ``work`` raised."""
        if self._thread is None or threading.current_thread() is self._thread or not self._thread.is_alive():
            return work()
        done = threading.Event()
        outcome: list = []

        def run() -> None:
            try:
                outcome.append((True, work()))
            except BaseException as err:  # handed back to the caller, not to on_error
                outcome.append((False, err))
            finally:
                done.set()

        self.call_soon(run)
        if not done.wait(timeout):
            raise TimeoutError("the event loop did not run the exclusive call in time")
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    # -- running --------------------------------------------------------------
    def start(self) -> None:
        """Run callbacks from now on. The thread itself starts with the first
        fd, timer or call: a VM with nothing for the loop pays for no thread."""
        self._started = True
        with self._lock:
            work = bool(self._callbacks or self._soon or self._timers)
        if work:
            self._spawn()

    def _spawn(self) -> None:
        if not self._started or self._thread is not None:
            return
        with self._thread_lock:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end and wait for it (callbacks in progress finish first)."""
        self._stopping = True
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def close(self) -> None:
        self.stop()
        if not self._closed:
            self._closed = True
            self._epoll.close()
            os.close(self._wakeup)
            self._callbacks.clear()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _wake(self) -> None:
        try:
            os.eventfd_write(self._wakeup, 1)
        except OSError:
            pass  # closed: the loop is gone already

    def _next_timeout(self) -> float:
        with self._lock:
            if self._soon:
                return 0
            while self._timers and self._timers[0][2].cancelled:
                heapq.heappop(self._timers)
            if not self._timers:
                return MAX_WAIT_S
            return min(MAX_WAIT_S, max(0.0, self._timers[0][0] - time.monotonic()))

    def _due(self) -> list[Callable[[], None]]:
        now = time.monotonic()
        with self._lock:
            due, self._soon = self._soon, []
            while self._timers and self._timers[0][0] <= now:
                handle = heapq.heappop(self._timers)[2]
                if not handle.cancelled:
                    due.append(handle.callback)
        return due

    def _main(self) -> None:
        try:
            if self.seccomp_kind is not None:
                from .seccomp import install

                install(self.seccomp_kind)
            while not self._stopping:
                for fd, _events in self._epoll.poll(self._next_timeout()):
                    if fd == self._wakeup:
                        try:
                            os.eventfd_read(self._wakeup)
                        except BlockingIOError:
                            pass
                        continue
                    callback = self._callbacks.get(fd)
                    if callback is not None:
                        callback()
                for callback in self._due():
                    callback()
        except Exception as err:  # a VMM bug: report it once, on one line, through the owner
            log.debug("event loop %s failed", self.name, exc_info=True)
            if self._on_error is not None:
                self._on_error(err)
