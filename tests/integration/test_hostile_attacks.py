"""Hostile guests attack the VMM while a healthy VM runs beside them in the same process.

The attackers are the bundled guest's attack commands (guest/attack.c,
guest/attack_virtio.c) and a ring-0 kernel of its own (tests/guests/hostile,
built by build_guest.sh). For each attack: the hostile VM gets the answer
the device models define (or stops with a defined status), this process's
RSS stays bounded, and the healthy VM (two MicroVMs at once) prints exactly
what it prints alone: a file read from its disk and a counting loop.

The exit storm is a million exits where KVM is hardware (CI's runners), and
200k on this software KVM (a million took 49 s alone here, 49 us an exit:
too much of `make test`'s budget on a loaded machine). VMM_HOSTILE_FULL_STORM=1
(or =0) chooses either way.
"""

import hashlib
import os
import re
import subprocess
import threading

import psutil
import pytest

from tests.conftest import ROOT
from vmm import DiskConfig, MicroVM, VmConfig
from vmm.devices.virtio.console import VirtioConsole
from vmm.disk_image import build_disk_image
from vmm.errors import EXIT_GUEST_CRASHED
from vmm.x86.platform import software_kvm

pytestmark = pytest.mark.kvm

MIB = 1 << 20
RSS_GROWTH_LIMIT = 50 * MIB  # generous: the VMM's own memory, not guest RAM the attack touches
HOSTILE_KERNEL = ROOT / "guest" / "build" / "hostile.elf"
_FULL_STORM = os.environ.get("VMM_HOSTILE_FULL_STORM", "0" if software_kvm() else "1") == "1"
STORM_EXITS = 1_000_000 if _FULL_STORM else 200_000
WITNESS_TEXT = "".join(f"line {i:03d}: the healthy VM reads this from its disk\n" for i in range(30))
WORKLOAD = ("cat data.txt", "count 20 0")


def run_command(vm, line: str, timeout: float = 120) -> str:
    vm.send(line + "\r")
    start = vm.expect(line + "\r\n", timeout).end()
    prompt = vm.expect("$ ", timeout)
    return vm.output[start : prompt.start()].decode(errors="replace")


def workload(vm) -> list[str]:
    return [run_command(vm, line) for line in WORKLOAD]


@pytest.fixture(scope="module")
def witness_disk(tmp_path_factory):
    source = tmp_path_factory.mktemp("witness")
    (source / "data.txt").write_text(WITNESS_TEXT)
    image = tmp_path_factory.mktemp("witness-image") / "witness.img"
    build_disk_image(source, image, 2)
    return image


def healthy_vm(guest_elf, witness_disk) -> MicroVM:
    config = VmConfig(kernel=str(guest_elf), mem_mib=32, timeout=900, devices=(DiskConfig(str(witness_disk), True),))
    vm = MicroVM(config).start()
    vm.expect("$ ", timeout=30)
    return vm


@pytest.fixture(scope="module")
def alone(guest_elf, witness_disk) -> list[str]:
    """What the healthy VM prints with nobody beside it."""
    vm = healthy_vm(guest_elf, witness_disk)
    try:
        out = workload(vm)
    finally:
        vm.close()
    assert out[0].replace("\r\n", "\n") == WITNESS_TEXT
    assert out[1].endswith("count 20\r\ncount done\r\n")
    return out


@pytest.fixture
def beside(guest_elf, witness_disk, alone):
    """beside(attack): run attack() on a thread while a healthy VM repeats its
    workload; every repetition must print what it printed alone. Returns
    what attack() returned; its exceptions are raised here."""

    def run(attack):
        healthy = healthy_vm(guest_elf, witness_disk)
        result, error = {}, []

        def attacker():
            try:
                result["value"] = attack()
            except BaseException as exc:  # re-raised in the test's thread
                error.append(exc)

        thread = threading.Thread(target=attacker, name="hostile-attack")
        try:
            thread.start()
            rounds = 0
            while thread.is_alive() or rounds == 0:
                assert workload(healthy) == alone, f"healthy VM, round {rounds + 1}"
                rounds += 1
            thread.join()
            assert not healthy.is_finished(), healthy.wait(0)
        finally:
            thread.join(600)
            healthy.close()
        if error:
            raise error[0]
        return result.get("value")

    return run


