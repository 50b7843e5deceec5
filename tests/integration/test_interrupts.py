"""Device interrupts reach the guest: the `irqtest` shell command (UART IRQ 4, virtio-blk IRQs)."""

import re

import pytest

from vmm import DiskConfig, MicroVM, VmConfig
from vmm.disk_image import build_disk_image

pytestmark = pytest.mark.kvm
PROMPT = "$ "
UART_LINE = re.compile(rb"irqtest: irq 4 \(uart\) delivered (\d+)\r\n")


def disk_line(irq: int, disk: int) -> re.Pattern:
    return re.compile(rb"irqtest: irq %d \(virtio disk %d\) delivered (\d+)\r\n" % (irq, disk))


def run_command(vm, line: str, timeout: float = 30) -> str:
    vm.send(line + "\r")
    start = vm.expect(line + "\r\n", timeout).end()  # the shell's echo of the line
    prompt = vm.expect("$ ", timeout)
    return vm.output[start : prompt.start()].decode()


@pytest.fixture
def image(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.txt").write_text("hello from the host\n")
    path = tmp_path / "disk.img"
    build_disk_image(src, path, 4)
    return path


def irqtest(vm, *disk_irqs: int) -> dict[str, int]:
    """Run irqtest, answer its key prompt; the counts it reports, by device."""
    vm.send("irqtest\r")
    vm.expect("irqtest: type a key\r\n", timeout=20)
    vm.send("k")
    counts = {"uart": int(vm.expect(UART_LINE, timeout=20).group(1))}
    for disk, irq in enumerate(disk_irqs):
        counts[f"disk{disk}"] = int(vm.expect(disk_line(irq, disk), timeout=30).group(1))
    vm.expect("irqtest: done\r\n", timeout=20)
    vm.expect(PROMPT, timeout=10)
    return counts


def test_uart_and_disk_interrupts_are_delivered(guest_elf, image):
    with MicroVM(VmConfig(kernel=str(guest_elf), mem_mib=64, devices=(DiskConfig(str(image)),), timeout=120)) as vm:
        vm.expect(PROMPT, timeout=20)
        counts = irqtest(vm, 5)
        assert counts["uart"] > 0 and counts["disk0"] > 0, counts
        assert b"NOT delivered" not in vm.output
        # The key went to irqtest, not to the shell; the shell and the (polling) disk still work.
        assert run_command(vm, "echo still here") == "still here\r\n"
        assert run_command(vm, "cat hello.txt") == "hello from the host\r\n"
        # Interrupts are off again: KVM's view of the guest's IF at its last exit.
        assert vm.vcpus[0].vcpu.run_struct.if_flag == 0
        # A second run works just as well (PICs, gates and flags were put back).
        counts = irqtest(vm, 5)
        assert counts["uart"] > 0 and counts["disk0"] > 0, counts


def test_two_disks_without_ioeventfd(guest_elf, image, tmp_path):
    second = tmp_path / "second.img"
    second.write_bytes(bytes(1 << 20))
    disks = (DiskConfig(str(image)), DiskConfig(str(second), read_only=True))
    with MicroVM(VmConfig(kernel=str(guest_elf), mem_mib=64, devices=disks, ioeventfd=False, timeout=120)) as vm:
        vm.expect(PROMPT, timeout=20)
        counts = irqtest(vm, 5, 6)
        assert all(n > 0 for n in counts.values()), counts
        assert run_command(vm, "ls 0").strip().endswith("hello.txt")


def test_typed_ahead_input_is_left_for_the_shell(run_vmm, image):
    # Input already waiting raises the UART interrupt at once and is not eaten.
    result = run_vmm("run", "--disk", str(image), stdin="irqtest\nexit 7\n")
    out = result.stdout
    assert result.returncode == 7, (result.stderr, out)
    assert UART_LINE.search(out) and disk_line(5, 0).search(out) and b"irqtest: done" in out, out
