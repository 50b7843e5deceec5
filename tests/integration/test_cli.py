"""The `vmm` command end to end: statuses and one-line errors."""

import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from tests.conftest import HEAVY_MODULES, ROOT, vmm_importing
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


def test_run_starts_without_heavy_modules(guest_elf):
    for _ in range(2):  # the first may build the seccomp filters' cache (vmm/seccomp.py)
        result, imported = vmm_importing("run", "--mem", "64", stdin=b"exit 3\n")
        assert result.returncode == 3, result.stderr[-2000:]
    assert "vmm.machine" in imported  # the trace is there
    assert imported & HEAVY_MODULES == set()


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
        (["run", "--initrd", "/nonexistent/initrd"], ["initrd file not found"]),
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


# --- host inputs that once misbehaved (issue 8) ---------------------------------------

def timed_vmm(run_vmm, *args, bound=10.0):
    started = time.monotonic()
    result = run_vmm(*args, timeout=max(60, bound * 3))
    assert time.monotonic() - started < bound, args
    assert result.returncode == 2, result.stderr
    return result


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize("option", ["--kernel", "--initrd"])
@pytest.mark.parametrize("source", ["/dev/zero", "fifo", "dir"])
def test_kernel_and_initrd_must_be_regular_files(run_vmm, guest_elf, tmp_path, fifo, option, source):
    path = {"/dev/zero": "/dev/zero", "fifo": fifo, "dir": str(tmp_path)}[source]
    result = timed_vmm(run_vmm, "run", option, path)
    one_line_error(result, path, "a directory" if source == "dir" else "not a regular file")


