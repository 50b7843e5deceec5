"""A misbehaving program gets errors or a signal; the guest reports the truth."""

import pytest

pytestmark = pytest.mark.kvm


def test_bad_pointers_get_efault(compile_prog, run_prog):
    run = run_prog(compile_prog("hostile"), ["hostile", "efault"])
    assert run.text == "-1 14 -1 14 -1 14\n"
    assert run.outcome == "status 0"


@pytest.mark.parametrize("compiler", ["gcc", "musl"])
def test_memory_exhaustion_is_enomem(compile_prog, run_prog, compiler):
    run = run_prog(compile_prog("hostile", compiler), ["hostile", "oom"])
    assert run.text == "oom after many MiB, huge mmap ENOMEM\n"
    assert run.outcome == "status 0"


def test_stray_write_into_kernel_is_sigsegv(compile_prog, run_prog):
    run = run_prog(compile_prog("hostile"), ["hostile", "scribble"])
    assert run.outcome == "signal 11 addr 0x101000"
    assert run.status == 125


def test_map_fixed_cannot_cover_the_kernel(compile_prog, run_prog):
    run = run_prog(compile_prog("hostile"), ["hostile", "fixed"])
    assert run.text.startswith("fixed over kernel: Cannot allocate memory\n")
    assert run.outcome == "status 0"


@pytest.mark.parametrize("compiler", ["gcc", "musl"])
def test_stack_overflow_hits_the_guard(compile_prog, run_prog, compiler):
    run = run_prog(compile_prog("hostile", compiler), ["hostile", "recurse"])
    assert run.outcome.startswith("signal 11 addr 0x"), run.serial
    assert run.status == 125


def test_create_unlink_pipe_open_loops_run_in_bounded_memory(compile_prog, run_prog):
    run = run_prog(compile_prog("churn"), ["churn"], files={"/etc/data": b"d\n"}, timeout=60)
    assert run.text == "churn ok\n", run.serial
    assert run.outcome == "status 0"


@pytest.mark.parametrize("compiler", ["gcc", "musl"])
def test_stack_overflow_handler_on_sigaltstack(compile_prog, run_prog, compiler):
    run = run_prog(compile_prog("hostile", compiler), ["hostile", "altstack"])
    assert run.text == "caught overflow on the alternate stack\n", run.serial
    assert run.outcome == "status 11"
