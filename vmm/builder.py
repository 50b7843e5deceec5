"""Config -> an assembled VM whose vCPUs have not started.

Two steps. ``prepare`` checks the configuration and reads every input file
(kernel, initrd, disks) before any KVM object exists, so bad input costs
nothing and leaves nothing open. ``assemble`` creates the VM in the order
this platform rewards (guest RAM before the interrupt controller: after
KVM_CREATE_IRQCHIP, KVM_SET_USER_MEMORY_REGION costs 4-8 ms here instead of
0.1 ms), wires the devices onto the buses and the event loop, loads the
kernel through its boot protocol and sets up every vCPU. The result is an
``AssembledVm``: parts, not behaviour; ``MicroVM`` gives it a lifecycle.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from .config import DiskConfig, VmConfig, check_host_memory
from .devices.bus import MmioBus, NullDevice, PioBus
from .devices.exit_device import EXIT_PORT, EXIT_PORT_SPAN, ExitDevice
from .devices.serial import Uart16550
from .errors import ConfigError, KvmUnavailableError
from .event_loop import EventLoop
from .kvm import Kvm
from .kvm.api import KVM_DEVICE, start_ahead
from .kvm._kvm_cffi import lib
from .memory import GuestMemory
from .record import record
from .x86 import layout
from .x86.cpu import LINUX_HIDDEN_FEATURES, configure_vcpu
from .virtio_slots import (  # noqa: F401 (VirtioSlot: re-exported)
    VirtioSlot,
    _add_virtio_device,
    _coalesce_queue_setup,
    _idle_serving_late_notifies,
    _power_off_serving_notifies,
)

COM1_PORT, COM1_IRQ, UART_SPAN = 0x3F8, 4, 8
POST_CODE_PORT = 0x80
TSS_ADDR = 0xFFFBD000  # three pages below 4 GiB, inside the MMIO hole

# Capabilities the VMM cannot run without, checked once, up front.
REQUIRED_CAPABILITIES = (
    ("KVM_CAP_USER_MEMORY", "guest memory from user space"),
    ("KVM_CAP_SET_TSS_ADDR", "a TSS address for the guest"),
    ("KVM_CAP_EXT_CPUID", "KVM_GET_SUPPORTED_CPUID"),
    ("KVM_CAP_IRQCHIP", "an in-kernel interrupt controller"),
    ("KVM_CAP_IRQFD", "device interrupts through irqfd"),
    ("KVM_CAP_IMMEDIATE_EXIT", "stopping a vCPU from another thread"),
)

# What the machine does when a device reports something (all called on vCPU threads).
MachineHooks = record("MachineHooks", "power_off fault idle wake input_space plain_transmit serial_output")


class PreparedVm:
    """Everything read from the host before KVM is touched."""

    def __init__(self, config: VmConfig, boot, devices: list):
        self.config = config
        self.boot = boot
        self.devices = devices  # virtio device models, in slot order

    def close(self) -> None:
        for device in self.devices:
            device.close()
        self.devices = []


class AssembledVm:
    """The parts of a built VM. Owns every fd and mapping; ``close`` releases them."""

    def __init__(self):
        self.kvm = self.vm = self.memory = None
        self.loop: EventLoop | None = None
        self.vcpus: list = []
        self.pio_bus, self.mmio_bus = PioBus(), MmioBus()
        self.uart: Uart16550 | None = None
        self.i8042 = None  # Linux guests only (vmm/devices/i8042.py)
        self.virtio: list[VirtioSlot] = []
        self.boot_entry = None
        self.created_at: float | None = None
        self._eventfds: list[int] = []
        # (eventfd, transport, queue index, NotifyRoute) of each ioeventfd-capable queue
        self.notify_queues: list[tuple] = []
        self.prepared: PreparedVm | None = None
        # Snapshots (vmm/snapshot): the last snapshot taken or restored, whether
        # KVM logs dirty pages, and whether the ACPI sleep port is there.
        self.snapshot_id: bytes | None = None
        self.dirty_logging = False
        self.acpi = False

    def eventfd(self) -> int:
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._eventfds.append(fd)
        return fd

    def close(self, wait: bool = True) -> None:
        """Release everything. With ``wait`` False the kernel's side of the
        teardown (closing the VM fd, 1-5 ms here, then unmapping guest RAM)
        finishes on a background thread: nothing can run in the VM by then."""
        if self.loop is not None:
            self.loop.close()
            self.loop = None
        for vcpu in self.vcpus:
            vcpu.close()
        self.vcpus = []
        for fd in self._eventfds:
            os.close(fd)
        self._eventfds = []
        if self.prepared is not None:
            self.prepared.close()
        last = (self.vm, self.kvm, self.memory)
        self.vm = self.kvm = self.memory = None
        if wait:
            _release(last)
        elif _LEFT_FOR_EXIT is not None:
            _LEFT_FOR_EXIT.append(last)  # kept alive (RAM must outlive the VM) until the process ends
        else:
            _reaper().put(last)


def _release(things) -> None:
    for thing in things:  # the VM before its RAM: KVM may still reference the pages
        if thing is not None:
            thing.close()


_REAPER = None
_LEFT_FOR_EXIT: list | None = None


def leave_teardown_to_exit() -> None:
    """A one-VM command about to end its process (vmm/cli.py): a closed VM's kernel
    teardown is left to the process's exit, which does it anyway, rather than
    to a reaper thread that costs 1-3 ms to start for nothing."""
    global _LEFT_FOR_EXIT
    if _LEFT_FOR_EXIT is None:
        _LEFT_FOR_EXIT = []


def hand_over_teardown() -> None:
    """The process is about to exit (console_main): hand the teardown of the VMs
    left to it to a child that outlives it (vmm/kvm/ffi_build.py says how), so
    whoever waits for this command is not kept waiting 1-15 ms for the kernel.
    Every fd but the VMs' own is closed first: the child shares the fd table,
    and a caller reading our stdout until its end must see it end now."""
    if not _LEFT_FOR_EXIT:
        return
    keep = {part.fd for vm, kvm, _ in _LEFT_FOR_EXIT for part in (vm, kvm) if part is not None}
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return  # no /proc: the exit does the teardown, as it always could
    for fd in open_fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own fd, gone already
    from .kvm._kvm_cffi import lib

    lib.vmm_hand_over_teardown()  # failing, the exit does it: slower, as before


def _reaper():
    """One daemon thread that finishes deferred teardowns, in order."""
    global _REAPER
    if _REAPER is None:
        import queue
        import threading

        work: queue.SimpleQueue = queue.SimpleQueue()

        def reap() -> None:
            while True:
                _release(work.get())

        threading.Thread(target=reap, name="vmm-reaper", daemon=True).start()
        _REAPER = work
    return _REAPER


def validate(config: VmConfig) -> None:
    """Everything a configuration can be refused for before its files are read."""
    config.validate()
    check_host_memory(config.mem_mib)


def _device_for(record):
    if isinstance(record, DiskConfig):
        from .devices.virtio.block import VirtioBlock  # virtio costs a third of start-up: only when used

        return VirtioBlock(record.path, read_only=record.read_only)
    raise ConfigError(f"unknown device {record!r}")


def prepare(config: VmConfig, virtio_devices: Sequence = ()) -> PreparedVm:
    """Check the configuration and open every input; nothing of KVM yet."""
    validate(config)
    capacity = layout.DeviceSlots().capacity
    if len(config.devices) + len(virtio_devices) > capacity:
        raise ConfigError(f"too many devices: {len(config.devices) + len(virtio_devices)} asked for, at most {capacity} virtio devices fit (one IRQ each)")
    from .boot.protocol import select_boot  # (a restore loads no kernel: ~0.5 ms less of its start)

    boot = select_boot(config.kernel_path(), config.initrd, config.mem_mib << 20)
    if is_linux(boot):
        _plan_platform_options(boot, config.base_cmdline())
    devices: list = []
    try:
        for record in config.devices:
            devices.append(_device_for(record))
    except BaseException:
        for device in devices:
            device.close()
        raise
    return PreparedVm(config, boot, devices + list(virtio_devices))


def is_linux(boot) -> bool:
    """A Linux kernel (bzImage, or a vmlinux by PVH): only Linux boots get ACPI."""
    return bool(getattr(boot, "uses_acpi", False))


def _runs_linux(prepared) -> bool:
    """``prepared`` boots Linux, or is a snapshot of a Linux guest (only those have ACPI)."""
    if prepared.boot is None:
        return bool(prepared.body.machine.acpi)
    return is_linux(prepared.boot)


def _hides_linux_features(prepared) -> bool:
    """Linux on a software KVM: CPUID hides what its emulator cannot run (x86/cpu.py)."""
    from .x86.platform import software_kvm

    return _runs_linux(prepared) and software_kvm()


def needs_syscall_completion(prepared) -> bool:
    """Linux on a software KVM: its ring-3 `syscall`s stay at CPL3 (x86/fallback/syscall_entry.py)."""
    from .x86.platform import software_kvm

    return _runs_linux(prepared) and software_kvm()


def _kvm_device() -> str:
    return os.environ.get("VMM_KVM_DEVICE", KVM_DEVICE)


def open_kvm_ahead() -> None:
    """Begin what the next open_kvm() and create_vm() do on a thread of their own
    (vmm.kvm.api.start_ahead), for a command with other work before its VM."""
    start_ahead(_kvm_device())


def open_kvm(vcpus: int = 1) -> Kvm:
    """/dev/kvm (or $VMM_KVM_DEVICE), with every capability the VMM relies on."""
    kvm = Kvm(_kvm_device())
    try:
        for name, purpose in REQUIRED_CAPABILITIES:
            if not kvm.check_extension(getattr(lib, name)):
                raise KvmUnavailableError(f"this KVM lacks {name} ({purpose}), which vmm needs")
        limit = kvm.check_extension(lib.KVM_CAP_MAX_VCPUS) or kvm.check_extension(lib.KVM_CAP_NR_VCPUS) or 1
        if vcpus > limit:
            raise ConfigError(f"this KVM runs at most {limit} vCPUs per VM ({vcpus} asked for)")
    except BaseException:
        kvm.close()
        raise
    return kvm


def assemble(prepared: PreparedVm, hooks: MachineHooks, on_loop_error: Callable[[BaseException], None]) -> AssembledVm:
    """Create the VM from ``prepared`` (which it then owns); vCPUs are not running."""
    import time

    if prepared.boot is None:  # a snapshot (vmm/snapshot/load.py prepared it)
        return assemble_from_snapshot(prepared, hooks, on_loop_error)

    config = prepared.config
    parts = AssembledVm()
    parts.prepared = prepared
    try:
        parts.kvm = kvm = open_kvm(config.vcpus)
        parts.created_at = time.monotonic()
        parts.vm = vm = kvm.create_vm()
        try:
            parts.memory = GuestMemory(layout.ram_regions(config.mem_mib << 20))
        except OSError as err:
            raise ConfigError(f"cannot allocate {config.mem_mib} MiB of guest memory: {err.strerror}") from None
        for region in parts.memory.regions:  # before the irqchip: see the module docstring
            vm.add_memory(region.guest_addr, region.mapping)
        vm.set_tss_addr(TSS_ADDR)
        vm.create_irqchip()
        parts.loop = EventLoop(on_error=on_loop_error)

        _add_platform_devices(parts, hooks)
        slots = layout.DeviceSlots()
        cmdline = config.base_cmdline()
        uses_acpi = getattr(prepared.boot, "uses_acpi", False)
        if getattr(prepared.boot, "platform_options", None):
            cmdline = f"{cmdline} {' '.join(prepared.boot.platform_options)}"
        for device in prepared.devices:
            slot = _add_virtio_device(parts, slots, device, config.ioeventfd, hooks)
            if not uses_acpi:  # with ACPI the DSDT lists the devices instead
                cmdline += " " + slot.cmdline_entry
        parts.acpi = uses_acpi
        if is_linux(prepared.boot):
            _add_pc_legacy_devices(parts)
        extra = {"acpi_rsdp": _add_acpi(parts, config.vcpus, hooks)} if uses_acpi else {}
        parts.boot_entry = prepared.boot.load(parts.memory, cmdline, user_cmdline_length=len(config.base_cmdline().encode()), **extra)
        _create_vcpus(parts, config.vcpus, hooks, hide_linux_features=_hides_linux_features(prepared))
        _coalesce_queue_setup(parts)
    except BaseException:
        parts.close()
        raise
    return parts


def _plan_platform_options(boot, cmdline: str) -> None:
    """The kernel options a software KVM needs (x86/platform.py), kept on the boot
    for assemble; its description says which, so --stats shows them."""
    from .x86.platform import linux_options

    boot.platform_options = added = linux_options(cmdline)
    if added:
        boot.description = f"{boot.description}; added for this software KVM: {' '.join(added)}"


def _add_platform_devices(parts: AssembledVm, hooks: MachineHooks, uart_state=None) -> None:
    vm = parts.vm
    uart_args = (hooks.serial_output, lambda level: vm.set_irq_line(COM1_IRQ, level))
    uart_kwargs = {"on_input_space": hooks.input_space, "on_plain_transmit": hooks.plain_transmit}
    if uart_state is None:
        parts.uart = Uart16550(*uart_args, **uart_kwargs)
    else:
        parts.uart = Uart16550.from_state(uart_state, *uart_args, **uart_kwargs)
    parts.pio_bus.register(COM1_PORT, UART_SPAN, parts.uart)
    idle = _idle_serving_late_notifies(parts.notify_queues, hooks.idle)
    power_off = _power_off_serving_notifies(parts.notify_queues, hooks.power_off)
    parts.pio_bus.register(EXIT_PORT, EXIT_PORT_SPAN, ExitDevice(parts.memory, power_off, hooks.fault, idle))
    parts.pio_bus.register(POST_CODE_PORT, 1, NullDevice())


def _add_acpi_sleep_port(parts: AssembledVm, hooks: MachineHooks) -> None:
    from .devices.acpi_sleep import AcpiSleepControl
    from .x86.acpi import S5_SLEEP_TYPE, SLEEP_CONTROL_PORT, SLEEP_PORT_SPAN

    parts.pio_bus.register(SLEEP_CONTROL_PORT, SLEEP_PORT_SPAN, AcpiSleepControl(hooks.power_off, S5_SLEEP_TYPE))


def _add_pc_legacy_devices(parts: AssembledVm) -> None:
    """What Linux reads or writes on any PC: the CMOS clock, and the i8042's reset line (reboot=k)."""
    from .devices.cmos_rtc import RTC_BASE, RTC_SPAN, CmosRtc
    from .devices.i8042 import I8042, I8042_BASE, I8042_IRQ, I8042_SPAN
    from .vcpu import current_vcpu

    def reset() -> None:
        vcpu = current_vcpu()
        if vcpu is not None:
            vcpu.guest_reset("i8042 reset command")

    parts.pio_bus.register(RTC_BASE, RTC_SPAN, CmosRtc())
    parts.i8042 = I8042(reset, lambda level: parts.vm.set_irq_line(I8042_IRQ, level))
    parts.pio_bus.register(I8042_BASE, I8042_SPAN, parts.i8042)


