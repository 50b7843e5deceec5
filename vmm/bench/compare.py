"""`vmm bench`: every case on every contender, in one run, rounds interleaved.

Contenders: vmm, QEMU microvm (same guest ELF by PVH, same disk image, same
memory size) and the C floor (a bare KVM_RUN loop around the same guest).
Cases are driven by guest shell commands, so every contender runs the very
same guest code. Prints min and median per contender, the ratio of medians
to the reference (QEMU; the floor for the exit round trip) and the VM exits
counted (QEMU's are not visible from outside it).
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from ..config import bundled_guest
from .contenders import Contender, all_contenders
from .session import GuestSession, parse_exit_count

from ..cli import BENCH_CASES as CASES


class BusyLoop:
    """A process spinning on one CPU (the last) while the block is entered."""

    def __enter__(self) -> "BusyLoop":
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        cpus = sorted(os.sched_getaffinity(0))
        try:
            os.sched_setaffinity(self.proc.pid, {cpus[-1]})
        except OSError:
            pass  # it still keeps a CPU busy, wherever the scheduler puts it
        time.sleep(0.05)  # running before the VM starts
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()


@dataclass(frozen=True)
class Params:
    rounds: int = 3
    mem_mib: int = 128
    ioloop: int = 20000
    serial_bytes: int = 65536
    blk_mib: int = 64
    density: int = 20
    clones: tuple[int, ...] = (20, 100)

    @classmethod
    def quick(cls) -> "Params":
        return cls(rounds=1, ioloop=500, serial_bytes=4096, blk_mib=2, density=3, clones=(3,))


@dataclass
class Metric:
    case: str
    name: str
    unit: str
    higher_is_better: bool
    samples: dict[str, list[float]] = field(default_factory=dict)
    exits: dict[str, list[int]] = field(default_factory=dict)
    reference: str = "qemu"


def _tsc_khz() -> int:
    from ..kvm import Kvm

    kvm = Kvm()
    vm = kvm.create_vm()
    vcpu = vm.create_vcpu(0)
    try:
        return vcpu.tsc_khz()
    finally:
        vcpu.close()
        vm.close()
        kvm.close()


class Harness:
    def __init__(self, params: Params, cases: list[str], contenders: list[Contender]):
        self.params = params
        self.cases = cases
        self.contenders = [c for c in contenders if not c.unavailable]
        self.skipped = {c.name: c.unavailable for c in contenders if c.unavailable}
        self.guest = bundled_guest()
        self.metrics: dict[tuple[str, str], Metric] = {}
        self.boot_exits: dict[str, list[int]] = {}
        self.tsc_khz = _tsc_khz()
        self.workdir = tempfile.mkdtemp(prefix="vmm-bench-")

    # --- bookkeeping ------------------------------------------------------
    def _record(self, case, name, unit, contender, value, *, higher=True, exits=None, reference="qemu"):
        metric = self.metrics.setdefault((case, name), Metric(case, name, unit, higher, reference=reference))
        metric.samples.setdefault(contender, []).append(value)
        if exits is not None:
            metric.exits.setdefault(contender, []).append(exits)

    def _case_exits(self, contender: Contender, session: GuestSession) -> int | None:
        """Exits of a whole session minus those a bare boot and exit cost."""
        total = parse_exit_count(session.stderr.decode(errors="replace"))
        boot = self.boot_exits.get(contender.name)
        if total is None or not boot:
            return total
        return max(0, total - int(statistics.median(boot)))

    def _session(self, contender: Contender, disks: list[str] | None = None) -> GuestSession:
        session = GuestSession(contender.argv(self.guest, self.params.mem_mib, disks or []), contender.env())
        session.expect(b"$ ", timeout=120)
        return session

    # --- cases --------------------------------------------------------------
    def case_boot(self, contender: Contender) -> None:
        session = GuestSession(contender.argv(self.guest, self.params.mem_mib, []), contender.env())
        arrived = session.expect(b"$ ", timeout=120)
        session.finish()
        total = parse_exit_count(session.stderr.decode(errors="replace"))
        if total is not None:
            self.boot_exits.setdefault(contender.name, []).append(total)
        self._record("boot", "process start to prompt", "ms", contender.name, (arrived - session.started) * 1000, higher=False, exits=total)
        if contender.name == "vmm":
            from ..config import VmConfig
            from ..machine import MicroVM

            with MicroVM(VmConfig(kernel=self.guest, mem_mib=self.params.mem_mib)) as vm:
                vm.expect("$ ", timeout=60)
                elapsed = time.monotonic() - vm.created_at
                exits = sum(vm.exit_counts)
            self._record("boot", "VM creation to prompt (in-process)", "ms", "vmm", elapsed * 1000, higher=False, exits=exits)
            # What any Python monitor pays before its first line runs: with the
            # floor's figure, the least a `vmm run` process could take here.
            started = time.monotonic()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            self._record("boot", "CPython alone (python -c pass)", "ms", "vmm",
                         (time.monotonic() - started) * 1000, higher=False)

    def case_exits(self, contender: Contender) -> None:
        session = self._session(contender)
        text, _ = session.command(f"ioloop {self.params.ioloop}")
        session.finish()
        cycles = int(re.search(r"in (\d+) cycles", text).group(1))
        micros = cycles / self.tsc_khz * 1000 / self.params.ioloop
        self._record("exits", f"port write round trip ({self.params.ioloop} writes)", "us/exit", contender.name, micros,
                     higher=False, exits=self._case_exits(contender, session), reference="floor")

    def case_serial(self, contender: Contender) -> None:
        session = self._session(contender)
        _, elapsed = session.command(f"serialbench {self.params.serial_bytes}")
        session.finish()
        self._record("serial", f"guest prints {self.params.serial_bytes >> 10} KiB", "KiB/s", contender.name,
                     self.params.serial_bytes / 1024 / elapsed, exits=self._case_exits(contender, session))

    def _scratch_disk(self) -> str:
        path = os.path.join(self.workdir, f"scratch-{self.params.blk_mib}.img")
        if not os.path.exists(path):
            with open(path, "wb") as f:
                chunk = os.urandom(1 << 20)
                for _ in range(self.params.blk_mib):
                    f.write(chunk)
        return path

    def case_blk(self, contender: Contender, case: str = "blk") -> None:
        if not contender.supports_disks:
            return
        session = self._session(contender, [self._scratch_disk()])
        text, _ = session.command(f"blkbench 0 {self.params.blk_mib}", timeout=600)
        session.finish()
        exits = self._case_exits(contender, session)
        for phase, name, unit in (("read", "sequential read, 1 MiB requests", "MiB/s"),
                                  ("write", "sequential write, 1 MiB requests", "MiB/s"),
                                  ("randread", "random read, 4 KiB requests", "IOPS")):
            figure = self._blkbench_figure(text, phase)
            if figure is not None:
                per_mib = exits / (2 * self.params.blk_mib) if exits is not None and phase == "read" else None
                self._record(case, name, unit, contender.name, figure, exits=exits if phase == "read" else None)
                if per_mib is not None:
                    self._record(case, "VM exits per MiB (read + write + random)", "exits", contender.name, per_mib, higher=False)
        # The exits the guest's driver makes, as it counts them: QueueNotify
        # writes (those an ioeventfd absorbs in the kernel included, which the
        # VMM's count cannot see) and idle waits. Comparable across contenders.
        counted = re.findall(r"blkbench: .*\((\d+) notifies, (\d+) idle waits\)", text)
        if counted:
            total = sum(int(n) + int(i) for n, i in counted)
            self._record(case, "guest notifies + idle waits per MiB", "exits", contender.name,
                         total / (2 * self.params.blk_mib), higher=False)

    def case_blk_busy(self, contender: Contender) -> None:
        """The blk case on a busy host: a busy-loop process pinned to one CPU
        for the whole session, as a build or a test run beside the VM would be."""
        with BusyLoop():
            self.case_blk(contender, "blk-busy")

    def _blkbench_figure(self, text: str, phase: str) -> float | None:
        """MiB/s or IOPS from a blkbench line: the guest's own figure (computed from
        the TSC) when it knows the TSC rate, else from its cycle count and the host's rate."""
        line = re.search(rf"blkbench: {phase} (\d+) (?:MiB in \d+ requests|requests of 4 KiB)[^\n]*", text)
        if not line:
            return None
        rate = re.search(r"([\d.]+) (?:MiB/s|IOPS)", line.group(0))
        if rate:
            return float(rate.group(1))
        cycles = re.search(r"(\d+) cycles", line.group(0))
        if not cycles:
            return None
        return int(line.group(1)) / (int(cycles.group(1)) / (self.tsc_khz * 1000))

    def case_memory(self, contender: Contender) -> None:
        session = self._session(contender)
        time.sleep(0.2)  # let the process settle after the prompt
        rss = session.rss_bytes()
        guest = session.guest_ram_resident(self.params.mem_mib << 20)
        session.finish()
        self._record("memory", f"RSS after boot ({self.params.mem_mib} MiB guest)", "MiB", contender.name, rss / 2**20, higher=False)
        self._record("memory", "RSS minus guest pages touched", "MiB", contender.name, (rss - guest) / 2**20, higher=False)

    def case_density(self, contender: Contender) -> None:
        n = self.params.density
        start = time.monotonic()
        sessions = [GuestSession(contender.argv(self.guest, self.params.mem_mib, []), contender.env()) for _ in range(n)]
        try:
            for session in sessions:
                session.expect(b"$ ", timeout=300)
            elapsed = time.monotonic() - start
            rss = sum(s.rss_bytes() for s in sessions)
        finally:
            for session in sessions:
                session.finish()
        self._record("density", f"{n} VMs started at once: all prompts", "s", contender.name, elapsed, higher=False)
        self._record("density", f"{n} VMs: total RSS", "MiB", contender.name, rss / 2**20, higher=False)
        if contender.name == "vmm":
            out = subprocess.run(
                [sys.executable, "-m", "vmm.bench.density", str(n), self.guest, str(self.params.mem_mib)],
                capture_output=True, timeout=600, check=True,
            ).stdout.decode()
            seconds, rss_mib = (float(x) for x in out.split())
            self._record("density", f"{n} VMs started at once: all prompts", "s", "vmm (1 process)", seconds, higher=False)
            self._record("density", f"{n} VMs: total RSS", "MiB", "vmm (1 process)", rss_mib, higher=False)

    def case_snapshot(self, contender: Contender) -> None:
        """vmm, and QEMU's migration to a file where it has an equivalent (vmm/bench/qemu_snapshot.py)."""
        if contender.name == "qemu":
            from .qemu_snapshot import measure_qemu

            # QEMU clones are processes of their own: 20 at most here (100 would be ~100 x its own RSS).
            counts = [n for n in self.params.clones if n <= 20]
            r = measure_qemu(contender, self.guest, self.params.mem_mib, 3, self.workdir, counts)
            self._record("snapshot", "full snapshot create (counting guest)", "ms", "qemu", r["full_create_ms"], higher=False)
            self._record("snapshot", "full snapshot memory file on disk", "KiB", "qemu", r["full_mem_on_disk_kib"], higher=False)
            self._record("snapshot", "restore process to first output", "ms", "qemu",
                         r["process_restore_to_first_output_ms"], higher=False)
            for n in counts:
                clones = r[f"clones_{n}"]
                self._record("snapshot", f"{n} clones: all restored and running", "s", "qemu", clones["seconds_to_all_answering"], higher=False)
                self._record("snapshot", f"{n} clones: RSS, QEMU processes / vmm's one", "MiB", "qemu", clones["rss_mib"], higher=False)
            return
        if contender.name != "vmm":
            return
        out = subprocess.run(
            [sys.executable, "-m", "vmm.bench.snapshot", self.guest, str(self.params.mem_mib), "5",
             *(str(n) for n in self.params.clones)],
            capture_output=True, timeout=900, check=True,
        ).stdout.decode()
        r = json.loads(out)
        rec = lambda name, unit, value: self._record("snapshot", name, unit, "vmm", value, higher=False)  # noqa: E731
        rec("first full snapshot create (dirty log on)", "ms", r["first_full_create_ms"])
        rec("full snapshot create (counting guest)", "ms", r["full_create_ms"])
        rec("full snapshot memory file on disk", "KiB", r["full_mem_on_disk_kib"])
        rec("diff snapshot create (after 180 counts)", "ms", r["diff_create_ms"])
        rec("diff snapshot memory file on disk", "KiB", r["diff_mem_on_disk_kib"])
        rec("restore to running (in-process)", "ms", r["restore_to_running_ms"])
        rec("restore to first output (in-process)", "ms", r["restore_to_first_output_ms"])
        rec("restore process to first output", "ms", r["process_restore_to_first_output_ms"])
        for n in self.params.clones:
            clones = r[f"clones_{n}"]
            rec(f"{n} clones: all restored and running", "s", clones["seconds_to_all_answering"])
            rec(f"{n} clones: RSS, QEMU processes / vmm's one", "MiB", clones["rss_mib"])
            rec(f"{n} clones in 1 process: PSS", "MiB", clones["pss_mib"])
            rec(f"{n} clones in 1 process: private (USS)", "MiB", clones["uss_mib"])
            rec(f"{n} clones: USS of the process before them", "MiB", clones["uss_before_mib"])

    # --- running and reporting ---------------------------------------------
    def run(self) -> None:
        for _ in range(self.params.rounds):
            for case in self.cases:
                for contender in self.contenders:
                    if contender.only_cases is None or case in contender.only_cases:
                        getattr(self, f"case_{case.replace('-', '_')}")(contender)

    def rows(self) -> list[dict]:
        rows = []
        for metric in self.metrics.values():
            ref = metric.samples.get(metric.reference)
            ref_median = statistics.median(ref) if ref else None
            for contender, values in metric.samples.items():
                median = statistics.median(values)
                best = max(values) if metric.higher_is_better else min(values)
                exits = metric.exits.get(contender)
                rows.append(dict(
                    case=metric.case, metric=metric.name, unit=metric.unit, contender=contender,
                    best=best, median=median, samples=values,
                    ratio=(median / ref_median) if ref_median else None, reference=metric.reference,
                    exits=int(statistics.median(exits)) if exits else None,
                ))
        return rows

    def print_table(self) -> None:
        print(f"vmm bench: {self.params.rounds} round(s), guest RAM {self.params.mem_mib} MiB, TSC {self.tsc_khz} kHz")
        for name, reason in self.skipped.items():
            print(f"  (contender {name} skipped: {reason})")
        print(f"{'case':<8} {'metric':<40} {'contender':<16} {'best':>10} {'median':>10} {'unit':<8} {'ratio':>9}  exits")
        for row in self.rows():
            ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
            exits = str(row["exits"]) if row["exits"] is not None else "-"
            print(f"{row['case']:<8} {row['metric']:<40} {row['contender']:<16} {row['best']:10.1f} {row['median']:10.1f} "
                  f"{row['unit']:<8} {ratio:>9}  {exits}")
        print("ratio = median / median of the reference (qemu; the floor for the exit round trip); "
              "exits = VM exits the case caused beyond a bare boot (QEMU's are not counted)")

    def write_json(self, path: str, extra_rows: list[dict] = ()) -> None:
        data = dict(
            date=time.strftime("%Y-%m-%d %H:%M:%S"), machine=platform.node(), kernel=platform.release(),
            cpus=os.cpu_count(), tsc_khz=self.tsc_khz, params=self.params.__dict__, skipped=self.skipped,
            results=self.rows() + list(extra_rows),
        )
        with open(path, "w") as f:
            json.dump(data, f, indent=2)


def run_compare(cases: list[str], rounds: int | None, quick: bool, json_path: str | None) -> int:
    params = Params.quick() if quick else Params()
    if rounds:
        params = Params(**{**params.__dict__, "rounds": rounds})
    cases = cases or list(CASES)
    # `exec` (the sandbox against native, bwrap and QEMU) has its own harness: vmm/bench/exec.py
    harness = Harness(params, [c for c in cases if c != "exec"], all_contenders())
    try:
        harness.run()
    finally:
        import shutil

        shutil.rmtree(harness.workdir, ignore_errors=True)
    if harness.cases:
        harness.print_table()
    exec_rows = []
    if "exec" in cases:
        from .exec import run_exec_bench

        exec_rows = run_exec_bench(quick, rounds)
    if json_path:
        harness.write_json(json_path, exec_rows)
    return 0
