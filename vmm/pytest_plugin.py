"""vmm's pytest plugin: boot VMs in any project's tests.

Loaded through the ``pytest11`` entry point once vmm is installed (or with
``-p vmm.pytest_plugin``). It gives:

- ``@pytest.mark.vm`` (``@pytest.mark.kvm`` is the same): the test skips,
  with the precise reason, when this host cannot run VMs (device missing, no
  read/write permission, wrong API version, a capability missing; the device
  is $VMM_KVM_DEVICE or /dev/kvm);
- ``--vmm-require-kvm`` or ``VMM_REQUIRE_KVM=1``: those skips become
  failures, so a CI run whose KVM went missing cannot pass green;
- the ``microvm`` fixture: ``microvm(config=None, *, start=True,
  virtio_devices=(), **config_fields)`` returns a started ``MicroVM``,
  closed at teardown; when the test fails, each VM's serial output is
  attached to the report as a section.

Everything heavy (the KVM bindings, the machine) is imported only when a
test asks for a VM, so the plugin costs nothing in projects that never do.
"""

from __future__ import annotations

import os

import pytest

MARKERS = ("vm", "kvm")
REQUIRE_ENV = "VMM_REQUIRE_KVM"
OUTPUT_SECTION_LIMIT = 64 * 1024  # the tail of each VM's serial output in a failure report

_vms_key = pytest.StashKey[list]()
_reason_key = pytest.StashKey[tuple]()


def pytest_addoption(parser):
    group = parser.getgroup("vmm", "vmm virtual machines")
    group.addoption(
        "--vmm-require-kvm",
        action="store_true",
        default=False,
        help=f"fail, instead of skipping, tests that need KVM when it is unusable (also: {REQUIRE_ENV}=1)",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "vm: boots a VM with vmm; skipped (or failed with --vmm-require-kvm) when KVM is unusable")
    config.addinivalue_line("markers", "kvm: the same as the vm marker")


def kvm_required(config) -> bool:
    env = os.environ.get(REQUIRE_ENV, "").strip().lower()
    return bool(config.getoption("vmm_require_kvm")) or env not in ("", "0", "no", "false", "off")


def _unusable_reason(config) -> str | None:
    """Asked once per session (opening the device and creating a VM)."""
    cached = config.stash.get(_reason_key, None)
    if cached is None:
        from .doctor import kvm_unusable_reason

        cached = (kvm_unusable_reason(),)
        config.stash[_reason_key] = cached
    return cached[0]


def require_kvm(config) -> None:
    """Skip (or fail, when KVM is required) the running test if KVM is unusable."""
    reason = _unusable_reason(config)
    if reason is None:
        return
    if kvm_required(config):
        pytest.fail(f"KVM is required (--vmm-require-kvm or {REQUIRE_ENV}) but unusable: {reason}", pytrace=False)
    pytest.skip(f"needs KVM: {reason}")


def pytest_runtest_setup(item):
    if any(item.get_closest_marker(name) is not None for name in MARKERS):
        require_kvm(item.config)


@pytest.fixture
def microvm(request):
    """A factory of started MicroVMs, each closed at teardown."""
    require_kvm(request.config)
    from .config import VmConfig
    from .machine import MicroVM

    vms: list = []
    request.node.stash[_vms_key] = vms

    def make(config: VmConfig | None = None, *, start: bool = True, virtio_devices=(), **config_fields) -> MicroVM:
        if config is None:
            config = VmConfig(**config_fields)
        elif config_fields:
            config = config._replace(**config_fields)
        vm = MicroVM(config, virtio_devices=virtio_devices)
        vms.append(vm)
        if start:
            vm.start()
        return vm

    try:
        yield make
    finally:
        for vm in vms:
            vm.close()


def _output_section(index: int, vm) -> tuple[str, str]:
    try:
        data = vm.output
    except Exception as err:  # a VM made without capture: say so rather than fail the report
        return (f"vmm VM {index} serial output", f"(not available: {err})")
    truncated = len(data) > OUTPUT_SECTION_LIMIT
    text = data[-OUTPUT_SECTION_LIMIT:].decode("utf-8", "replace")
    header = f"vmm VM {index} serial output" + (" (tail)" if truncated else "")
    outcome = vm.outcome
    if outcome is not None:
        text += f"\n[VM stopped: status {outcome.status}, {outcome.reason}{': ' + outcome.message if outcome.message else ''}]"
    return (header, text)


@pytest.hookimpl(hookwrapper=True)  # the old-style wrapper: pytest 7 has no wrapper=True
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for index, vm in enumerate(item.stash.get(_vms_key, ())):
            report.sections.append(_output_section(index, vm))
