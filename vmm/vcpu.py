"""One thread per vCPU: the KVM_RUN loop, its states, pause/resume and the kick.

States: ``created`` -> ``running`` <-> ``paused`` -> ``finished``. Every exit
is decoded in C into a small record and handed to the port-I/O or MMIO bus;
nothing else happens on the exit path. Other threads stop or pause a vCPU by
setting a flag and then *kicking* it: ``immediate_exit`` plus a signal, so
KVM_RUN returns EINTR whether the thread is inside it or about to enter it.
The flag is always set before the kick, and the loop checks its flags after
every return from KVM_RUN, so no request can be lost between the two.
"""

from __future__ import annotations

import errno
import sys
import threading
import time
from collections.abc import Callable

from .errors import EXIT_GUEST_CRASHED, EXIT_VMM_FAILURE, KvmError, VmmError
from .kvm import Vcpu, kick_thread
from .kvm._kvm_cffi import lib
from .log import get_logger
from .outcome import StopReason, VmOutcome

log = get_logger("vmm.vcpu")

CREATED, RUNNING, PAUSED, FINISHED = "created", "running", "paused", "finished"
EXIT_REASON_SLOTS = 256  # counts by KVM_EXIT_* reason; a reason past 255 counts as 255

# KVM_SYSTEM_EVENT_* types (include/uapi/linux/kvm.h)
SYSTEM_EVENT_SHUTDOWN, SYSTEM_EVENT_RESET, SYSTEM_EVENT_CRASH = 1, 2, 3

_EXIT_REASON_NAMES: dict[int, str] = {}
_current = threading.local()


def exit_reason_name(reason: int) -> str:
    """'io', 'mmio', 'shutdown', ... from the header's KVM_EXIT_* names (built on first use:
    walking every constant of the cffi module costs milliseconds at start-up)."""
    if not _EXIT_REASON_NAMES:
        for name in dir(lib):
            if name.startswith("KVM_EXIT_") and name not in ("KVM_EXIT_IO_IN", "KVM_EXIT_IO_OUT"):
                _EXIT_REASON_NAMES[getattr(lib, name)] = name[len("KVM_EXIT_"):].lower()
    return _EXIT_REASON_NAMES.get(reason, str(reason))


def current_vcpu() -> "VcpuThread | None":
    """The VcpuThread whose exit is being handled on this thread, if any.

    Devices see only a bus access; the machine uses this to know which vCPU
    idles or reports a fault (kvmtool passes the vCPU to its devices instead).
    """
    return getattr(_current, "vcpu", None)