class RssWatch:
    """This process's RSS (the VMM runs in it) from now on."""

    def __init__(self):
        self._process = psutil.Process()
        self.start = self._process.memory_info().rss

    def check(self, what: str) -> None:
        grown = self._process.memory_info().rss - self.start
        assert grown < RSS_GROWTH_LIMIT, f"RSS grew {grown / MIB:.1f} MiB during {what}"


@pytest.fixture
def hostile_disk(tmp_path):
    source = tmp_path / "files"
    source.mkdir()
    (source / "mine.txt").write_text("the hostile VM's own file\n")
    image = tmp_path / "hostile.img"
    build_disk_image(source, image, 2)
    return image


class Hostile:
    """The bundled guest as an attacker: device 0 a read-write disk, device 1 a console."""

    def __init__(self, guest_elf, disk):
        self.console_out = []
        self.console = VirtioConsole(["p0"], on_output=lambda port, data: self.console_out.append(bytes(data)))
        config = VmConfig(kernel=str(guest_elf), mem_mib=64, timeout=900, devices=(DiskConfig(str(disk)),))
        self.vm = MicroVM(config, virtio_devices=[self.console]).start()
        self.vm.expect("$ ", timeout=30)

    def run(self, line: str, timeout: float = 300) -> str:
        return run_command(self.vm, line, timeout)

    def alive(self) -> None:
        assert self.run("echo still here") == "still here\r\n"
        assert not self.vm.is_finished()


@pytest.fixture
def hostile(guest_elf, hostile_disk):
    h = Hostile(guest_elf, hostile_disk)
    yield h
    h.vm.close()


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- virtio: malformed requests through the real transport, queue and devices ----------

OK = "device 0xf"  # ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK: still running
NEEDS_RESET = "device 0x4f"  # ... | DEVICE_NEEDS_RESET: the device stopped until reset
REFUSED_RING = "device 0x4b"  # QueueReady refused before DRIVER_OK: NEEDS_RESET, never running
UNSET = 238  # the guest's status byte before the request (0xee)

