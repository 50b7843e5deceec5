import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUEST_ELF = ROOT / "guest" / "build" / "guest.elf"


def kvm_usable() -> str | None:
    """None when /dev/kvm can be used, else the reason it cannot."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist on this host"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "no read/write permission on /dev/kvm"
    return None


def pytest_collection_modifyitems(config, items):
    reason = kvm_usable()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"needs KVM: {reason}")
    for item in items:
        if "kvm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def guest_elf() -> Path:
    if not GUEST_ELF.exists():
        subprocess.run([str(ROOT / "build_guest.sh")], check=True)
    return GUEST_ELF


@pytest.fixture
def run_vmm():
    """Run `python -m vmm ARGS` with stdin text; returns the CompletedProcess."""

    def run(*args, stdin: str = "", timeout: float = 60, env=None):
        return subprocess.run(
            [sys.executable, "-m", "vmm", *args],
            input=stdin.encode(),
            capture_output=True,
            timeout=timeout,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )

    return run
