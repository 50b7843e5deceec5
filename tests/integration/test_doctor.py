"""`vmm doctor`: ready here; a missing or unreadable device is reported with its fix."""

import json
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, without_permission_override
from vmm.doctor import UDEV_FIX


def doctor(*args, env=None, as_unprivileged=False):
    environment = {k: v for k, v in os.environ.items() if k != "VMM_KVM_DEVICE"}
    environment.update({"PYTHONPATH": str(ROOT), **(env or {})})
    command = [sys.executable, "-m", "vmm", "doctor", *args]
    if as_unprivileged:
        command = without_permission_override(command)
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=30)


@pytest.mark.kvm
def test_ready_here_and_fast():
    started = time.monotonic()
    result = doctor()
    assert time.monotonic() - started < 5  # generous: no VM is booted
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("ready: vmm can run VMs on this host")
    for name in ("KVM_CAP_IRQCHIP", "KVM_CAP_IMMEDIATE_EXIT", "create vm", "virtualization", "gcc", "linux/kvm.h"):
        assert f"  ok    {name}" in result.stdout, result.stdout


@pytest.mark.kvm
def test_json_when_ready():
    result = doctor("--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ready"] is True
    assert {c["name"] for c in report["checks"]} >= {"device", "open", "api version", "KVM_CAP_IRQFD", "memory"}


def test_missing_device_is_a_problem_with_a_fix(tmp_path):
    missing = str(tmp_path / "kvm")
    result = doctor(env={"VMM_KVM_DEVICE": missing})
    assert result.returncode == 1, result.stdout
    assert "FAIL  device" in result.stdout and f"{missing} does not exist" in result.stdout
    assert "fix: unset VMM_KVM_DEVICE" in result.stdout
    assert "not ready: 1 problem(s)" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(os.getuid() == 0 and shutil.which("setpriv") is None, reason="needs setpriv to drop root's permission override")
def test_unreadable_device_gets_the_udev_rule(tmp_path):
    if os.getuid() == 0:
        # A KVM device node of our own, mode 000, root-owned: what a runner's
        # /dev/kvm is to a user outside its group.
        device = str(tmp_path / "kvm")
        os.mknod(device, stat.S_IFCHR | 0, os.makedev(10, 232))
    else:
        device = "/dev/kvm"
        if not os.path.exists(device) or os.stat(device).st_mode & 0o006 == 0o006:
            pytest.skip("/dev/kvm is missing or open to everyone here")
    result = doctor("--json", env={"VMM_KVM_DEVICE": device}, as_unprivileged=True)
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["ready"] is False
    opened = next(c for c in report["checks"] if c["name"] == "open")
    assert opened["status"] == "fail" and f"no permission to open {device} read/write" in opened["detail"]
    assert opened["fix"] == UDEV_FIX
    assert 'KERNEL=="kvm", GROUP="kvm", MODE="0666"' in UDEV_FIX and "udevadm trigger --name-match=kvm" in UDEV_FIX


def test_the_plugins_one_line_reasons(monkeypatch, tmp_path):
    from vmm.doctor import kvm_unusable_reason

    monkeypatch.setenv("VMM_KVM_DEVICE", str(tmp_path / "none"))
    assert kvm_unusable_reason() == f"{tmp_path / 'none'} does not exist: KVM is not available on this host"
    plain = tmp_path / "file"
    plain.write_text("")
    monkeypatch.setenv("VMM_KVM_DEVICE", str(plain))
    assert kvm_unusable_reason() == f"{plain} is not a character device, so not a KVM device"
