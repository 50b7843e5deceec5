"""`vmm bench blk`: virtio-blk throughput from inside the guest.

The guest's `blkbench` reads a span of a scratch disk sequentially in 1 MiB
requests, writes the same data back, then does 4 KiB random reads. Alongside,
in the same run, the host reads and writes the same file with preadv/pwritev
in 1 MiB chunks: the baseline a VMM's data path can at best approach.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time

from ..config import DiskConfig, VmConfig

LINE = re.compile(rb"blkbench: (read|write|randread) .*?(\d+(?:\.\d+)?) (MiB/s|IOPS)")


def _host_baseline(path: str, mib: int) -> tuple[float, float]:
    fd = os.open(path, os.O_RDWR)
    buf = bytearray(1 << 20)
    try:
        start = time.monotonic()
        for i in range(mib):
            os.preadv(fd, [buf], i << 20)
        read = mib / (time.monotonic() - start)
        start = time.monotonic()
        for i in range(mib):
            os.pwritev(fd, [buf], i << 20)
        os.fsync(fd)
        write = mib / (time.monotonic() - start)
    finally:
        os.close(fd)
    return read, write


def _guest_run(path: str, mib: int) -> tuple[dict[str, float], int]:
    from ..machine import MicroVM

    config = VmConfig(mem_mib=max(128, mib * 2 + 32), disks=(DiskConfig(path),), timeout=600)
    with MicroVM(config) as vm:
        vm.expect("$ ", timeout=60)
        before = sum(vm.exit_counts)
        vm.send(f"blkbench 0 {mib}\r")
        vm.expect(re.compile(rb"blkbench: randread[^\n]*\n"), timeout=600)
        exits = sum(vm.exit_counts) - before
        text = vm.output
    figures = {m.group(1).decode(): float(m.group(2)) for m in LINE.finditer(text)}
    return figures, exits


def bench_blk(runs: int, mib: int = 64) -> int:
    samples: dict[str, list[float]] = {"read": [], "write": [], "randread": [], "host read": [], "host write": []}
    exits = []
    with tempfile.TemporaryDirectory(prefix="vmm-bench-") as tmp:
        path = os.path.join(tmp, "scratch.img")
        with open(path, "wb") as f:
            f.write(os.urandom(1 << 20) * mib)
        for _ in range(runs):
            host_read, host_write = _host_baseline(path, mib)
            samples["host read"].append(host_read)
            samples["host write"].append(host_write)
            figures, n = _guest_run(path, mib)
            for key in ("read", "write", "randread"):
                if key in figures:
                    samples[key].append(figures[key])
            exits.append(n)
    moved = 2 * mib  # read + write phases
    print(f"virtio-blk from the guest, {mib} MiB span, {runs} rounds (best and median)")
    print(f"{'case':<28} {'best':>10} {'median':>10}  unit    ratio to host")
    for key, unit, base in (("read", "MiB/s", "host read"), ("write", "MiB/s", "host write"), ("randread", "IOPS", None),
                            ("host read", "MiB/s", None), ("host write", "MiB/s", None)):
        values = samples[key]
        if not values:
            print(f"{key:<28} {'-':>10} {'-':>10}  {unit}")
            continue
        ratio = f"{statistics.median(values) / statistics.median(samples[base]):.2f}x" if base else ""
        print(f"{key:<28} {max(values):10.1f} {statistics.median(values):10.1f}  {unit:<6}  {ratio}")
    per_mib = statistics.median(exits) / moved
    print(f"VM exits during blkbench: median {statistics.median(exits):.0f} ({per_mib:.1f} per MiB moved, random reads included)")
    return 0
