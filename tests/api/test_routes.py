"""Firecracker's endpoints, shapes and error bodies, against a fake VM (no KVM)."""

import json

import pytest

from vmm.api.http import ApiRequest
from vmm.api.instance import NO_SNAPSHOTS, ApiInstance
from vmm.api.routes import handle

from .fakes import FakeVm, hide_persist, install_fake_persist


@pytest.fixture
def api():
    instance = ApiInstance("test-vm", microvm_factory=FakeVm)

    def call(method, path, body=None):
        raw = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        status, out = handle(instance, ApiRequest(method, path, raw))
        return status, (json.loads(out) if out else None)

    call.instance = instance
    return call


def fault(result):
    status, body = result
    assert status == 400, result
    assert list(body) == ["fault_message"]
    return body["fault_message"]


def boot(api, **extra):
    assert api("PUT", "/boot-source", {"kernel_image_path": "/k.elf", **extra})[0] == 204
    assert api("PUT", "/actions", {"action_type": "InstanceStart"}) == (204, None)
    return api.instance.vm


def test_instance_info_before_and_after_start(api):
    assert api("GET", "/") == (200, {"id": "test-vm", "state": "Not started", "vmm_version": "0.1.0", "app_name": "vmm"})
    boot(api)
    assert api("GET", "/")[1]["state"] == "Running"
    assert api("PATCH", "/vm", {"state": "Paused"}) == (204, None)
    assert api("GET", "/")[1]["state"] == "Paused"
    assert api("PATCH", "/vm", {"state": "Resumed"}) == (204, None)
    assert api.instance.vm.calls == ["start", "pause", "resume"]


