"""MicroVM: assemble a VM from a VmConfig, run its vCPU, own its lifecycle.

One vCPU thread runs KVM_RUN; each exit is decoded (in C) into a small record
and handed to the port-I/O or MMIO bus. Everything host-side (input, timers,
waiting) happens on other threads, which stop the vCPU with a signal plus
``immediate_exit``.
"""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import threading
import time
from collections import namedtuple
from collections.abc import Callable

from .boot.elf import load_kernel
from .boot.loader import load_pvh
from .config import VmConfig
from .console import write_all
from .devices.bus import MmioBus, NullDevice, PioBus
from .devices.exit_device import EXIT_PORT, EXIT_PORT_SPAN, ExitDevice, GuestFault
from .devices.serial import Uart16550
from .errors import (
    EXIT_GUEST_CRASHED,
    EXIT_TIMEOUT,
    EXIT_VMM_FAILURE,
    ConfigError,
    KvmError,
    VmmError,
)
from .kvm import KICK_SIGNAL, Kvm, install_kick_handler
from .kvm.api import KVM_DEVICE
from .kvm._kvm_cffi import lib
from .log import get_logger
from .memory import GuestMemory
from .x86 import layout
from .x86.cpu import configure_vcpu, set_pvh_entry_state

log = get_logger("vmm")

COM1_PORT, COM1_IRQ, UART_SPAN = 0x3F8, 4, 8
POST_CODE_PORT = 0x80
TSS_ADDR = 0xFFFBD000  # three pages below 4 GiB, inside the MMIO hole

_EXIT_REASON_NAMES: dict[int, str] = {}


def exit_reason_name(reason: int) -> str:
    """'io', 'mmio', 'shutdown', ... from the header's KVM_EXIT_* names (built on first use:
    walking every constant of the cffi module costs milliseconds at start-up)."""
    if not _EXIT_REASON_NAMES:
        for name in dir(lib):
            if name.startswith("KVM_EXIT_") and name not in ("KVM_EXIT_IO_IN", "KVM_EXIT_IO_OUT"):
                _EXIT_REASON_NAMES[getattr(lib, name)] = name[len("KVM_EXIT_"):].lower()
    return _EXIT_REASON_NAMES.get(reason, str(reason))


class VmOutcome(namedtuple("VmOutcome", "status reason message", defaults=("",))):
    """How a VM ended: ``status`` is the process exit status the CLI uses;
    ``reason`` one of "poweroff", "crash", "timeout", "quit", "error"."""

    __slots__ = ()


