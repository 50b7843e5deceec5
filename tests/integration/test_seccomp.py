"""Per-thread seccomp filters (vmm/seccomp.py, vmm/seccomp_policy.py).

Everything that loads a filter runs in a subprocess (the CLI, or a small
Python program): a filter never comes off, and pytest's own process must not
get one.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from tests.conftest import ROOT
from vmm import seccomp, seccomp_policy

VIOLATION = re.compile(
    r"vmm: seccomp: the (\w+) thread made system call (\w+) \((\d+)\), which its filter does not allow; "
    r"stopping with status (\d+)"
)


def vmm(*args, stdin: bytes = b"", env=None, timeout: float = 90):
    return subprocess.run([sys.executable, "-m", "vmm", *args], input=stdin, capture_output=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, **(env or {})})


def the_one_violation(result) -> re.Match:
    lines = [line for line in result.stderr.decode().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr.decode()
    match = VIOLATION.fullmatch(lines[0])
    assert match, lines[0]
    return match


# --- the lists themselves -------------------------------------------------------------


def test_every_listed_call_and_ioctl_exists():
    binding = seccomp._binding()
    arch = binding.system_arch()
    for kind in seccomp_policy.KINDS:
        for name in seccomp.allowed(kind):
            assert binding.resolve_syscall(arch, name) >= 0, (kind, name)
        if kind in seccomp_policy.IOCTLS:
            assert seccomp._ioctl_numbers(seccomp_policy.IOCTLS[kind])  # every name resolves
    assert "socket" not in set().union(*(seccomp.allowed(kind) for kind in seccomp_policy.KINDS))


def test_a_kind_that_starts_threads_allows_what_they_need():
    """A child's filter stacks on its parent's: the API thread builds VMs, so its
    list holds the vCPU and I/O threads' lists and the calls that load a filter."""
    api = set(seccomp.allowed("api"))
    assert set(seccomp.allowed("vcpu")) <= api and set(seccomp.allowed("events")) <= api
    assert {"prctl", "seccomp"} <= api
    assert "prctl" not in seccomp.allowed("vcpu") and "execve" not in seccomp.allowed("main")


_PROGRAM = r"""
import os, sys, threading
from vmm import seccomp
seccomp.enable(77)
def child():
    seccomp.install(sys.argv[1])
    print("filtered", flush=True)
    {call}
    print("not stopped", flush=True)
thread = threading.Thread(target=child)
thread.start()
thread.join()
print("main thread unfiltered:", os.getcwd() is not None, flush=True)
"""


@pytest.mark.parametrize("kind, call, syscall", [
    ("vcpu", "os.getcwd()", "getcwd"),
    ("vcpu", "os.open('/dev/null', os.O_RDONLY)", "openat"),
    ("events", "os.fork()", "clone"),  # threads may be started, processes never
    ("main", "os.kill(os.getpid(), 0)", "kill"),
])
def test_a_call_outside_the_threads_list_stops_the_process_with_one_line(kind, call, syscall):
    result = subprocess.run([sys.executable, "-c", _PROGRAM.replace("{call}", call), kind],
                            capture_output=True, cwd=ROOT, timeout=60)
    assert result.returncode == 77, result
    assert result.stdout == b"filtered\n"
    match = the_one_violation(result)
    assert match.group(1, 2, 4) == (kind, syscall, "77")
    assert int(match.group(3)) == seccomp._binding().resolve_syscall(seccomp._binding().system_arch(), syscall)


def _filtered_violation(cache_home, check: str = ""):
    """A process with its own cache directory: arm, make a vcpu thread call getcwd; and what it imported."""
    program = _PROGRAM.replace("{call}", "os.getcwd()").replace(
        "seccomp.enable(77)", "seccomp.enable(77)\nprint('pyseccomp' in sys.modules, flush=True)")
    return subprocess.run([sys.executable, "-c", program, "vcpu"], capture_output=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "XDG_CACHE_HOME": str(cache_home)})


def test_filters_are_built_once_then_loaded_from_the_cache_without_libseccomps_binding(tmp_path):
    """The first process builds every kind's filter with libseccomp and keeps the BPF
    (0600 in a 0700 directory); the next loads it without pyseccomp, and still stops
    a call outside the list with the same one line."""
    first, second = _filtered_violation(tmp_path), _filtered_violation(tmp_path)
    for result, built in ((first, b"True"), (second, b"False")):
        assert result.returncode == 77, result
        assert result.stdout == built + b"\nfiltered\n"
        assert the_one_violation(result).group(1, 2) == ("vcpu", "getcwd")
    (cached,) = (tmp_path / "vmm" / "seccomp").iterdir()
    assert cached.stat().st_mode & 0o777 == 0o600 and cached.parent.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("spoil", ["truncated", "garbage", "group-writable"])
