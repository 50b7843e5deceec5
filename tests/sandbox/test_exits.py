"""What a sandbox costs in VM exits (counted, not timed)."""

import pytest

pytestmark = pytest.mark.kvm


def test_queue_setup_writes_do_not_exit(compile_prog):
    """Coalesced MMIO: the console's queue set-up (about ten register writes a
    queue, ten queues) stays in KVM; what exits is the reads and the status
    handshake (119 MMIO exits without it)."""
    from vmm.sandbox import run

    result = run([str(compile_prog("showargs")), "x"])
    assert result.returncode == 0 and b"x" in result.stdout
    assert 0 < result.exits.get("mmio", 0) < 60, result.exits
