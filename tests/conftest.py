import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUEST_ELF = ROOT / "guest" / "build" / "guest.elf"


# The `kvm`/`vm` markers, the KVM checks and the `microvm` fixture come from
# vmm's own pytest plugin. Installed, its pytest11 entry point loads it (under
# this same name, so naming it here does not register it twice); from a bare
# checkout this line loads it.
pytest_plugins = ["vmm.pytest_plugin"]

# A project of its own (run in a subprocess by test_pytest_plugin.py) and test
# kernels' sources, not part of this suite.
collect_ignore = ["sample_project", "guests"]


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """The suite's own $XDG_CACHE_HOME (seccomp filters, the sandbox's snapshot,
    programs laid out: vmm/user_cache.py), for this process and every
    vmm it starts: a run neither depends on the user's cache nor fills it, and
    builds each cache from empty once."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    yield cache
    if previous is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = previous


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


# What a `vmm exec` or `vmm run` start does without (each costs 1-4 ms of a ~30 ms command;
# vmm/arguments.py, vmm/outcome.py, vmm/_build/scripts/vmm): one creeping back in shows in the benchmarks.
HEAVY_MODULES = {"argparse", "re", "enum", "signal", "gettext", "typing", "dataclasses", "termios", "tty", "shutil",
                 "subprocess", "tempfile", "tarfile", "construct", "ctypes", "logging", "inspect", "pathlib"}


def vmm_importing(*args, stdin: bytes = b"", timeout: float = 60):
    """Run the vmm command as installed (make test: .venv/bin/vmm; else python -m vmm)
    under -X importtime: (the CompletedProcess, the modules it imported)."""
    script = os.path.join(os.path.dirname(sys.executable), "vmm")
    command = [sys.executable, "-X", "importtime", *([script] if os.path.exists(script) else ["-m", "vmm"])]
    result = subprocess.run([*command, *args], input=stdin, capture_output=True, timeout=timeout, cwd=ROOT)
    lines = result.stderr.decode(errors="replace").splitlines()
    return result, {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}


def without_permission_override(command: list[str]) -> list[str]:
    """``command`` as a process that file modes apply to. Root keeps its uid but
    loses CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (setpriv), so a mode-000 file
    is refused to it while a checkout in a private directory (mktemp -d) stays
    readable, which a switch to nobody would not give."""
    if os.getuid() == 0:
        return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    return command
