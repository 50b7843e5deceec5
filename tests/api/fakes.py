"""A stand-in MicroVM and vmm.persist, so the API's logic runs without KVM."""

import sys
import types


class FakeVm:
    def __init__(self, config, output_fd=1, capture=True, **kwargs):
        self.config = config
        self.output_fd = output_fd
        self.started = self.closed = self.paused = False
        self.outcome = None
        self.calls = []

    def start(self):
        self.started = True
        self.calls.append("start")
        return self

    @property
    def running(self):
        return self.started and self.outcome is None

    def pause(self):
        self.paused = True
        self.calls.append("pause")

    def resume(self):
        self.paused = False
        self.calls.append("resume")

    def stop(self, outcome=None):
        self.outcome = outcome

    def send_ctrl_alt_del(self):
        from vmm.errors import VmmError

        if not self.config.kernel.endswith("bzImage"):
            raise VmmError("this guest has no keyboard controller (only Linux guests get an i8042)")
        self.calls.append("ctrl-alt-del")

    def close(self):
        self.closed = True

    def exit_summary(self):
        return {"IO": 7, "MMIO": 3}

    unhandled_accesses = {"pio": 0, "mmio": 0}


class FakePersist(types.ModuleType):
    """vmm.persist's interface: snapshot(vm, state, mem, *, diff) and restore(state, mem, *, resume, **kw)."""

    class SnapshotError(Exception):
        pass

    def __init__(self):
        super().__init__("vmm.persist")
        self.snapshots = []
        self.restores = []

    def snapshot(self, vm, state_path, mem_path, *, diff=False):
        assert vm.paused
        self.snapshots.append((vm, state_path, mem_path, diff))

    def restore(self, state_path, mem_path, *, resume=True, **kwargs):
        vm = FakeVm(None, **kwargs).start()
        vm.paused = not resume
        self.restores.append((state_path, mem_path, resume, kwargs))
        return vm


def install_fake_persist(monkeypatch):
    fake = FakePersist()
    monkeypatch.setitem(sys.modules, "vmm.persist", fake)
    import vmm

    monkeypatch.setattr(vmm, "persist", fake, raising=False)
    return fake


def hide_persist(monkeypatch):
    """As if vmm.persist did not exist (a build without snapshots)."""
    monkeypatch.setitem(sys.modules, "vmm.persist", None)