# Runs vmm and reports its peak RSS. The child of a large pytest process
# would inherit the parent's resident pages in its ru_maxrss (fork copies the
# mm, and exec folds its high-water mark in), so a small Python process
# starts vmm and measures it instead.
_MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def measured_vmm(*args):
    """(status, stderr, peak RSS in MiB, seconds) of one `vmm` run, stdin closed."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "vmm", *args],
                            stdin=subprocess.DEVNULL, capture_output=True, cwd=ROOT, timeout=60)
    status, maxrss_kib = (int(word) for word in result.stdout.split())
    return status, result.stderr.decode(), maxrss_kib / 1024, time.monotonic() - started


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--kernel", "/dev/zero"], "not a regular file"),
        (["--initrd", "/dev/zero"], "not a regular file"),
        (["--initrd", "{sparse}", "--mem", "64"], "initrd of 2147483648 bytes does not fit"),
        (["--kernel", "{sparse_elf}", "--mem", "64"], "needs guest RAM up to 0x400ff000"),
    ],
)
def test_endless_or_huge_inputs_are_refused_fast_and_small(guest_elf, tmp_path, args, fragment):
    # Each of these once read until killed (3.2 GB in 7 s) or read 2 GiB before refusing.
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as f:
        f.truncate(2 << 30)
    from tests.unit.test_boot import write_sparse_kernel

    sparse_elf = write_sparse_kernel(tmp_path / "sparse.elf")  # 1 GiB of segment data, a hole
    args = [a.format(sparse=sparse, sparse_elf=sparse_elf) for a in args]
    status, err, rss_mib, seconds = measured_vmm("run", *args)
    assert status == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and fragment in err, err
    assert seconds < 5 and rss_mib < 100, (seconds, rss_mib)  # the interpreter and vmm alone: ~30 MiB


@pytest.mark.parametrize("value", ["inf", "1e300", "1e10", "nan", "-inf"])
def test_timeout_beyond_a_year_or_not_finite(run_vmm, guest_elf, value):
    result = timed_vmm(run_vmm, "run", f"--timeout={value}")
    one_line_error(result, "--timeout", "31536000 s" if value not in ("nan", "-inf") else "positive")


def test_non_utf8_cmdline(guest_elf):
    argv = [sys.executable, "-m", "vmm", "run", "--cmdline", os.fsdecode(b"console=ttyS0 \xff\xfe")]
    result = subprocess.run(argv, capture_output=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    one_line_error(result, "not valid UTF-8")


def test_cmdline_over_2047_bytes_with_the_disk_entries(run_vmm, guest_elf, tmp_path):
    image = tmp_path / "d.img"
    assert run_vmm("mkdisk", str(tmp_path), "-o", str(image)).returncode == 0
    result = timed_vmm(run_vmm, "run", "--cmdline", "x" * 2030, "--disk", str(image))
    one_line_error(result, "kernel command line is 2065 bytes", "at most 2047")
    result = timed_vmm(run_vmm, "run", "--cmdline", "x" * 2048)
    one_line_error(result, "kernel command line is 2048 bytes", "at most 2047")


def write_kernel(tmp_path, segments, entry, notes=None):
    from tests.unit.test_boot import make_elf_segments

    path = tmp_path / "kernel.elf"
    path.write_bytes(make_elf_segments(segments, entry, notes))
    return str(path)


def test_pvh_entry_outside_guest_ram(run_vmm, guest_elf, tmp_path):
    kernel = write_kernel(tmp_path, [(0x100000, b"\x90", 0x1000), (0x4000000, b"\x90", 0x1000)], 0x4000000)
    result = timed_vmm(run_vmm, "run", "--kernel", kernel, "--mem", "32")
    one_line_error(result, "needs guest RAM up to 0x4001000", "--mem")
    kernel = write_kernel(tmp_path, [(0x100000, b"\x90", 0x1000)], 0x4000000)
    result = timed_vmm(run_vmm, "run", "--kernel", kernel, "--mem", "32")
    one_line_error(result, "PVH entry 0x4000000 lies outside every loadable segment")


def test_pvh_entry_at_or_above_4gib(run_vmm, guest_elf, tmp_path):
    from tests.unit.test_boot import xen_note64

    kernel = write_kernel(tmp_path, [(0x100000, b"\x90", 0x1000)], 1 << 32, xen_note64(1 << 32))
    result = timed_vmm(run_vmm, "run", "--kernel", kernel)
    one_line_error(result, "PVH entry 0x100000000 is at or above 4 GiB")


def test_overlapping_segments(run_vmm, guest_elf, tmp_path):
    kernel = write_kernel(tmp_path, [(0x100000, b"\x90", 0x2000), (0x101000, b"\x90", 0x1000)], 0x100000)
    result = timed_vmm(run_vmm, "run", "--kernel", kernel)
    one_line_error(result, "ELF segments 0 (0x100000-0x102000) and 1 (0x101000-0x102000) overlap")


@pytest.mark.parametrize(
    "output, fragments",
    [
        ("", ["output path is empty"]),
        ("{tmp}", ["is a directory"]),
        ("{tmp}/missing/disk.img", ["directory", "missing does not exist"]),
    ],
)
def test_mkdisk_unusable_output(run_vmm, tmp_path, output, fragments):
    result = timed_vmm(run_vmm, "mkdisk", str(tmp_path), "-o", output.format(tmp=tmp_path))
    one_line_error(result, *fragments)


def test_mkdisk_size_too_big_for_the_filesystem(run_vmm, tmp_path):
    (tmp_path / "src").mkdir()
    result = timed_vmm(run_vmm, "mkdisk", str(tmp_path / "src"), "-o", str(tmp_path / "d.img"), "--size", "99999999999")
    one_line_error(result, "cannot make it 99999999999 MiB", "File too large")


def test_mkdisk_names_the_file_ustar_cannot_hold(run_vmm, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / ("n" * 120)).write_text("x")
    result = timed_vmm(run_vmm, "mkdisk", str(tmp_path / "src"), "-o", str(tmp_path / "d.img"))
    one_line_error(result, f"src/{'n' * 120}: its name", "120 bytes")


def test_mkdisk_honours_umask_and_a_non_utf8_name(tmp_path):
    (tmp_path / "src").mkdir()
    image = os.path.join(os.fsencode(tmp_path), b"disk\xff.img")
    result = subprocess.run(
        [sys.executable, "-c", "import os, sys; os.umask(0o027); from vmm.cli import main; sys.exit(main(sys.argv[1:]))",
         "mkdisk", str(tmp_path / "src"), "-o", os.fsdecode(image)],
        capture_output=True, cwd=ROOT, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(image + b": 1 MiB ustar disk image") or result.stdout.startswith(image + b": 2 MiB")
    assert stat.S_IMODE(os.stat(image).st_mode) == 0o640


@pytest.mark.parametrize("mem, ram_end", [("0x40", None), ("010", b"-0x00000000009fffff type 1"), ("32M", b"-0x0000000001ffffff type 1")])
def test_mem_is_decimal_mib_with_optional_suffix(run_vmm, guest_elf, mem, ram_end):
    result = run_vmm("run", "--mem", mem, stdin="mem\nexit 0\n")
    if ram_end is None:
        assert result.returncode == 2
        one_line_error(result, "--mem", "not a whole number of MiB")
    else:
        assert result.returncode == 0, result.stderr
        assert ram_end in result.stdout  # the guest's memory map ends at 10 MiB, 32 MiB


def test_disk_path_with_a_comma(run_vmm, guest_elf, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "greeting").write_text("comma ok\n")
    image = tmp_path / "a,b.img"
    assert run_vmm("mkdisk", str(src), "-o", str(image)).returncode == 0
    escaped = str(image).replace(",", ",,")
    result = run_vmm("run", "--disk", escaped + ",ro", stdin="cat greeting\nexit 0\n")
    assert result.returncode == 0, result.stderr
    assert b"comma ok" in result.stdout


@pytest.mark.kvm
def test_cpus_two_boot_and_power_off(run_vmm):
    result = run_vmm("run", "--cpus", "2", "--mem", "32", "--timeout", "30", stdin="echo two-cpus\nexit 6\n")
    assert result.returncode == 6, result.stderr
    assert b"two-cpus" in result.stdout


@pytest.mark.parametrize("count", ["0", "65", "x"])
def test_cpus_out_of_range(run_vmm, count):
    result = run_vmm("run", "--cpus", count)
    assert result.returncode == 2
    assert result.stderr.count(b"\n") == 1 and b"Traceback" not in result.stderr
