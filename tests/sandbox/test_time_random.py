"""Clocks and randomness, real and deterministic."""

import re
import time

import pytest

pytestmark = pytest.mark.kvm


def test_real_time_and_random(compile_prog, run_prog):
    before = time.time()
    run = run_prog(compile_prog("timerand"), ["timerand"])
    assert run.outcome == "status 0", run.serial
    assert "slept_ok 1\n" in run.text
    realtime = float(re.search(r"realtime (\d+\.\d+)", run.text).group(1))
    assert before - 5 < realtime < time.time() + 5
    assert re.search(r"getrandom 16 [0-9a-f]{32}\n", run.text)
    assert "malloc ok" in run.text


@pytest.mark.parametrize("compiler", ["gcc", "musl"])
def test_seed_and_clock_give_identical_runs(compile_prog, run_prog, compiler):
    exe = compile_prog("timerand", compiler)
    opts = {"seed": 1234, "clock": 1_700_000_000_000_000_000}
    first = run_prog(exe, ["timerand"], options=opts)
    second = run_prog(exe, ["timerand"], options=opts)
    assert first.outcome == "status 0", first.serial
    assert first.output == second.output
    assert "realtime 1700000000.0" in first.text
    other = run_prog(exe, ["timerand"], options={**opts, "seed": 99})
    rnd = lambda r: re.search(r"getrandom 16 ([0-9a-f]+)", r.text).group(1)
    assert rnd(other) != rnd(first)


def test_syscall_loop(compile_prog, run_prog):
    # the syscall round-trip benchmark program, shortened: every call answered
    run = run_prog(compile_prog("getppid_loop"), ["getppid_loop", "100000"])
    assert run.outcome == "status 0", run.serial
    assert "(sum 100000)" in run.text  # getppid() is 1
