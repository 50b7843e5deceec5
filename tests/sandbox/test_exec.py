"""`vmm exec` and vmm.sandbox.run: streams over virtio-console, statuses, files, limits."""

import hashlib
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import HEAVY_MODULES, ROOT, vmm_importing
from vmm.sandbox import ProgramError

pytestmark = pytest.mark.kvm


def vmm_exec(*args, stdin=b"", timeout=60):
    return subprocess.run([sys.executable, "-m", "vmm", "exec", *args], input=stdin, capture_output=True, timeout=timeout, cwd=ROOT)


def test_stdin_to_stdout_byte_for_byte(compile_prog, sandbox):
    data = os.urandom(10 << 20) + bytes(4096) + b"\0tail"
    result = sandbox.run([compile_prog("copy")], input=data, timeout=120)
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(result.stdout).hexdigest() == hashlib.sha256(data).hexdigest()
    assert result.stderr == f"copied {len(data)}\n".encode()


def test_the_last_output_and_status_arrive_with_an_io_thread_that_never_serves(compile_prog, sandbox, monkeypatch):
    """The guest sends its last output and its exit line without waiting for them
    (the "drained" bundle option): vmm serves every queue notified before the
    power-off. Here the I/O thread never serves a notification (a host too busy
    to schedule it): the vCPU thread serves them all, while the guest idles and
    at its power-off, and nothing is lost."""
    from vmm import virtio_slots

    def never_serving(*args):
        return lambda: time.sleep(0.01)  # the notification stays in its eventfd

    monkeypatch.setattr(virtio_slots, "_notifier", never_serving)
    data = os.urandom(1 << 20)
    result = sandbox.run([compile_prog("copy")], input=data, timeout=60)
    assert (result.returncode, result.stderr) == (0, f"copied {len(data)}\n".encode())
    assert result.stdout == data


def test_empty_stdin_is_end_of_file(compile_prog, sandbox):
    result = sandbox.run([compile_prog("copy")], input=b"")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"copied 0\n")


@pytest.mark.parametrize("code", [0, 1, 3, 127, 128, 200, 255])
def test_exit_statuses(compile_prog, code, sandbox):
    assert sandbox.run([compile_prog("exitcode"), str(code)]).returncode == code
    assert sandbox.exec("--", compile_prog("exitcode"), str(code)).returncode == code


def test_a_signal_is_minus_n_in_the_api_and_128_plus_n_on_the_command_line(compile_prog, sandbox):
    result = sandbox.run([compile_prog("faults"), "segv"])
    assert (result.returncode, result.signal) == (-11, 11)
    cli = sandbox.exec("--", compile_prog("faults"), "segv")
    assert cli.returncode == 139
    assert b"killed by signal 11" in cli.stderr


def _processes_running(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(name))
        except (OSError, ValueError):
            continue
    return found


