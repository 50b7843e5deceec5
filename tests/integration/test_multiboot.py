"""A Multiboot test kernel (tests/guests/multiboot/) under vmm, and the same under QEMU."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SOURCES = ROOT / "tests" / "guests" / "multiboot"
CMDLINE = "hello multiboot exit=5"
MODULE_TEXT = b"the module's first line\nand its second\n"
# What the loader's choices decide and so differ between vmm and QEMU: the RAM
# QEMU keeps for its firmware (mem_upper, the mmap past 640 KiB) and the name.
LOADER_SPECIFIC = re.compile(r"mbtest: (mmap (?!0x0000000000000000 )|boot loader)")


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    out = tmp_path_factory.mktemp("multiboot")
    subprocess.run([str(SOURCES / "build.sh"), str(out)], check=True, capture_output=True)
    module = out / "module.txt"
    module.write_bytes(MODULE_TEXT)
    return {"elf": str(out / "mbtest.elf"), "bin": str(out / "mbtest.bin"), "module": str(module)}


def lines(stdout: bytes) -> list[str]:
    return [line for line in stdout.decode().replace("\r\n", "\n").splitlines() if line.startswith("mbtest: ")]


def run_vmm(*args):
    return subprocess.run([sys.executable, "-m", "vmm", "run", *args], cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)


@pytest.mark.kvm
@pytest.mark.parametrize("form, found", [("elf", "multiboot (ELF)"), ("bin", "multiboot (a.out kludge)")])
def test_boots_under_vmm_and_reports_what_it_got(kernels, form, found):
    kernel = kernels[form]
    result = run_vmm("--kernel", kernel, "--initrd", kernels["module"], "--cmdline", CMDLINE, "--mem", "64", "--timeout", "30", "--stats")
    assert result.returncode == 5, result.stderr
    assert f"vmm: boot: {found}\n" in result.stderr.decode()
    assert lines(result.stdout) == [
        "mbtest: magic 0x2badb002",
        "mbtest: state pe=1 pg=0 if=0 vm=0",
        f'mbtest: cmdline "{kernel} {CMDLINE}"',
        "mbtest: mem_lower 639 KiB mem_upper 64512 KiB",
        "mbtest: mmap 0x0000000000000000 len 0x000000000009fc00 type 1",
        "mbtest: mmap 0x000000000009fc00 len 0x0000000000060400 type 2",
        "mbtest: mmap 0x0000000000100000 len 0x0000000003f00000 type 1",
        f"mbtest: module 0 size {len(MODULE_TEXT)} page-aligned first line \"the module's first line\"",
        'mbtest: boot loader "vmm"',
        "mbtest: done",
    ]


@pytest.mark.kvm
def test_qemu_exit_code_style(kernels):
    result = run_vmm("--kernel", kernels["elf"], "--cmdline", "exit=5", "--exit-code-style", "qemu")
    assert result.returncode == (5 << 1) | 1, result.stderr
    result = run_vmm("--kernel", kernels["elf"], "--cmdline", "exit=0", "--exit-code-style", "qemu")
    assert result.returncode == 1, result.stderr
    spinning = subprocess.run(  # the bundled guest spins in ring 3 until --timeout: 124, as `timeout` gives
        [sys.executable, "-m", "vmm", "run", "--timeout", "1", "--exit-code-style", "qemu"],
        cwd=ROOT, input=b"spin\n", capture_output=True, timeout=60,
    )
    assert spinning.returncode == 124, spinning.stderr


@pytest.mark.kvm
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64")
@pytest.mark.parametrize("form", ["elf", "bin"])
def test_same_kernel_prints_the_same_under_qemu(kernels, form):
    kernel, module = kernels[form], kernels["module"]
    qemu = subprocess.run(
        ["qemu-system-x86_64", "-accel", "tcg", "-m", "64", "-kernel", kernel, "-initrd", module, "-append", CMDLINE,
         "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-serial", "stdio", "-display", "none", "-nodefaults"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
    )
    ours = run_vmm("--kernel", kernel, "--initrd", module, "--cmdline", CMDLINE, "--mem", "64", "--timeout", "30", "--exit-code-style", "qemu")
    assert qemu.returncode == ours.returncode == 11, (qemu.stderr, ours.stderr)
    theirs, mine = lines(qemu.stdout), lines(ours.stdout)
    assert "mbtest: done" in theirs, qemu.stdout
    # everything the spec fixes is identical; the RAM layout past 1 MiB is each loader's own
    same = lambda found: [re.sub(r" mem_upper \d+ KiB", "", line) for line in found if not LOADER_SPECIFIC.match(line)]
    assert same(theirs) == same(mine)
    assert len(same(mine)) == 7  # magic, state, cmdline, mem_lower, the first mmap entry, module, done
    assert any(line.startswith("mbtest: mmap 0x0000000000100000 len ") and line.endswith(" type 1") for line in theirs)