class MicroVM:
    """A running (or runnable) microVM.

    Use as a context manager::

        with MicroVM(VmConfig()) as vm:
            vm.expect("$ ")
            vm.send("echo hi\\n")
            vm.expect("hi")
    """

    def __init__(
        self,
        config: VmConfig,
        *,
        output: Callable[[bytes], None] | None = None,
        output_fd: int | None = None,
        capture: bool = True,
        capture_limit: int = 16 << 20,
        virtio_devices=(),
    ):
        self.config = config
        # Device objects (VirtioDevice) placed after the disks, same slots and
        # command-line entries; the VM closes them when it closes.
        self._virtio_devices = tuple(virtio_devices)
        self._output = output
        self._output_fd = output_fd  # serial output also goes to this fd (the CLI's stdout)
        self._capture = capture
        # A guest may print forever: keep at most capture_limit bytes, dropping the oldest.
        self._capture_limit = capture_limit
        self._captured = bytearray()
        self._dropped = 0  # bytes dropped from the front of _captured so far
        self._cursor = 0
        self._output_cond = threading.Condition()
        self._serial_log = None
        self._wake = threading.Event()  # set when the host has something for an idle guest
        self._finished = threading.Event()
        self.finished_fd = os.eventfd(0, os.EFD_CLOEXEC)  # readable once the VM has stopped
        self._outcome: VmOutcome | None = None
        self._outcome_lock = threading.Lock()
        self._kick_lock = threading.Lock()
        self._vcpu_running = False
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._input_space = threading.Event()
        self.exit_counts = [0] * 256  # by KVM_EXIT_* reason; a reason past 255 counts as 255
        self.created_at: float | None = None
        self._kvm = self._vm = self._vcpu = self.memory = None
        self._eventfds: list[int] = []
        self._notifiers: dict[int, tuple] = {}  # ioeventfd -> (transport, queue index)
        self._io_thread: threading.Thread | None = None
        self._disks = []
        try:
            self._prepare()
        except BaseException:
            self.close()  # disks, the serial log and our eventfd opened so far
            raise

    # --- assembly --------------------------------------------------------
    def _prepare(self) -> None:
        """Check the configuration and read every input file before touching KVM."""
        cfg = self.config
        if cfg.mem_mib < layout.MIN_MEMORY_MIB:
            raise ConfigError(f"guest memory {cfg.mem_mib} MiB is too small (minimum {layout.MIN_MEMORY_MIB} MiB)")
        host_mib = (os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) >> 20
        if cfg.mem_mib > host_mib:
            raise ConfigError(f"guest memory {cfg.mem_mib} MiB is more than this host has ({host_mib} MiB)")
        if cfg.timeout is not None and cfg.timeout <= 0:
            raise ConfigError("--timeout must be a positive number of seconds")
        self._kernel_path = cfg.kernel_path()
        self._kernel = load_kernel(self._kernel_path)
        self._initrd = None
        if cfg.initrd is not None:
            try:
                with open(cfg.initrd, "rb") as f:
                    self._initrd = f.read()
            except OSError as err:
                raise ConfigError(f"cannot read initrd {cfg.initrd}: {err.strerror}") from None
        if cfg.disks:  # virtio is imported only when used: it is a third of start-up time
            from .devices.virtio.block import VirtioBlock

            for disk in cfg.disks:
                self._disks.append(VirtioBlock(disk.path, read_only=disk.read_only))
        if cfg.serial_log is not None:
            try:
                self._serial_log = open(cfg.serial_log, "ab", buffering=0)
            except OSError as err:
                raise ConfigError(f"cannot open serial log {cfg.serial_log}: {err.strerror}") from None

    def _build(self) -> None:
        self._kvm = Kvm(os.environ.get("VMM_KVM_DEVICE", KVM_DEVICE))
        self.created_at = time.monotonic()
        self._vm = vm = self._kvm.create_vm()
        try:
            self.memory = GuestMemory(layout.ram_regions(self.config.mem_mib << 20))
        except OSError as err:
            raise ConfigError(f"cannot allocate {self.config.mem_mib} MiB of guest memory: {err.strerror}") from None
        # RAM before the interrupt controller: once KVM_CREATE_IRQCHIP has run,
        # KVM_SET_USER_MEMORY_REGION takes 6-8 ms here, whatever the size, and
        # before it 0.1 ms (vmm bench boot, and the C floor does the same).
        for region in self.memory.regions:
            vm.add_memory(region.guest_addr, region.mapping)
        vm.set_tss_addr(TSS_ADDR)
        vm.create_irqchip()

        self.pio_bus, self.mmio_bus = PioBus(), MmioBus()
        # When every sink of serial output is a plain fd, C writes the UART's
        # bytes there itself while the model says a THR write is pure output:
        # one exit per byte stays in C, as in the bare KVM_RUN floor.
        transmit_in_c = not self._capture and self._output is None
        self.uart = Uart16550(
            self._serial_output,
            lambda level: vm.set_irq_line(COM1_IRQ, level),
            on_input_space=self._input_space.set,
            on_plain_transmit=self._plain_transmit_changed if transmit_in_c else None,
        )
        self.pio_bus.register(COM1_PORT, UART_SPAN, self.uart)
        self.pio_bus.register(EXIT_PORT, EXIT_PORT_SPAN, ExitDevice(self.memory, self._guest_power_off, self._guest_fault, self._guest_idle))
        self.pio_bus.register(POST_CODE_PORT, 1, NullDevice())

        cmdline = self.config.base_cmdline()
        for index, device in enumerate((*self._disks, *self._virtio_devices)):
            cmdline += " " + self._add_virtio_device(index, device)
        start_info = load_pvh(self.memory, self._kernel, self._kernel_path, cmdline, self._initrd)
        self._vcpu = vcpu = vm.create_vcpu(0)
        configure_vcpu(
            vcpu,
            supported_cpuid=self._kvm.supported_cpuid(),
            supported_msrs=set(self._kvm.msr_index_list()),
            vcpu_count=1,
            has_xcrs=bool(self._kvm.check_extension(lib.KVM_CAP_XCRS)),
        )
        set_pvh_entry_state(vcpu, self._kernel.pvh_entry, start_info)
        vcpu.ignore_port_writes(POST_CODE_PORT)  # the NullDevice there would drop them anyway
        if transmit_in_c:
            fds = [fd for fd in (self._output_fd, self._serial_log and self._serial_log.fileno()) if fd is not None]
            vcpu.transmit_in_c(COM1_PORT, fds)
            vcpu.enable_transmit(self.uart.plain_transmit)

    def _add_virtio_device(self, index: int, device) -> str:
        """Place a virtio-mmio device in the index-th slot; returns its command-line entry.

        The used-buffer interrupt goes through an irqfd: KVM injects it
        without the vCPU thread or a KVM_IRQ_LINE ioctl per interrupt.
        """
        addr, irq = layout.virtio_mmio_slot(index)
        irq_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._eventfds.append(irq_fd)
        self._vm.add_irqfd(irq_fd, irq)

        def interrupt(level: bool, fd=irq_fd) -> None:
            if level:
                os.eventfd_write(fd, 1)  # an edge on the (ISA, edge-triggered) pin

        from .devices.virtio.constants import MMIO_QUEUE_NOTIFY
        from .devices.virtio.mmio import VirtioMmioTransport

        transport = VirtioMmioTransport(device, self.memory, interrupt)
        self.mmio_bus.register(addr, layout.VIRTIO_MMIO_SIZE, transport)
        if self.config.ioeventfd:
            for queue_index in range(len(device.queue_max_sizes)):
                notify_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
                self._eventfds.append(notify_fd)
                self._vm.add_ioeventfd(notify_fd, addr + MMIO_QUEUE_NOTIFY, 4, datamatch=queue_index)
                self._notifiers[notify_fd] = (transport, queue_index)
        return f"virtio_mmio.device={layout.VIRTIO_MMIO_SIZE // 1024}K@0x{addr:x}:{irq}"

    def _close_disks(self) -> None:
        for device in (*self._disks, *self._virtio_devices):
            device.close()
        self._disks = []
        self._virtio_devices = ()

    # --- lifecycle -------------------------------------------------------
    def start(self) -> "MicroVM":
        install_kick_handler()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        if self._notifiers:
            self._io_thread = threading.Thread(target=self._io_main, name="virtio-io", daemon=True)
            self._io_thread.start()
        self._thread = threading.Thread(target=self._vcpu_main, name="vcpu0", daemon=True)
        self._vcpu_running = True
        self._thread.start()
        if self.config.timeout is not None:
            self._timer = threading.Timer(
                self.config.timeout,
                self.stop,
                kwargs=dict(outcome=VmOutcome(EXIT_TIMEOUT, "timeout", f"guest did not power off within {self.config.timeout:g} s (--timeout)")),
            )
            self._timer.daemon = True
            self._timer.start()
        return self

    def __enter__(self) -> "MicroVM":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def stop(self, outcome: VmOutcome | None = None) -> None:
        """Stop the VM (from any thread); the first outcome recorded wins."""
        self._finish(outcome or VmOutcome(0, "quit", "stopped by the host"))
        self._kick()

    def wait(self, timeout: float | None = None) -> VmOutcome:
        """Block until the VM has stopped; returns how it ended."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"VM still running after {timeout} s")
        if self._thread is not None:
            self._thread.join()
        return self._outcome

    def is_finished(self, timeout: float = 0) -> bool:
        return self._finished.wait(timeout)

    @property
    def outcome(self) -> VmOutcome | None:
        return self._outcome

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._finished.is_set()

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self.stop()
            self._thread.join()
        if self._timer is not None:
            self._timer.cancel()
        if self._io_thread is not None:
            self._finish(VmOutcome(0, "quit", "stopped by the host"))
            self._io_thread.join()
        for thing in (self._vcpu, self._vm, self._kvm):
            if thing is not None:
                thing.close()
        self._vcpu = self._vm = self._kvm = None
        for fd in self._eventfds:
            os.close(fd)
        self._eventfds = []
        self._close_disks()
        if self.memory is not None:
            self.memory.close()
            self.memory = None
        if self._serial_log is not None:
            self._serial_log.close()
            self._serial_log = None
        if self.finished_fd >= 0:
            os.close(self.finished_fd)
            self.finished_fd = -1

    def _finish(self, outcome: VmOutcome) -> None:
        with self._outcome_lock:
            if self._outcome is None:
                self._outcome = outcome
        if not self._finished.is_set():
            self._finished.set()
            os.eventfd_write(self.finished_fd, 1)
        self._wake.set()
        with self._output_cond:
            self._output_cond.notify_all()

    def _kick(self) -> None:
        with self._kick_lock:
            if self._vcpu_running and self._thread is not None and threading.current_thread() is not self._thread:
                self._vcpu.set_immediate_exit(True)
                signal.pthread_kill(self._thread.ident, KICK_SIGNAL)

    # --- the vCPU thread -------------------------------------------------
    def _vcpu_main(self) -> None:
        try:
            self._run_loop()
        except VmmError as err:
            self._finish(VmOutcome(err.exit_status, "error", str(err)))
        except Exception as err:  # a VMM bug: report it on one line, keep the details in the log
            log.debug("vCPU thread failed", exc_info=True)
            self._finish(VmOutcome(EXIT_VMM_FAILURE, "error", f"internal error in the vCPU thread: {err!r}"))
        finally:
            with self._kick_lock:
                self._vcpu_running = False
            if not self._finished.is_set():  # the loop only ends once an outcome exists
                self._finish(VmOutcome(EXIT_VMM_FAILURE, "error", "vCPU thread ended unexpectedly"))

    def _run_loop(self) -> None:
        vcpu, ex = self._vcpu, self._vcpu.exit
        pio, mmio, counts, finished = self.pio_bus, self.mmio_bus, self.exit_counts, self._finished
        EXIT_IO, EXIT_MMIO = lib.KVM_EXIT_IO, lib.KVM_EXIT_MMIO
        while not finished.is_set():
            result = vcpu.run()
            if result < 0:
                if result in (-errno.EINTR, -errno.EAGAIN):
                    vcpu.set_immediate_exit(False)
                    counts[lib.KVM_EXIT_INTR] += 1
                    continue
                raise KvmError("KVM_RUN", -result)
            reason = ex.reason
            counts[reason if reason < 256 else 255] += 1
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
        data = self._vcpu.io_data(size * count)
        for i in range(count):
            item = data[i * size : (i + 1) * size]
            if ex.is_write:
                self.pio_bus.write(port, size, int.from_bytes(item, "little"))
            else:
                item[:] = self.pio_bus.read(port, size).to_bytes(size, "little")

    def _other_exit(self, reason: int, ex) -> None:
        if reason == lib.KVM_EXIT_SHUTDOWN:
            self._crash("guest triple fault (KVM_EXIT_SHUTDOWN)")
        elif reason == lib.KVM_EXIT_FAIL_ENTRY:
            self._crash(f"vCPU failed to enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason 0x{ex.detail[0]:x})")
        elif reason == lib.KVM_EXIT_INTERNAL_ERROR:
            self._crash(f"KVM internal error (suberror {ex.detail[0]}, data 0x{ex.detail[2]:x} 0x{ex.detail[3]:x})")
        elif reason == lib.KVM_EXIT_SYSTEM_EVENT:
            self._finish(VmOutcome(0, "poweroff", "guest requested a system event (shutdown or reset)"))
        elif reason == lib.KVM_EXIT_HLT:
            self._guest_idle(0.01)  # only without an in-kernel irqchip; idle like the idle port
        else:
            name = exit_reason_name(reason)
            self._crash(f"unexpected vCPU exit {name} ({reason})")

    def _register_dump(self) -> str:
        try:
            r, s = self._vcpu.get_regs(), self._vcpu.get_sregs()
        except KvmError:
            return "registers unavailable"
        return (
            f"rip 0x{r.rip:x} rsp 0x{r.rsp:x} rflags 0x{r.rflags:x} rax 0x{r.rax:x} rbx 0x{r.rbx:x} "
            f"cs 0x{s.cs.selector:x} cr0 0x{s.cr0:x} cr2 0x{s.cr2:x} cr3 0x{s.cr3:x} cr4 0x{s.cr4:x} efer 0x{s.efer:x}"
        )

    def _crash(self, what: str) -> None:
        self._finish(VmOutcome(EXIT_GUEST_CRASHED, "crash", f"{what}: {self._register_dump()}"))

    # --- the I/O thread (ioeventfd notifications) --------------------------
    def _io_main(self) -> None:
        """Process queues when the guest's QueueNotify writes land on ioeventfds."""
        poller = select.epoll()
        for fd in self._notifiers:
            poller.register(fd, select.EPOLLIN)
        poller.register(self.finished_fd, select.EPOLLIN)
        try:
            while not self._finished.is_set():
                for fd, _ in poller.poll():
                    if fd == self.finished_fd:
                        return
                    try:
                        os.eventfd_read(fd)
                    except BlockingIOError:
                        continue
                    transport, queue_index = self._notifiers[fd]
                    transport.notify(queue_index)
                    self._wake.set()  # a guest idling while it waits for this request
        except Exception as err:  # a VMM bug: stop the VM with one line
            log.debug("I/O thread failed", exc_info=True)
            self.stop(VmOutcome(EXIT_VMM_FAILURE, "error", f"internal error in the I/O thread: {err!r}"))
        finally:
            poller.close()

    # --- device callbacks (vCPU thread) ----------------------------------
    def _guest_power_off(self, status: int) -> None:
        self._finish(VmOutcome(status, "poweroff"))

    def _guest_fault(self, fault: GuestFault | str) -> None:
        if isinstance(fault, str):
            self._finish(VmOutcome(EXIT_GUEST_CRASHED, "crash", fault))
            return
        message = fault.describe()
        if fault.vector == 14:
            message += f", cr2 0x{self._vcpu.get_sregs().cr2:x}"
        self._finish(VmOutcome(EXIT_GUEST_CRASHED, "crash", message))

    def _plain_transmit_changed(self, plain: bool) -> None:
        if self._vcpu is not None:  # the UART reports once before the vCPU exists
            self._vcpu.enable_transmit(plain)

    def _guest_idle(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _serial_output(self, data: bytes) -> None:
        if self._output is not None:
            self._output(data)
        if self._output_fd is not None:
            write_all(self._output_fd, data, give_up=self._finished.is_set)
        if self._serial_log is not None:
            self._serial_log.write(data)
        if self._capture:
            with self._output_cond:
                self._captured += data
                if len(self._captured) > self._capture_limit:
                    excess = len(self._captured) - self._capture_limit // 2
                    del self._captured[:excess]
                    self._dropped += excess
                    self._cursor = max(0, self._cursor - excess)
                self._output_cond.notify_all()

    # --- host side: input and output -------------------------------------
    def send(self, data: bytes | str) -> None:
        """Type into the serial console."""
        if isinstance(data, str):
            data = data.encode()
        self.uart.enqueue_input(data)
        self._wake.set()

    @property
    def input_backlog(self) -> int:
        return self.uart.input_backlog

    def wait_input_space(self, timeout: float) -> None:
        self._input_space.wait(timeout)
        self._input_space.clear()

    @property
    def output(self) -> bytes:
        with self._output_cond:
            return bytes(self._captured)

    def expect(self, pattern: bytes | str | re.Pattern, timeout: float = 10.0) -> re.Match:
        """Wait until the serial output after the last match matches ``pattern``.

        A str or bytes pattern is matched literally; pass a compiled regex for more.
        """
        if isinstance(pattern, str):
            pattern = pattern.encode()
        literal = not isinstance(pattern, re.Pattern)
        regex = re.compile(re.escape(pattern)) if literal else pattern
        deadline = time.monotonic() + timeout
        with self._output_cond:
            searched_to = self._dropped + self._cursor  # absolute: output may be dropped meanwhile
            while True:
                start = max(self._cursor, searched_to - self._dropped)
                match = regex.search(self._captured, start)
                if match:
                    self._cursor = match.end()
                    return match
                if literal:  # a literal can only complete in output not yet searched
                    searched_to = self._dropped + len(self._captured) - len(pattern) + 1
                remaining = deadline - time.monotonic()
                if self._finished.is_set() or remaining <= 0:
                    tail = bytes(self._captured[-300:]).decode(errors="replace")
                    state = f"VM stopped ({self._outcome})" if self._finished.is_set() else f"timed out after {timeout} s"
                    raise TimeoutError(f"{regex.pattern!r} not seen: {state}; output ends with {tail!r}")
                self._output_cond.wait(min(remaining, 0.5))
                if not literal:
                    # A regex is searched again from the cursor: let output
                    # accumulate first, or a long stream costs quadratic time.
                    self._output_cond.wait(min(max(deadline - time.monotonic(), 0), 0.01))

    def exit_summary(self) -> dict[str, int]:
        """VM exits so far, by reason name."""
        return {exit_reason_name(i): n for i, n in enumerate(self.exit_counts) if n}