def test_the_command_ends_at_once_and_its_teardown_leaves_nothing(compile_prog, tmp_path):
    """`vmm exec` hands its VM's kernel teardown to a child that outlives it
    (vmm/builder.py hand_over_teardown; the seccomp filter allows it): the caller
    gets the status and the end of the output pipes as the command ends, and
    the child, which shares the command's memory (and so its command line), goes soon after."""
    program = str(tmp_path / "teardown-marker-prog")
    os.link(compile_prog("exitcode"), program)
    proc = subprocess.Popen([sys.executable, "-m", "vmm", "exec", "--", program, "7"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    out, err = proc.communicate(timeout=60)  # both pipes at their end: no child kept them open
    assert (proc.returncode, out, err) == (7, b"", b"")
    deadline = time.monotonic() + 20
    while _processes_running(program) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_running(program) == []


def test_the_command_starts_without_heavy_modules(compile_prog):
    for _ in range(2):  # the first may build the kept snapshot (vmm/sandbox/image_cache.py)
        result, imported = vmm_importing("exec", "--mem", "64", "--", compile_prog("exitcode"), "3")
        assert result.returncode == 3, result.stderr[-2000:]
    assert "vmm.sandbox.runner" in imported  # the trace is there
    assert imported & HEAVY_MODULES == set()


def test_cannot_run_and_not_found(tmp_path, sandbox):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    for program, status, words in (("/bin/ls", 126, b"dynamically linked"), (str(script), 126, b"not an ELF"),
                                   ("no-such-program-here", 127, b"not found")):
        cli = sandbox.exec("--", program)
        assert cli.returncode == status, cli.stderr
        assert words in cli.stderr and cli.stderr.count(b"\n") == 1
    with pytest.raises(ProgramError):
        sandbox.run(["/bin/ls"])


def test_timeout(tmp_path, compile_prog, sandbox):
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        sandbox.run([compile_prog("flood")], timeout=1, max_output=1 << 20)
    assert time.monotonic() - started < 10
    assert caught.value.output.startswith(b"line 0 of a flood")  # the output so far
    assert sandbox.exec("--timeout", "1", "--", compile_prog("flood"), timeout=30).returncode == 124


def test_output_beyond_the_limit_is_cut_with_a_note(compile_prog, sandbox):
    result = sandbox.run([compile_prog("flood"), "100000"], max_output=1000)
    assert result.returncode == 0 and len(result.stdout) == 1000
    assert any("stdout cut at 1000 bytes" in note for note in result.notes)
    cli = sandbox.exec("--max-output", "100", "--", compile_prog("flood"), "1000")
    assert len(cli.stdout) == 100 and b"stdout cut at 100 bytes" in cli.stderr


def test_files_in_and_out(tmp_path, compile_prog, sandbox):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("alpha\n")
    out = tmp_path / "out"
    busybox = "/bin/busybox"
    result = sandbox.run([busybox, "cat", "/data/a.txt", "/note"], files={"/data": str(tmp_path / "in"), "/note": b"beta\n"})
    assert result.stdout == b"alpha\nbeta\n"
    result = sandbox.run([compile_prog("outfiles")], out_dir=str(out))
    assert result.returncode == 0 and sorted(result.out_files) == ["logs", "logs/run.log", "result.txt"]
    assert (out / "result.txt").read_text() == "answer 42\n"
    cli = sandbox.exec("--in", f"{tmp_path / 'in'}:/x", "--", busybox, "cat", "/x/a.txt")
    assert cli.stdout == b"alpha\n"


def test_out_entries_that_try_to_escape_stay_inside(tmp_path, compile_prog, sandbox):
    out = tmp_path / "out"
    result = sandbox.run([compile_prog("outescape")], out_dir=str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["big.bin", "ok.txt", "sub"]
    assert os.listdir(out / "sub") == []
    assert all(not os.path.islink(os.path.join(top, n)) for top, dirs, names in os.walk(out) for n in dirs + names)
    assert sum("not a regular file" in note for note in result.notes) == 3
    assert not (tmp_path / "escape").exists()
    small = sandbox.run([compile_prog("outescape")], out_dir=str(tmp_path / "small"), max_out_bytes=1 << 20)
    assert "big.bin" not in os.listdir(tmp_path / "small")
    assert any("big.bin" in note and "output limit" in note for note in small.notes)


def test_deterministic_runs_are_identical(compile_prog, sandbox):
    first = sandbox.run([compile_prog("timerand")], deterministic=True, seed=42)
    second = sandbox.run([compile_prog("timerand")], deterministic=True, seed=42)
    other = sandbox.run([compile_prog("timerand")], deterministic=True, seed=43)
    assert first.stdout == second.stdout and first.stdout != other.stdout
    cli = [sandbox.exec("--seed", "7", "--", compile_prog("timerand")).stdout for _ in range(2)]
    assert cli[0] == cli[1]


def test_rootfs_directory(tmp_path, sandbox):
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(open("/bin/busybox", "rb").read())
    (root / "etc").mkdir()
    (root / "etc" / "motd").write_text("from the rootfs\n")
    cli = sandbox.exec("--rootfs", str(root), "--", "busybox", "cat", "/etc/motd")
    assert (cli.returncode, cli.stdout) == (0, b"from the rootfs\n")


def test_trace_goes_to_stderr(compile_prog, sandbox):
    cli = sandbox.exec("--trace", "--", compile_prog("exitcode"), "4")
    assert cli.returncode == 4
    assert b"exit_group(4)" in cli.stderr


def test_many_sandboxes_at_once_in_threads(compile_prog, sandbox):
    program = compile_prog("exitcode")
    results = [None] * 8

    def one(i):
        results[i] = sandbox.run([program, str(i)]).returncode

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == list(range(8))


@pytest.mark.parametrize("how", ["kernel", "ports"])
def test_a_program_attacking_its_own_vm_gets_a_defined_end(tmp_path, compile_prog, how, sandbox):
    # The program shares ring 3 with the guest kernel: it can wreck it, and
    # the VM boundary must hold. Whatever it breaks, the run ends within its
    # timeout with a defined status, the host is untouched, and the next
    # sandbox runs normally.
    started = time.monotonic()
    cli = sandbox.exec("--timeout", "20", "--out-dir", str(tmp_path / "out"), "--", compile_prog("attackvm"), how, timeout=90)
    assert time.monotonic() - started < 60
    assert cli.returncode in (0, 124, 125), cli.stderr
    assert cli.stderr.count(b"Traceback") == 0
    assert cli.stdout.startswith(b"attacking: " + how.encode())
    assert os.listdir(tmp_path) in ([], ["out"])
    assert sandbox.run([compile_prog("exitcode"), "9"]).returncode == 9


def test_the_readme_sandbox_example_runs_as_written(capsys):
    text = (ROOT / "README.md").read_text()
    section = text.split("From Python, `vmm.sandbox.run`", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out == "0 b'apple\\npear\\n'\n"


def test_the_readme_exec_example(tmp_path):
    result = subprocess.run(["sh", "-c", f"echo 'pear apple' | {sys.executable} -m vmm exec -- busybox tr ' ' '\\n' | sort"],
                            capture_output=True, cwd=ROOT, timeout=60)
    assert result.stdout == b"apple\npear\n", result.stderr
