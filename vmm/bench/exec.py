"""`vmm bench exec`: the sandbox against its peers, side by side in one run.

Every contender runs the very same static binary (exec_prog.c, built with
``gcc -static``):

- native: the binary run directly (the floor: no isolation);
- bwrap: Debian's bubblewrap, namespaces only (skipped, with a note, if it
  cannot run here);
- qemu: QEMU microvm booting the bundled guest with the same bundle as its
  ``-initrd`` and virtio-serial ports named as vmm's console ports;
- vmm exec: the ``vmm exec`` command from a fresh process;
- vmm.sandbox.run: the Python API in this (warm) process, each run a clone
  of the process's snapshot of the booted guest (vmm/sandbox/warm.py);
- sandbox.run cold: the same with ``warm=False``, a fresh boot per run (hello
  and read only: the cases where start-up shows).

Rounds interleave the contenders, so a busy host slows all of them alike.
Throughput and per-call figures come from the program's own clock
(``elapsed_ns`` on stderr), so they exclude start-up; hello and density are
wall times. VM exits are counted where vmm runs the VM.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exec_prog.c")
CASES = ("hello", "cpu", "syscall", "stdout", "read", "density")
COLD = "sandbox.run cold"
CONTENDERS = ("native", "bwrap", "qemu", "vmm exec", "vmm.sandbox.run", COLD)
COLD_CASES = ("hello", "read")
REFERENCE = "native"
BIG_MEM_MIB = 256  # the CPU and read cases hold 64 MiB (plus the bundle) in guest RAM


@dataclass(frozen=True)
class ExecParams:
    rounds: int = 5
    sha_mib: int = 64
    getppid: int = 1_000_000
    write_mib: int = 256
    read_mib: int = 64
    density: tuple[int, ...] = (20, 100)
    hello_repeats: int = 4  # hello is short: several runs per contender and round

    @classmethod
    def quick(cls) -> "ExecParams":
        return cls(rounds=1, sha_mib=1, getppid=10000, write_mib=4, read_mib=2, density=(3,), hello_repeats=1)


@dataclass
class Run:
    """One program run: wall seconds, stdout head, stderr, status, VM exits, peak RSS."""

    wall: float
    stdout: bytes
    stderr: str
    status: int
    exits: int | None = None
    maxrss: int = 0  # bytes


def build_program(directory: str) -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        from ..errors import ConfigError

        raise ConfigError("vmm bench exec needs gcc (and glibc's static libc) to build its test program")
    binary = os.path.join(directory, "exec_prog")
    result = subprocess.run([gcc, "-static", "-O2", "-o", binary, SOURCE], capture_output=True, text=True)
    if result.returncode != 0:
        from ..errors import ConfigError

        raise ConfigError(f"cannot build the bench program: {result.stderr.strip().splitlines()[-1:]}")
    return binary


def _drain(fd: int, keep: int, into: list) -> None:
    """Read fd to its end, keeping its first ``keep`` bytes (the host discards the rest)."""
    head = bytearray()
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        if len(head) < keep:
            head += chunk[: keep - len(head)]
    os.close(fd)
    into.append(bytes(head))


def run_process(argv: list[str], *, keep: int = 4096, env=None) -> Run:
    """Start argv, discard its stdout through a pipe, and reap it with wait4 (for its peak RSS)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, env=env)
    os.close(out_w)
    os.close(err_w)
    out: list = []
    err: list = []
    readers = [threading.Thread(target=_drain, args=(out_r, keep, out)),
               threading.Thread(target=_drain, args=(err_r, 1 << 20, err))]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    stderr = err[0].decode(errors="replace")
    from .session import parse_exit_count

    return Run(wall, out[0], stderr, proc.returncode, parse_exit_count(stderr), usage.ru_maxrss * 1024)


