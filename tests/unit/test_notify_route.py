"""NotifyRoute: a queue moves to ioeventfd when its notifies get heavy and back when light."""

from vmm.notify_route import HEAVY_S, LIGHT_S, MIN_BATCHES, NotifyRoute


class Rig:
    def __init__(self):
        self.calls = []
        self.scheduled = []
        self.route = NotifyRoute(lambda: self.calls.append("assign"), lambda: self.calls.append("deassign"),
                                 self.scheduled.append)

    def serve(self, seconds, times):
        for _ in range(times):
            self.route.served(seconds)

    def run_scheduled(self):
        while self.scheduled:
            self.scheduled.pop(0)()


def test_starts_at_the_exit_and_stays_there_while_light():
    rig = Rig()
    rig.serve(20e-6, 1000)
    assert not rig.route.via_ioeventfd and not rig.scheduled and rig.calls == []


def test_heavy_batches_move_the_queue_to_ioeventfd_and_light_ones_back():
    rig = Rig()
    rig.serve(5 * HEAVY_S, MIN_BATCHES)
    assert len(rig.scheduled) == 1  # the ioctl runs on the loop thread, not here
    rig.serve(5 * HEAVY_S, 50)
    assert len(rig.scheduled) == 1  # one switch asked, however many notifies meanwhile
    rig.run_scheduled()
    assert rig.route.via_ioeventfd and rig.calls == ["assign"]
    rig.serve(LIGHT_S / 10, MIN_BATCHES - 1)
    assert not rig.scheduled  # not before MIN_BATCHES in the new mode
    rig.serve(LIGHT_S / 10, 20)
    rig.run_scheduled()
    assert not rig.route.via_ioeventfd and rig.calls == ["assign", "deassign"]
    assert rig.route.switches == 2


def test_in_between_loads_do_not_flap():
    rig = Rig()
    rig.serve(5 * HEAVY_S, 20)
    rig.run_scheduled()
    middle = (HEAVY_S + LIGHT_S) / 2  # too light to move there, too heavy to move back
    rig.serve(middle, 500)
    rig.run_scheduled()
    assert rig.calls == ["assign"]