def test_machine_config_round_trip(api):
    assert api("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 256}) == (204, None)
    assert api("GET", "/machine-config") == (200, {"vcpu_count": 2, "mem_size_mib": 256, "smt": False, "track_dirty_pages": False})
    assert api("PATCH", "/machine-config", {"mem_size_mib": 64}) == (204, None)
    assert api("GET", "/machine-config")[1]["mem_size_mib"] == 64
    assert api("GET", "/machine-config")[1]["vcpu_count"] == 2


def test_the_configuration_reaches_the_vm(api):
    api("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 96})
    api("PUT", "/drives/data", {"drive_id": "data", "path_on_host": "/d.img", "is_root_device": False})
    api("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": "/r.img", "is_root_device": True, "is_read_only": True})
    vm = boot(api, boot_args="console=ttyS0 quiet", initrd_path="/i.cpio")
    cfg = vm.config
    assert (cfg.kernel, cfg.initrd, cfg.mem_mib, cfg.vcpus) == ("/k.elf", "/i.cpio", 96, 2)
    assert [(d.path, d.read_only) for d in cfg.devices] == [("/r.img", True), ("/d.img", False)]  # root first: /dev/vda
    assert cfg.cmdline == "console=ttyS0 quiet root=/dev/vda ro"


@pytest.mark.parametrize(
    "body, message",
    [
        ({"vcpu_count": 1}, "missing field `mem_size_mib`"),
        ({"vcpu_count": "1", "mem_size_mib": 64}, "invalid value for `vcpu_count`"),
        ({"vcpu_count": True, "mem_size_mib": 64}, "invalid value for `vcpu_count`"),
        ({"vcpu_count": -1, "mem_size_mib": 64}, "invalid value for `vcpu_count`"),
        ({"vcpu_count": 1.5, "mem_size_mib": 64}, "invalid value for `vcpu_count`"),
        ({"vcpu_count": 0, "mem_size_mib": 64}, "vCPU count 0 is out of range"),
        ({"vcpu_count": 1, "mem_size_mib": 1}, "too small"),
        ({"vcpu_count": 1, "mem_size_mib": 1 << 40}, "more than this host has"),
        ({"vcpu_count": 1, "mem_size_mib": 64, "cpu_template": "T2"}, "unknown field `cpu_template`"),
        ({"vcpu_count": 1, "mem_size_mib": 64, "smt": True}, "SMT is not supported"),
    ],
)
def test_machine_config_refusals(api, body, message):
    assert message in fault(api("PUT", "/machine-config", body))
    assert api("GET", "/machine-config")[1]["mem_size_mib"] == 128  # unchanged


@pytest.mark.parametrize(
    "method, path, body, message",
    [
        ("GET", "/nothing", None, "Invalid request method and/or path: GET nothing."),
        ("DELETE", "/", None, "Invalid request method and/or path: DELETE ."),
        ("POST", "/actions", {"action_type": "InstanceStart"}, "Invalid request method and/or path: POST actions."),
        ("PUT", "/network-interfaces/eth0", {}, "Invalid request method and/or path: PUT network-interfaces."),
        ("GET", "/", {"x": 1}, "GET request cannot have a body."),
        ("PUT", "/actions", None, "Empty PUT request."),
        ("PATCH", "/vm", None, "Empty PATCH request."),
        ("PUT", "/actions", b"{", "An error occurred when deserializing the json body of a request"),
        ("PUT", "/actions", b"[1, 2]", "expected a JSON object"),
        ("PUT", "/actions", b'{"action_type": "InstanceStart", "action_type": "FlushMetrics"}', "duplicate field `action_type`"),
        ("PUT", "/actions", b'{"action_type": NaN}', "NaN is not a JSON number"),
        ("PUT", "/actions", b"\xff\xfe", "not UTF-8"),
        ("PUT", "/actions", b"[" * 100000 + b"]" * 100000, "An error occurred when deserializing"),
        ("PUT", "/actions", {"action_type": "Reboot"}, 'unknown variant "Reboot" for `action_type`'),
        ("PATCH", "/vm", {"state": "Stopped"}, 'unknown variant "Stopped" for `state`'),
        ("PUT", "/boot-source", {"boot_args": "x"}, "missing field `kernel_image_path`"),
        ("PUT", "/boot-source", {"kernel_image_path": "/k\u0000"}, "NUL"),
        ("PUT", "/drives/a", {"drive_id": "b", "path_on_host": "/x", "is_root_device": False}, "The id from the path does not match the id from the body!"),
        ("PUT", "/drives/a-b", {"drive_id": "a-b", "path_on_host": "/x", "is_root_device": False}, "alphanumeric characters and underscores"),
        ("PUT", "/drives", {"drive_id": "a", "path_on_host": "/x", "is_root_device": False}, "The ID cannot be empty."),
        ("PUT", "/drives/a", {"drive_id": "a", "is_root_device": False}, "missing field `path_on_host`"),
        ("PUT", "/snapshot/other", {"snapshot_path": "/s"}, "Invalid request method and/or path: PUT snapshot/other."),
        ("PATCH", "/vm", {"state": "Paused"}, "The requested operation is not supported before starting the microVM."),
        ("PUT", "/actions", {"action_type": "InstanceStart"}, "Cannot start microvm without kernel configuration."),
        ("PUT", "/actions", {"action_type": "FlushMetrics"}, "The metrics system is not initialized"),
        ("PUT", "/snapshot/create", {"snapshot_path": "/s", "mem_file_path": "/m"}, "not supported before starting"),
    ],
)
def test_refusals_have_firecrackers_shape(api, method, path, body, message):
    assert message in fault(api(method, path, body))


def test_second_root_device_refused(api):
    api("PUT", "/drives/a", {"drive_id": "a", "path_on_host": "/a", "is_root_device": True})
    assert fault(api("PUT", "/drives/b", {"drive_id": "b", "path_on_host": "/b", "is_root_device": True})) == "A root block device already exists!"
    # the same drive may be updated
    assert api("PUT", "/drives/a", {"drive_id": "a", "path_on_host": "/a2", "is_root_device": True})[0] == 204


def test_configuration_after_boot_refused(api):
    boot(api)
    post_boot = "The requested operation is not supported after starting the microVM."
    assert fault(api("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64})) == post_boot
    assert fault(api("PUT", "/boot-source", {"kernel_image_path": "/k"})) == post_boot
    assert fault(api("PUT", "/drives/a", {"drive_id": "a", "path_on_host": "/a", "is_root_device": False})) == post_boot
    assert fault(api("PUT", "/actions", {"action_type": "InstanceStart"})) == post_boot


def test_ctrl_alt_del_is_refused_with_a_reason_where_there_is_no_keyboard(api):
    boot(api)
    assert "no keyboard controller" in fault(api("PUT", "/actions", {"action_type": "SendCtrlAltDel"}))


def test_ctrl_alt_del_is_typed_on_a_linux_guest(api):
    assert api("PUT", "/boot-source", {"kernel_image_path": "/boot/bzImage"})[0] == 204
    assert api("PUT", "/actions", {"action_type": "InstanceStart"}) == (204, None)
    assert api("PUT", "/actions", {"action_type": "SendCtrlAltDel"}) == (204, None)
    assert api.instance.vm.calls[-1] == "ctrl-alt-del"


def test_stopped_vm_refuses_pause(api):
    vm = boot(api)
    vm.stop("poweroff")
    assert fault(api("PATCH", "/vm", {"state": "Paused"})) == "The microVM has stopped."


def test_metrics_lines(api, tmp_path):
    path = tmp_path / "metrics.ndjson"
    assert api("PUT", "/metrics", {"metrics_path": str(path)}) == (204, None)
    assert fault(api("PUT", "/metrics", {"metrics_path": str(path)})) == "Reinitialization of metrics not allowed."
    assert api("PUT", "/actions", {"action_type": "FlushMetrics"}) == (204, None)
    boot(api)
    assert api("PUT", "/actions", {"action_type": "FlushMetrics"}) == (204, None)
    first, second = [json.loads(line) for line in path.read_text().splitlines()]
    assert first["vmm"]["state"] == "Not started" and "exits" not in first["vmm"]
    assert second["vmm"]["state"] == "Running"
    assert second["vmm"]["exits"] == {"IO": 7, "MMIO": 3}
    assert second["vmm"]["rss_bytes"] > 1 << 20
    assert second["vmm"]["instance_start_ms"] >= 0
    assert second["api_server"]["failed_requests"] == 0


def test_metrics_path_that_cannot_be_opened(api, tmp_path):
    assert "Cannot open the metrics file" in fault(api("PUT", "/metrics", {"metrics_path": str(tmp_path / "no" / "such")}))


def test_snapshots_without_persist(api, monkeypatch):
    hide_persist(monkeypatch)
    boot(api)
    api("PATCH", "/vm", {"state": "Paused"})
    assert fault(api("PUT", "/snapshot/create", {"snapshot_path": "/s", "mem_file_path": "/m"})) == NO_SNAPSHOTS


def test_snapshot_load_without_persist(api, monkeypatch):
    hide_persist(monkeypatch)
    body = {"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": "/m"}}
    assert fault(api("PUT", "/snapshot/load", body)) == NO_SNAPSHOTS


def test_snapshot_create_calls_persist(api, monkeypatch):
    persist = install_fake_persist(monkeypatch)
    vm = boot(api)
    assert "pause it first" in fault(api("PUT", "/snapshot/create", {"snapshot_path": "/s", "mem_file_path": "/m"}))
    api("PATCH", "/vm", {"state": "Paused"})
    assert api("PUT", "/snapshot/create", {"snapshot_path": "/s", "mem_file_path": "/m"}) == (204, None)
    assert api("PUT", "/snapshot/create", {"snapshot_type": "Diff", "snapshot_path": "/s2", "mem_file_path": "/m2"}) == (204, None)
    assert persist.snapshots == [(vm, "/s", "/m", False), (vm, "/s2", "/m2", True)]
    assert "unknown variant" in fault(api("PUT", "/snapshot/create", {"snapshot_type": "Half", "snapshot_path": "/s", "mem_file_path": "/m"}))


def test_snapshot_load_calls_persist(api, monkeypatch):
    persist = install_fake_persist(monkeypatch)
    body = {"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": "/m"}, "resume_vm": True}
    assert api("PUT", "/snapshot/load", body) == (204, None)
    assert persist.restores == [("/s", "/m", True, {"output_fd": 1, "capture": False})]
    assert api.instance.started.is_set()
    assert api("GET", "/")[1]["state"] == "Running"
    assert "not allowed after configuring" in fault(api("PUT", "/snapshot/load", body))


def test_snapshot_load_paused(api, monkeypatch):
    install_fake_persist(monkeypatch)
    assert api("PUT", "/snapshot/load", {"snapshot_path": "/s", "mem_file_path": "/m"}) == (204, None)
    assert api("GET", "/")[1]["state"] == "Paused"


@pytest.mark.parametrize(
    "body, message",
    [
        ({"snapshot_path": "/s"}, "Missing mandatory memory backend parameter"),
        ({"snapshot_path": "/s", "mem_file_path": "/m", "mem_backend": {"backend_type": "File", "backend_path": "/m"}}, "Too many fields"),
        ({"snapshot_path": "/s", "mem_backend": {"backend_type": "Uffd", "backend_path": "/u"}}, "Uffd memory backend is not supported"),
        ({"snapshot_path": "/s", "mem_backend": {"backend_type": "Disk", "backend_path": "/u"}}, "unknown variant"),
        ({"snapshot_path": "/s", "mem_backend": {"backend_path": "/u"}}, "missing field `backend_type`"),
        ({"snapshot_path": "/s", "mem_backend": "/m"}, "invalid value for `mem_backend`"),
        ({"snapshot_path": "/s", "mem_file_path": "/m", "network_overrides": []}, "unknown field `network_overrides`"),
    ],
)
def test_snapshot_load_refusals(api, monkeypatch, body, message):
    install_fake_persist(monkeypatch)
    assert message in fault(api("PUT", "/snapshot/load", body))


def test_snapshot_load_refused_after_configuring_boot(api, monkeypatch):
    install_fake_persist(monkeypatch)
    api("PUT", "/boot-source", {"kernel_image_path": "/k"})
    assert "not allowed after configuring" in fault(api("PUT", "/snapshot/load", {"snapshot_path": "/s", "mem_file_path": "/m"}))


def test_a_bug_is_a_500_not_a_crash(api, monkeypatch):
    monkeypatch.setattr(ApiInstance, "get_info", lambda self: 1 / 0)
    status, body = api("GET", "/")
    assert status == 500 and "ZeroDivisionError" in body["fault_message"]
