"""NotifyRoute: off ioeventfd while the I/O thread is late, back when heavy or to probe."""

from vmm import notify_route
from vmm.notify_route import HEAVY_S, LATE_SHARE, PROBE_NOTIFIES, WINDOW, NotifyRoute


class Rig:
    def __init__(self, monkeypatch):
        monkeypatch.setattr(notify_route, "PINNED", "adaptive")
        self.calls = []
        self.scheduled = []
        self.route = NotifyRoute(lambda: self.calls.append("assign"), lambda: self.calls.append("deassign"),
                                 self.scheduled.append)

    def serve(self, times, seconds=20e-6, late_every=0):
        for i in range(times):
            if late_every and i % late_every == 0:
                self.route.late()
            self.route.served(seconds)

    def run_scheduled(self):
        while self.scheduled:
            self.scheduled.pop(0)()


def test_stays_on_ioeventfd_while_the_io_thread_keeps_up(monkeypatch):
    rig = Rig(monkeypatch)
    rig.serve(10 * WINDOW, late_every=LATE_SHARE * 2)  # some late, not enough
    rig.run_scheduled()
    assert rig.route.via_ioeventfd and rig.calls == []


def test_a_late_io_thread_moves_the_queue_to_the_exit_then_a_probe_brings_it_back(monkeypatch):
    rig = Rig(monkeypatch)
    rig.serve(WINDOW, late_every=2)
    assert len(rig.scheduled) == 1  # the ioctl runs on the loop thread, not here
    rig.serve(50, late_every=2)
    assert len(rig.scheduled) == 1  # one switch asked, however many notifies meanwhile
    rig.run_scheduled()
    assert not rig.route.via_ioeventfd and rig.calls == ["deassign"]
    rig.serve(PROBE_NOTIFIES - 1)
    assert not rig.scheduled
    rig.serve(1)
    rig.run_scheduled()
    assert rig.route.via_ioeventfd and rig.calls == ["deassign", "assign"] and rig.route.switches == 2


def test_heavy_batches_on_the_exit_path_go_back_to_ioeventfd_at_once(monkeypatch):
    rig = Rig(monkeypatch)
    rig.serve(WINDOW, late_every=1)
    rig.run_scheduled()
    rig.serve(8, seconds=10 * HEAVY_S)
    rig.run_scheduled()
    assert rig.calls == ["deassign", "assign"]


def test_pinned_routes_never_switch(monkeypatch):
    rig = Rig(monkeypatch)
    monkeypatch.setattr(notify_route, "PINNED", "ioeventfd")
    rig.serve(10 * WINDOW, late_every=1)
    assert not rig.scheduled
