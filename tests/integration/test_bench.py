"""A smoke run of `vmm bench`: every case, every contender, tiny sizes.

It checks that each contender produced a number for each case, not what the
numbers are: targets live in the benchmark's printed ratios, not in tests.
"""

import json
import math

import pytest

pytestmark = pytest.mark.kvm

CONTENDERS = {"vmm", "qemu", "floor"}
EXEC_CONTENDERS = {"native", "bwrap", "qemu", "vmm exec", "vmm.sandbox.run"}


def test_every_contender_produces_every_figure(run_vmm, guest_elf, tmp_path):
    out = tmp_path / "bench.json"
    result = run_vmm("bench", "--quick", "--json", str(out), timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    data = json.loads(out.read_text())
    assert data["skipped"] == {}, data["skipped"]
    seen = {}
    exec_seen = {}
    for row in data["results"]:
        if row["case"].startswith("exec-"):  # vmm bench exec: its own contenders
            assert math.isfinite(row["median"]) and row["median"] >= 0, row
            exec_seen.setdefault((row["case"], row["metric"]), set()).add(row["contender"])
            continue
        assert math.isfinite(row["median"]) and row["median"] > 0, row
        seen.setdefault((row["case"], row["metric"]), set()).add(row["contender"])
    cases = {case for case, _ in seen}
    assert cases == {"boot", "exits", "serial", "blk", "blk-busy", "memory", "density", "snapshot"}
    for (case, metric), contenders in seen.items():
        disk_case = case in ("blk", "blk-busy")
        expected = (CONTENDERS - {"floor"}) | {"vmm no-ioeventfd"} if disk_case else CONTENDERS
        if case == "snapshot":  # QEMU has an equivalent for some figures only
            expected = {"vmm"}
        if "in-process" in metric or metric.startswith("CPython alone"):
            expected = {"vmm"}
        if metric.startswith("VM exits"):  # only vmm and the floor can count them
            expected = {"vmm", "vmm no-ioeventfd"}
        assert expected <= contenders, (case, metric, contenders)
    assert {case for case, _ in exec_seen} == {f"exec-{c}" for c in ("hello", "cpu", "syscall", "stdout", "read", "density")}
    for (case, metric), contenders in exec_seen.items():
        expected = {"vmm run"} if metric.startswith("(yardstick)") else EXEC_CONTENDERS
        if metric.startswith("(warm)"):  # the warm sandbox's snapshot and restores
            expected = {"vmm.sandbox.run"}
        elif case in ("exec-hello", "exec-read") and not metric.startswith("(yardstick)"):
            expected = expected | {"sandbox.run cold"}
        assert expected <= contenders, (case, metric, contenders)
    table = result.stdout.decode()
    assert "ratio" in table and "exits" in table