def _add_acpi(parts: AssembledVm, vcpus: int, hooks: MachineHooks) -> int:
    """ACPI tables describing the machine, and the sleep port a guest's poweroff writes; returns the RSDP address."""
    from .x86.acpi import build_acpi

    _add_acpi_sleep_port(parts, hooks)
    devices = [(slot.addr, layout.VIRTIO_MMIO_SIZE, slot.irq) for slot in parts.virtio]
    return build_acpi(parts.memory, vcpus, devices, keyboard=parts.i8042 is not None)


def _create_vcpus(parts: AssembledVm, count: int, hooks: MachineHooks, hide_linux_features: bool = False) -> None:
    kvm = parts.kvm
    supported_cpuid = kvm.supported_cpuid()
    supported_msrs = set(kvm.msr_index_list())
    has_xcrs = bool(kvm.check_extension(lib.KVM_CAP_XCRS))
    for index in range(count):
        vcpu = parts.vm.create_vcpu(index)
        parts.vcpus.append(vcpu)
        configure_vcpu(
            vcpu, supported_cpuid=supported_cpuid, supported_msrs=supported_msrs, vcpu_count=count, has_xcrs=has_xcrs,
            hidden_cpuid=LINUX_HIDDEN_FEATURES if hide_linux_features else None,
        )
        vcpu.ignore_port_writes(POST_CODE_PORT)  # the NullDevice there would drop them anyway
    # The boot processor enters the kernel; the others wait in the in-kernel
    # LAPIC for INIT/SIPI (KVM starts every vCPU but the first uninitialised).
    parts.boot_entry.apply(parts.vcpus[0])


