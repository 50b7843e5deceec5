"""Faults end the program with the signal Linux would send, or run its handler."""

import pytest

pytestmark = pytest.mark.kvm

SIGILL, SIGTRAP, SIGABRT, SIGFPE, SIGSEGV = 4, 5, 6, 8, 11


@pytest.mark.parametrize("compiler", ["gcc", "musl"])
@pytest.mark.parametrize(
    "how, signal, addr",
    [
        ("null", SIGSEGV, "0x0"),
        ("segv", SIGSEGV, "0x1230"),
        ("ud", SIGILL, None),
        ("de", SIGFPE, None),
        ("hlt", SIGSEGV, "0x0"),
        ("cli", SIGSEGV, "0x0"),
        ("abort", SIGABRT, "0x0"),
        ("int3", SIGTRAP, None),
    ],
)
def test_fault_ends_with_signal(compile_prog, run_prog, compiler, how, signal, addr):
    run = run_prog(compile_prog("faults", compiler), ["faults", how])
    assert run.outcome.startswith(f"signal {signal} addr 0x"), run.serial
    if addr is not None:
        assert run.outcome == f"signal {signal} addr {addr}"
    else:  # the faulting instruction: inside the program's text
        assert 0x400000 <= int(run.outcome.split()[-1], 16) < 0x800000
    assert run.status == 125


@pytest.mark.parametrize("compiler", ["gcc", "musl"])
def test_segv_handler_runs_with_siginfo(compile_prog, run_prog, compiler):
    run = run_prog(compile_prog("faults", compiler), ["faults", "handler"])
    assert run.text == "handler: signal 11 addr 0x2000\n"
    assert (run.outcome, run.status) == ("status 42", 42)


@pytest.mark.parametrize("compiler", ["gcc", "musl"])
def test_raise_runs_handler_and_returns(compile_prog, run_prog, compiler):
    run = run_prog(compile_prog("faults", compiler), ["faults", "raise"])
    assert run.text == "after raise: got 10\n"
    assert run.outcome == "status 7"
