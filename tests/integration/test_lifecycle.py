"""Pause, resume, stop and several vCPUs, on the real guest."""

import time

import pytest

from vmm import MicroVM, VmConfig
from vmm.errors import VmmError

pytestmark = pytest.mark.kvm


def boot(guest_elf, **kwargs) -> MicroVM:
    vm = MicroVM(VmConfig(kernel=str(guest_elf), mem_mib=32, timeout=60, **kwargs)).start()
    vm.expect("$ ", timeout=30)
    return vm


def test_pause_and_resume_an_idle_guest(guest_elf):
    with boot(guest_elf) as vm:
        vm.pause()
        assert vm.paused and [t.state for t in vm.vcpus] == ["paused"]
        vm.send("echo while-paused\r")
        time.sleep(0.3)
        assert b"while-paused\r\n" not in vm.output.split(b"echo while-paused")[-1]  # no answer yet
        vm.resume()
        vm.expect("while-paused\r\n$ ", timeout=10)
        vm.send("exit 4\r")
        assert vm.wait(10).status == 4


def test_pause_a_spinning_guest_then_stop_it(guest_elf):
    with boot(guest_elf) as vm:
        vm.send("spin\r")
        vm.expect("spin\r\n")
        time.sleep(0.1)  # into the loop: no more exits from here on
        started = time.monotonic()
        vm.pause()
        assert time.monotonic() - started < 2
        rip = vm.vcpus[0].vcpu.get_regs().rip
        time.sleep(0.1)
        assert vm.vcpus[0].vcpu.get_regs().rip == rip  # not running
        vm.resume()
        vm.stop()
        assert vm.wait(5).reason == "quit"


def test_a_paused_guest_does_not_run(guest_elf):
    # ioloop exits constantly (port 0x80, absorbed in C): its loop counter
    # lives in registers, which stand still only while the vCPU is paused.
    def registers(vm):
        r = vm.vcpus[0].vcpu.get_regs()
        return (r.rip, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15)

    with boot(guest_elf) as vm:
        vm.send("ioloop 100000000\r")
        vm.expect("ioloop 100000000\r\n")
        time.sleep(0.2)
        vm.pause()
        before = registers(vm)
        time.sleep(0.3)
        assert registers(vm) == before
        vm.resume()
        time.sleep(0.3)
        vm.pause()
        assert registers(vm) != before
        vm.resume()
        vm.stop()


def test_two_vcpus_boot_pause_and_power_off(guest_elf):
    # The bundled guest runs on the boot vCPU; the second waits for INIT/SIPI
    # inside KVM_RUN, which pause and stop must still interrupt.
    with boot(guest_elf, vcpus=2) as vm:
        assert [t.name for t in vm.vcpus] == ["vcpu0", "vcpu1"]
        vm.pause()
        assert [t.state for t in vm.vcpus] == ["paused", "paused"]
        vm.resume()
        vm.send("echo two\r")
        vm.expect("two\r\n$ ")
        vm.send("exit 3\r")
        assert vm.wait(10).status == 3
    assert all(t.state == "finished" for t in vm.vcpus)


def test_two_vcpus_stop_from_the_host(guest_elf):
    vm = boot(guest_elf, vcpus=2)
    started = time.monotonic()
    vm.close()
    assert time.monotonic() - started < 3
    assert vm.outcome.reason == "quit"


def test_fault_reports_name_the_vcpu(guest_elf):
    with boot(guest_elf, vcpus=2) as vm:
        vm.send("fault ud\r")
        outcome = vm.wait(10)
        assert outcome.reason == "crash" and outcome.message.startswith("vcpu0: ")


def test_send_before_start_is_delivered(guest_elf):
    with MicroVM(VmConfig(kernel=str(guest_elf), mem_mib=32, timeout=60)) as vm:
        pass
    vm = MicroVM(VmConfig(kernel=str(guest_elf), mem_mib=32, timeout=60))
    try:
        vm.send("echo early\r")
        vm.start()
        vm.expect("early\r\n", timeout=30)
    finally:
        vm.close()
    with pytest.raises(VmmError, match="closed"):
        vm.send("x")