# virtio-blk: a read of sector 0 (header, 512-byte buffer, status byte), broken one way.
# status: what the device wrote into the status byte (0 OK, 1 IOERR, 238 untouched);
# len: bytes the used entry says were written (513 = data + status; 1 = the error
# status, placed in the last writable byte resolved before the fault; 0 = nowhere to put it).
BLK_EXPECTED = {
    "good": f"used 1 len 513 status 0 {OK}",
    "indgood": f"used 1 len 513 status 0 {OK}",
    "loop": f"used 1 len 1 status 1 {OK}",  # 0 -> 1 -> 2 -> 0: ends at the queue size
    "selfloop": f"used 1 len 1 status 1 {OK}",
    "indloop": f"used 1 len 1 status 1 {OK}",
    "indlong": f"used 1 len 1 status 1 {OK}",  # a 200-entry table: refused unwalked, status in its last entry
    "nextoob": f"used 1 len 1 status {UNSET} {OK}",  # IOERR lands in the data buffer's last byte
    "indnested": f"used 1 len 0 status {UNSET} {OK}",
    "indnext": f"used 1 len 0 status {UNSET} {OK}",
    "indlen": f"used 1 len 0 status {UNSET} {OK}",
    "indhuge": f"used 1 len 0 status {UNSET} {OK}",  # 2^28 entries: refused before any is read
    "indfar": f"used 1 len 0 status {UNSET} {OK}",  # the table beyond RAM
    "indhole": f"used 1 len 0 status {UNSET} {OK}",  # the table on the device's own registers
    "buffar": f"used 1 len 0 status {UNSET} {OK}",
    "bufhole": f"used 1 len 0 status {UNSET} {OK}",  # a buffer in the MMIO hole
    "bufwrap": f"used 1 len 0 status {UNSET} {OK}",  # addr + len past 2^64
    "bufhuge": f"used 1 len 0 status {UNSET} {OK}",
    "total4g": f"used 1 len 0 status {UNSET} {OK}",  # buffers adding up past 2^32
    "badhead": f"used 0 status {UNSET} {NEEDS_RESET}",  # a head outside the table breaks the ring
    "ahead": f"used 0 status {UNSET} {NEEDS_RESET}",  # avail.idx 1000 ahead of a 16-entry queue
    "resize": f"used 0 status {UNSET} {NEEDS_RESET}",  # QueueNum written with a request in flight
    "move": f"used 0 status {UNSET} {NEEDS_RESET}",  # the descriptor table moved under it
    "unready": f"used 0 status {UNSET} {NEEDS_RESET}",  # QueueReady 0, resize, QueueReady 1
    "junknotify": f"used 1 len 513 status 0 {OK}",  # notifies for queues that do not exist: ignored
    # Rings the device refuses at QueueReady, before any ring byte is touched:
    "ringfar": f"used 0 status {UNSET} {REFUSED_RING}",  # descriptor table beyond RAM
    "ringhole": f"used 0 status {UNSET} {REFUSED_RING}",  # available ring on the device's registers
    "ringwrap": f"used 0 status {UNSET} {REFUSED_RING}",  # used ring at 2^64 - 16
    "ringodd": f"used 0 status {UNSET} {REFUSED_RING}",  # descriptor table not 16-byte aligned
    "ringend": f"used 0 status {UNSET} {REFUSED_RING}",  # used ring's last bytes past RAM's end
    "qsize0": f"used 0 status {UNSET} {REFUSED_RING}",
    "qsize3": f"used 0 status {UNSET} {REFUSED_RING}",
    "qsizebig": f"used 0 status {UNSET} {REFUSED_RING}",  # 32768 > QueueNumMax 256
    "qsizemax": f"used 0 status {UNSET} {REFUSED_RING}",  # 2^32 - 1
}
# virtio-console, port 0's transmit queue: a broken chain is returned unread (len 0).
CONSOLE_EXPECTED = {
    name: re.sub(r"(len \d+ )?status \d+ ", lambda m: "len 0 " if m.group(1) else "", line)
    for name, line in BLK_EXPECTED.items()
}


def attack_all(hostile: Hostile, device: int, expected: dict) -> dict:
    rss = RssWatch()
    got = {}
    for name in expected:
        out = hostile.run(f"vq {device} {name}")
        match = re.fullmatch(rf"vq {name}: (.*)\r\n", out)
        got[name] = match.group(1) if match else out
    reset = hostile.run(f"vq {device} reset")
    # Set-up, one request, reset, 2000 times: nothing the VMM builds per activation piles up.
    assert hostile.run(f"vqcycle {device} 2000") == "vqcycle: 2000 rounds of good, 2000 requests answered\r\n"
    rss.check("the virtio attacks")
    hostile.alive()
    return got, reset


def test_malformed_disk_requests_beside_a_healthy_vm(beside, hostile, hostile_disk):
    before = sha256(hostile_disk)
    got, reset = beside(lambda: attack_all(hostile, 0, BLK_EXPECTED))
    assert got == BLK_EXPECTED
    # Five 1 MiB reads notified, then Status=0 at once: the device comes back and serves.
    assert reset == f"vq reset: status after reset 0x0; then vq good: used 1 len 513 status 0 {OK}\r\n"
    assert sha256(hostile_disk) == before  # every attack was a read: nothing reached the file


