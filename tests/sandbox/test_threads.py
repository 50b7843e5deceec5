"""Threads in the sandbox: clone with CLONE_THREAD, futex, thread exit, the
cooperative scheduler (glibc and musl pthreads, Rust std::thread, Go)."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from vmm.sandbox import run

pytestmark = pytest.mark.kvm

COMPILERS = ["gcc", "musl"]


def threads(compile_prog, compiler, *args, **kw):
    return run([compile_prog("threads", compiler), *args], **kw)


def vmm_exec(*args, timeout=90):
    return subprocess.run([sys.executable, "-m", "vmm", "exec", *args], capture_output=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("compiler", COMPILERS)
def test_mutex_protected_counter(compile_prog, compiler):
    result = threads(compile_prog, compiler, "counter", "8", "5000", timeout=60)
    assert (result.returncode, result.stdout) == (0, b"counter 40000\n"), result.stderr


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("mode", ["", "threads"])
def test_a_program_that_moves_its_own_fs_base(compile_prog, compiler, mode):
    """Where the CPU has FSGSBASE the guest enables it (guest/boot.S), so a
    program may set its FS base with wrfsbase itself, as on Linux: ARCH_GET_FS
    and thread switches keep what it set (the same lines as natively)."""
    exe = compile_prog("fsbase", compiler)
    native = subprocess.run([exe, *filter(None, [mode])], capture_output=True, timeout=30)
    result = run([exe, *filter(None, [mode])], timeout=60)
    assert (result.returncode, result.stdout) == (0, native.stdout), result.stderr
    assert result.stdout in (b"get_fs ok, after switches ok\n", b"no fsgsbase\n")


@pytest.mark.parametrize("compiler", COMPILERS)
def test_condition_variable_ping_pong(compile_prog, compiler):
    result = threads(compile_prog, compiler, "pingpong", "50", timeout=60)
    want = "".join(f"ping {i}\npong {i}\n" for i in range(50)) + "done\n"
    assert (result.returncode, result.stdout.decode()) == (0, want), result.stderr


@pytest.mark.parametrize("compiler", COMPILERS)
def test_join_returns_each_threads_value(compile_prog, compiler):
    result = threads(compile_prog, compiler, "join", timeout=60)
    assert result.stdout == b"64 49 36 25 16 9 4 1 \n"


@pytest.mark.parametrize("compiler", COMPILERS)
def test_thread_local_storage_is_per_thread(compile_prog, compiler):
    # each thread sees its own __thread copy (its FS base) and its own tid
    result = threads(compile_prog, compiler, "tls", timeout=60)
    assert result.stdout == b"t1 107 1\nt2 207 1\nt3 307 1\nt4 407 1\nmain 7 1\n"


@pytest.mark.parametrize("compiler", COMPILERS)
def test_exit_in_a_thread_ends_the_process_with_its_status(compile_prog, compiler):
    result = threads(compile_prog, compiler, "exit", timeout=60)
    assert (result.returncode, result.stdout) == (42, b"thread exits\n")


@pytest.mark.parametrize("compiler", COMPILERS)
def test_segfault_in_a_second_thread_is_sigsegv(compile_prog, compiler):
    result = threads(compile_prog, compiler, "segv", timeout=60)
    assert result.returncode == -11
    cli = vmm_exec("--", compile_prog("threads", compiler), "segv")
    assert cli.returncode == 139, cli.stderr
    assert b"fault address 0x1230" in cli.stderr


@pytest.mark.parametrize("compiler", COMPILERS)
def test_deadlock_ends_at_the_timeout_without_spinning(compile_prog, compiler):
    before = os.times()
    cli = vmm_exec("--timeout", "3", "--", compile_prog("threads", compiler), "deadlock")
    after = os.times()
    assert cli.returncode == 124, cli.stderr
    assert cli.stdout == b"deadlocking\n"
    # every thread waits forever: the vCPU idles, it does not spin a host core
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    assert cpu < 2.5, f"{cpu:.2f} s of CPU in a 3 s deadlock"


@pytest.mark.parametrize("compiler", COMPILERS)
def test_clone_past_the_thread_table_fails_with_eagain(compile_prog, compiler):
    result = threads(compile_prog, compiler, "limit", timeout=60)
    # 64 threads in all: the main one and 63 more; the slots come back
    assert result.stdout == b"created 63, then EAGAIN\njoined\n", result.stderr
    assert result.returncode == 0


@pytest.mark.parametrize("compiler", COMPILERS)
def test_ten_thousand_short_threads_do_not_leak(compile_prog, compiler):
    result = threads(compile_prog, compiler, "churn", "10000", timeout=120)
    assert result.stdout == b"churn 10000 sum 49995000\n", result.stderr


@pytest.mark.parametrize("compiler", COMPILERS)
def test_sleeping_threads_sleep_at_the_same_time(compile_prog, compiler):
    # deterministic clock: time moves only with syscalls and sleeps, so the
    # four overlapping 200 ms sleeps must add up to ~200 ms, not 800
    result = threads(compile_prog, compiler, "sleep", deterministic=True, timeout=60)
    slept = int(result.stdout.split()[1])
    assert 200 <= slept < 400, result.stdout


@pytest.mark.parametrize("compiler", COMPILERS)
def test_condvar_timedwait_times_out(compile_prog, compiler):
    result = threads(compile_prog, compiler, "timedwait", timeout=60)
    assert result.stdout == b"timedwait ETIMEDOUT\n"


@pytest.mark.parametrize("compiler", COMPILERS)
def test_pthread_kill_runs_the_handler_in_that_thread(compile_prog, compiler):
    result = threads(compile_prog, compiler, "signal", timeout=60)
    assert result.stdout == b"thread got 10, main got 0\n", result.stderr


@pytest.mark.parametrize("compiler", COMPILERS)
def test_poll_waits_for_another_threads_pipe_write(compile_prog, compiler):
    result = threads(compile_prog, compiler, "pipe", timeout=60)
    assert result.stdout == b"poll 1, read through the pipe\n"


@pytest.mark.parametrize("compiler", COMPILERS)
def test_blocking_pipe_read_waits_for_the_writer_thread(compile_prog, compiler):
    result = threads(compile_prog, compiler, "pipeblock", timeout=60)
    assert result.stdout == b"piece 0\npiece 1\npiece 2\neof after 3 reads\n", result.stderr


@pytest.mark.parametrize("compiler", COMPILERS)
def test_a_thread_spinning_on_syscalls_lets_the_others_run(compile_prog, compiler):
    # the spinner never waits: its time slice ends at a syscall boundary
    result = threads(compile_prog, compiler, "spin", timeout=30)
    assert result.returncode == 0 and result.stdout.startswith(b"flag set after"), result


@pytest.mark.parametrize("compiler", COMPILERS)
def test_reading_stdin_while_another_thread_works(compile_prog, compiler):
    data = os.urandom(300_000)
    result = threads(compile_prog, compiler, "stdin", input=data, timeout=60)
    assert result.stdout == b"stdin 300000 bytes\n"
    assert result.stderr == b"tick 0\ntick 1\ntick 2\n"


def test_trace_names_threads_and_processes_stay_enosys(compile_prog, tmp_path):
    lines = []
    run([compile_prog("threads", "gcc"), "join"], trace=lines.append, timeout=60)
    text = "\n".join(lines)
    assert "[pid 2] clone3(" in text and "= 3" in text
    assert "[pid 3] exit(0) = ?" in text
    assert "<... futex resumed>" in text or "futex(" in text
    # fork stays what it was: ENOSYS and said so
    prog = tmp_path / "fork.c"
    prog.write_text("#include <unistd.h>\n#include <stdio.h>\n"
                    "int main(void){ pid_t p = fork(); printf(\"%d\\n\", (int)p); return 0; }\n")
    exe = tmp_path / "fork"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(exe), str(prog)], check=True)
    lines.clear()
    result = run([str(exe)], trace=lines.append, timeout=60)
    assert result.stdout == b"-1\n"
    assert any("clone(" in line and "ENOSYS (no processes in the sandbox)" in line for line in lines), lines


RUST_SRC = r"""
use std::sync::mpsc;
use std::thread;
fn main() {
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for i in 0..4u64 {
        let tx = tx.clone();
        handles.push(thread::spawn(move || {
            let s: u64 = (1..=1000u64).map(|x| x * (i + 1)).sum();
            tx.send((i, s)).unwrap();
            s
        }));
    }
    drop(tx);
    let mut got: Vec<(u64, u64)> = rx.iter().collect();
    got.sort();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    println!("{:?} total {}", got, total);
}
"""


def test_rust_threads_and_channels(tmp_path):
    rustc = shutil.which("rustc") or (os.path.expanduser("~/.cargo/bin/rustc") if os.path.exists(os.path.expanduser("~/.cargo/bin/rustc")) else None)
    if not rustc:
        pytest.skip("rustc not installed")
    src = tmp_path / "main.rs"
    src.write_text(RUST_SRC)
    exe = tmp_path / "rsthreads"
    built = subprocess.run([rustc, "-O", "-C", "target-feature=+crt-static", "-o", str(exe), str(src)],
                           capture_output=True, cwd=tmp_path)
    if built.returncode:
        pytest.skip(f"rustc cannot build a static program here: {built.stderr.decode()[-300:]}")
    result = run([str(exe)], timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"[(0, 500500), (1, 1001000), (2, 1501500), (3, 2002000)] total 5005000\n"


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("args", [["pingpong", "5"], ["tls"], ["counter", "4", "2000"], ["segv"]], ids=" ".join)
def test_threads_under_qemu_tcg_as_under_kvm(guest_elf, compile_prog, tmp_path, compiler, args):
    # TCG: `syscall` enters ring 0, so thread switches return by iretq and
    # the FS base is written from ring 0: the same output as here
    from tests.sandbox.conftest import boot_bundle
    from tests.sandbox.test_qemu_tcg import run_tcg
    from vmm.sandbox import build_bundle

    bundle = build_bundle(compile_prog("threads", compiler), ["threads", *args], {}, {}, {"clock": 10**18, "seed": 7})
    kvm = boot_bundle(bundle, tmp_path)
    path = tmp_path / "tcg.tar"
    path.write_bytes(bundle)
    tcg = run_tcg(guest_elf, path)
    assert (tcg.outcome, tcg.output, tcg.status) == (kvm.outcome, kvm.output, kvm.status), tcg.serial
    assert kvm.outcome == ("signal 11 addr 0x1230" if args == ["segv"] else "status 0")


ABUSE_RESULTS = """\
clone thread without sighand: EINVAL
clone thread with newns: EINVAL
clone fork: ENOSYS
clone vfork: ENOSYS
clone parent_settid into kernel: EFAULT
clone settls beyond user space: EPERM
clone3 short: EINVAL
clone3 into kernel: EFAULT
futex null: EFAULT
futex misaligned: EINVAL
futex kernel: EFAULT
futex wait other value: EAGAIN
futex wait timeout: ETIMEDOUT
futex wait bad timespec: EINVAL
futex wait timespec in kernel: EFAULT
futex wait_bitset past deadline: ETIMEDOUT
futex wait_bitset zero bitset: EINVAL
futex wake nobody: 0
futex cmp_requeue other value: EAGAIN
futex requeue negative: EINVAL
futex requeue into kernel: EFAULT
futex lock_pi: ENOSYS
futex unknown op: ENOSYS
tgkill no such thread: ESRCH
tgkill other process: ESRCH
tkill bad signal: EINVAL
tgkill signal 0 to self: 0
epoll_ctl bad fd: EBADF
epoll_ctl on itself: EINVAL
epoll_ctl event in kernel: EFAULT
epoll_ctl del missing: ENOENT
epoll_wait zero events: EINVAL
epoll_wait events in kernel: EFAULT
epoll_wait not epoll: EINVAL
set_tid_address kernel: 1
"""


@pytest.mark.parametrize("compiler", COMPILERS)
def test_bad_thread_futex_and_epoll_arguments_get_errors(compile_prog, compiler):
    # pointers into the guest kernel, misaligned or absent words, bad flags:
    # each call fails as Linux would fail it and the program carries on
    # (not run natively: on the host these clones really fork)
    result = run([compile_prog("threadabuse", compiler)], timeout=60)
    assert (result.returncode, result.stdout.decode()) == (0, ABUSE_RESULTS), result.stderr


@pytest.mark.parametrize("compiler", COMPILERS)
def test_thread_cloned_onto_a_missing_stack_is_sigsegv(compile_prog, compiler):
    result = run([compile_prog("threadabuse", compiler), "badstack"], timeout=60)
    assert (result.returncode, result.stdout) == (-11, b"cloning\n")
