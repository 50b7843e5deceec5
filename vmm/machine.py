"""MicroVM: a VM's lifecycle and outcome, and the public API around it.

The builder assembles the VM (vmm/builder.py), each vCPU runs on a thread of
its own (vmm/vcpu.py), the event loop owns the host side (vmm/event_loop.py)
and console output goes to sinks (vmm/capture.py). This class starts and
stops them, records how the VM ended (the first outcome wins) and offers
input, output and pause/resume to its user.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import re  # (at run time only where expect() is called: `vmm exec` starts without re)

from . import builder
from .capture import DEFAULT_CAPTURE_LIMIT, OutputCapture, OutputFanout
from .config import VmConfig
from .devices.exit_device import GuestFault
from .errors import EXIT_GUEST_CRASHED, EXIT_TIMEOUT, EXIT_VMM_FAILURE, ConfigError, VmmError
from .kvm import install_kick_handler
from .outcome import StopReason, VmOutcome
from .vcpu import EXIT_REASON_SLOTS, VcpuThread, current_vcpu, exit_reason_name

__all__ = ["MicroVM", "StopReason", "VmOutcome", "exit_reason_name"]

PAUSE_TIMEOUT_S = 5.0  # a vCPU that is not out of KVM_RUN by then is reported, not waited for


class MicroVM:
    """A microVM, assembled at construction, running once started.

    Use as a context manager::

        with MicroVM(VmConfig()) as vm:
            vm.expect("$ ")
            vm.send("echo hi\\n")
            vm.expect("hi\\r\\n$ ")
    """

    def __init__(
        self,
        config: VmConfig,
        *,
        output: Callable[[bytes], None] | None = None,
        output_fd: int | None = None,
        capture: bool = True,
        capture_limit: int = DEFAULT_CAPTURE_LIMIT,
        virtio_devices: Sequence = (),
        prepared=None,
        seccomp: bool | None = None,
    ):
        """``output`` and ``output_fd`` receive serial output as it comes; ``capture``
        keeps the most recent ``capture_limit`` bytes for ``expect``/``output``.
        ``virtio_devices`` are device models placed after the configured ones.
        ``prepared``: a snapshot to restore instead of a boot (vmm.persist.restore makes it).
        ``seccomp``: filter the VM's vCPU and I/O threads (vmm/seccomp.py); None
        follows the process switch (on in the CLI, off for an embedding application)."""
        self.config = config
        if seccomp is None:
            from .seccomp import enabled

            seccomp = enabled()
        self._seccomp = seccomp
        self._outcome: VmOutcome | None = None
        self._outcome_lock = threading.Lock()
        self._finished = threading.Event()
        self._input_space = threading.Event()
        self._started = False
        self._paused = False
        self._threads: list[VcpuThread] = []
        self._timer = None
        self._timeout_left: float | None = None  # seconds of --timeout not yet run (paused time does not count)
        self._timeout_deadline = 0.0
        self._capture = OutputCapture(capture_limit) if capture else None
        self.finished_fd = os.eventfd(0, os.EFD_CLOEXEC)  # readable once the VM has stopped
        self._parts = None
        self._unhandled_at_close: dict[str, int] = {}
        self.boot_protocol: str | None = None  # how the kernel boots, e.g. "pvh", "multiboot (ELF)"
        log_file = None
        try:
            if prepared is None:
                prepared = builder.prepare(config, virtio_devices)
                self.boot_protocol = getattr(prepared.boot, "description", prepared.boot.name)
            else:  # a snapshot, checked and opened by vmm.snapshot.load (see vmm.persist.restore)
                self.boot_protocol = "snapshot"
            if config.serial_log is not None:
                try:
                    log_file = open(config.serial_log, "ab", buffering=0)
                except OSError as err:
                    prepared.close()
                    raise ConfigError(f"cannot open serial log {config.serial_log}: {err.strerror}") from None
            self._fanout = OutputFanout(
                callback=output, fd=output_fd, log_file=log_file, capture=self._capture, give_up=self._finished.is_set
            )
            install_kick_handler()
            hooks = builder.MachineHooks(
                power_off=self._guest_power_off,
                fault=self._guest_fault,
                idle=self._guest_idle,
                wake=self.wake_vcpus,
                input_space=self._input_space.set,
                plain_transmit=self._plain_transmit_changed,
                serial_output=self._fanout,
            )
            self._parts = builder.assemble(prepared, hooks, self._loop_failed)
            complete_syscalls = builder.needs_syscall_completion(prepared)
            self._threads = [
                VcpuThread(vcpu, self._parts.pio_bus, self._parts.mmio_bus, self._finish, self._parts.memory, complete_syscalls)
                for vcpu in self._parts.vcpus
            ]
            self._setup_transmit_in_c()
        except BaseException:
            self.close()
            raise

    # --- parts a user may look at ------------------------------------------
    @property
    def memory(self):
        return self._parts.memory if self._parts else None

    @property
    def uart(self):
        return self._parts.uart

    @property
    def devices(self) -> list:
        """The virtio device models, in slot order."""
        return [slot.device for slot in self._parts.virtio] if self._parts else []

    @property
    def vcpus(self) -> list[VcpuThread]:
        return list(self._threads)

    @property
    def created_at(self) -> float | None:
        return self._parts.created_at if self._parts else None

    @property
    def exit_counts(self) -> list[int]:
        """VM exits by KVM_EXIT_* reason, summed over the vCPUs."""
        totals = [0] * EXIT_REASON_SLOTS
        for thread in self._threads:
            for reason, count in enumerate(thread.exit_counts):
                totals[reason] += count
        return totals

    @property
    def unhandled_accesses(self) -> dict[str, int]:
        """Guest accesses that hit no device, per bus."""
        if self._parts is None:
            return self._unhandled_at_close
        return {"pio": self._parts.pio_bus.unhandled_total, "mmio": self._parts.mmio_bus.unhandled_total}

    def exit_summary(self) -> dict[str, int]:
        """VM exits so far, by reason name."""
        return {exit_reason_name(i): n for i, n in enumerate(self.exit_counts) if n}

    # --- lifecycle -----------------------------------------------------------
    def start(self, paused: bool = False) -> "MicroVM":
        """Run the VM; with ``paused`` its vCPUs wait for resume() before entering the guest."""
        if self._started:
            raise VmmError("the VM has already been started")
        if self._parts is None:
            raise VmmError("the VM is closed")
        self._started = True
        if self._seccomp:
            # The I/O thread must be this thread's child, not a vCPU's (whose
            # filter it would inherit): start it now, with its own filter.
            self._parts.loop.seccomp_kind = self._parts.loop.seccomp_kind or "events"
            self._parts.loop.call_soon(lambda: None)
            from .seccomp_policy import VIRTIO_BLOCK_ID

            disks = any(getattr(device, "device_id", None) == VIRTIO_BLOCK_ID for device in self.devices)
            for thread in self._threads:
                thread.seccomp, thread.seccomp_disks = True, disks
        self._parts.loop.start()
        for thread in self._threads:
            thread.start(paused=paused)
        self._paused = paused
        self._timeout_left = self.config.timeout
        if not paused:
            self._arm_timeout()
        return self

    def _arm_timeout(self) -> None:
        """Time spent paused does not count towards the timeout: pause() disarms it."""
        import time

        if self._timeout_left is None or self._timer is not None:
            return
        message = f"guest did not power off within {self.config.timeout:g} s (--timeout)"
        self._timeout_deadline = time.monotonic() + self._timeout_left
        self._timer = self._parts.loop.call_later(
            self._timeout_left, lambda: self.stop(VmOutcome(EXIT_TIMEOUT, StopReason.TIMEOUT, message))
        )

    def _disarm_timeout(self) -> None:
        import time

        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timeout_left = max(0.0, self._timeout_deadline - time.monotonic())

    def __enter__(self) -> "MicroVM":
        return self if self._started else self.start()

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def stop(self, outcome: VmOutcome | None = None) -> None:
        """Stop the VM (from any thread); the first outcome recorded wins."""
        self._finish(outcome or VmOutcome(0, StopReason.QUIT, "stopped by the host"))

    def wait(self, timeout: float | None = None) -> VmOutcome:
        """Block until the VM has stopped; returns how it ended."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"VM still running after {timeout} s")
        for thread in self._threads:
            thread.join()
        return self._outcome

    def is_finished(self, timeout: float = 0) -> bool:
        return self._finished.wait(timeout)

    @property
    def outcome(self) -> VmOutcome | None:
        return self._outcome

    @property
    def running(self) -> bool:
        return self._started and not self._finished.is_set()

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop every vCPU (each out of KVM_RUN when this returns) and let the
        host side finish the device work already signalled."""
        if not self.running:
            raise VmmError("the VM is not running")
        late = [t.name for t in self._threads if not t.pause(PAUSE_TIMEOUT_S)]
        if late:
            raise VmmError(f"{', '.join(late)} did not pause within {PAUSE_TIMEOUT_S:g} s")
        self._parts.loop.barrier(PAUSE_TIMEOUT_S)
        self._paused = True
        self._disarm_timeout()

    def resume(self) -> None:
        self._paused = False
        for thread in self._threads:
            thread.resume()
        if self._started and self._parts is not None:
            self._arm_timeout()

    def close(self, wait: bool = False) -> None:
        """Stop the VM and release it. The kernel's own teardown of the VM and
        the unmapping of guest RAM finish on a background thread unless ``wait``."""
        if self._started and not self._finished.is_set():
            self.stop()
        for thread in self._threads:
            thread.stop()
            thread.join()
        if self._timer is not None:
            self._timer.cancel()
        if self._parts is not None:
            self._unhandled_at_close = self.unhandled_accesses
            self._parts.close(wait)
            self._parts = None
        fanout = getattr(self, "_fanout", None)
        if fanout is not None:
            fanout.close()
        if self.finished_fd >= 0:
            os.close(self.finished_fd)
            self.finished_fd = -1

    def _finish(self, outcome: VmOutcome) -> None:
        with self._outcome_lock:
            if self._outcome is None:
                self._outcome = outcome
            first = not self._finished.is_set()
            self._finished.set()
        if first:
            os.eventfd_write(self.finished_fd, 1)
        for thread in self._threads:
            thread.stop()
        if self._capture is not None:
            self._capture.close(f"VM stopped ({self._outcome})")

    def _loop_failed(self, err: BaseException) -> None:
        self.stop(VmOutcome(EXIT_VMM_FAILURE, StopReason.ERROR, f"internal error in the event loop: {err!r}"))

    # --- device callbacks (vCPU threads) -------------------------------------
    def _guest_power_off(self, status: int) -> None:
        self._finish(VmOutcome(status, StopReason.POWEROFF))

    def _guest_fault(self, fault: GuestFault | str) -> None:
        vcpu = current_vcpu()
        who = f"{vcpu.name}: " if vcpu is not None else ""
        if isinstance(fault, str):
            self._finish(VmOutcome(EXIT_GUEST_CRASHED, StopReason.CRASH, who + fault))
            return
        message = fault.describe()
        if fault.vector == 14 and vcpu is not None:
            message += f", cr2 0x{vcpu.vcpu.get_sregs().cr2:x}"
        self._finish(VmOutcome(EXIT_GUEST_CRASHED, StopReason.CRASH, who + message))

    def _guest_idle(self, seconds: float) -> None:
        vcpu = current_vcpu()
        if vcpu is not None:
            vcpu.idle(seconds)

    def wake_vcpus(self) -> None:
        """End the idle waits of every vCPU: the host has something for the guest."""
        for thread in self._threads:
            thread.wake()

    def _setup_transmit_in_c(self) -> None:
        """When every sink of serial output is a plain fd, C writes the UART's
        bytes there itself while the model says a THR write is pure output:
        one exit per byte stays in C, as in the bare KVM_RUN floor."""
        fds = self._fanout.plain_fds
        self._transmit_in_c = fds is not None
        if self._transmit_in_c:
            from .builder import COM1_PORT

            for vcpu in self._parts.vcpus:
                vcpu.transmit_in_c(COM1_PORT, fds)
                vcpu.enable_transmit(self._parts.uart.plain_transmit)

    def _plain_transmit_changed(self, plain: bool) -> None:
        if not getattr(self, "_transmit_in_c", False) or self._parts is None:
            return  # the UART reports once while it is being built
        for vcpu in self._parts.vcpus:
            vcpu.enable_transmit(plain)

    # --- host side: input and output -------------------------------------------
    def send(self, data: bytes | str) -> None:
        """Type into the serial console (before or after start)."""
        if self._parts is None:
            raise VmmError("the VM is closed")
        if isinstance(data, str):
            data = data.encode()
        view = memoryview(data)
        while True:
            view = view[self._parts.uart.enqueue_input(view) :]
            self.wake_vcpus()
            if not view or self._finished.is_set():
                return  # a stopped guest takes no more input
            # The UART's backlog is bounded: wait as a writer to a full pipe would.
            self.wait_input_space(0.1)

    def send_ctrl_alt_del(self) -> None:
        """Type Ctrl+Alt+Del on the guest's keyboard (Linux guests: the i8042); Linux restarts,
        or signals its init when the init asked for that, and the VM then stops as a reset."""
        if self._parts is None:
            raise VmmError("the VM is closed")
        if self._parts.i8042 is None:
            raise VmmError("this guest has no keyboard controller (only Linux guests get an i8042)")
        if not self._parts.i8042.send_ctrl_alt_del():
            raise VmmError("the guest's keyboard is disabled or has not read the keys already typed")
        self.wake_vcpus()

    @property
    def input_backlog(self) -> int:
        return self._parts.uart.input_backlog if self._parts else 0

    def wait_input_space(self, timeout: float) -> None:
        self._input_space.wait(timeout)
        self._input_space.clear()

    def _require_capture(self) -> OutputCapture:
        if self._capture is None:
            raise VmmError("this MicroVM was created with capture=False: its output is not kept")
        return self._capture

    @property
    def output(self) -> bytes:
        return self._require_capture().data

    def expect(self, pattern: bytes | str | re.Pattern, timeout: float = 10.0) -> re.Match:
        """Wait until the serial output after the last match matches ``pattern``.

        A str or bytes pattern is matched literally; pass a compiled regex for more.
        """
        return self._require_capture().expect(pattern, timeout)
