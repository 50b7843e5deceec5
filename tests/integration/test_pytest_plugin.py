"""vmm.pytest_plugin, as another project sees it: tests/sample_project run by
pytest in a subprocess, with nothing from this suite but the plugin."""

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib

import pytest

from tests.conftest import ROOT, without_permission_override

SAMPLE = ROOT / "tests" / "sample_project"
VM_TESTS = 2  # the sample's VM tests that run by default (the failing one is opt-in)


def test_entry_point_is_declared_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # named as the module, so `-p vmm.pytest_plugin` or pytest_plugins find it registered
    assert project["entry-points"]["pytest11"] == {"vmm.pytest_plugin": "vmm.pytest_plugin"}


@pytest.fixture
def sample(guest_elf):
    """A copy of the sample project, in a directory of its own."""
    with tempfile.TemporaryDirectory(prefix="vmm-sample-") as where:
        os.chmod(where, 0o755)
        project = os.path.join(where, "project")
        shutil.copytree(SAMPLE, project)
        yield project


def run_sample(project, *args, env=None, as_unprivileged=False, plugin_option=True):
    environment = {k: v for k, v in os.environ.items() if k not in ("VMM_KVM_DEVICE", "VMM_REQUIRE_KVM", "PYTEST_ADDOPTS")}
    environment.update({"PYTHONPATH": str(ROOT), "VMM_GUEST_ELF": str(ROOT / "guest" / "build" / "guest.elf"), **(env or {})})
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args]
    if plugin_option:  # the entry point is not installed in the shared venv
        command[3:3] = ["-p", "vmm.pytest_plugin"]
    if as_unprivileged:
        command = without_permission_override(command)
    result = subprocess.run(command, cwd=project, env=environment, capture_output=True, text=True, timeout=120)
    return result, result.stdout + result.stderr


@pytest.mark.kvm
def test_sample_projects_vm_tests_pass_here(sample):
    result, out = run_sample(sample)
    assert result.returncode == 0, out
    assert f"{VM_TESTS + 1} passed, 1 skipped" in out, out


def test_missing_device_skips_with_the_reason(sample, tmp_path):
    missing = str(tmp_path / "no-such-kvm")
    result, out = run_sample(sample, env={"VMM_KVM_DEVICE": missing})
    assert result.returncode == 0, out
    assert f"1 passed, {VM_TESTS + 1} skipped" in out, out
    assert f"SKIPPED [{VM_TESTS}]" in out and f"needs KVM: {missing} does not exist" in out, out


@pytest.mark.skipif(shutil.which("setpriv") is None and os.getuid() == 0, reason="needs setpriv to drop root's permission override")
def test_unreadable_device_skips_with_the_reason(sample):
    device = os.path.join(os.path.dirname(sample), "kvm")  # mode 000: no one but root may open it
    open(device, "w").close()
    os.chmod(device, 0)
    result, out = run_sample(sample, env={"VMM_KVM_DEVICE": device}, as_unprivileged=True)
    assert result.returncode == 0, out
    assert f"SKIPPED [{VM_TESTS}]" in out and f"needs KVM: no permission to open {device}" in out, out


@pytest.mark.parametrize("switch", ["option", "environment"])
def test_require_switch_turns_the_skips_into_failures(sample, tmp_path, switch):
    env = {"VMM_KVM_DEVICE": str(tmp_path / "gone")}
    args = ["--vmm-require-kvm"] if switch == "option" else []
    if switch == "environment":
        env["VMM_REQUIRE_KVM"] = "1"
    result, out = run_sample(sample, *args, env=env)
    assert result.returncode == 1, out
    # failing in setup, before the test body: pytest counts these as errors, and the run is red
    assert f"1 passed, 1 skipped, {VM_TESTS} errors" in out, out
    assert "KVM is required (--vmm-require-kvm or VMM_REQUIRE_KVM) but unusable:" in out, out
    assert "does not exist" in out


@pytest.mark.kvm
def test_a_failing_test_gets_the_serial_output_in_its_report(sample):
    result, out = run_sample(sample, "-k", "failure", env={"SAMPLE_SHOW_FAILURE": "1"})
    assert result.returncode == 1, out
    section = out[out.index("vmm VM 0 serial output") :]
    assert "vmm guest ready" in section and "marker-in-serial-output" in section, out


@pytest.mark.kvm
def test_installed_entry_point_loads_it_once(sample, tmp_path):
    """As after `pip install vmm`: the entry point loads the plugin, and -p or a
    conftest naming it as well do not register it a second time."""
    site = tmp_path / "site"
    dist = site / "vmm_entry_point_probe-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vmm-entry-point-probe\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\nvmm.pytest_plugin = vmm.pytest_plugin\n")
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}
    result, out = run_sample(sample, env=env, plugin_option=False)
    assert result.returncode == 0, out
    # pytest's header names the distribution whose entry point loaded it: the
    # probe, or vmm itself where the package is installed (as `make` does)
    assert f"{VM_TESTS + 1} passed" in out, out
    assert "vmm-entry-point-probe" in out or "vmm-0.1.0" in out, out

    with open(os.path.join(sample, "conftest.py"), "w") as f:
        f.write('pytest_plugins = ["vmm.pytest_plugin"]\n')
    result, out = run_sample(sample, env=env)  # entry point, -p and pytest_plugins at once
    assert result.returncode == 0, out
    assert f"{VM_TESTS + 1} passed" in out, out