class Contenders:
    """How each contender runs `exec_prog ARGS` with input files; None when it cannot run here."""

    def __init__(self, program: str, workdir: str):
        from .contenders import QemuContender

        self.program = program
        self.workdir = workdir
        self.skipped: dict[str, str] = {}
        self.qemu = QemuContender()
        if self.qemu.unavailable:
            self.skipped["qemu"] = self.qemu.unavailable
        self.bwrap = shutil.which("bwrap")
        if self.bwrap is None:
            self.skipped["bwrap"] = "bwrap not installed (apt-get install bubblewrap)"
        else:
            probe = subprocess.run(self._bwrap_argv(["hello"], {}), capture_output=True)
            if probe.returncode != 0:
                reason = probe.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"status {probe.returncode}"]
                self.skipped["bwrap"] = f"bwrap cannot run here: {reason[0]}"
        # the `vmm` command as users start it, importing this very vmm package
        script = os.path.join(os.path.dirname(sys.executable), "vmm")
        self.vmm = [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "vmm"]
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.vmm_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        from ..config import bundled_guest

        self.guest = bundled_guest()
        self.bundles: dict[tuple, str] = {}

    def available(self) -> list[str]:
        return [name for name in CONTENDERS if name not in self.skipped]

    def _bwrap_argv(self, args, files):
        # every namespace unshared and an empty root holding only the program and its inputs, like the VM's
        argv = [self.bwrap, "--unshare-all", "--die-with-parent", "--tmpfs", "/", "--dev", "/dev", "--proc", "/proc",
                "--dir", "/tmp", "--ro-bind", self.program, "/exec_prog"]
        for guest, host in files.items():
            argv += ["--ro-bind", host, guest]
        return [*argv, "/exec_prog", *args]

    def run(self, contender: str, args: list[str], files: dict[str, str], mem_mib: int) -> Run:
        """``files`` maps guest paths to host paths; the program sees the guest path in every contender."""
        if contender == "native":
            return run_process([self.program, *[self._native_path(a, files) for a in args]])
        if contender == "bwrap":
            return run_process(self._bwrap_argv(args, files))
        if contender == "qemu":
            return self._run_qemu(args, files, mem_mib)
        if contender == "vmm exec":
            inputs = [f"--in={host}:{guest}" for guest, host in files.items()]
            return run_process([*self.vmm, "exec", "--stats", "--mem", str(mem_mib), *inputs, "--", self.program, *args],
                               env=self.vmm_env)
        return self._run_in_process(args, files, mem_mib, warm=contender != COLD)

    @staticmethod
    def _native_path(arg: str, files: dict[str, str]) -> str:
        return files.get(arg, arg)

    def _run_in_process(self, args, files, mem_mib, warm=True) -> Run:
        from ..sandbox import runner

        head, err = bytearray(), bytearray()

        def keep_head(chunk: bytes) -> None:
            if len(head) < 4096:
                head.extend(chunk[: 4096 - len(head)])

        started = time.monotonic()
        result = runner.run([self.program, *args], files=files, mem_mib=mem_mib, capture_output=False,
                            on_stdout=keep_head, on_stderr=err.extend, warm=warm)
        wall = time.monotonic() - started
        return Run(wall, bytes(head), err.decode(errors="replace"), result.returncode, sum(result.exits.values()))

    def _bundle(self, args, files) -> str:
        """The bundle vmm.sandbox.run would build, as a file for QEMU's -initrd."""
        key = (tuple(args), tuple(sorted(files.items())))
        if key not in self.bundles:
            from ..sandbox.bundle import build_bundle

            bundle = build_bundle(self.program, [self.program, *args], {"PATH": "/bin:/usr/bin", "HOME": "/tmp"},
                                  dict(files), {}, exec_path="/bin/" + os.path.basename(self.program))
            path = os.path.join(self.workdir, f"bundle-{len(self.bundles)}.tar")
            with open(path, "wb") as f:
                f.write(bundle)
            self.bundles[key] = path
        return self.bundles[key]

    def qemu_argv(self, bundle: str, mem_mib: int, stderr_path: str, control_path: str) -> list[str]:
        """QEMU microvm with the guest, the bundle as its PVH module and the four console ports."""
        argv = self.qemu.argv(self.guest, mem_mib, [])
        argv[argv.index("-append") + 1] = "console=ttyS0 vmm.sandbox"
        # QEMU's stdout carries the program's stdout port; the guest kernel's log is not kept
        argv[argv.index("-serial") + 1] = "null"
        return argv + [
            "-initrd", bundle,
            "-chardev", "null,id=sin",
            "-chardev", "file,id=sout,path=/dev/stdout",  # (a stdio chardev never reached the port's host end)
            "-chardev", f"file,id=serr,path={stderr_path}",
            "-chardev", f"file,id=sctl,path={control_path}",
            "-device", "virtio-serial-device,max_ports=5",
            "-device", "virtserialport,chardev=sin,name=stdin,nr=1",
            "-device", "virtserialport,chardev=sout,name=stdout,nr=2",
            "-device", "virtserialport,chardev=serr,name=stderr,nr=3",
            "-device", "virtserialport,chardev=sctl,name=vmm.control,nr=4",
        ]

    def _run_qemu(self, args, files, mem_mib, tag: str = "") -> Run:
        bundle = self._bundle(args, files)
        err_path = os.path.join(self.workdir, f"qemu-stderr{tag}")
        ctl_path = os.path.join(self.workdir, f"qemu-control{tag}")
        run = run_process(self.qemu_argv(bundle, mem_mib, err_path, ctl_path))
        with open(err_path, "rb") as f:
            run.stderr = f.read(1 << 20).decode(errors="replace")
        with open(ctl_path, "rb") as f:
            control = f.read(1 << 20).decode(errors="replace")
        status = re.search(r"exit (\d+)\n$", control)
        run.status = int(status.group(1)) if status else 125
        os.unlink(err_path)
        os.unlink(ctl_path)
        return run


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0  # already gone