def test_a_spoilt_or_loosely_kept_cache_is_rebuilt(tmp_path, spoil):
    _filtered_violation(tmp_path)
    (cached,) = (tmp_path / "vmm" / "seccomp").iterdir()
    if spoil == "truncated":
        cached.write_bytes(cached.read_bytes()[:100])
    elif spoil == "garbage":
        cached.write_bytes(b"VMMSECC1" + os.urandom(64))
    else:
        cached.chmod(0o620)
    result = _filtered_violation(tmp_path)
    assert result.returncode == 77 and result.stdout == b"True\nfiltered\n", result  # built again, still enforced
    assert the_one_violation(result).group(1, 2) == ("vcpu", "getcwd")


# --- the commands: a violation in each kind of thread -------------------------------


@pytest.mark.kvm
@pytest.mark.parametrize("kind", ["vcpu", "events", "main"])
def test_vmm_run_reports_a_violation_in_each_kind_of_thread(guest_elf, kind):
    result = vmm("run", "--timeout", "60", stdin=b"echo hi\nexit 3\n", env={"VMM_SECCOMP_TEST_VIOLATION": kind})
    assert result.returncode == seccomp.VIOLATION_STATUS
    assert the_one_violation(result).group(1, 2, 3, 4) == (kind, "socket", "41", "159")


@pytest.mark.kvm
def test_no_seccomp_turns_the_filters_off(guest_elf):
    result = vmm("run", "--no-seccomp", "--timeout", "60", stdin=b"exit 3\n", env={"VMM_SECCOMP_TEST_VIOLATION": "vcpu"})
    assert result.returncode == 3, result.stderr
    assert b"seccomp" not in result.stderr


@pytest.mark.kvm
def test_vmm_exec_reports_a_violation_with_its_sandbox_failed_status(guest_elf):
    result = vmm("exec", "--timeout", "60", "--", "busybox", "true", env={"VMM_SECCOMP_TEST_VIOLATION": "vcpu"})
    assert result.returncode == 125
    assert the_one_violation(result).group(1, 2, 4) == ("vcpu", "socket", "125")


@pytest.mark.kvm
def test_vmm_serve_filters_its_api_thread(tmp_path, guest_elf):
    result = vmm("serve", "--api-sock", str(tmp_path / "api.sock"), env={"VMM_SECCOMP_TEST_VIOLATION": "api"}, timeout=60)
    assert result.returncode == seccomp.VIOLATION_STATUS
    assert the_one_violation(result).group(1, 2) == ("api", "socket")


# --- the workloads, filters on --------------------------------------------------------


def disk(tmp_path, name: str, text: bytes) -> str:
    source = tmp_path / f"{name}-dir"
    source.mkdir()
    (source / "README").write_bytes(text)
    image = tmp_path / f"{name}.img"
    result = vmm("mkdisk", str(source), "-o", str(image), "--size", "2")
    assert result.returncode == 0, result.stderr
    return str(image)


@pytest.mark.kvm
def test_boot_console_and_disks_with_filters_on(tmp_path, guest_elf):
    rw, ro = disk(tmp_path, "rw", b"writable\n"), disk(tmp_path, "ro", b"read-only\n")
    ro_before = open(ro, "rb").read()
    script = b"cat README\nwrite note.txt hello\nsync\nexit 5\n"
    result = vmm("run", "--timeout", "60", "--disk", rw, "--disk", f"{ro},ro", stdin=script)
    assert result.returncode == 5, result.stderr
    assert b"writable" in result.stdout and result.stderr == b""
    with tarfile.open(rw) as archive:
        assert archive.extractfile("note.txt").read().strip() == b"hello"
    # the second disk, read-only: the guest's write is refused and the image is unchanged
    script = b"write evil.txt no\nexit 6\n"
    result = vmm("run", "--timeout", "60", "--disk", f"{ro},ro", stdin=script)
    assert result.returncode == 6, result.stderr
    assert b"read-only" in result.stdout or b"IOERR" in result.stdout or b"status 1" in result.stdout, result.stdout
    assert open(ro, "rb").read() == ro_before


