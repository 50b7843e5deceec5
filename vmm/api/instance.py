"""The VM behind the API socket: its configuration before boot, the MicroVM after.

Firecracker's model: a process serves one microVM. Before InstanceStart the
API gathers the machine configuration, boot source and drives (or loads a
snapshot instead); after it, only pause/resume, snapshots, metrics and
information. Every method here is called on the API server's thread, one
request at a time; the VM runs on its own threads and never waits for this one.
"""

from __future__ import annotations

import os
import threading
import time

from ..config import (
    DEFAULT_MEM_MIB,
    DiskConfig,
    VmConfig,
    check_cmdline,
    check_host_memory,
)
from ..errors import VmmError
from .metrics import MetricsSink, metrics_record
from .routes import POST_BOOT, PRE_BOOT, ApiError

NOT_STARTED, RUNNING, PAUSED = "Not started", "Running", "Paused"
NO_SNAPSHOTS = "snapshots are not available in this build (vmm.persist is missing)"


def _persist():
    """vmm.persist, imported on first use (it brings construct); ApiError if absent."""
    from importlib import import_module

    try:
        return import_module("vmm.persist")
    except ModuleNotFoundError as err:
        if err.name in ("vmm.persist", "construct"):
            raise ApiError(NO_SNAPSHOTS) from None
        raise


_version: str | None = None


def vmm_version() -> str:
    """vmm's installed version, looked up once (importlib.metadata costs ~30 ms to import)."""
    global _version
    if _version is None:
        try:
            from importlib.metadata import version

            _version = version("vmm")
        except Exception:  # noqa: BLE001 (not installed, a bare checkout: the version is still worth a line)
            _version = "0.1.0"
    return _version