class VcpuThread:
    def __init__(self, vcpu: Vcpu, pio_bus, mmio_bus, on_outcome: Callable[[VmOutcome], None], memory=None, complete_syscalls: bool = False):
        """``memory``: guest RAM, for the instruction fallback on emulation-failure
        exits (None: such an exit stops the VM). ``complete_syscalls``: finish ring-3
        `syscall`s this platform leaves at CPL3 (Linux guests on PVM only)."""
        self.vcpu = vcpu
        self._memory = memory
        self.fallback = self.syscalls = None  # the fallback is made at the first emulation failure
        if memory is not None and complete_syscalls:
            from .x86.fallback.syscall_entry import SyscallCompletion

            self.syscalls = SyscallCompletion(vcpu, memory, lib)
        self.index = vcpu.index
        self.name = f"vcpu{vcpu.index}"
        self._pio, self._mmio = pio_bus, mmio_bus
        self._on_outcome = on_outcome
        self.exit_counts = [0] * EXIT_REASON_SLOTS
        self._cond = threading.Condition()
        self._state = CREATED
        self._stop_requested = False
        self._pause_requested = False
        self._idle_wake = threading.Event()
        self._kick_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.seccomp = False  # install the vcpu filter (vmm/seccomp.py) before the first KVM_RUN
        self.seccomp_disks = False  # ... for a VM with disks (their lazy imports come first)

    # -- control (any thread) ---------------------------------------------------
    @property
    def state(self) -> str:
        return self._state

    def start(self, paused: bool = False) -> None:
        """Start the thread; with ``paused`` it waits for resume() before its first KVM_RUN."""
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        with self._cond:
            self._state = RUNNING
            self._pause_requested = paused
        self._thread.start()
        if self.syscalls is not None:
            threading.Thread(target=self._watch_for_syscall_setup, name=f"{self.name}-syscall-watch", daemon=True).start()

    SYSCALL_WATCH_PERIOD_S = 0.5

    def _watch_for_syscall_setup(self) -> None:
        """Kick the vCPU twice a second until the syscall completion is armed: it can
        arm only at an exit after the guest has enabled SYSCALL, and Linux may make
        no other exit between that (early in start_kernel) and its first user
        syscall (minutes later here). 2 exits a second until armed, none after."""
        if self.seccomp:
            from .seccomp import install

            install("main")  # a helper: sleeps and kicks
        while self._state == RUNNING or self._state == PAUSED:
            if self.syscalls.handler:
                return
            self.kick()
            time.sleep(self.SYSCALL_WATCH_PERIOD_S)

    def stop(self) -> None:
        """Ask the thread to end; returns at once (``join`` waits)."""
        with self._cond:
            self._stop_requested = True
            self._cond.notify_all()
        self.wake()
        self.kick()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def pause(self, timeout: float | None = None) -> bool:
        """Stop running guest code; returns once the thread is out of KVM_RUN
        (True), or False if it did not get there within ``timeout``."""
        with self._cond:
            if self._state in (FINISHED, CREATED):
                return True
            self._pause_requested = True
        self.wake()
        self.kick()
        if threading.current_thread() is self._thread:
            return True  # it parks when the current exit is handled
        with self._cond:
            return self._cond.wait_for(lambda: self._state in (PAUSED, FINISHED), timeout)

    def resume(self) -> None:
        with self._cond:
            self._pause_requested = False
            self._cond.notify_all()

    def kick(self) -> None:
        """Make KVM_RUN return now (or right after it is entered)."""
        with self._kick_lock:
            thread = self._thread
            if thread is None or thread is threading.current_thread() or self._state == FINISHED:
                return
            run = self.vcpu.run_struct
            if run is None:
                return
            self.vcpu.set_immediate_exit(True)
            kick_thread(thread.ident)  # (nothing if the thread has just ended)

    def wake(self) -> None:
        """End an idle wait early (the host has something for the guest)."""
        self._idle_wake.set()

    def idle(self, seconds: float) -> None:
        """The guest idles (exit device): wait at most ``seconds`` or until woken."""
        self._idle_wake.wait(seconds)
        self._idle_wake.clear()

    # -- the thread ---------------------------------------------------------------
    def _main(self) -> None:
        _current.vcpu = self
        try:
            if self.seccomp:
                from .seccomp import install

                if self.syscalls is not None:  # a Linux guest: it will need the instruction fallback
                    from importlib import import_module

                    import_module("vmm.x86.fallback.instructions")  # now: no imports under the filter
                install("vcpu", self.seccomp_disks)  # set-up is done: from here on, KVM_RUN and the device models' calls only
            self._run_loop()
        except VmmError as err:
            self._on_outcome(VmOutcome(err.exit_status, StopReason.ERROR, f"{self.name}: {err}"))
        except Exception as err:  # a VMM bug: report it on one line, keep the details in the log
            log.debug("%s failed", self.name, exc_info=True)
            self._on_outcome(VmOutcome(EXIT_VMM_FAILURE, StopReason.ERROR, f"internal error in {self.name}: {err!r}"))
        finally:
            with self._kick_lock, self._cond:
                self._state = FINISHED
                self._cond.notify_all()

    def _checkpoint(self) -> bool:
        """Honour stop and pause requests between exits; False when the thread must end."""
        with self._cond:
            if self._pause_requested and not self._stop_requested:
                self._state = PAUSED
                self._cond.notify_all()
                self._cond.wait_for(lambda: not self._pause_requested or self._stop_requested)
                self._state = RUNNING
                self._cond.notify_all()
            return not self._stop_requested

    def _run_loop(self) -> None:
        vcpu, ex = self.vcpu, self.vcpu.exit
        pio, mmio, counts = self._pio, self._mmio, self.exit_counts
        EXIT_IO, EXIT_MMIO, EXIT_INTR = lib.KVM_EXIT_IO, lib.KVM_EXIT_MMIO, lib.KVM_EXIT_INTR
        drain = mmio.drain_coalesced  # writes KVM queued rather than exited for
        while self._checkpoint():
            result = vcpu.run()
            if drain is not None:
                drain()  # before this exit: the device sees the guest's writes in order
            if result < 0:
                if result in (-errno.EINTR, -errno.EAGAIN):
                    vcpu.set_immediate_exit(False)
                    counts[EXIT_INTR] += 1
                    counts[EXIT_IO] += ex.absorbed  # port writes C handled before the kick
                    if self.syscalls is not None and not self.syscalls.handler:
                        self.syscalls.refresh()  # a look-out kick (see _watch_for_syscall_setup)
                    continue
                raise KvmError("KVM_RUN", -result)
            reason = ex.reason
            counts[reason if reason < EXIT_REASON_SLOTS else EXIT_REASON_SLOTS - 1] += 1
            if ex.absorbed:
                counts[EXIT_IO] += ex.absorbed
            if reason == EXIT_IO:
                if ex.count != 1:
                    self._string_pio(ex)
                elif ex.is_write:
                    pio.write(ex.addr, ex.size, ex.value)
                else:
                    vcpu.complete_read(pio.read(ex.addr, ex.size))
            elif reason == EXIT_MMIO:
                if ex.is_write:
                    mmio.write(ex.addr, ex.size, ex.value)
                else:
                    vcpu.complete_read(mmio.read(ex.addr, ex.size))
            else:
                self._other_exit(reason, ex)

    def _string_pio(self, ex) -> None:
        """rep ins/outs: count accesses of size bytes each, through the kvm_run data area."""
        size, count, port = ex.size, ex.count, ex.addr
        data = self.vcpu.io_data(size * count)
        for i in range(count):
            item = data[i * size : (i + 1) * size]
            if ex.is_write:
                self._pio.write(port, size, int.from_bytes(item, "little"))
            else:
                item[:] = self._pio.read(port, size).to_bytes(size, "little")

    @property
    def fallback_counts(self) -> dict[str, int]:
        """Instructions the VMM carried out for the emulator, by name (and syscalls completed)."""
        counts = dict(self.fallback.counts) if self.fallback else {}
        if self.syscalls is not None and self.syscalls.completed:
            counts["syscall"] = self.syscalls.completed
        return counts

    def _emulation_failure(self) -> bool:
        """KVM_INTERNAL_ERROR_EMULATION: carry the instruction out here; False if not possible."""
        code = self.vcpu.emulation_failure_bytes() if self._memory is not None else None
        if not code:
            return False
        if self.seccomp and "vmm.x86.fallback.instructions" not in sys.modules:
            return False  # not loaded before the filter (not a Linux guest), and importing opens files: a crash
        from .x86.fallback.instructions import Fallback, Unsupported  # only guests that need it pay the import

        if self.fallback is None:
            self.fallback = Fallback(self.vcpu, self._memory)
        try:
            self.fallback.execute(code)
        except Unsupported as err:
            self.crash(f"KVM's emulator failed and so did the VMM's fallback: {err}")
            self.stop()
            return True
        if self.syscalls is not None:
            self.syscalls.refresh()
        return True

    def _other_exit(self, reason: int, ex) -> None:
        if reason == lib.KVM_EXIT_INTERNAL_ERROR and ex.detail[0] == lib.KVM_INTERNAL_ERROR_EMULATION and self._emulation_failure():
            return
        if reason == lib.KVM_EXIT_DEBUG and self.syscalls is not None and self.syscalls.on_debug_exit(self.vcpu.debug_exit()[1]):
            return
        if reason == lib.KVM_EXIT_SHUTDOWN:
            self.crash("guest triple fault (KVM_EXIT_SHUTDOWN)")
        elif reason == lib.KVM_EXIT_FAIL_ENTRY:
            self.crash(f"vCPU failed to enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason 0x{ex.detail[0]:x})")
        elif reason == lib.KVM_EXIT_INTERNAL_ERROR:
            self.crash(f"KVM internal error (suberror {ex.detail[0]}, data 0x{ex.detail[2]:x} 0x{ex.detail[3]:x})")
        elif reason == lib.KVM_EXIT_SYSTEM_EVENT:
            self._system_event(ex.detail[0])
        else:
            self.crash(f"unexpected vCPU exit {exit_reason_name(reason)} ({reason})")
        self.stop()

    def _system_event(self, kind: int) -> None:
        if kind == SYSTEM_EVENT_SHUTDOWN:
            self._on_outcome(VmOutcome(0, StopReason.POWEROFF, f"{self.name}: guest shut down (KVM system event)"))
        elif kind == SYSTEM_EVENT_RESET:
            self._on_outcome(VmOutcome(0, StopReason.RESET, f"{self.name}: guest requested a reset"))
        elif kind == SYSTEM_EVENT_CRASH:
            self.crash("guest reported a crash (KVM system event)")
        else:
            self.crash(f"unknown KVM system event type {kind}")

    def guest_reset(self, how: str) -> None:
        """The guest pulled the reset line (a device on this thread's exit): the VM stops, reason "reset"."""
        self._on_outcome(VmOutcome(0, StopReason.RESET, f"{self.name}: guest requested a reset ({how})"))
        self.stop()

    def register_dump(self) -> str:
        try:
            r, s = self.vcpu.get_regs(), self.vcpu.get_sregs()
        except KvmError:
            return "registers unavailable"
        return (
            f"rip 0x{r.rip:x} rsp 0x{r.rsp:x} rflags 0x{r.rflags:x} rax 0x{r.rax:x} rbx 0x{r.rbx:x} "
            f"cs 0x{s.cs.selector:x} cr0 0x{s.cr0:x} cr2 0x{s.cr2:x} cr3 0x{s.cr3:x} cr4 0x{s.cr4:x} efer 0x{s.efer:x}"
        )

    def crash(self, what: str) -> None:
        self._on_outcome(VmOutcome(EXIT_GUEST_CRASHED, StopReason.CRASH, f"{self.name}: {what}: {self.register_dump()}"))