@pytest.mark.kvm
def test_exec_with_stdin_out_dir_and_timeout_with_filters_on(tmp_path, guest_elf):
    if shutil.which("busybox") is None:
        pytest.skip("busybox-static not installed")
    out = tmp_path / "out"
    result = vmm("exec", "--timeout", "60", "--out-dir", str(out), "--",
                 "busybox", "sh", "-c", "read a; echo got $a; echo kept > /out/result; exit 4", stdin=b"pear\n")
    assert result.returncode == 4, result.stderr
    assert result.stdout == b"got pear\n"
    assert (out / "result").read_bytes() == b"kept\n"
    result = vmm("exec", "--timeout", "1", "--", "busybox", "sleep", "30")
    assert result.returncode == 124, result.stderr


def seccomp_modes(pid: int) -> dict[str, str]:
    """Each thread's name and seccomp mode (2: filtered) from /proc."""
    modes = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            status = open(f"/proc/{pid}/task/{tid}/status").read()
        except OSError:
            continue
        name = re.search(r"^Name:\s*(.*)$", status, re.M).group(1)
        modes[f"{tid}:{name}"] = re.search(r"^Seccomp:\s*(\d)", status, re.M).group(1)
    return modes


@pytest.mark.kvm
def test_snapshot_and_restore_with_every_thread_filtered(tmp_path, guest_elf):
    state, mem = tmp_path / "vm.state", tmp_path / "vm.mem"
    proc = subprocess.Popen([sys.executable, "-m", "vmm", "run", "--timeout", "120",
                             "--snapshot-path", str(state), "--mem-file-path", str(mem)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the main thread's filter goes on once the VM runs
            modes = seccomp_modes(proc.pid)
            if len(modes) >= 3 and set(modes.values()) == {"2"}:
                break
            time.sleep(0.05)
        assert set(modes.values()) == {"2"}, modes
        proc.stdin.write(b"echo one\n")
        proc.stdin.flush()
        time.sleep(0.5)
        proc.send_signal(signal.SIGUSR2)  # snapshot, then stop with status 0
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"snapshot written to {state}".encode() in err
    restored = vmm("restore", str(state), str(mem), "--timeout", "60", stdin=b"echo two\nexit 9\n")
    assert restored.returncode == 9, restored.stderr
    assert b"two" in restored.stdout


_API_PROGRAM = r"""
import os, re, threading
from vmm import MicroVM, VmConfig
def mode(tid):
    return re.search(r"^Seccomp:\s*(\d)", open(f"/proc/self/task/{tid}/status").read(), re.M).group(1)
with MicroVM(VmConfig(mem_mib=64, timeout=60), seccomp=True) as vm:
    vm.expect("$ ")
    modes = sorted(mode(tid) for tid in os.listdir("/proc/self/task"))
    print("main", mode(threading.get_native_id()), "threads", "".join(modes))
    vm.send("exit 4\r")
    print("status", vm.wait(30).status)
"""


@pytest.mark.kvm
def test_python_api_filters_only_the_vms_own_threads(guest_elf):
    """MicroVM(seccomp=True) filters its vCPU and I/O threads; the caller's thread stays as it was."""
    result = subprocess.run([sys.executable, "-c", _API_PROGRAM], capture_output=True, cwd=ROOT, timeout=90)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    main, threads = re.fullmatch(r"main (\d) threads (\d+)", lines[0]).groups()
    assert main == "0" and threads.count("2") >= 2, lines  # a vCPU and the I/O thread at least
    assert lines[1] == "status 4"


_LOG_PROGRAM = r"""
import sys, threading
from vmm import seccomp
from vmm.log import get_logger
seccomp.enable(77)
def child():
    seccomp.install("vcpu")
    log = get_logger("vmm.test")
    log.info("dropped, as unconfigured logging drops it")
    log.warning("guest did %s", "something odd")
    print("logging imported:", "logging" in sys.modules, flush=True)
thread = threading.Thread(target=child)
thread.start()
thread.join()
"""


def test_the_vcpu_thread_logs_without_importing_logging():
    """Importing opens files, which the vCPU thread may not: its log lines go where
    unconfigured logging would send them (warnings on stderr), with no import."""
    result = subprocess.run([sys.executable, "-c", _LOG_PROGRAM], capture_output=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"logging imported: False\n"
    assert result.stderr == b"guest did something odd\n"
