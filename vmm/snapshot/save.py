"""Take a snapshot of a paused MicroVM: the state file and the memory file."""

from __future__ import annotations

import hashlib
import os

from ..errors import KvmError, VmmError
from . import format as fmt
from .records import SnapshotError, host_cpu_from, vmm_version
from .memory_file import candidate_pages, write_memory_file

FINGERPRINT_SPAN = 64 << 10
PAGE = 4096  # KVM's dirty log and GuestMemory.host_dirty: one bit / byte per 4 KiB page


def host_cpu(kvm) -> tuple[str, int]:
    """(vendor string, CPUID.1:EAX) as KVM reports them for this host."""
    return host_cpu_from(kvm.supported_cpuid())


def disk_identity(fd: int, size: int) -> tuple[int, bytes]:
    """(mtime_ns, SHA-256 of the first and last 64 KiB): cheap, and enough to
    notice a disk replaced or written since the snapshot."""
    digest = hashlib.sha256()
    digest.update(os.pread(fd, FINGERPRINT_SPAN, 0))
    digest.update(os.pread(fd, FINGERPRINT_SPAN, max(0, size - FINGERPRINT_SPAN)))
    return os.fstat(fd).st_mtime_ns, digest.digest()


def _vcpu_record(vcpu, msr_indices) -> dict:
    record = {name: vcpu.get_state(name) for name in fmt.VCPU_BLOBS}
    record["msrs"] = [{"index": i, "value": v} for i, v in vcpu.get_msrs(msr_indices).items()]
    return record


def _queue_record(q) -> dict:
    d = q._asdict()
    d["signalled_used"] = fmt.NO_SIGNALLED_USED if q.signalled_used is None else q.signalled_used
    return d


def _device_record(device) -> tuple[str, dict]:
    from ..devices.virtio.block import VirtioBlock
    from ..devices.virtio.console import VirtioConsole

    if isinstance(device, VirtioBlock):
        s = device.state()
        mtime_ns, fingerprint = disk_identity(device.fd, device.size_bytes)
        return "block", {"path": os.fsencode(s.path), "size": s.size, "read_only": s.read_only,
                         "disk_id": s.disk_id, "mtime_ns": mtime_ns, "fingerprint": fingerprint}
    if isinstance(device, VirtioConsole):
        s = device.state()
        return "console", {
            "cols": s.cols, "rows": s.rows, "max_input_backlog": s.max_input_backlog,
            "console_port": -1 if s.console_port is None else s.console_port,
            "acked_features": s.acked_features, "device_ready": s.device_ready,
            "ports": [dict(p._asdict(), name=p.name.encode()) for p in s.ports],
            "control_pending": list(s.control_pending),
        }
    raise SnapshotError(f"cannot snapshot a VM with a {type(device).__name__} device")


def _dirty_pages(parts) -> list[bytearray]:
    """Pages written since the last snapshot, per region: KVM's log (read and
    cleared) for the guest's writes, host_dirty for the VMM's own."""
    memory, result, first = parts.memory, [], 0
    for slot, region in enumerate(memory.regions):
        count = region.size // PAGE
        bitmap = parts.vm.dirty_log(slot)
        pages = bytearray(count)
        for byte_index, byte in enumerate(bitmap):
            if byte:
                for bit in range(8):
                    if byte >> bit & 1 and byte_index * 8 + bit < count:
                        pages[byte_index * 8 + bit] = 1
        host = memory.host_dirty[first : first + count]
        result.append(bytearray(a | b for a, b in zip(pages, host)))
        first += count
    return result


