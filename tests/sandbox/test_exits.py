"""What a sandbox costs in VM exits (counted, not timed)."""

import pytest

pytestmark = pytest.mark.kvm


def test_queue_setup_writes_do_not_exit(compile_prog):
    """Coalesced MMIO: the console's queue set-up (about ten register writes a
    queue, ten queues) stays in KVM; what exits is the reads and the status
    handshake (119 MMIO exits without it)."""
    from vmm.sandbox import run

    result = run([str(compile_prog("showargs")), "x"], warm=False)
    assert result.returncode == 0 and b"x" in result.stdout
    assert 0 < result.exits.get("mmio", 0) < 60, result.exits


def test_a_warm_run_skips_the_boot_and_its_exits(compile_prog):
    """A clone starts where the console set-up ended: none of its exits again."""
    from vmm.sandbox import run

    program = str(compile_prog("showargs"))
    run([program, "x"])  # builds this process's warm snapshot
    warm, cold = run([program, "x"]), run([program, "x"], warm=False)
    assert warm.returncode == cold.returncode == 0 and b"argv[1]=x" in warm.stdout
    assert sum(warm.exits.values()) < sum(cold.exits.values()), (warm.exits, cold.exits)
    assert warm.exits.get("mmio", 0) < 10, warm.exits
