"""The exit device: how the guest powers off, reports a fault, or idles.

Registers (port offsets from the base, 0xf4 on the PC):
  +0  power off: write a status 0-127. QEMU's isa-debug-exit at the same port
      also powers off (reporting (status << 1) | 1), so one guest serves both.
  +4  fault report: 32-bit write of the guest physical address of a
      FaultRecord; the VM stops as crashed. The guest chooses the address,
      the VMM the size: the record is read only if all FAULT_RECORD_SIZE bytes
      lie inside one RAM region, else the crash says so.
  +8  idle: 32-bit write, wait at most that many microseconds (capped) or until
      the host has something for the guest. Guests idle here instead of `hlt`.
The device only decodes; what powering off or idling means is the machine's
business, given as callables.
"""

from __future__ import annotations

from collections.abc import Callable

from ..binary import Layout
from ..errors import GUEST_STATUS_MAX, GuestMemoryError
from ..record import record

EXIT_PORT = 0xF4
EXIT_PORT_SPAN = 12
POWER_OFF, FAULT_REPORT, IDLE = 0, 4, 8
# The longest idle one write may ask for (the port takes 32 bits, ~71 minutes):
# a guest cannot park its vCPU thread for long, so stop/pause stay prompt.
IDLE_MAX_US = 1_000_000

FaultRecord = Layout("FaultRecord", "vector:Q error_code:Q rip:Q cs:Q rflags:Q rsp:Q ss:Q")
FAULT_RECORD_SIZE = FaultRecord.size  # 56: fixed, whatever the guest writes

EXCEPTION_NAMES = {
    0: "#DE divide error", 1: "#DB debug", 2: "NMI", 3: "#BP breakpoint", 4: "#OF overflow",
    5: "#BR bound range", 6: "#UD invalid opcode", 7: "#NM device not available",
    8: "#DF double fault", 10: "#TS invalid TSS", 11: "#NP segment not present",
    12: "#SS stack fault", 13: "#GP general protection", 14: "#PF page fault",
    16: "#MF x87 error", 17: "#AC alignment check", 18: "#MC machine check",
    19: "#XM SIMD error", 20: "#VE virtualization", 21: "#CP control protection",
}


class GuestFault(record("GuestFault", "vector error_code rip rsp")):
    __slots__ = ()

    def describe(self) -> str:
        name = EXCEPTION_NAMES.get(self.vector, "reserved vector")
        return (
            f"guest fault: vector {self.vector} ({name}) at rip 0x{self.rip:x}, "
            f"error code 0x{self.error_code:x}, rsp 0x{self.rsp:x}"
        )


class ExitDevice:
    def __init__(
        self,
        memory,
        power_off: Callable[[int], None],
        fault: Callable[[GuestFault | str], None],
        idle: Callable[[float], None],
    ):
        self._memory = memory
        self._power_off = power_off
        self._fault = fault
        self._idle = idle

    def read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == POWER_OFF:
            if value > GUEST_STATUS_MAX:
                self._fault(f"guest powered off with status {value}, outside 0-{GUEST_STATUS_MAX}")
            else:
                self._power_off(value)
        elif offset == FAULT_REPORT and size == 4:
            try:
                record = FaultRecord.unpack_from(self._memory.read(value, FAULT_RECORD_SIZE))
            except GuestMemoryError:
                self._fault(f"guest fault report at 0x{value:x} ({FAULT_RECORD_SIZE} bytes) lies outside guest RAM")
                return
            self._fault(GuestFault(record.vector, record.error_code, record.rip, record.rsp))
        elif offset == IDLE and size == 4:
            self._idle(min(value, IDLE_MAX_US) / 1e6)