def start_dirty_tracking(parts) -> None:
    """From now on, record which pages change (for the next diff snapshot)."""
    memory = parts.memory
    if memory.host_dirty is None:
        if not parts.dirty_logging:
            parts.vm.set_dirty_logging(True)
            parts.dirty_logging = True
        else:
            for slot in range(len(memory.regions)):
                parts.vm.dirty_log(slot)  # clear
        memory.host_dirty = bytearray(memory.size // PAGE)
    else:
        for slot in range(len(memory.regions)):
            parts.vm.dirty_log(slot)  # clear
        memory.host_dirty[:] = bytes(len(memory.host_dirty))


def snapshot(vm, state_path: str, mem_path: str, *, diff: bool = False) -> dict:
    """Write a paused VM's state to ``state_path`` and its RAM to ``mem_path``.

    ``diff``: only the pages changed since this VM's previous snapshot (or
    since the snapshot it was restored from). Returns figures for benchmarks:
    {"state_bytes", "memory_bytes_written"}.
    """
    parts = getattr(vm, "_parts", None)
    if parts is None or not vm.running:
        raise VmmError("the VM is not running: only a paused, running VM can be snapshotted")
    if not vm.paused:
        raise VmmError("the VM must be paused before a snapshot (vm.pause())")
    for path in (state_path, mem_path):
        if not isinstance(path, str) or not path or "\0" in path:
            raise SnapshotError(f"snapshot path {path!r:.60} is not a file name")
    if os.path.abspath(state_path) == os.path.abspath(mem_path):
        raise SnapshotError("the state file and the memory file must be different files")
    if diff and parts.memory.host_dirty is None:
        raise SnapshotError("no earlier snapshot of this VM to take a diff against: take a full snapshot first")
    if diff and _is_backing_file(parts.memory, mem_path):
        raise SnapshotError(
            f"{mem_path} is the memory file this VM was restored from: a diff there would replace it with "
            "only the changed pages; write the diff to another file and merge it (merge_diff, vmm merge-diff)"
        )
    # Host-side device work (console input, say) runs on the event loop: keep
    # it out while the state and the RAM are read, so the two agree.
    try:
        return parts.loop.run_exclusive(lambda: _take(vm, parts, state_path, mem_path, diff), timeout=60)
    except BaseException:
        # The dirty log may have been read (and so cleared) for nothing: the
        # next diff would miss those pages. Only a full snapshot may follow.
        parts.memory.host_dirty = None
        raise


def _is_backing_file(memory, path: str) -> bool:
    if memory.backing_fd is None:
        return False
    try:
        target = os.stat(path)
    except OSError:
        return False
    mapped = os.fstat(memory.backing_fd)
    return (target.st_dev, target.st_ino) == (mapped.st_dev, mapped.st_ino)


def _take(vm, parts, state_path: str, mem_path: str, diff: bool) -> dict:
    try:
        vendor, signature = host_cpu(parts.kvm)
        msr_indices = parts.kvm.msr_index_list()
        vcpus = [_vcpu_record(thread.vcpu, msr_indices) for thread in vm._threads]
        vm_fd = parts.vm
        platform = {
            "pic_master": vm_fd.get_irqchip(0), "pic_slave": vm_fd.get_irqchip(1), "ioapic": vm_fd.get_irqchip(2),
            "pit": b"", "clock": vm_fd.get_clock(),
        }
        pages = _dirty_pages(parts) if diff else candidate_pages(parts.memory)
    except KvmError as err:
        raise SnapshotError(f"cannot read the VM's state: {err}") from None
    uart = parts.uart.state()._asdict()
    virtio = []
    for slot in parts.virtio:
        kind, device = _device_record(slot.device)
        transport = slot.transport.state()
        t = transport._asdict()
        t["queues"] = [_queue_record(q) for q in transport.queues]
        virtio.append({"addr": slot.addr, "irq": slot.irq, "kind": kind, "transport": t, "device": device})
    snapshot_id = os.urandom(fmt.SNAPSHOT_ID_BYTES)
    machine = {
        "snapshot_id": snapshot_id,
        "parent_id": parts.snapshot_id if diff else bytes(fmt.SNAPSHOT_ID_BYTES),
        "memory_kind": "diff" if diff else "full",
        "mem_size": parts.memory.size,
        "regions": [{"guest_addr": r.guest_addr, "size": r.size} for r in parts.memory.regions],
        "ioeventfd": vm.config.ioeventfd,
        "acpi": parts.acpi,
        "boot_protocol": (vm.boot_protocol or "").encode()[:255],
    }
    data = fmt.encode(
        {"vmm_version": vmm_version(), "cpu_vendor": vendor, "cpu_signature": signature},
        {"machine": machine, "vcpus": vcpus, "platform": platform, "uart": uart, "virtio": virtio},
    )
    written = write_memory_file(parts.memory, mem_path, pages, skip_zero=not diff)
    _write_file(state_path, data)
    parts.snapshot_id = snapshot_id
    start_dirty_tracking(parts)
    return {"state_bytes": len(data), "memory_bytes_written": written}


def _write_file(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise SnapshotError(f"cannot write snapshot {path}: {err.strerror}") from None