def test_malformed_console_requests_beside_a_healthy_vm(beside, hostile):
    def attacks():
        # The control queue (MULTIPORT) first: DEVICE_READY twice, PORT_READY and
        # PORT_OPEN for ports that do not exist, PORT_OPEN 7, event 0xffff, a 4-byte
        # message, one in a device-writable buffer, then PORT_READY 0 split over 8
        # one-byte buffers. Back: one DEVICE_ADD, then port 0's name and open state.
        control = hostile.run("vqctl 1")
        return control, *attack_all(hostile, 1, CONSOLE_EXPECTED)

    control, got, reset = beside(attacks)
    assert control == "vqctl: 9 of 9 messages taken, 3 received: 0:1:0 0:7:0=p0 0:6:1; device 0xf\r\n"
    assert got == CONSOLE_EXPECTED
    assert reset == f"vq reset: status after reset 0x0; then vq good: used 1 len 0 {OK}\r\n"
    # Only well-formed chains reach the host: "hi\n" (good, indgood, junknotify, the
    # last after the reset; the five reset during I/O may or may not have gone) and
    # the 200-buffer chain: "h", 198 x "i", and a zero byte.
    sent = b"".join(hostile.console_out)
    long_chain = b"h" + b"i" * 198 + b"\0"
    assert sent.count(long_chain) == 1, sent
    assert set(sent.replace(long_chain, b"").split(b"hi\n")) <= {b""}, sent
    assert sent.replace(long_chain, b"").count(b"hi\n") >= 4


@pytest.mark.parametrize("device, device_id", [(0, 2), (1, 3)], ids=["disk", "console"])
def test_every_offset_at_every_size_beside_a_healthy_vm(beside, hostile, device, device_id):
    """Reads of 1, 2, 4 and 8 bytes at each of the 4096 offsets of the device's
    window (aligned or not, registers and config space), 16-byte SSE reads, an 8-byte
    read across the window's end, then garbage written the same way everywhere."""

    def sweep():
        rss = RssWatch()
        out = hostile.run(f"cfgsweep {device}")
        rss.check("the config-space sweep")
        hostile.alive()
        return out

    out = beside(sweep)
    assert re.fullmatch(
        rf"cfgsweep: device {device_id}: 16438 reads \(\d+ offsets non-zero\), 16373 writes; "
        r"after reset magic 0x74726976 status 0x0\r\n",
        out,
    ), out
    # The device still works once the driver sets it up again.
    assert hostile.run(f"vq {device} good").startswith("vq good: used 1 len ")


@pytest.mark.parametrize("device", [0, 1], ids=["disk", "console"])
def test_power_off_during_io_beside_a_healthy_vm(beside, guest_elf, hostile_disk, device):
    """Five 1 MiB reads (or console writes) notified, then the exit port at once:
    the VM stops with the guest's status while the I/O thread may still be
    writing into its RAM, and closing it (RAM unmapped) must wait for that or
    keep the mapping alive. Five rounds, for the race's sake."""

    def rounds():
        rss = RssWatch()
        outcomes = []
        for _ in range(5):
            h = Hostile(guest_elf, hostile_disk)
            try:
                h.vm.send(f"vq {device} exitio\r")
                outcomes.append(h.vm.wait(60))
            finally:
                h.vm.close()
        rss.check("power-offs during I/O")
        return outcomes

    for outcome in beside(rounds):
        assert (outcome.status, outcome.reason) == (9, "poweroff"), outcome


# ---- exits: a storm over every device and gap, every port at every width ----------------


def test_exit_storm_beside_a_healthy_vm(beside, hostile):
    """Round robin over 35 targets: UART, i8042, CMOS, PIC, PIT, unclaimed ports,
    the MMIO hole, IOAPIC, LAPIC, both virtio devices' registers, config and
    QueueNotify (no new work), reads and writes of every width."""

    def storm():
        rss = RssWatch()
        out = hostile.run(f"iostorm {STORM_EXITS}", timeout=900)
        rss.check(f"{STORM_EXITS} exits")
        hostile.alive()
        # The guest's own disk driver survived the storm over its device.
        assert hostile.run("cat mine.txt") == "the hostile VM's own file\r\n"
        return out

    out = beside(storm)
    assert re.fullmatch(rf"iostorm: {STORM_EXITS} accesses over 35 targets \(\d+ non-zero\), in \d+ cycles.*\r\n", out)


