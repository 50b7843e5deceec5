"""The `vmm` command end to end: statuses and one-line errors."""

import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from vmm.errors import EXIT_GUEST_CRASHED, EXIT_TIMEOUT

pytestmark = pytest.mark.kvm


def one_line_error(result, *fragments):
    err = result.stderr.decode()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("vmm: ")
    for fragment in fragments:
        assert fragment in lines[0], err


def test_piped_shell_lines_and_exit_status(run_vmm, guest_elf):
    result = run_vmm("run", stdin="echo hello\nexit 7\n")
    assert result.returncode == 7, result.stderr
    assert b"hello\r\n" in result.stdout
    assert result.stderr == b""


def test_serial_log_and_stats(run_vmm, guest_elf, tmp_path):
    log = tmp_path / "serial.log"
    result = run_vmm("run", "--serial-log", str(log), "--stats", stdin="echo logged\nexit 0\n")
    assert result.returncode == 0
    assert b"logged\r\n" in log.read_bytes()
    assert b"vmm: exits: " in result.stderr and b"io " in result.stderr


def test_fault_gives_report_and_crash_status(run_vmm, guest_elf):
    result = run_vmm("run", stdin="fault\n")
    assert result.returncode == EXIT_GUEST_CRASHED
    one_line_error(result, "guest fault: vector 14", "rip 0x", "cr2 0x500000000")


def test_timeout(run_vmm, guest_elf):
    result = run_vmm("run", "--timeout", "2", stdin="spin\n")
    assert result.returncode == EXIT_TIMEOUT
    one_line_error(result, "within 2 s")


def test_python_dash_m_and_bundled_guest_default(run_vmm, guest_elf):
    result = run_vmm("run", "--mem", "32", stdin="exit 0\n")
    assert result.returncode == 0


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["run", "--kernel", "/nonexistent/kernel"], ["kernel file not found"]),
        (["run", "--kernel", "/etc/passwd"], ["not an ELF"]),
        (["run", "--kernel", "/bin/true"], ["no PVH entry note"]),
        (["run", "--mem", "1"], ["too small"]),
        (["run", "--mem", str(1 << 30)], ["more than this host has"]),
        (["run", "--mem", "lots"], ["not a whole number"]),
        (["run", "--frobnicate"], ["unrecognized arguments"]),
        (["run", "--timeout", "-1"], ["must be positive"]),
        (["run", "--initrd", "/nonexistent/initrd"], ["cannot read initrd"]),
        (["launch"], ["invalid choice"]),
    ],
)
def test_bad_input_gets_one_line_and_status_2(run_vmm, guest_elf, args, fragments):
    result = run_vmm(*args)
    assert result.returncode == 2, result.stderr
    one_line_error(result, *fragments)


def test_no_kvm_device(run_vmm, guest_elf, tmp_path):
    result = run_vmm("run", env={"VMM_KVM_DEVICE": str(tmp_path / "no-kvm")})
    assert result.returncode == 2
    one_line_error(result, "does not exist")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to drop CAP_DAC_OVERRIDE")
def test_kvm_without_permission(guest_elf, tmp_path):
    # A copy of the KVM device node that nobody may open, opened by root
    # without the capability that lets root ignore file modes.
    node = tmp_path / "kvm"
    os.mknod(node, 0o000 | stat.S_IFCHR, os.stat("/dev/kvm").st_rdev)
    result = subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search",
         sys.executable, "-m", "vmm", "run"],
        capture_output=True, cwd=ROOT, timeout=60,
        env={**os.environ, "VMM_KVM_DEVICE": str(node)},
    )
    assert result.returncode == 2, result.stderr
    one_line_error(result, f"no permission to open {node}")


def test_timeout_stops_a_guest_whose_console_nobody_reads(guest_elf):
    # The pipe fills up and every write to stdout blocks: the vCPU must still be stoppable.
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmm", "run", "--timeout", "3"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )
    proc.stdin.write(b"serialbench 1000000\n")
    proc.stdin.flush()
    assert proc.wait(30) == EXIT_TIMEOUT
    assert time.monotonic() - started < 15
    assert "within 3 s" in proc.stderr.read().decode()
