"""`vmm bench boot`: wall time to the guest's first shell prompt.

Measures, over several rounds:
- process: from spawning `python -m vmm run` to the prompt on its stdout,
- in-process: from MicroVM() (config checked, kernel read) and from VM
  creation (opening /dev/kvm) to the prompt, through the Python API,
and, as the baseline in the same run, the bare interpreter start
(`python -c pass`) that every process figure includes.
"""

from __future__ import annotations

import os
import re
import select
import statistics
import subprocess
import sys
import time

from ..config import VmConfig

PROMPT = b"$ "


def _process_boot() -> tuple[float, dict[str, int]]:
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmm", "run", "--stats"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    seen = b""
    deadline = start + 60
    while PROMPT not in seen:
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("no prompt within 60 s")
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"vmm exited before its prompt: {proc.stderr.read().decode()}")
            seen += chunk
    elapsed = time.monotonic() - start
    _, err = proc.communicate(b"exit 0\n", timeout=30)
    match = re.search(rb"exits: (.*)", err)
    counts = {}
    if match:
        for item in match.group(1).decode().split(", "):
            name, _, n = item.rpartition(" ")
            counts[name] = int(n)
    return elapsed, counts


def _api_boot() -> tuple[float, float, dict[str, int]]:
    from ..machine import MicroVM

    start = time.monotonic()
    with MicroVM(VmConfig()) as vm:
        vm.expect(PROMPT, timeout=60)
        now = time.monotonic()
        counts = vm.exit_summary()
        created = vm.created_at
    return now - start, now - created, counts


def _interpreter_start() -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.monotonic() - start


def _row(name: str, samples: list[float], baseline: float | None, exits: str) -> str:
    low, mid = min(samples), statistics.median(samples)
    ratio = f"{mid / baseline:6.1f}x" if baseline else "      -"
    return f"{name:<34} {low * 1000:9.1f} {mid * 1000:9.1f} {ratio}  {exits}"


def bench_boot(runs: int) -> int:
    process, api_total, api_vm, interp = [], [], [], []
    process_exits: dict[str, int] = {}
    api_exits: dict[str, int] = {}
    for _ in range(runs):  # interleaved, so drift hits every figure alike
        interp.append(_interpreter_start())
        elapsed, process_exits = _process_boot()
        process.append(elapsed)
        total, vm_only, api_exits = _api_boot()
        api_total.append(total)
        api_vm.append(vm_only)
    base = statistics.median(interp)
    fmt = lambda c: ", ".join(f"{k} {v}" for k, v in c.items()) or "-"
    print(f"boot to first prompt, {runs} rounds (ms; ratio = median / median interpreter start)")
    print(f"{'case':<34} {'min':>9} {'median':>9} {'ratio':>7}  exits to prompt")
    print(_row("python -c pass (baseline)", interp, base, "-"))
    print(_row("vmm run: process start -> prompt", process, base, fmt(process_exits) + " (incl. exit)"))
    print(_row("MicroVM(): config -> prompt", api_total, base, fmt(api_exits)))
    print(_row("MicroVM: VM creation -> prompt", api_vm, base, fmt(api_exits)))
    return 0
