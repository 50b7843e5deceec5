"""`vmm bench linux`: how long a Linux kernel takes under `vmm linux`, from
process start to the kernel's first line, to `Freeing unused kernel memory`,
to the init's first line and to the command's exit; and the VM exits and
emulation fallbacks `--stats` counts.

Each kernel runs as a real `vmm linux` process (Python start-up and the
initramfs build included), its output read line by line and time-stamped.
Beside it, QEMU's microvm (KVM) boots the same kernel, initramfs and command
line with the same budget; on this software KVM it stops where KVM's
instruction emulator gives up, and the row says how far it got.
The microVM kernel (guest/linux_kernel/build.sh) is measured when built;
Debian's cloud kernel only when asked (--debian: 15-20 minutes a boot here).

    python -m vmm.bench.linux [--debian] [--cpus N] [--json FILE]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_SCRIPT = os.path.join(ROOT, "guest", "linux_kernel", "build.sh")
DEBIAN_CACHE = os.environ.get("VMM_KERNEL_CACHE", os.path.expanduser("~/.cache/vmm/kernels"))
COMMAND = ("sh", "-c", "echo bench command ran; exit 3")
MARKS = (
    ("first kernel line", re.compile(rb"Linux version ")),
    ("Freeing unused kernel memory", re.compile(rb"Freeing unused kernel")),
    ("init's first line", re.compile(rb"vmm-init: started")),
)
BUDGET_S = 3000


def microvm_kernel() -> tuple[str, str] | None:
    try:
        bzimage = subprocess.run([BUILD_SCRIPT, "--path"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    vmlinux = bzimage.replace("/vmlinuz-", "/vmlinux-")
    return (bzimage, vmlinux) if os.path.isfile(bzimage) and os.path.isfile(vmlinux) else None


def debian_kernel() -> str | None:
    import glob

    images = sorted(glob.glob(os.path.join(DEBIAN_CACHE, "vmlinuz-*-cloud-amd64")))
    return images[-1] if images else None


def _time_marks(proc, started: float) -> dict[str, float]:
    """Seconds from ``started`` to each of MARKS in ``proc``'s output (read to its end),
    and to "command": the init's line saying the command ended."""
    seen: dict[str, float] = {}
    tail = b""
    while True:
        chunk = proc.stdout.read1(65536)
        if not chunk:
            return seen
        now = time.monotonic() - started
        tail = (tail + chunk)[-4096:]
        for name, pattern in MARKS:
            if name not in seen and pattern.search(tail):
                seen[name] = now
        if "command" not in seen and b"exited with status" in tail:
            seen["command"] = now


def measure(kernel: str, options=(), budget: float = BUDGET_S) -> dict:
    """One `vmm linux` run: seconds from its start to each mark, its status, exits and fallbacks."""
    argv = [sys.executable, "-m", "vmm", "linux", "--kernel", kernel, *options, "--stats", "--timeout", str(budget), "--", *COMMAND]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    seen = _time_marks(proc, started)
    status = proc.wait()
    total = time.monotonic() - started
    err = proc.stderr.read().decode(errors="replace")
    exits = re.search(r"vmm: exits: (.*)", err)
    fallbacks = re.search(r"vmm: carried out for the emulator: (.*)", err)
    return {
        "kernel": os.path.basename(kernel), "options": list(options), "status": status,
        "marks": {name: round(seen[name], 2) for name, _ in MARKS if name in seen},
        "command exit": round(total, 2),
        "exits": _total_exits(exits.group(1)) if exits else None, "exit kinds": exits.group(1) if exits else "",
        "fallbacks": fallbacks.group(1) if fallbacks else "none",
    }


def measure_qemu(kernel: str, budget: float) -> dict | None:
    """QEMU microvm (KVM) on the same kernel, initramfs and command line as `vmm linux`."""
    import shutil
    import tempfile

    from ..linux_cmd import build_linux_initramfs, linux_cmdline, static_busybox
    from ..x86.platform import linux_options

    from .contenders import QemuContender

    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return None
    cpu = QemuContender._usable_cpu()  # nested KVM refuses some of -cpu host's MSRs
    cmdline = linux_cmdline(list(COMMAND))
    cmdline = " ".join([cmdline, *linux_options(cmdline)])
    with tempfile.TemporaryDirectory(prefix="vmm-bench-linux-") as tmp:
        initrd = os.path.join(tmp, "initramfs")
        with open(initrd, "wb") as f:
            f.write(build_linux_initramfs(kernel, None, static_busybox()))
        argv = [qemu, "-M", "microvm", "-accel", "kvm", "-cpu", cpu, "-m", "256", "-nodefaults", "-no-user-config",
                "-nographic", "-serial", "stdio", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                "-kernel", kernel, "-initrd", initrd, "-append", cmdline]
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        timer = threading.Timer(budget, proc.kill)
        timer.start()
        try:
            seen = _time_marks(proc, started)
            status = proc.wait()
        finally:
            timer.cancel()
        total = time.monotonic() - started
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()
    ended = "killed at the budget" if status == -9 else (err[0][:60] if err else f"status {status}")
    return {
        "kernel": os.path.basename(kernel) + " (QEMU microvm)", "options": [], "status": (status >> 1) if status > 0 else status,
        "marks": {name: round(seen[name], 2) for name, _ in MARKS if name in seen},
        "command exit": round(seen.get("command", total), 2), "exits": None, "exit kinds": "", "fallbacks": ended,
    }


def _total_exits(summary: str) -> int:
    return sum(int(n) for n in re.findall(r" (\d+)(?:,|$)", summary))


def print_table(rows: list[dict]) -> None:
    head = ("kernel", "entry", "first line s", "Freeing s", "init s", "exit s", "status", "VM exits", "fallbacks")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for row in rows:
        marks = row["marks"]
        cells = (row["kernel"], row["entry"], *(f"{marks[name]:.1f}" if name in marks else "-" for name, _ in MARKS),
                 f"{row['command exit']:.1f}", str(row["status"]), str(row["exits"]), row["fallbacks"])
        print(" | ".join(cells))


def run(debian: bool = False, cpus: int = 1, json_path: str | None = None) -> int:
    rows = []
    kernels = microvm_kernel()
    if kernels is None:
        print("vmm bench linux: no microVM kernel built (make linux-kernel)", file=sys.stderr)
    else:
        bzimage, vmlinux = kernels
        extra = ("--cpus", str(cpus)) if cpus > 1 else ()
        rows.append({"entry": "bzImage", **measure(bzimage, extra)})
        rows.append({"entry": "PVH", **measure(vmlinux, extra)})
        budget = max(60.0, 2 * rows[0]["command exit"])  # twice vmm's time: how far QEMU gets in it
        for entry, image in (("bzImage", bzimage), ("PVH", vmlinux)):
            qemu = measure_qemu(image, budget)
            if qemu is not None:
                rows.append({"entry": entry, **qemu})
    if debian:
        kernel = debian_kernel()
        if kernel is None:
            print("vmm bench linux: no Debian cloud kernel cached (tests/linux/fetch_kernel.sh)", file=sys.stderr)
        else:
            rows.append({"entry": "bzImage", **measure(kernel)})
    print_table(rows)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if rows and all(row["status"] == 3 for row in rows if "QEMU" not in row["kernel"]) else 1


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m vmm.bench.linux", description=__doc__.splitlines()[0])
    parser.add_argument("--debian", action="store_true", help="also boot Debian's cloud kernel (15-20 minutes here)")
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    sys.exit(run(args.debian, args.cpus, args.json))
