"""Restore: check a snapshot against this host, rebuild its devices, apply its state.

``prepare_restore`` runs before KVM is touched: it reads and checks the
state file, opens the memory file and reopens the disks (with their identity
check). The builder then creates the VM (vmm/builder.py,
``assemble_from_snapshot``) and calls ``check_host``, ``apply_vcpu`` and
``apply_platform`` here. Every field that means something to the VMM is
checked before use; the KVM structures saved whole are checked by KVM, and
a refusal becomes a SnapshotError too.
"""

from __future__ import annotations

import os
import stat

from ..config import MAX_VCPUS, DiskConfig, VmConfig, check_host_memory
from ..errors import ConfigError, KvmError
from ..x86 import layout
from .records import DEVICE_KINDS, NO_SIGNALLED_USED, SnapshotError, host_cpu_from, vmm_version

# KVM_MP_STATE_RUNNABLE (0) .. KVM_MP_STATE_SUSPENDED (9)
MP_STATE_MAX = 9
RFLAGS_FIXED_ONE = 1 << 1
RFLAGS_DEFINED = (1 << 22) - 1
CR0_PE, CR0_PG = 1 << 0, 1 << 31
EFER_LME, EFER_LMA = 1 << 8, 1 << 10


class RestoredVm:
    """What prepare() gives the builder for a boot, for a snapshot: the config,
    the device models (disks reopened), and the checked records."""

    boot = None
    # KVM logs the guest's writes from the start, so the restored VM can take a
    # diff against this snapshot. It costs: KVM then maps RAM in 4 KiB pages
    # only (a 64 MiB read ~3x slower here). Clones that never snapshot turn it off.
    track_dirty = True

    def __init__(self, config: VmConfig, devices: list, body, header, mem_fd: int, what: str):
        self.config = config
        self.devices = devices
        self.body = body
        self.header = header
        self.mem_fd = mem_fd
        self.what = what

    @property
    def snapshot_id(self) -> bytes:
        return bytes(self.body.machine.snapshot_id)

    def close(self) -> None:
        for device in self.devices:
            device.close()
        self.devices = []
        if self.mem_fd >= 0:
            os.close(self.mem_fd)
            self.mem_fd = -1


def _canonical(address: int) -> bool:
    top = address >> 47
    return top == 0 or top == (1 << 17) - 1


