from vmm.devices.exit_device import FAULT_RECORD_SIZE, FAULT_REPORT, IDLE, IDLE_MAX_US, POWER_OFF, ExitDevice, GuestFault
from vmm.memory import GuestMemory

from ..layouts import FaultRecord


def make(memory=None):
    events = []
    device = ExitDevice(
        memory or GuestMemory([(0, 0x10000)]),
        power_off=lambda status: events.append(("off", status)),
        fault=lambda fault: events.append(("fault", fault)),
        idle=lambda seconds: events.append(("idle", seconds)),
    )
    return device, events


def test_power_off_with_status():
    device, events = make()
    device.write(POWER_OFF, 1, 7)
    device.write(POWER_OFF, 4, 127)
    assert events == [("off", 7), ("off", 127)]


def test_status_out_of_range_is_a_crash_not_a_status():
    device, events = make()
    device.write(POWER_OFF, 4, 200)
    assert events[0][0] == "fault" and "200" in events[0][1]


def test_fault_report_is_read_from_guest_memory():
    memory = GuestMemory([(0, 0x10000)])
    record = FaultRecord.build(dict(vector=14, error_code=2, rip=0x101234, cs=0x23, rflags=0x3002, rsp=0x9000, ss=0x1B))
    memory.write(0x8000, record)
    device, events = make(memory)
    device.write(FAULT_REPORT, 4, 0x8000)
    fault = events[0][1]
    assert fault == GuestFault(vector=14, error_code=2, rip=0x101234, rsp=0x9000)
    assert "vector 14 (#PF page fault) at rip 0x101234" in fault.describe()


def test_fault_record_outside_ram_is_reported_not_followed():
    device, events = make()
    for addr in (0xFFFF, 0x10000 - 8, 0xFFFFFFFF):
        device.write(FAULT_REPORT, 4, addr)
    assert [e[0] for e in events] == ["fault"] * 3
    assert all("outside guest RAM" in e[1] for e in events)


def test_fault_record_at_the_last_bytes_of_ram_and_straddling_its_end():
    memory = GuestMemory([(0, 0x10000), (0x20000, 0x10000)])  # two regions, a hole between
    end = 0x10000
    memory.write(end - FAULT_RECORD_SIZE, FaultRecord.build(dict(vector=6, error_code=0, rip=0x1234, cs=0x23, rflags=2, rsp=0x8000, ss=0x1B)))
    device, events = make(memory)
    device.write(FAULT_REPORT, 4, end - FAULT_RECORD_SIZE)  # the last whole record in the region
    assert events.pop() == ("fault", GuestFault(vector=6, error_code=0, rip=0x1234, rsp=0x8000))
    device.write(FAULT_REPORT, 4, 0x30000 - FAULT_RECORD_SIZE)  # the last one in the second region
    assert events.pop()[1].vector == 0
    for addr in (end - FAULT_RECORD_SIZE + 1, end - 8, end - 1, 0x20000 - 8, 0x30000 - 8, 0xFFFFFFFF):
        device.write(FAULT_REPORT, 4, addr)
        kind, message = events.pop()
        assert kind == "fault" and message == f"guest fault report at 0x{addr:x} (56 bytes) lies outside guest RAM"
    assert FAULT_RECORD_SIZE == 56


def test_power_off_status_past_the_limit_on_every_width():
    device, events = make()
    for size, value in ((1, 0x80), (1, 0xFF), (2, 0xFFFF), (4, 0xFFFFFFFF)):
        device.write(POWER_OFF, size, value)
    assert [e[0] for e in events] == ["fault"] * 4 and all("outside 0-127" in e[1] for e in events)


def test_idle_is_capped():
    device, events = make()
    device.write(IDLE, 4, 2500)
    device.write(IDLE, 4, 0xFFFFFFFF)
    assert events == [("idle", 0.0025), ("idle", IDLE_MAX_US / 1e6)]


def test_reads_and_odd_offsets_do_nothing():
    device, events = make()
    assert device.read(POWER_OFF, 1) == 0xFF
    device.write(2, 1, 1)
    device.write(FAULT_REPORT, 1, 0x8000)  # fault reports are 32-bit writes only
    device.write(IDLE, 2, 0xFFFF)  # so are idle requests
    assert events == []
