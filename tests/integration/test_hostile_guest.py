"""A hostile guest (the bundled one's attack commands) cannot grow, crash or wedge the VMM."""

import re
import subprocess
import sys
import threading
import time

import psutil
import pytest

from tests.conftest import ROOT
from vmm import MicroVM, VmConfig
from vmm.errors import EXIT_GUEST_CRASHED

pytestmark = pytest.mark.kvm

MEM_MIB = 64
RAM_END = MEM_MIB << 20  # one RAM region, 0..RAM_END, below the MMIO hole
MMIO_HOLE_START = 0xC0000000
FAULT_RECORD_SIZE = 56
MIB = 1 << 20


@pytest.fixture
def vm(guest_elf):
    with MicroVM(VmConfig(kernel=str(guest_elf), mem_mib=MEM_MIB)) as machine:
        machine.expect("$ ", timeout=20)
        yield machine


def run_command(vm, line: str, timeout: float = 30) -> str:
    vm.send(line + "\r")
    start = vm.expect(line + "\r\n", timeout).end()
    prompt = vm.expect("$ ", timeout)
    return vm.output[start : prompt.start()].decode(errors="replace")


def storm(vm, count: int, base: int) -> None:
    out = run_command(vm, f"mmiostorm {count} 8 0x{base:x}")
    assert f"mmiostorm: {count} reads at 0x{base:x}-" in out and f", {count} all ones," in out, out


def test_mmio_miss_storm_does_not_grow_the_vmm(vm):
    """200k distinct unbacked MMIO addresses: RSS flat from 50k on (it grew ~12 MiB per
    150k addresses while the bus counted every address), and the shell still answers."""
    process = psutil.Process()  # the VMM runs in this process
    storm(vm, 50_000, MMIO_HOLE_START)
    rss_at_50k = process.memory_info().rss
    storm(vm, 150_000, MMIO_HOLE_START + 8 * 50_000)  # the next 150k addresses, all new
    grown = process.memory_info().rss - rss_at_50k
    assert grown < 3 * MIB, f"RSS grew {grown / MIB:.1f} MiB over 150k MMIO misses"
    assert run_command(vm, "echo ok") == "ok\r\n"


def test_mmio_storm_one_address_per_page(vm):
    out = run_command(vm, f"mmiostorm 2000 4096 0x{MMIO_HOLE_START:x}")
    assert ", 2000 all ones," in out, out
    assert run_command(vm, "echo ok") == "ok\r\n"


def test_port_sweep_leaves_the_vm_responsive(vm):
    out = run_command(vm, "piostorm")
    ports = 0x10000 - (0xFF - 0xF4 + 1)
    assert re.search(rf"piostorm: {ports} ports read and written, \d+ read as all ones", out), out
    assert run_command(vm, "echo ok") == "ok\r\n"
    vm.send("exit 7\r")
    outcome = vm.wait(10)
    assert (outcome.status, outcome.reason) == (7, "poweroff")


def test_port_sweep_through_the_cli(guest_elf):
    """The same sweep under `vmm run`, where C transmits the UART's bytes while the model
    allows it: the sweep's writes to COM1 (DLAB, loopback, FIFO off) must switch that off
    and on again cleanly."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmm", "run", "--mem", str(MEM_MIB), "--timeout", "60"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    output = bytearray()

    def read_output() -> None:
        while chunk := proc.stdout.read1(4096):
            output.extend(chunk)

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()

    def wait_for(text: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in output:
            assert proc.poll() is None, f"vmm exited {proc.returncode}: {bytes(output[-300:])!r}"
            assert time.monotonic() < deadline, f"{text!r} not seen: {bytes(output[-300:])!r}"
            time.sleep(0.05)

    try:
        wait_for(b"$ ")
        proc.stdin.write(b"piostorm\n")
        proc.stdin.flush()
        wait_for(b"ports read and written")  # input sent during the sweep could be read by it
        proc.stdin.write(b"echo ok\nexit 5\n")
        proc.stdin.close()
        assert proc.wait(30) == 5, proc.stderr.read().decode()
        reader.join(5)
        assert b"ok\r\n" in output
        assert proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def one_line_crash(result, *fragments):
    assert result.returncode == EXIT_GUEST_CRASHED, (result.returncode, result.stderr)
    err = result.stderr.decode()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vmm: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


@pytest.mark.parametrize(
    "addr",
    [0xFFFFFFFF, RAM_END - 8, RAM_END - FAULT_RECORD_SIZE + 1, MMIO_HOLE_START],
    ids=["top-of-4GiB", "last-8-bytes-of-ram", "straddles-ram-end", "mmio-hole"],
)
def test_fault_record_outside_ram_is_a_one_line_crash(run_vmm, guest_elf, addr):
    result = run_vmm("run", "--mem", str(MEM_MIB), stdin=f"faultrec 0x{addr:x}\n")
    one_line_crash(result, f"guest fault report at 0x{addr:x}", "outside guest RAM")


def test_fault_record_in_the_last_bytes_of_ram_is_read(run_vmm, guest_elf):
    result = run_vmm("run", "--mem", str(MEM_MIB), stdin=f"faultrec 0x{RAM_END - FAULT_RECORD_SIZE:x}\n")
    one_line_crash(result, "guest fault: vector ")  # whatever the guest left there, decoded
