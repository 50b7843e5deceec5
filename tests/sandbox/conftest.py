"""Helpers for the Linux personality's tests: compile, bundle, boot, parse."""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.conftest import ROOT
from vmm.sandbox import build_bundle

PROGS = os.path.join(os.path.dirname(__file__), "progs")
OUTCOME = re.compile(rb"vmm-exit: (status (\d+)|signal (\d+) addr (0x[0-9a-f]+)|cannot execute: ([^\r\n]*))\r?\n")


@dataclass
class Run:
    output: bytes       # what the program wrote (serial output before the outcome line)
    outcome: str        # the outcome line without "vmm-exit: "
    status: int         # vmm's exit status
    serial: bytes       # everything on the serial console
    stderr: bytes

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")


def compilers() -> dict[str, str | None]:
    """Compiler name -> reason it is missing (None: usable)."""
    return {
        "gcc": None if shutil.which("gcc") else "gcc not installed",
        "musl": None if shutil.which("musl-gcc") else "musl-gcc not installed (apt-get install musl-tools)",
        "gcc-pie": None if shutil.which("gcc") else "gcc not installed",
        "g++": None if shutil.which("g++") else "g++ not installed",
    }


@pytest.fixture(scope="session")
def compile_prog(tmp_path_factory):
    """compile_prog(name, compiler='gcc') -> path of the static binary."""
    out = tmp_path_factory.mktemp("progs")
    cache: dict[tuple[str, str], str] = {}

    def build(name: str, compiler: str = "gcc") -> str:
        reason = compilers()[compiler]
        if reason:
            pytest.skip(reason)
        key = (name, compiler)
        if key not in cache:
            exe = str(out / f"{name}-{compiler}")
            cc, link = {"gcc": ("gcc", "-static"), "musl": ("musl-gcc", "-static"),
                        "gcc-pie": ("gcc", "-static-pie"), "g++": ("g++", "-static")}[compiler]
            src = os.path.join(PROGS, name + (".cc" if compiler == "g++" else ".c"))
            subprocess.run([cc, link, "-O2", "-w", "-o", exe, src], check=True)
            cache[key] = exe
        return cache[key]

    return build


def boot_bundle(bundle: bytes, tmp_path, stdin: bytes = b"", timeout: float = 30, mem_mib: int | None = None) -> Run:
    path = tmp_path / "bundle.tar"
    path.write_bytes(bundle)
    argv = [sys.executable, "-m", "vmm", "run", "--initrd", str(path), "--timeout", str(timeout)]
    if mem_mib:
        argv += ["--mem", str(mem_mib)]
    result = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout + 30, cwd=ROOT)
    return parse(result.stdout, result.returncode, result.stderr)


def parse(serial: bytes, status: int, stderr: bytes = b"") -> Run:
    match = OUTCOME.search(serial)
    assert match, f"no vmm-exit line in {serial[-2000:]!r} (status {status}, stderr {stderr!r})"
    output = serial[: match.start()]
    return Run(output=output, outcome=match.group(1).decode(), status=status, serial=serial, stderr=stderr)


@pytest.fixture
def run_prog(tmp_path):
    """run_prog(exe, argv, env=None, files=None, options=None, stdin=b'') -> Run."""

    def run(exe, argv, env=None, files=None, options=None, stdin=b"", exec_path=None, timeout=30) -> Run:
        bundle = build_bundle(exe, argv, env or {}, files or {}, options or {}, exec_path=exec_path)
        return boot_bundle(bundle, tmp_path, stdin=stdin, timeout=timeout)

    return run


def native(exe, argv, env=None, stdin=b"", cwd=None) -> subprocess.CompletedProcess:
    """The same program run on the host, argv[0] as given."""
    return subprocess.run(argv, executable=exe, env=env or {}, input=stdin, capture_output=True, timeout=30, cwd=cwd)


class SandboxPath:
    """vmm.sandbox.run and `vmm exec` on one path: a warm clone, or a cold boot."""

    def __init__(self, warm: bool):
        self.warm = warm

    def __repr__(self) -> str:
        return "warm" if self.warm else "cold"

    def run(self, args, **kwargs):
        from vmm.sandbox import run

        return run(args, warm=self.warm, **kwargs)

    def exec(self, *args, stdin=b"", timeout=60):
        flag = "--warm" if self.warm else "--cold"
        return subprocess.run([sys.executable, "-m", "vmm", "exec", flag, *args], input=stdin, capture_output=True,
                              timeout=timeout, cwd=ROOT, check=False)


@pytest.fixture(params=[True, False], ids=["warm", "cold"])
def sandbox(request):
    """Each test using it runs on both paths, which must behave identically."""
    return SandboxPath(request.param)