def assemble_from_snapshot(restored, hooks: MachineHooks, on_loop_error: Callable[[BaseException], None]) -> AssembledVm:
    """Create a VM from a checked snapshot (vmm.snapshot.load.prepare_restore):
    guest RAM maps the memory file MAP_PRIVATE, devices and vCPUs take their
    saved state. Same order as ``assemble``: RAM before the irqchip."""
    import time

    from .snapshot import load
    from .x86.cpu import guest_cpuid

    from .kvm._kvm_cffi import lib as kvm_lib

    config, body = restored.config, restored.body
    parts = AssembledVm()
    parts.prepared = restored
    try:
        parts.kvm = kvm = open_kvm(config.vcpus)
        supported_cpuid = kvm.supported_cpuid()
        load.check_host(restored, supported_cpuid)
        parts.created_at = time.monotonic()
        parts.vm = vm = kvm.create_vm()
        try:
            parts.memory = GuestMemory(layout.ram_regions(config.mem_mib << 20), backing_fd=restored.mem_fd)
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot map the snapshot's memory file: {err}") from None
        # Dirty logging from the start (cheap before the irqchip), so the
        # restored VM can take diff snapshots against the one it came from.
        track = restored.track_dirty
        for region in parts.memory.regions:
            vm.add_memory(region.guest_addr, region.mapping, kvm_lib.KVM_MEM_LOG_DIRTY_PAGES if track else 0)
        parts.dirty_logging = track
        parts.memory.host_dirty = bytearray(parts.memory.size // 4096) if track else None
        parts.snapshot_id = restored.snapshot_id
        vm.set_tss_addr(TSS_ADDR)
        vm.create_irqchip()
        parts.loop = EventLoop(on_error=on_loop_error)
        _add_platform_devices(parts, hooks, uart_state=restored.serial_state)
        slots = layout.DeviceSlots()
        for device, state in zip(restored.devices, restored.transport_states):
            _add_virtio_device(parts, slots, device, config.ioeventfd, hooks, transport_state=state)
        parts.acpi = bool(body.machine.acpi)
        if parts.acpi:  # a Linux guest: what its boot had (the i8042 and CMOS state are not kept: idle when paused)
            _add_acpi_sleep_port(parts, hooks)
            _add_pc_legacy_devices(parts)
        load.apply_platform(vm, body.platform, restored.what)
        saveable = set(kvm.msr_index_list())
        for index, record in enumerate(body.vcpus):
            vcpu = vm.create_vcpu(index)
            parts.vcpus.append(vcpu)
            hidden = LINUX_HIDDEN_FEATURES if _hides_linux_features(restored) else None  # as at its boot
            vcpu.set_cpuid(guest_cpuid(supported_cpuid, index, config.vcpus, vcpu.tsc_khz(), hidden))
            vcpu.ignore_port_writes(POST_CODE_PORT)
            load.apply_vcpu(vcpu, record, saveable, f"{restored.what}: vCPU {index}")
    except BaseException:
        parts.close()
        raise
    return parts