@pytest.mark.parametrize("size", [2, 4])
def test_every_port_at_width_beside_a_healthy_vm(beside, hostile, size):
    """Ports 0-0xffff (those wide accesses reach; not the exit device's): in, then out
    of garbage. Width 1 is test_hostile_guest.py's piostorm tests."""

    def sweep():
        rss = RssWatch()
        out = hostile.run(f"piostorm {size}", timeout=600)
        rss.check(f"the {size}-byte port sweep")
        hostile.alive()
        return out

    out = beside(sweep)
    ports = 0x10000 - (size - 1) - (0xFF - 0xF4 + size)
    # (the sweep's own write to COM1's transmit register comes out first)
    assert re.search(rf"piostorm: {ports} ports read and written {size} bytes wide, \d+ read as all ones, .*\r\n$", out), out


# ---- the CPU: CPUID, MSRs, a triple fault -----------------------------------------------


def test_cpuid_sweep_beside_a_healthy_vm(beside, hostile):
    out = beside(lambda: hostile.run("cpuidsweep"))
    assert re.fullmatch(r"cpuidsweep: 23808 leaves, hash [0-9a-f]{16}, leaf 0 unchanged, .*\r\n", out), out
    hostile.alive()


def ring0_attacker(cmdline: str, **config) -> MicroVM:
    if not HOSTILE_KERNEL.exists():  # a guest/build from before the kernel existed
        subprocess.run([str(ROOT / "build_guest.sh")], check=True)
    return MicroVM(VmConfig(kernel=str(HOSTILE_KERNEL), cmdline=cmdline, mem_mib=32, timeout=600, **config)).start()


def test_msr_probe_beside_a_healthy_vm(beside):
    """rdmsr of 25088 indices from ring 0, each written back (readable ones) or
    written 0 and all ones: every refusal a #GP in the guest, which finishes."""

    def probe():
        rss = RssWatch()
        vm = ring0_attacker("msr")
        try:
            outcome = vm.wait(600)
            rss.check("the MSR probe")
            return outcome, vm.output.decode(errors="replace")
        finally:
            vm.close()

    outcome, output = beside(probe)
    assert (outcome.status, outcome.reason) == (0, "poweroff"), (outcome, output)
    done = re.search(r"hostile: msr done, 25088 indices, (\d+) readable, (\d+) writes taken, (\d+) refused, (\d+) #GP", output)
    assert done, output
    readable, taken, refused, gps = map(int, done.groups())
    assert 0 < readable < 25088 and refused > 25088 - readable  # the unreadable ones refuse writes too
    assert gps == (25088 - readable) + refused  # every refusal was a #GP delivered to the guest


def test_string_io_from_ring0_beside_a_healthy_vm(beside):
    """rep ins/outs of every width (exits with count > 1, forwards and backwards),
    rep movs/stos between RAM and the MMIO hole."""

    def strio():
        rss = RssWatch()
        vm = ring0_attacker("strio")
        try:
            outcome = vm.wait(300)
            rss.check("string I/O")
            return outcome, vm.output.decode(errors="replace")
        finally:
            vm.close()

    outcome, output = beside(strio)
    assert (outcome.status, outcome.reason) == (0, "poweroff"), (outcome, output)
    assert "hostile: " + "S" * 64 + "\r\n" in output  # rep outsb to COM1 arrives whole
    assert "hostile: strio done, 24576 of 24576 port bytes and 4096 of 4096 MMIO bytes read as 0xff" in output