def _check_machine(body, what: str) -> int:
    m = body.machine
    if str(m.memory_kind) not in ("full", "diff"):
        raise SnapshotError(f"{what}: unknown memory kind {m.memory_kind!r}")
    size = m.mem_size
    if size % layout.MIB or size < layout.MIN_MEMORY_MIB * layout.MIB:
        raise SnapshotError(f"{what}: guest memory size {size} is not a whole number of MiB (at least {layout.MIN_MEMORY_MIB})")
    try:
        check_host_memory(size // layout.MIB)
    except ConfigError as err:
        raise SnapshotError(f"{what}: {err}") from None
    regions = [(r.guest_addr, r.size) for r in m.regions]
    if regions != layout.ram_regions(size):
        raise SnapshotError(f"{what}: RAM regions {regions} are not the layout of {size >> 20} MiB")
    if not 1 <= len(body.vcpus) <= MAX_VCPUS:
        raise SnapshotError(f"{what}: {len(body.vcpus)} vCPUs (1-{MAX_VCPUS} allowed)")
    slots = layout.DeviceSlots()
    if len(body.virtio) > slots.capacity:
        raise SnapshotError(f"{what}: {len(body.virtio)} virtio devices, at most {slots.capacity} fit")
    for index, slot in enumerate(body.virtio):
        addr, irq = slots.allocate("device")
        if (slot.addr, slot.irq) != (addr, irq):
            raise SnapshotError(f"{what}: virtio device {index} at 0x{slot.addr:x} IRQ {slot.irq}, expected 0x{addr:x} IRQ {irq}")
        if str(slot.kind) not in DEVICE_KINDS:
            raise SnapshotError(f"{what}: virtio device {index} is of unknown kind {slot.kind!r}")
    for index, vcpu in enumerate(body.vcpus):
        _check_vcpu(vcpu, f"{what}: vCPU {index}")
    return size


def _check_vcpu(record, what: str) -> None:
    """The registers the VMM can judge; KVM judges the rest on KVM_SET_*."""
    from ..kvm._kvm_cffi import ffi

    regs = ffi.cast("struct kvm_regs *", ffi.from_buffer(record.regs))
    sregs = ffi.cast("struct kvm_sregs *", ffi.from_buffer(record.sregs))
    mp = ffi.cast("struct kvm_mp_state *", ffi.from_buffer(record.mp_state))
    if not _canonical(regs.rip):
        raise SnapshotError(f"{what}: rip 0x{regs.rip:x} is not a canonical address")
    if not regs.rflags & RFLAGS_FIXED_ONE or regs.rflags & ~RFLAGS_DEFINED:
        raise SnapshotError(f"{what}: rflags 0x{regs.rflags:x} is not a valid RFLAGS value")
    if sregs.cr0 & CR0_PG and not sregs.cr0 & CR0_PE:
        raise SnapshotError(f"{what}: cr0 0x{sregs.cr0:x} enables paging without protected mode")
    if sregs.efer & EFER_LMA and not (sregs.efer & EFER_LME and sregs.cr0 & CR0_PG):
        raise SnapshotError(f"{what}: efer 0x{sregs.efer:x} says long mode is active, but it is not enabled")
    if mp.mp_state > MP_STATE_MAX:
        raise SnapshotError(f"{what}: unknown multiprocessing state {mp.mp_state}")


def _serial_state(record):
    from ..devices.serial_state import SerialState

    return SerialState(**{name: (bytes(v) if isinstance(v, bytes) else v) for name, v in record.items() if not name.startswith("_")})


def _transport_state(record):
    from ..devices.virtio.mmio_state import TransportState
    from ..devices.virtio.queue import QueueState

    queues = tuple(
        QueueState(q.size, q.ready, q.desc_addr, q.avail_addr, q.used_addr, q.next_avail, q.next_used,
                   q.event_idx, q.indirect, None if q.signalled_used == NO_SIGNALLED_USED else q.signalled_used)
        for q in record.queues
    )
    if any(q.signalled_used is not None and q.signalled_used < 0 for q in queues):
        raise SnapshotError("virtio state: signalled_used is negative")
    return TransportState(record.status, record.device_features_sel, record.driver_features_sel, record.driver_features,
                          record.unknown_feature_bits, record.queue_sel, record.interrupt_status,
                          record.config_generation, record.acked_features, queues)


def _open_block(record, allow_disk_change: bool, what: str):
    from ..devices.virtio.block import BlockState, VirtioBlock
    from .save import disk_identity

    path = os.fsdecode(bytes(record.path))
    try:  # a FIFO named here would block the open below: refuse what no disk is
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        mode = None  # from_state() names the problem
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        raise SnapshotError(f"{what}: disk {path!r}: not a regular file or block device")
    disk = VirtioBlock.from_state(BlockState(path, record.size, record.read_only, bytes(record.disk_id)))
    try:
        mtime_ns, fingerprint = disk_identity(disk.fd, disk.size_bytes)
        if not allow_disk_change and (mtime_ns, fingerprint) != (record.mtime_ns, bytes(record.fingerprint)):
            changed = "its contents" if fingerprint != bytes(record.fingerprint) else "its modification time"
            raise SnapshotError(
                f"{what}: disk {path if path.isprintable() else repr(path)} changed since the snapshot ({changed}); "
                "restoring against it could corrupt it "
                "(allow with --allow-disk-change / allow_disk_change=True)"
            )
    except BaseException:
        disk.close()
        raise
    return disk


def _open_console(record, options: dict):
    from ..devices.virtio.console import ConsoleState, PortState, VirtioConsole

    try:
        ports = tuple(PortState(bytes(p.name).decode(), p.guest_ready, p.guest_open, p.host_open, p.eof_sent, bytes(p.backlog))
                      for p in record.ports)
    except UnicodeDecodeError:
        raise SnapshotError("virtio-console state: a port name is not UTF-8") from None
    state = ConsoleState(record.cols, record.rows, record.max_input_backlog,
                         None if record.console_port == -1 else record.console_port, record.acked_features,
                         record.device_ready, ports, tuple(bytes(m) for m in record.control_pending))
    callbacks = dict(options)
    callbacks.setdefault("on_output", lambda port, data: None)
    return VirtioConsole.from_state(state, **callbacks)


def _open_memory_file(mem_path: str, size: int) -> int:
    what = f"memory file {mem_path}"
    try:
        fd = os.open(mem_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block us
    except OSError as err:
        raise SnapshotError(f"{what}: {err.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size != size:
        os.close(fd)
        kind = f"{info.st_size} bytes" if stat.S_ISREG(info.st_mode) else "not a regular file"
        raise SnapshotError(f"{what}: {kind}, but the snapshot's guest has {size} bytes of RAM")
    return fd


def prepare_restore(state_path: str, mem_path: str, *, allow_disk_change: bool = False,
                    console_options: dict | None = None, timeout=None, serial_log=None) -> RestoredVm:
    """Read and check a snapshot and open what it names; no KVM yet."""
    from . import format as fmt

    what = f"snapshot {state_path}"
    header, body = fmt.decode(fmt.read_state_file(state_path), what)
    checked = check_snapshot(header, body, what, timeout=timeout, serial_log=serial_log)
    mem_fd = _open_memory_file(mem_path, checked.config.mem_mib * layout.MIB)
    try:
        return checked.open(mem_fd, allow_disk_change=allow_disk_change, console_options=console_options)
    except BaseException:
        os.close(mem_fd)
        raise


class CheckedSnapshot:
    """A decoded state file whose records passed every check: restored from as
    often as wanted (vmm/sandbox/warm.py keeps one per process), each time
    with devices of its own."""

    def __init__(self, header, body, what: str, config: VmConfig, serial, transports):
        self.header, self.body, self.what = header, body, what
        self.config, self.serial_state, self.transport_states = config, serial, transports

    def open(self, mem_fd: int, *, allow_disk_change: bool = False, console_options: dict | None = None) -> RestoredVm:
        """A RestoredVm owning ``mem_fd`` (RAM, checked for size by the caller) and fresh devices."""
        devices: list = []
        try:
            for slot in self.body.virtio:
                if str(slot.kind) == "block":
                    devices.append(_open_block(slot.device, allow_disk_change, self.what))
                else:
                    devices.append(_open_console(slot.device, console_options or {}))
        except BaseException:
            for device in devices:
                device.close()
            raise
        restored = RestoredVm(self.config, devices, self.body, self.header, mem_fd, self.what)
        restored.serial_state = self.serial_state
        restored.transport_states = self.transport_states
        return restored


def check_snapshot(header, body, what: str, *, timeout=None, serial_log=None) -> CheckedSnapshot:
    """Check decoded records against this vmm and host (no files opened)."""
    if header.vmm_version != vmm_version():
        raise SnapshotError(f"{what}: made by vmm {header.vmm_version!r}, this is vmm {vmm_version()!r}")
    size = _check_machine(body, what)
    try:
        serial = _serial_state(body.uart)
        transports = [_transport_state(slot.transport) for slot in body.virtio]
    except TypeError as err:
        raise SnapshotError(f"{what}: malformed device record ({err})") from None
    from ..devices.serial_state import check_state

    check_state(serial)
    disks = tuple(DiskConfig(os.fsdecode(bytes(s.device.path)), s.device.read_only) for s in body.virtio if str(s.kind) == "block")
    try:
        config = VmConfig(mem_mib=size // layout.MIB, vcpus=len(body.vcpus), devices=disks,
                          ioeventfd=body.machine.ioeventfd, timeout=timeout, serial_log=serial_log).validate()
    except ConfigError as err:
        raise SnapshotError(f"{what}: {err}") from None
    return CheckedSnapshot(header, body, what, config, serial, transports)


def check_host(restored: RestoredVm, supported_cpuid) -> None:
    vendor, signature = host_cpu_from(supported_cpuid)
    h = restored.header
    if h.cpu_vendor != vendor:
        raise SnapshotError(f"{restored.what}: taken on a {h.cpu_vendor!r} CPU, this host's is {vendor!r}")
    if h.cpu_signature != signature:
        raise SnapshotError(
            f"{restored.what}: taken on CPU family/model/stepping 0x{h.cpu_signature:x}, this host's is 0x{signature:x}"
        )


def apply_vcpu(vcpu, record, saveable_msrs: set[int], what: str) -> None:
    """Set a new vCPU's state from its record, in the order KVM needs (MP
    state and sregs before the LAPIC; events last)."""
    msrs = {m.index: m.value for m in record.msrs}
    unknown = [index for index in msrs if index not in saveable_msrs]
    if unknown:
        raise SnapshotError(f"{what}: MSR 0x{unknown[0]:x} is not one this KVM saves")
    try:
        for name in ("mp_state", "regs", "sregs", "xsave", "xcrs", "debugregs", "lapic"):
            vcpu.set_state(name, bytes(getattr(record, name)))
        vcpu.set_msrs(msrs)
        vcpu.set_state("vcpu_events", bytes(record.vcpu_events))
    except KvmError as err:
        raise SnapshotError(f"{what}: KVM refused the saved state: {err}") from None


def apply_platform(vm, record, what: str) -> None:
    if record.pit:
        raise SnapshotError(f"{what}: has an in-kernel PIT, which this VMM does not create")
    try:
        vm.set_irqchip(0, bytes(record.pic_master))
        vm.set_irqchip(1, bytes(record.pic_slave))
        vm.set_irqchip(2, bytes(record.ioapic))
        vm.set_clock(record.clock)
    except KvmError as err:
        raise SnapshotError(f"{what}: KVM refused the saved interrupt controller or clock: {err}") from None