class ApiInstance:
    """What the routes call (see vmm/api/routes.py for each endpoint)."""

    def __init__(self, instance_id: str = "vmm", *, output_fd: int = 1, microvm_factory=None):
        self.instance_id = instance_id
        self._output_fd = output_fd
        self._serial_file = None
        self._microvm_factory = microvm_factory  # tests hand in a fake; default: vmm.machine.MicroVM
        self.vcpu_count = 1
        self.mem_size_mib = DEFAULT_MEM_MIB
        self.smt = False
        self.track_dirty_pages = False
        self.kernel: str | None = None
        self.boot_args: str | None = None
        self.initrd: str | None = None
        self.drives: dict[str, DiskConfig] = {}
        self.root_drive: str | None = None
        self.vm = None
        self.started = threading.Event()  # set once a VM runs (booted or restored)
        self.instance_start_ms: float | None = None
        self.started_at: float | None = None
        self.metrics: MetricsSink | None = None
        self.requests = 0
        self.failed_requests = 0

    # --- information ---------------------------------------------------------------
    @property
    def state(self) -> str:
        if self.vm is None:
            return NOT_STARTED
        return PAUSED if self.vm.paused else RUNNING

    def get_info(self) -> dict:
        return {"id": self.instance_id, "state": self.state, "vmm_version": vmm_version(), "app_name": "vmm"}

    def get_machine_config(self) -> dict:
        return {
            "vcpu_count": self.vcpu_count,
            "mem_size_mib": self.mem_size_mib,
            "smt": self.smt,
            "track_dirty_pages": self.track_dirty_pages,
        }

    # --- configuration before boot -------------------------------------------------------
    def _pre_boot(self) -> None:
        if self.vm is not None:
            raise ApiError(POST_BOOT)

    def put_machine_config(self, vcpu_count: int, mem_size_mib: int, smt: bool = False, track_dirty_pages: bool = False) -> None:
        self._pre_boot()
        if smt:
            raise ApiError("SMT is not supported: each vCPU is a thread of its own.")
        # VmConfig's own checks give the ranges and the messages.
        VmConfig(vcpus=vcpu_count, mem_mib=mem_size_mib).validate()
        check_host_memory(mem_size_mib)
        self.vcpu_count, self.mem_size_mib, self.smt, self.track_dirty_pages = vcpu_count, mem_size_mib, smt, track_dirty_pages

    def patch_machine_config(self, **changes) -> None:
        self._pre_boot()
        merged = self.get_machine_config()
        merged.update(changes)
        self.put_machine_config(**merged)

    def put_boot_source(self, kernel_image_path: str, boot_args: str | None = None, initrd_path: str | None = None) -> None:
        self._pre_boot()
        if boot_args is not None:
            check_cmdline(boot_args)
        self.kernel, self.boot_args, self.initrd = kernel_image_path, boot_args, initrd_path

    def put_drive(self, drive_id: str, path_on_host: str, is_root_device: bool, is_read_only: bool = False) -> None:
        self._pre_boot()
        if is_root_device and self.root_drive not in (None, drive_id):
            raise ApiError("A root block device already exists!")
        if not is_root_device and self.root_drive == drive_id:
            self.root_drive = None
        if is_root_device:
            self.root_drive = drive_id
        self.drives[drive_id] = DiskConfig(path_on_host, read_only=is_read_only)

    def put_serial(self, serial_out_path: str) -> None:
        self._pre_boot()
        try:
            fd = os.open(serial_out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise ApiError(f"Cannot open serial output {serial_out_path}: {err.strerror}.") from None
        if self._serial_file is not None:
            os.close(self._serial_file)
        self._serial_file = self._output_fd = fd

    def put_metrics(self, metrics_path: str) -> None:
        if self.metrics is not None:
            raise ApiError("Reinitialization of metrics not allowed.")
        self.metrics = MetricsSink.open(metrics_path)

    # --- the VM ------------------------------------------------------------------------------
    def vm_config(self) -> VmConfig:
        """The VmConfig InstanceStart boots: the root drive first (it is /dev/vda), as Firecracker orders them."""
        if self.kernel is None:
            raise ApiError("Cannot start microvm without kernel configuration.")
        order = sorted(self.drives, key=lambda d: d != self.root_drive)
        cmdline = self.boot_args
        if self.root_drive is not None:
            # Firecracker adds the root device to the kernel command line (virtio-blk, first slot).
            root = f"root=/dev/vda {'ro' if self.drives[self.root_drive].read_only else 'rw'}"
            cmdline = f"{cmdline} {root}" if cmdline else f"console=ttyS0 {root}"
        return VmConfig(
            kernel=self.kernel,
            cmdline=cmdline,
            initrd=self.initrd,
            mem_mib=self.mem_size_mib,
            vcpus=self.vcpu_count,
            devices=tuple(self.drives[d] for d in order),
        ).validate()

    def _microvm(self, config: VmConfig):
        factory = self._microvm_factory
        if factory is None:
            from ..machine import MicroVM as factory
        return factory(config, output_fd=self._output_fd, capture=False)

    def start(self) -> None:
        self._pre_boot()
        begin = time.monotonic()
        vm = self._microvm(self.vm_config())
        try:
            vm.start()
        except BaseException:
            vm.close()
            raise
        self._running(vm, begin)

    def _running(self, vm, begin: float) -> None:
        self.vm = vm
        self.started_at = time.monotonic()
        self.instance_start_ms = (self.started_at - begin) * 1000
        self.started.set()

    def _booted(self):
        if self.vm is None:
            raise ApiError(PRE_BOOT)
        if not self.vm.running:
            raise ApiError("The microVM has stopped.")
        return self.vm

    def pause(self) -> None:
        vm = self._booted()
        if not vm.paused:
            vm.pause()

    def resume(self) -> None:
        vm = self._booted()
        if vm.paused:
            vm.resume()

    def send_ctrl_alt_del(self) -> None:
        vm = self._booted()
        try:
            vm.send_ctrl_alt_del()
        except VmmError as err:
            raise ApiError(f"SendCtrlAltDel failed: {err}") from None

    def flush_metrics(self) -> None:
        if self.metrics is None:
            raise ApiError("The metrics system is not initialized: PUT /metrics first.")
        self.metrics.write(metrics_record(self))

    # --- snapshots (vmm.persist) ---------------------------------------------------------------
    def create_snapshot(self, snapshot_path: str, mem_file_path: str, snapshot_type: str = "Full") -> None:
        vm = self._booted()
        if not vm.paused:
            raise ApiError("Cannot create a snapshot of a running microVM: pause it first (PATCH /vm).")
        _persist().snapshot(vm, snapshot_path, mem_file_path, diff=snapshot_type == "Diff")

    def load_snapshot(self, snapshot_path: str, mem_path: str, resume_vm: bool = False) -> None:
        if self.vm is not None or self.kernel is not None or self.drives:
            raise ApiError("Loading a microVM snapshot not allowed after configuring boot-specific resources.")
        persist = _persist()
        begin = time.monotonic()
        vm = persist.restore(snapshot_path, mem_path, resume=resume_vm, output_fd=self._output_fd, capture=False)
        config = getattr(vm, "config", None)
        if config is not None:  # GET /machine-config reports the machine the snapshot holds
            self.vcpu_count, self.mem_size_mib = config.vcpus, config.mem_mib
        self._running(vm, begin)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self._serial_file is not None:
            os.close(self._serial_file)
            self._serial_file = None