def test_two_vcpus_storming_at_once_beside_a_healthy_vm(beside, hostile_disk):
    """The second vCPU started by INIT/SIPI into a real-mode loop of port exits while
    the first storms ports, a virtio device and the hole; then power-off with the
    second still looping: both threads stop, the status is the guest's."""

    def smp():
        rss = RssWatch()
        vm = ring0_attacker("smp", vcpus=2, devices=(DiskConfig(str(hostile_disk)),))
        try:
            outcome = vm.wait(300)
            rss.check("two storming vCPUs")
            return outcome, vm.output.decode(errors="replace")
        finally:
            vm.close()

    outcome, output = beside(smp)
    assert (outcome.status, outcome.reason) == (0, "poweroff"), (outcome, output)
    assert "hostile: smp done, 5000 rounds here, at least 100 on the second vCPU" in output, output


@pytest.mark.parametrize("how", ["ring0", "ring3"])
def test_triple_fault_beside_a_healthy_vm(beside, guest_elf, how):
    """A triple fault stops that VM with the crash status; the other goes on."""

    def crash():
        if how == "ring0":  # an empty IDT, then #UD: no gate for it, nor for #DF
            vm = ring0_attacker("triple")
        else:  # the bundled guest's: #UD with RSP unmapped
            vm = MicroVM(VmConfig(kernel=str(guest_elf), mem_mib=32, timeout=60)).start()
            vm.expect("$ ", timeout=30)
            vm.send("triplefault\r")
        try:
            return vm.wait(60)
        finally:
            vm.close()

    outcome = beside(crash)
    assert (outcome.status, outcome.reason) == (EXIT_GUEST_CRASHED, "crash"), outcome
    assert "triple fault" in outcome.message and "\n" not in outcome.message


# ---- fault records anywhere --------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragment",
    [
        # a record of all-ones garbage (in free RAM), decoded as it is
        ("0x2000000 0xff", f"guest fault: vector {2**64 - 1} (reserved vector) at rip 0xffffffffffffffff"),
        ("0x0", "guest fault: vector 0 "),
        ("0x1 0xaa", "(reserved vector) at rip 0xaaaaaaaaaaaaaaaa, error code 0xaaaaaaaaaaaaaaaa"),  # unaligned
        ("0xfee00000", "outside guest RAM"),  # the LAPIC page
        ("0xd0000000", "outside guest RAM"),  # a virtio device's registers
    ],
    ids=["garbage", "address-0", "unaligned-garbage", "lapic", "virtio-registers"],
)
def test_fault_record_anywhere_beside_a_healthy_vm(beside, guest_elf, args, fragment):
    def report():
        vm = MicroVM(VmConfig(kernel=str(guest_elf), mem_mib=64, timeout=60)).start()
        try:
            vm.expect("$ ", timeout=30)
            vm.send(f"faultrec {args}\r")
            return vm.wait(60)
        finally:
            vm.close()

    outcome = beside(report)
    assert (outcome.status, outcome.reason) == (EXIT_GUEST_CRASHED, "crash"), outcome
    assert fragment in outcome.message and "\n" not in outcome.message, outcome


# ---- the VMM's own output --------------------------------------------------------------


def test_protocol_violations_in_a_loop_do_not_flood_stderr(run_vmm, hostile_disk):
    """Bug found here: every DEVICE_NEEDS_RESET put a warning on stderr, so a guest
    breaking the ring, resetting and breaking it again wrote a line per round
    without end (~250 lines a second). Now the first few are logged, then no more."""
    rounds = 300
    result = run_vmm(
        "run", "--mem", "64", "--timeout", "120", "--disk", str(hostile_disk),
        stdin=f"vqcycle 0 {rounds} badhead\nvqcycle 0 {rounds} resize\nexit 4\n",
    )
    assert result.returncode == 4, result.stderr.decode()
    out = result.stdout.decode(errors="replace")
    assert f"vqcycle: {rounds} rounds of badhead, 0 requests answered" in out, out
    assert f"vqcycle: {rounds} rounds of resize, 0 requests answered" in out, out
    lines = result.stderr.decode().splitlines()
    assert 1 <= len(lines) <= 8 and "further violations are not logged" in lines[-1], lines
