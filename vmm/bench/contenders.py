"""The monitors a benchmark compares: vmm, QEMU's microvm machine, the C floor.

Each contender turns (guest ELF, memory size, disks) into the command line of
a process whose serial console is its stdin/stdout, so every case drives the
very same guest code the same way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

QEMU = "qemu-system-x86_64"


@dataclass
class Contender:
    name: str
    supports_disks: bool = True
    unavailable: str | None = None  # why it cannot run here, if it cannot
    only_cases: tuple[str, ...] | None = None  # a variant measured only where it differs

    def argv(self, guest_elf: str, mem_mib: int, disks: list[str]) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """Environment additions for its process."""
        return {}


BASELINE_ENV = "VMM_BENCH_BASELINE"  # a source tree to measure beside this one (A/B in one run)


class VmmContender(Contender):
    def __init__(self, ioeventfd: bool = True, root: str | None = None, name: str | None = None):
        super().__init__(name or ("vmm" if ioeventfd else "vmm no-ioeventfd"),
                         only_cases=None if ioeventfd and root is None else ("blk", "blk-busy"))
        self.ioeventfd = ioeventfd
        # The vmm this bench runs from (a worktree, say), not whichever one
        # the venv's `vmm` script would import.
        self.root = root or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def env(self):
        return {"PYTHONPATH": os.pathsep.join(p for p in (self.root, os.environ.get("PYTHONPATH")) if p)}

    def argv(self, guest_elf, mem_mib, disks):
        # the `vmm` command as users start it (python -m vmm adds runpy's ~3 ms)
        script = os.path.join(os.path.dirname(sys.executable), "vmm")
        command = [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "vmm"]
        argv = [*command, "run", "--stats", "--kernel", guest_elf, "--mem", str(mem_mib)]
        if not self.ioeventfd:
            argv.append("--no-ioeventfd")
        for disk in disks:
            argv += ["--disk", disk]
        return argv


class QemuContender(Contender):
    """QEMU microvm with KVM, booting the same ELF by PVH.

    With acpi=off QEMU appends the virtio_mmio.device= entries to the command
    line itself. isa-debug-exit at 0xf4 makes `exit N` power off with status
    (N << 1) | 1.
    """

    def __init__(self):
        super().__init__("qemu")
        self.cpu = "host"
        if shutil.which(QEMU) is None:
            self.unavailable = f"{QEMU} not installed (apt-get install qemu-system-x86)"
        else:
            self.cpu = self._usable_cpu()

    @staticmethod
    def _usable_cpu() -> str:
        # Nested KVM may refuse MSRs that '-cpu host' passes on (seen here:
        # IA32_ARCH_CAPABILITIES); fall back to host minus that feature.
        probe = [QEMU, "-M", "microvm", "-enable-kvm", "-nodefaults", "-display", "none", "-S", "-no-user-config"]
        for cpu in ("host", "host,-arch-capabilities"):
            try:
                result = subprocess.run([*probe, "-cpu", cpu], input=b"", capture_output=True, timeout=3)
            except subprocess.TimeoutExpired:
                return cpu  # it started and waited (-S): usable
            if result.returncode == 0:
                return cpu
        return "host,-arch-capabilities"

    def argv(self, guest_elf, mem_mib, disks):
        argv = [
            QEMU, "-M", "microvm,acpi=off", "-enable-kvm", "-cpu", self.cpu, "-m", str(mem_mib),
            "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            # microvm's virtio-mmio defaults to the legacy (version 1) register
            # layout; the guest, like vmm, speaks version 2 (virtio 1.x)
            "-global", "virtio-mmio.force-legacy=false",
            "-kernel", guest_elf, "-append", "console=ttyS0",
        ]
        for index, disk in enumerate(disks):
            argv += ["-drive", f"id=d{index},file={disk},format=raw,if=none", "-device", f"virtio-blk-device,drive=d{index}"]
        return argv


class FloorContender(Contender):
    """A bare C KVM_RUN loop running the same guest: the limit for exit-bound work."""

    def __init__(self):
        super().__init__("floor", supports_disks=False)
        from ..errors import ConfigError
        from .floor import build_floor

        try:
            self.binary = build_floor()
        except ConfigError as err:
            self.unavailable = str(err)

    def argv(self, guest_elf, mem_mib, disks):
        return [self.binary, "--mem", str(mem_mib), guest_elf]


def all_contenders() -> list[Contender]:
    contenders: list[Contender] = [VmmContender(), VmmContender(ioeventfd=False)]
    baseline = os.environ.get(BASELINE_ENV)
    if baseline:  # e.g. an export of main: before/after interleaved, same QEMU runs
        contenders += [VmmContender(root=baseline, name="vmm baseline"),
                       VmmContender(ioeventfd=False, root=baseline, name="baseline no-ioeventfd")]
    return [*contenders, QemuContender(), FloorContender()]
