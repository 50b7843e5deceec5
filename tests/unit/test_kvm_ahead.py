"""vmm.kvm.api.start_ahead: /dev/kvm opened, its supported CPUID asked and a VM
created on a thread of their own; the next Kvm() takes them, and whatever the
thread could not do is done (and reported) as without it."""

from __future__ import annotations

import os

import pytest

from vmm.errors import KvmUnavailableError
from vmm.kvm import api
from vmm.x86.cpu import guest_cpuid

pytestmark = pytest.mark.kvm


def open_fds() -> set[int]:
    listed = [int(fd) for fd in os.listdir("/proc/self/fd")]
    return {fd for fd in listed if _is_open(fd)}  # (not the listing's own, closed by now)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_the_next_kvm_takes_the_device_cpuid_and_vm_made_ahead(monkeypatch):
    monkeypatch.setattr(api, "_HOST_FACTS", {})  # so the CPUID can only come from the thread
    before = open_fds()
    api.start_ahead("/dev/kvm")
    kvm = api.Kvm("/dev/kvm")
    try:
        made = open_fds() - before
        assert kvm.fd in made and len(made) == 2  # the system fd and the VM's, nothing else
        # What a guest sees from it (the host's APIC ID in it depends on the CPU that asked).
        assert guest_cpuid(kvm.supported_cpuid(), 0, 1, 2_000_000) == guest_cpuid(kvm._query_supported_cpuid(), 0, 1, 2_000_000)
        vm = kvm.create_vm()
        assert vm.fd in made
        vm.create_irqchip()  # a working VM
        second = kvm.create_vm()  # made here, as without the thread
        assert second.fd not in made
        os.close(second.fd)
        os.close(vm.fd)
    finally:
        kvm.close()
    assert open_fds() == before


def test_closing_kvm_closes_an_unused_vm_made_ahead():
    before = open_fds()
    api.start_ahead("/dev/kvm")
    api.Kvm("/dev/kvm").close()
    assert open_fds() == before


def test_a_device_that_cannot_be_opened_is_reported_as_without_it(tmp_path):
    missing = str(tmp_path / "no-kvm")
    api.start_ahead(missing)
    with pytest.raises(KvmUnavailableError, match="does not exist"):
        api.Kvm(missing)
    assert api._take_ahead(missing) is None  # taken once


def test_only_the_device_it_opened_is_taken_and_only_once(tmp_path):
    before = open_fds()
    api.start_ahead("/dev/kvm")
    api.start_ahead(str(tmp_path / "other"))  # one at a time: ignored
    other = api._take_ahead(str(tmp_path / "other"))
    assert other is None
    taken = api._take_ahead("/dev/kvm")
    assert taken is not None and taken[0] >= 0 and taken[1] >= 0 and taken[2]
    assert api._take_ahead("/dev/kvm") is None
    os.close(taken[1])
    os.close(taken[0])
    assert open_fds() == before
