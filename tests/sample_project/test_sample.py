"""What a project using vmm in its test suite writes: a marker and a fixture."""

import os

import pytest

from vmm import VmConfig


@pytest.mark.vm
def test_guest_answers_and_its_exit_status_comes_back(microvm):
    vm = microvm(VmConfig(mem_mib=32, timeout=30))
    vm.expect("$ ", timeout=20)
    vm.send("echo sample says hi\r")
    vm.expect("sample says hi\r\n")
    vm.send("exit 9\r")
    assert vm.wait(10).status == 9


@pytest.mark.kvm  # vmm's older marker name still works
def test_two_vms_in_one_test(microvm):
    first, second = microvm(mem_mib=32), microvm(mem_mib=32)
    for vm in (first, second):
        vm.expect("$ ", timeout=20)


def test_without_a_vm():
    assert 1 + 1 == 2


@pytest.mark.vm
@pytest.mark.skipif(not os.environ.get("SAMPLE_SHOW_FAILURE"), reason="only when asked to show a failure")
def test_a_failure_shows_the_serial_output(microvm):
    vm = microvm(mem_mib=32)
    vm.expect("$ ", timeout=20)
    vm.send("echo marker-in-serial-output\r")
    vm.expect("marker-in-serial-output\r\n")
    assert False, "failing on purpose"
