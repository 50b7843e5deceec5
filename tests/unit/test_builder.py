"""Assembly pieces that need no VM: slots, validation, capability checks, vCPU exits."""

import pytest

from vmm import builder
from vmm.config import VmConfig
from vmm.errors import ConfigError, KvmUnavailableError
from vmm.outcome import StopReason
from vmm.x86 import layout


def test_slots_are_distinct_and_run_out_with_a_clear_error():
    slots = layout.DeviceSlots()
    taken = [slots.allocate("disk") for _ in range(slots.capacity)]
    assert len({addr for addr, _ in taken}) == len(taken)
    assert len({irq for _, irq in taken}) == len(taken)
    assert taken[0] == (layout.VIRTIO_MMIO_BASE, 5)
    assert all(irq not in (0, 1, 2, 3, 4, 8, 12) and irq < 24 for _, irq in taken)
    assert all(layout.MMIO_HOLE_START <= addr < layout.MMIO_HOLE_END for addr, _ in taken)
    with pytest.raises(ConfigError, match=f"at most {slots.capacity} virtio devices"):
        slots.allocate("VirtioBlock")


@pytest.mark.parametrize(
    "config, message",
    [
        (VmConfig(mem_mib=1), "too small"),
        (VmConfig(mem_mib=1 << 40), "more than this host has"),
        (VmConfig(vcpus=0), "vCPU count 0"),
        (VmConfig(vcpus=65), "vCPU count 65"),
        (VmConfig(timeout=0), "positive"),
    ],
)
def test_validate_refuses_impossible_configs(config, message):
    with pytest.raises(ConfigError, match=message):
        builder.validate(config)


def test_too_many_disks_are_refused_before_kvm(tmp_path, guest_elf, monkeypatch):
    image = tmp_path / "d.img"
    image.write_bytes(bytes(4096))
    from vmm import DiskConfig, MicroVM

    disks = tuple(DiskConfig(str(image), read_only=True) for _ in range(layout.DeviceSlots().capacity + 1))
    with pytest.raises(ConfigError, match="too many devices"):
        MicroVM(VmConfig(kernel=str(guest_elf), mem_mib=16, devices=disks))


@pytest.mark.kvm
def test_a_missing_capability_is_named(monkeypatch):
    from vmm.kvm import Kvm
    from vmm.kvm._kvm_cffi import lib

    real = Kvm.check_extension
    monkeypatch.setattr(Kvm, "check_extension", lambda self, cap: 0 if cap == lib.KVM_CAP_IRQFD else real(self, cap))
    with pytest.raises(KvmUnavailableError, match="KVM_CAP_IRQFD"):
        builder.open_kvm()


def test_missing_kvm_device(monkeypatch, tmp_path):
    monkeypatch.setenv("VMM_KVM_DEVICE", str(tmp_path / "nope"))
    with pytest.raises(KvmUnavailableError, match="does not exist"):
        builder.open_kvm()


class _FakeVcpu:
    index = 3
    run_struct = None

    def get_regs(self):
        from vmm.errors import KvmError

        raise KvmError("KVM_GET_REGS", 9)


@pytest.mark.parametrize(
    "kind, status, reason",
    [(1, 0, StopReason.POWEROFF), (2, 0, StopReason.RESET), (3, 240, StopReason.CRASH), (99, 240, StopReason.CRASH)],
)
def test_system_events_are_decoded(kind, status, reason):
    from vmm.vcpu import VcpuThread

    outcomes = []
    thread = VcpuThread(_FakeVcpu(), None, None, outcomes.append)
    thread._system_event(kind)
    assert [(o.status, o.reason) for o in outcomes] == [(status, reason)]
    assert outcomes[0].message.startswith("vcpu3: ")
    assert outcomes[0].reason == reason.value  # still compares as a plain string
