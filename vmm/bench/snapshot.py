"""Child of `vmm bench snapshot`: snapshot and restore figures, printed as one JSON object.

    python -m vmm.bench.snapshot GUEST MEM_MIB ROUNDS CLONES...

One process, so the figures are the VMM's own work (a fresh `vmm restore`
process adds the interpreter and imports: measured separately, "process").
Clones are idle guests at the prompt, each restored from the same snapshot;
PSS and private (USS) memory say what they share through the page cache.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

from ..config import VmConfig
from ..machine import MicroVM
from ..persist import restore, snapshot


def _on_disk(path: str) -> int:
    return os.stat(path).st_blocks * 512


def _first_output(vm, timeout: float = 10.0) -> float:
    """Wait until the restored guest has printed something; returns when it did."""
    deadline = time.monotonic() + timeout
    while not vm.output:
        if time.monotonic() > deadline:
            raise TimeoutError("the restored guest printed nothing")
        time.sleep(0.0002)
    return time.monotonic()


def measure(guest: str, mem_mib: int, rounds: int, clone_counts: list[int], workdir: str) -> dict:
    result: dict = {}
    state, mem = os.path.join(workdir, "count.state"), os.path.join(workdir, "count.mem")
    diff_state, diff_mem = os.path.join(workdir, "diff.state"), os.path.join(workdir, "diff.mem")
    with MicroVM(VmConfig(kernel=guest, mem_mib=mem_mib)) as vm:
        vm.expect("$ ", timeout=60)
        vm.send("count 100000000 1\r")  # prints every millisecond: first output comes fast
        vm.expect("count 20\r\n", timeout=30)
        vm.pause()
        started = time.monotonic()
        snapshot(vm, state, mem)  # the first also turns KVM's dirty log on (KVM_SET_USER_MEMORY_REGION)
        result["first_full_create_ms"] = (time.monotonic() - started) * 1000
        vm.resume()
        vm.expect("count 40\r\n", timeout=30)
        vm.pause()
        started = time.monotonic()
        snapshot(vm, state, mem)
        result["full_create_ms"] = (time.monotonic() - started) * 1000
        vm.resume()
        vm.expect("count 220\r\n", timeout=30)
        vm.pause()
        started = time.monotonic()
        snapshot(vm, diff_state, diff_mem, diff=True)
        result["diff_create_ms"] = (time.monotonic() - started) * 1000
    result["full_mem_on_disk_kib"] = _on_disk(mem) / 1024
    result["diff_mem_on_disk_kib"] = _on_disk(diff_mem) / 1024
    result["state_bytes"] = os.path.getsize(state)

    to_running, to_output = [], []
    for _ in range(rounds):
        started = time.monotonic()
        clone = restore(state, mem)
        running = time.monotonic()
        try:
            to_output.append((_first_output(clone) - started) * 1000)
        finally:
            clone.close()
        to_running.append((running - started) * 1000)
    result["restore_to_running_ms"] = statistics.median(to_running)
    result["restore_to_running_min_ms"] = min(to_running)
    result["restore_to_first_output_ms"] = statistics.median(to_output)

    process = []
    for _ in range(rounds):
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "vmm", "restore", state, mem, "--timeout", "5"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        os.read(child.stdout.fileno(), 1)
        process.append((time.monotonic() - started) * 1000)
        child.kill()
        child.communicate()
    result["process_restore_to_first_output_ms"] = statistics.median(process)

    idle_state, idle_mem = os.path.join(workdir, "idle.state"), os.path.join(workdir, "idle.mem")
    with MicroVM(VmConfig(kernel=guest, mem_mib=mem_mib)) as vm:
        vm.expect("$ ", timeout=60)
        vm.pause()
        snapshot(vm, idle_state, idle_mem)
    for count in clone_counts:
        result[f"clones_{count}"] = _clones(idle_state, idle_mem, count)
    return result


def _clones(state: str, mem: str, count: int) -> dict:
    me = psutil.Process()
    before = me.memory_full_info()
    started = time.monotonic()
    clones = []
    try:
        for _ in range(count):
            clones.append(restore(state, mem))
        for clone in clones:  # each answers: all are running
            clone.send("\r")
            clone.expect("$ ", timeout=60)
        elapsed = time.monotonic() - started
        after = me.memory_full_info()
    finally:
        for clone in clones:
            clone.close(wait=True)
    # Totals of the one process holding every clone (deltas can be negative
    # for a few clones: the allocator returns memory as the benchmark goes).
    return {
        "seconds_to_all_answering": elapsed,
        "rss_mib": after.rss / 2**20, "pss_mib": after.pss / 2**20, "uss_mib": after.uss / 2**20,
        "uss_before_mib": before.uss / 2**20,
    }


def main() -> None:
    guest, mem_mib, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    clone_counts = [int(n) for n in sys.argv[4:]]
    workdir = tempfile.mkdtemp(prefix="vmm-bench-snapshot-")
    try:
        print(json.dumps(measure(guest, mem_mib, rounds, clone_counts, workdir)))
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
