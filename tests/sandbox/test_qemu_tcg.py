"""The same guest and bundle under QEMU TCG, where `syscall` really enters
ring 0 (sysretq, iretq, hlt behave as on hardware): same output."""

import shutil
import subprocess

import pytest

from tests.sandbox.conftest import boot_bundle, parse
from vmm.sandbox import build_bundle

pytestmark = pytest.mark.kvm

QEMU = "qemu-system-x86_64"
INPUT = b"alpha\nbeta\ngamma\n"


def run_tcg(guest_elf, bundle_path, cpu="qemu64"):
    argv = [
        QEMU, "-M", "microvm,acpi=off", "-accel", "tcg", "-cpu", cpu, "-m", "128",
        "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
        "-kernel", str(guest_elf), "-initrd", str(bundle_path), "-append", "console=ttyS0",
    ]
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    # isa-debug-exit: QEMU exits with (status << 1) | 1
    return parse(result.stdout, result.returncode >> 1, result.stderr)


@pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"{QEMU} not installed")
@pytest.mark.parametrize(
    "prog, argv, files",
    [
        ("files", ["files", "/data/in.txt", "/tmp"], {"/data/in.txt": INPUT}),
        ("faults", ["faults", "raise"], {}),
        ("faults", ["faults", "handler"], {}),
        ("faults", ["faults", "ud"], {}),
        ("faults", ["faults", "int3"], {}),
        ("faults", ["faults", "hlt"], {}),
        ("faults", ["faults", "abort"], {}),
        ("timerand", ["timerand"], {}),
        ("memory", ["memory", "/data/in.txt"], {"/data/in.txt": INPUT}),
        ("showargs", ["showargs", "a", "b c"], {}),
        ("hostile", ["hostile", "scribble"], {}),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_tcg_output_equals_kvm(guest_elf, compile_prog, tmp_path, prog, argv, files):
    exe = compile_prog(prog)
    bundle = build_bundle(exe, argv, {"LANG": "C"}, files, {"clock": 10**18, "seed": 7})
    kvm = boot_bundle(bundle, tmp_path)
    path = tmp_path / "tcg.tar"
    path.write_bytes(bundle)
    tcg = run_tcg(guest_elf, path)
    assert tcg.outcome == kvm.outcome, tcg.serial
    assert tcg.output == kvm.output
    assert tcg.status == kvm.status


@pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"{QEMU} not installed")
def test_tcg_stack_overflow_is_sigsegv(guest_elf, compile_prog, tmp_path):
    # #PF through IST1: on real CPUs (and TCG) that loads a null SS
    bundle = build_bundle(compile_prog("hostile"), ["hostile", "recurse"], {}, {}, {})
    path = tmp_path / "tcg.tar"
    path.write_bytes(bundle)
    tcg = run_tcg(guest_elf, path)
    assert tcg.outcome.startswith("signal 11 addr 0x"), tcg.serial
    assert tcg.status == 125


@pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"{QEMU} not installed")
@pytest.mark.parametrize("argv", [["threads", "tls"], ["threads", "counter"], ["faults", "handler"], ["fsbase", "threads"]],
                         ids=" ".join)
def test_tcg_with_fsgsbase_equals_kvm(guest_elf, compile_prog, tmp_path, argv):
    """-cpu max has FSGSBASE: the guest sets a program's FS base with wrfsbase
    (boot.S, lx_main.c) in real ring 0 and ring 3 (qemu64 takes the ring-0 gate)."""
    bundle = build_bundle(compile_prog(argv[0]), argv, {"LANG": "C"}, {}, {"clock": 10**18, "seed": 7})
    kvm = boot_bundle(bundle, tmp_path)
    path = tmp_path / "tcg.tar"
    path.write_bytes(bundle)
    tcg = run_tcg(guest_elf, path, cpu="max")
    assert kvm.outcome == ("status 42" if argv[0] == "faults" else "status 0"), kvm.serial  # the handler exits 42
    assert (tcg.outcome, tcg.output, tcg.status) == (kvm.outcome, kvm.output, kvm.status), tcg.serial