def run_many(argvs: list[list[str]], env=None) -> tuple[float, int, list[int]]:
    """Start every argv at once; wall seconds until the last ends, the peak of
    their summed RSS (sampled every millisecond or so) and their statuses."""
    started = time.monotonic()
    procs = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
             for argv in argvs]
    peak = 0
    while any(p.poll() is None for p in procs):
        peak = max(peak, sum(_rss(p.pid) for p in procs if p.returncode is None))
        time.sleep(0.001)
    return time.monotonic() - started, peak, [p.returncode for p in procs]


def density_child(count: int, program: str, mem_mib: int) -> None:
    """In a child process: ``count`` vmm.sandbox.run calls at once on threads; prints the seconds all took."""
    from ..sandbox import runner

    runner.run([program, "hello"], mem_mib=mem_mib)  # warm, as the in-process contender is
    statuses: list = []
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: statuses.append(runner.run([program, "hello"], mem_mib=mem_mib).returncode))
               for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    print(f"{elapsed:.4f} {sum(1 for s in statuses if s == 0)}", flush=True)


@dataclass
class Metric:
    case: str
    name: str
    unit: str
    higher_is_better: bool
    samples: dict
    exits: dict


class ExecBench:
    def __init__(self, params: ExecParams):
        self.params = params
        self.workdir = tempfile.mkdtemp(prefix="vmm-bench-exec-")
        self.program = build_program(self.workdir)
        self.contenders = Contenders(self.program, self.workdir)
        self.metrics: dict[tuple[str, str], Metric] = {}
        self.input = os.path.join(self.workdir, "input.bin")
        with open(self.input, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(params.read_mib):
                f.write(chunk)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _record(self, case, name, unit, contender, value, *, higher, exits=None):
        metric = self.metrics.setdefault((case, name), Metric(case, name, unit, higher, {}, {}))
        metric.samples.setdefault(contender, []).append(value)
        if exits is not None:
            metric.exits.setdefault(contender, []).append(exits)

    def _run(self, contender, args, files=None, mem_mib=128, expect: bytes | None = None) -> Run:
        run = self.contenders.run(contender, args, files or {}, mem_mib)
        if run.status != 0 or (expect is not None and expect not in run.stdout):
            from ..errors import VmmError

            raise VmmError(f"bench exec: {contender} {' '.join(args)} failed (status {run.status}): "
                           f"{run.stderr.strip().splitlines()[-1:]}")
        return run

    @staticmethod
    def _elapsed(run: Run) -> float:
        match = re.search(r"elapsed_ns (\d+)", run.stderr)
        return int(match.group(1)) / 1e9

    # --- cases ------------------------------------------------------------
    def case_hello(self, contender):
        for _ in range(self.params.hello_repeats):
            run = self._run(contender, ["hello"], expect=b"hello, world")
            self._record("hello", "hello world, start to exit", "ms", contender, run.wall * 1000, higher=False, exits=run.exits)
        if contender == "vmm.sandbox.run":
            self._warm_restore()
        if contender == "vmm exec":  # the target's yardstick: `vmm run` from a fresh process to the shell prompt
            from .contenders import VmmContender
            from .session import GuestSession, parse_exit_count

            for _ in range(self.params.hello_repeats):
                session = GuestSession(VmmContender().argv(self.contenders.guest, 128, []), env=self.contenders.vmm_env)
                arrived = session.expect(b"$ ", timeout=120)
                session.finish()
                self._record("hello", "(yardstick) vmm run: start to prompt", "ms", "vmm run", (arrived - session.started) * 1000,
                             higher=False, exits=parse_exit_count(session.stderr.decode(errors="replace")))
                # Like for like: `vmm exec` is timed to its exit, which includes the VM's
                # teardown and the process's end; so is this `vmm run`, `exit` typed at the prompt.
                argv = VmmContender().argv(self.contenders.guest, 128, [])
                started = time.monotonic()
                done = subprocess.run(argv, input=b"exit\n", capture_output=True, env=self.contenders.vmm_env, timeout=120)
                self._record("hello", "(yardstick) vmm run: start to exit, exit typed", "ms", "vmm run",
                             (time.monotonic() - started) * 1000, higher=False,
                             exits=parse_exit_count(done.stderr.decode(errors="replace")))

    def _warm_restore(self) -> None:
        """What the warm path stands on: one restore of the process's snapshot (to a
        paused clone, then closed), and the snapshot's one-off making."""
        from ..config import bundled_guest
        from ..sandbox.warm import pool

        image = pool().image(128, bundled_guest())
        for _ in range(self.params.hello_repeats):
            started = time.monotonic()
            clone = image.clone(on_output=lambda port, data: None, output=None)
            restored = time.monotonic()
            clone.close()
            self._record("hello", "(warm) restore a clone of the snapshot", "ms", "vmm.sandbox.run",
                         (restored - started) * 1000, higher=False)
        if ("hello", "(warm) snapshot made, once a process") not in self.metrics:
            self._record("hello", "(warm) snapshot made, once a process", "ms", "vmm.sandbox.run", image.build_ms, higher=False)

    def case_cpu(self, contender):
        mib = self.params.sha_mib
        run = self._run(contender, ["sha256", str(mib)], mem_mib=BIG_MEM_MIB)
        self._record("cpu", f"SHA-256 over {mib} MiB in memory", "MiB/s", contender, mib / self._elapsed(run), higher=True,
                     exits=run.exits)

    def case_syscall(self, contender):
        n = self.params.getppid
        run = self._run(contender, ["getppid", str(n)], expect=b"calls")
        self._record("syscall", f"getppid round trip ({n} calls)", "us/call", contender, self._elapsed(run) / n * 1e6,
                     higher=False, exits=run.exits)

    def case_stdout(self, contender):
        mib = self.params.write_mib
        run = self._run(contender, ["write", str(mib)])
        self._record("stdout", f"write {mib} MiB to stdout, host discards", "MiB/s", contender, mib / self._elapsed(run),
                     higher=True, exits=run.exits)

    def case_read(self, contender):
        mib = self.params.read_mib
        run = self._run(contender, ["read", "/data/input.bin"], {"/data/input.bin": self.input}, BIG_MEM_MIB, expect=b"bytes")
        self._record("read", f"read a {mib} MiB input file", "MiB/s", contender, mib / self._elapsed(run), higher=True)
        self._record("read", "same, start to exit (input loaded)", "ms", contender, run.wall * 1000, higher=False,
                     exits=run.exits)

    def case_density(self, contender):
        c = self.contenders
        for n in self.params.density:
            if contender == "vmm.sandbox.run":
                argv = [sys.executable, "-m", "vmm.bench.exec", "density", str(n), self.program, "128"]
                out_r, out_w = os.pipe()
                proc = subprocess.Popen(argv, stdout=out_w, env=c.vmm_env)
                os.close(out_w)
                peak = 0
                while proc.poll() is None:
                    peak = max(peak, _rss(proc.pid))
                    time.sleep(0.001)
                seconds, ok = os.read(out_r, 4096).decode().split()
                os.close(out_r)
                statuses = [0] * int(ok) + [1] * (n - int(ok))
                wall = float(seconds)
            else:
                if contender == "qemu":
                    argvs = [c.qemu_argv(c._bundle(["hello"], {}), 128, os.path.join(self.workdir, f"qe{i}"),
                                         os.path.join(self.workdir, f"qc{i}")) for i in range(n)]
                else:
                    argvs = [self._argv(contender) for _ in range(n)]
                wall, peak, statuses = run_many(argvs, env=c.vmm_env if contender == "vmm exec" else None)
                if contender == "qemu":  # isa-debug-exit: (status << 1) | 1
                    statuses = [s >> 1 for s in statuses]
            if any(statuses):
                from ..errors import VmmError

                raise VmmError(f"bench exec: {contender}: {sum(1 for s in statuses if s)} of {n} sandboxes failed")
            self._record("density", f"{n} hellos at once: all done", "s", contender, wall, higher=False)
            self._record("density", f"{n} hellos at once: peak total RSS", "MiB", contender, peak / 2**20, higher=False)

    def _argv(self, contender) -> list[str]:
        c = self.contenders
        if contender == "native":
            return [self.program, "hello"]
        if contender == "bwrap":
            return c._bwrap_argv(["hello"], {})
        return [*c.vmm, "exec", "--", self.program, "hello"]

    # --- running and reporting ------------------------------------------------
    def run(self, cases=CASES) -> None:
        for contender in self.contenders.available():  # a first run of each, not counted: caches, page cache
            self._run(contender, ["hello"])
        for _ in range(self.params.rounds):
            for case in cases:
                for contender in self.contenders.available():
                    if contender != COLD or case in COLD_CASES:
                        getattr(self, f"case_{case}")(contender)

    def rows(self) -> list[dict]:
        rows = []
        for metric in self.metrics.values():
            medians = {c: statistics.median(v) for c, v in metric.samples.items()}
            for contender, values in metric.samples.items():
                median = medians[contender]
                exits = metric.exits.get(contender)
                exits = [e for e in exits if e is not None] if exits else None
                rows.append(dict(
                    case=f"exec-{metric.case}", metric=metric.name, unit=metric.unit, contender=contender,
                    best=max(values) if metric.higher_is_better else min(values), median=median, samples=values,
                    ratio=median / medians[REFERENCE] if medians.get(REFERENCE) else None, reference=REFERENCE,
                    vs_qemu=median / medians["qemu"] if medians.get("qemu") else None,
                    exits=int(statistics.median(exits)) if exits else None,
                ))
        return rows

    def print_table(self) -> None:
        print(f"vmm bench exec: {self.params.rounds} round(s), the same static program on every contender")
        for name, reason in self.contenders.skipped.items():
            print(f"  (contender {name} skipped: {reason})")
        print(f"{'case':<8} {'metric':<38} {'contender':<16} {'best':>9} {'median':>9} {'unit':<8} {'/native':>8} {'/qemu':>7}  exits")
        for row in self.rows():
            ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
            vs_qemu = f"{row['vs_qemu']:.2f}x" if row["vs_qemu"] is not None else "-"
            exits = str(row["exits"]) if row["exits"] is not None else "-"
            print(f"{row['case'][5:]:<8} {row['metric']:<38} {row['contender']:<16} {row['best']:9.2f} {row['median']:9.2f} "
                  f"{row['unit']:<8} {ratio:>8} {vs_qemu:>7}  {exits}")
        self._print_targets()
        print("ratios = median / median of native (the floor) and of QEMU; throughput and per-call figures from the "
              "program's own clock, times start to exit; exits = VM exits of the whole run (vmm only); "
              "RSS = peak of the summed RSS of live processes, sampled every ~1 ms")


    def _median(self, case, prefix, contender):
        for (c, name), metric in self.metrics.items():
            if c == case and name.startswith(prefix) and metric.samples.get(contender):
                return statistics.median(metric.samples[contender])
        return None

    def _print_targets(self) -> None:
        """The issue's targets, each with the figure this run measured."""
        m = self._median
        lines = []
        hello = m("hello", "hello world", "vmm.sandbox.run")
        if hello is not None:
            cold = m("hello", "hello world", COLD)
            cold = f", cold {cold:.1f} ms" if cold is not None else ""
            lines.append(f"in-process hello {hello:.1f} ms median warm{cold} (target <= 5 ms)")
        exec_hello, prompt = m("hello", "hello world", "vmm exec"), m("hello", "(yardstick) vmm run: start to prompt", "vmm run")
        if exec_hello and prompt:
            to_exit = m("hello", "(yardstick) vmm run: start to exit", "vmm run")
            like = f"; {exec_hello / to_exit:.2f}x vmm run to its exit" if to_exit else ""
            lines.append(f"vmm exec hello / vmm run to prompt {exec_hello / prompt:.2f}x (target <= 1.2x){like}")
        cpu, native = m("cpu", "SHA-256", "vmm.sandbox.run"), m("cpu", "SHA-256", "native")
        if cpu and native:
            lines.append(f"CPU-bound {cpu / native:.2f}x native (target >= 0.95x)")
        call = m("syscall", "getppid", "vmm.sandbox.run")
        if call is not None:
            lines.append(f"syscall round trip {call:.2f} us (target <= 2 us)")
        out = m("stdout", "write", "vmm.sandbox.run")
        if out is not None:
            lines.append(f"stdout {out:.0f} MiB/s (target >= 200 MiB/s)")
        beaten = []
        for metric in self.metrics.values():
            q = metric.samples.get("qemu")
            if not q:
                continue
            for who in ("vmm exec", "vmm.sandbox.run"):
                v = metric.samples.get(who)
                if v:
                    better = statistics.median(v) > statistics.median(q) if metric.higher_is_better else statistics.median(v) < statistics.median(q)
                    if not better:
                        beaten.append(f"{metric.case}/{who}")
        lines.append("beats QEMU everywhere" if not beaten else f"behind QEMU: {', '.join(beaten)}")
        print("targets: " + "; ".join(lines))


def run_exec_bench(quick: bool, rounds: int | None) -> list[dict]:
    """Runs every exec case, prints the table; the rows for the harness's JSON."""
    params = ExecParams.quick() if quick else ExecParams()
    if rounds:
        params = ExecParams(**{**params.__dict__, "rounds": rounds})
    bench = ExecBench(params)
    try:
        bench.run()
    finally:
        bench.close()
    bench.print_table()
    return bench.rows()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "density":
        density_child(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit("usage: python -m vmm.bench.exec density COUNT PROGRAM MEM_MIB")
