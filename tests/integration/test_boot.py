"""Boot the real bundled guest and talk to its shell."""

import re

import pytest

from vmm import MicroVM, VmConfig
from vmm.errors import EXIT_GUEST_CRASHED, EXIT_TIMEOUT

pytestmark = pytest.mark.kvm
PROMPT = "$ "


@pytest.fixture
def vm(guest_elf):
    with MicroVM(VmConfig(kernel=str(guest_elf), mem_mib=64)) as machine:
        machine.expect(PROMPT, timeout=20)
        yield machine


def run_command(vm, line: str, timeout: float = 10) -> str:
    vm.send(line + "\r")
    start = vm.expect(line + "\r\n", timeout).end()  # the shell's echo of the line
    prompt = vm.expect("$ ", timeout)  # literal: searched incrementally, unlike a lazy regex
    return vm.output[start : prompt.start()].decode()


def test_prompt_and_echo_round_trip(vm):
    assert run_command(vm, "echo hello   world") == "hello world\r\n"


def test_exit_status_is_the_guests(vm):
    vm.send("exit 3\r")
    outcome = vm.wait(10)
    assert (outcome.status, outcome.reason) == (3, "poweroff")


def test_exit_status_out_of_range_is_refused_by_the_shell(vm):
    assert "0-127" in run_command(vm, "exit 300")
    assert vm.running


def test_cmdline_reaches_the_guest(guest_elf):
    config = VmConfig(kernel=str(guest_elf), mem_mib=64, cmdline="console=ttyS0 hello=world virtio_mmio.device=4K@0xd0000000:5")
    with MicroVM(config) as vm:
        vm.expect(PROMPT, timeout=20)
        out = run_command(vm, "cmdline")
    assert "console=ttyS0 hello=world virtio_mmio.device=4K@0xd0000000:5" in out
    assert re.search(r"virtio-mmio 0x0*d0000000 size 0x0*1000 irq 5", out), out


def test_memory_map_matches_the_vm_size(vm):
    out = run_command(vm, "mem")
    ram = [tuple(int(x, 16) for x in m) for m in re.findall(r"0x([0-9a-f]+)-0x([0-9a-f]+) type 1", out)]
    assert ram, out
    assert max(end for _, end in ram) in (64 << 20, (64 << 20) - 1)


def test_ticks_advance(vm):
    first = int(re.search(r"(\d+) cycles", run_command(vm, "ticks")).group(1))
    second = int(re.search(r"(\d+) cycles", run_command(vm, "ticks")).group(1))
    assert second > first > 0


@pytest.mark.parametrize("kind, vector", [("pf", 14), ("ud", 6), ("gp", 13), ("de", 0)])
def test_fault_is_reported_with_vector_and_rip(vm, kind, vector):
    vm.send(f"fault {kind}\r")
    outcome = vm.wait(10)
    assert outcome.status == EXIT_GUEST_CRASHED and outcome.reason == "crash"
    assert f"vector {vector} " in outcome.message
    rip = int(re.search(r"rip 0x([0-9a-f]+)", outcome.message).group(1), 16)
    assert 0x100000 <= rip < 0x200000  # inside the guest kernel image
    assert re.search(rf"fault: vector {vector}\b", vm.output.decode(errors="replace"))


def test_triple_fault_stops_the_vm(vm):
    vm.send("triplefault\r")
    outcome = vm.wait(10)
    assert outcome.status == EXIT_GUEST_CRASHED
    assert "triple fault" in outcome.message and "rip 0x" in outcome.message


def test_timeout_stops_a_spinning_guest(guest_elf):
    with MicroVM(VmConfig(kernel=str(guest_elf), mem_mib=64, timeout=3)) as vm:
        vm.expect(PROMPT, timeout=20)
        vm.send("spin\r")
        outcome = vm.wait(15)
    assert outcome.status == EXIT_TIMEOUT and outcome.reason == "timeout"


def test_host_stop_of_a_spinning_guest(vm):
    vm.send("spin\r")
    vm.expect("spin\r\n")
    assert not vm.is_finished(0.5)
    vm.stop()
    assert vm.wait(5).reason == "quit"


def test_long_input_arrives_whole_and_in_order(vm):
    words = " ".join(f"word-{i:02d}-" + "x" * 10 for i in range(12))  # far longer than the UART FIFO
    assert run_command(vm, f"echo {words}") == words + "\r\n"


def test_exits_are_counted(vm):
    run_command(vm, "ioloop 1000")
    summary = vm.exit_summary()
    assert summary["io"] >= 1000


def test_capture_is_bounded_but_expect_keeps_working(guest_elf):
    with MicroVM(VmConfig(kernel=str(guest_elf), mem_mib=64), capture_limit=4096) as vm:
        vm.expect(PROMPT, timeout=20)
        vm.send("serialbench 20000\r")
        vm.expect("$ ", timeout=30)
        assert len(vm.output) <= 4096
        assert run_command(vm, "echo still here") == "still here\r\n"
