"""Where vmm's microVM kernel is, and a way to run `vmm linux` on it from a test.

The kernel is built by guest/linux_kernel/build.sh (`make linux-kernel`, which
`make test-linux` runs first) into ~/.cache/vmm/kernels; its name carries the
hash of the config fragment, so a test never boots a kernel built from an
older fragment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_SCRIPT = os.path.join(ROOT, "guest", "linux_kernel", "build.sh")
# Generous: a boot to the command takes about a minute alone here, and has
# taken over five when the shared machine's load average was 40.
BOOT_BUDGET_S = 1500


def microvm_kernel_paths() -> tuple[str, str]:
    """(bzImage, vmlinux) of the kernel the current fragment builds; they may not exist."""
    bzimage = subprocess.run([BUILD_SCRIPT, "--path"], capture_output=True, text=True, check=True).stdout.strip()
    return bzimage, bzimage.replace("/vmlinuz-", "/vmlinux-")


def require_microvm_kernel() -> tuple[str, str]:
    """The kernel's paths, or a skip that says how to get them (a failure under make test-linux)."""
    if os.environ.get("VMM_TEST_LINUX") != "1":
        pytest.skip("boots Linux to userspace: run with VMM_TEST_LINUX=1 (make test-linux)")
    bzimage, vmlinux = microvm_kernel_paths()
    if not (os.path.isfile(bzimage) and os.path.isfile(vmlinux)):
        pytest.fail(f"no microVM kernel at {bzimage}: run make linux-kernel", pytrace=False)
    return bzimage, vmlinux


def vmm_linux(kernel: str, *command: str, options=(), budget: float = BOOT_BUDGET_S):
    """`vmm linux --kernel KERNEL OPTIONS --stats -- COMMAND`: (status, stdout, stderr, seconds)."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "vmm", "linux", "--kernel", kernel, *options, "--stats", "--timeout", str(budget), "--", *command],
        capture_output=True, timeout=budget + 60, cwd=ROOT,
    )
    return result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace"), time.monotonic() - started


def explain(status: int, out: str, err: str, seconds: float) -> str:
    return f"status {status} after {seconds:.0f} s\n{err}\n{out[-4000:]}"
