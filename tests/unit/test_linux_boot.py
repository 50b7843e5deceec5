"""The Linux x86 boot protocol: bzImage parsing, the zero page, unpacking, long-mode entry.

Fake bzImages are built here from the header layout; a tiny one whose 64-bit
entry code reads the zero page boots in a real VM.
"""

from __future__ import annotations

import gzip
import struct
import sys
import subprocess
from types import SimpleNamespace

import pytest

from vmm.boot import bzimage_layout as L
from vmm.boot.linux import BOOT_PARAMS_ADDR, BzImage, LinuxBoot
from vmm.boot.protocol import LongModeEntry, select_boot
from vmm.boot.unpack import decompress_payload, lz4_legacy_decompress, parse_vmlinux
from vmm.errors import ConfigError, KernelImageError
from vmm.memory import GuestMemory
from vmm.x86 import aml, layout, long_mode

MIB = 1 << 20
SETUP_SECTS = 4

# 64-bit entry code: status = first command-line byte + (0x100000000 >> 32), written to port 0xf4.
# In 32-bit mode the REX prefixes decode as dec/inc and it would not exit with that status.
ENTRY_CODE = bytes.fromhex(
    "48bb0000000001000000"  # movabs rbx, 0x100000000
    "8b8628020000"  # mov eax, [rsi+0x228]   (boot_params.hdr.cmd_line_ptr)
    "0fb600"  # movzx eax, byte [rax]
    "48c1eb20"  # shr rbx, 32
    "01d8"  # add eax, ebx
    "e6f4"  # out 0xf4, al
    "ebfe"  # jmp .
)


def make_bzimage(
    *,
    version=0x20F,
    kernel: bytes = b"",
    payload: bytes = b"",
    loadflags=L.LOADED_HIGH,
    relocatable=1,
    alignment=2 * MIB,
    pref_address=16 * MIB,
    init_size=4 * MIB,
    xloadflags=L.XLF_KERNEL_64,
    cmdline_size=2047,
    initrd_addr_max=0x7FFFFFFF,
) -> bytes:
    """A bzImage: boot sector + setup sectors, then the protected-mode part (``kernel``
    at offset 0, ENTRY_CODE at 0x200, then ``payload``)."""
    pm = bytearray(kernel.ljust(0x200, b"\x90") if kernel else bytes(0x200))
    pm += ENTRY_CODE
    payload_offset = len(pm) if payload else 0
    pm += payload
    pm += bytes(-len(pm) % 16)
    hdr = dict(
        setup_sects=SETUP_SECTS, root_flags=0, syssize=len(pm) // 16, ram_size=0, vid_mode=0, root_dev=0,
        boot_flag=L.BOOT_FLAG, jump=0x66EB, header=b"HdrS", version=version, realmode_swtch=0, start_sys_seg=0,
        kernel_version=0, type_of_loader=0, loadflags=loadflags, setup_move_size=0, code32_start=0x100000,
        ramdisk_image=0, ramdisk_size=0, bootsect_kludge=0, heap_end_ptr=0, ext_loader_ver=0, ext_loader_type=0,
        cmd_line_ptr=0, initrd_addr_max=initrd_addr_max, kernel_alignment=alignment, relocatable_kernel=relocatable,
        min_alignment=21, xloadflags=xloadflags, cmdline_size=cmdline_size, hardware_subarch=0,
        hardware_subarch_data=0, payload_offset=payload_offset, payload_length=len(payload), setup_data=0,
        pref_address=pref_address, init_size=init_size, handover_offset=0, kernel_info_offset=0,
    )
    setup = bytearray((SETUP_SECTS + 1) * 512)
    setup[0:2] = b"MZ"
    header = L.SetupHeader.build(hdr)
    setup[L.SETUP_HEADER_OFFSET : L.SETUP_HEADER_OFFSET + len(header)] = header
    return bytes(setup) + bytes(pm)


def tiny_vmlinux(paddr=16 * MIB, code=ENTRY_CODE, bss=4096) -> bytes:
    """A 64-bit ELF with one PT_LOAD at ``paddr`` (virtual 0xffffffff80000000 + paddr), entry physical."""
    vaddr = 0xFFFFFFFF80000000 + paddr
    ehdr = b"\x7fELF\x02\x01\x01" + bytes(9)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, paddr, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0x1000, vaddr, paddr, len(code), len(code) + bss, 0x200000)
    return (ehdr + phdr).ljust(0x1000, b"\0") + code


def gzip_payload(elf: bytes) -> bytes:
    return gzip.compress(elf) + struct.pack("<I", len(elf))


def write(tmp_path, data: bytes, name="bzImage") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


# --- recognising and checking the header


def test_select_boot_picks_the_linux_protocol_for_a_bzimage_only(tmp_path):
    boot = select_boot(write(tmp_path, make_bzimage()), None, 64 * MIB)
    assert isinstance(boot, LinuxBoot) and boot.description == "linux (bzImage, boot protocol 2.15)"
    with pytest.raises(KernelImageError, match="not a kernel vmm can boot"):
        select_boot(write(tmp_path, tiny_vmlinux(), "vmlinux"), None, 64 * MIB)  # an ELF without a PVH note


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(version=0x205), "boot protocol 2.05 is too old (vmm needs 2.06 or later)"),
        (dict(loadflags=0), "a zImage"),
        (dict(xloadflags=0), "no 64-bit entry point"),
        (dict(version=0x20A), "no 64-bit entry point (boot protocol 2.10)"),
        (dict(alignment=3 * MIB), "not a power of two"),
    ],
)
def test_unbootable_headers_are_refused_with_one_line(tmp_path, fields, message):
    with pytest.raises(KernelImageError) as err:
        LinuxBoot(write(tmp_path, make_bzimage(**fields)), None, 64 * MIB)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_syssize_past_the_end_of_the_file_is_refused(tmp_path):
    data = bytearray(make_bzimage())
    struct.pack_into("<I", data, 0x1F4, 0x100000)
    with pytest.raises(KernelImageError, match="past the end"):
        LinuxBoot(write(tmp_path, bytes(data)), None, 64 * MIB)


def test_a_truncated_file_is_refused(tmp_path):
    with pytest.raises(KernelImageError, match="too short"):
        BzImage("k", make_bzimage()[:0x200])


# --- where the kernel goes


def test_load_address_is_pref_address_when_it_fits():
    image = BzImage("k", make_bzimage(pref_address=16 * MIB, init_size=8 * MIB))
    assert image.load_address(64 * MIB) == 16 * MIB


def test_load_address_falls_back_to_1mib_rounded_to_the_alignment_when_pref_does_not_fit():
    image = BzImage("k", make_bzimage(pref_address=16 * MIB, init_size=8 * MIB))
    assert image.load_address(20 * MIB) == 2 * MIB


def test_a_kernel_that_cannot_move_loads_at_1mib():
    image = BzImage("k", make_bzimage(relocatable=0, pref_address=16 * MIB, init_size=1 * MIB))
    assert image.load_address(64 * MIB) == 1 * MIB


def test_init_size_must_fit_in_ram():
    image = BzImage("k", make_bzimage(init_size=30 * MIB))
    with pytest.raises(ConfigError, match="needs guest RAM up to 0x2000000"):
        image.load_address(24 * MIB)


# --- the zero page


def load(tmp_path, mem_mib=64, cmdline="console=ttyS0", initrd=None, acpi_rsdp=None, **fields):
    path = write(tmp_path, make_bzimage(**fields))
    initrd_path = write(tmp_path, initrd, "initrd") if initrd is not None else None
    boot = LinuxBoot(path, initrd_path, mem_mib * MIB, unpack=False)
    memory = GuestMemory(layout.ram_regions(mem_mib * MIB))
    entry = boot.load(memory, cmdline, acpi_rsdp=acpi_rsdp)
    params = L.BootParams.parse(memory.read(BOOT_PARAMS_ADDR, 4096))
    return memory, entry, params, L.SetupHeader.parse(params.hdr)


def test_the_zero_page_carries_header_cmdline_e820_and_rsdp(tmp_path):
    memory, entry, params, hdr = load(tmp_path, cmdline="console=ttyS0 quiet", acpi_rsdp=0xE0000)
    assert isinstance(entry, LongModeEntry)
    assert (entry.entry, entry.rsi) == (16 * MIB + 0x200, BOOT_PARAMS_ADDR)
    assert hdr.header == b"HdrS" and hdr.version == 0x20F  # copied from the kernel
    assert hdr.type_of_loader == 0xFF
    assert hdr.loadflags & L.CAN_USE_HEAP and hdr.loadflags & L.LOADED_HIGH
    assert hdr.heap_end_ptr == 0xFE00 - 0x200
    assert memory.read(hdr.cmd_line_ptr, 20) == b"console=ttyS0 quiet\0"
    assert (hdr.ramdisk_image, hdr.ramdisk_size) == (0, 0)
    assert params.acpi_rsdp_addr == 0xE0000
    e820 = [(e.addr, e.size, e.type) for e in params.e820_table[: params.e820_entries]]
    assert e820 == [(0, 0x9FC00, 1), (0x9FC00, 0x100000 - 0x9FC00, 2), (MIB, 63 * MIB, 1)]
    assert memory.read(16 * MIB + 0x200, len(ENTRY_CODE)) == ENTRY_CODE


def test_the_initrd_goes_high_page_aligned_and_within_initrd_addr_max(tmp_path):
    blob = bytes(range(256)) * 40
    memory, _, _, hdr = load(tmp_path, initrd=blob, initrd_addr_max=48 * MIB - 1)
    assert hdr.ramdisk_size == len(blob)
    assert hdr.ramdisk_image % 4096 == 0
    assert 16 * MIB + 4 * MIB <= hdr.ramdisk_image and hdr.ramdisk_image + len(blob) <= 48 * MIB
    assert memory.read(hdr.ramdisk_image, len(blob)) == blob


def test_an_initrd_that_does_not_fit_beside_the_kernel_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="initrd of .* does not fit"):
        load(tmp_path, mem_mib=24, initrd=bytes(6 * MIB))


def test_a_command_line_longer_than_the_kernel_takes_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is 17 bytes; this kernel takes at most 16"):
        load(tmp_path, cmdline="x" * 17, cmdline_size=16)


# --- unpacking in the VMM


def lz4_literals_block(data: bytes) -> bytes:
    """An LZ4 block holding ``data`` as one run of literals."""
    n = len(data)
    if n < 15:
        return bytes([n << 4]) + data
    extra, rest = b"", n - 15
    while rest >= 255:
        extra, rest = extra + b"\xff", rest - 255
    return bytes([0xF0]) + extra + bytes([rest]) + data


def test_lz4_legacy_frame_decodes_literals_and_overlapping_matches():
    # "abc" then a match of 10 at offset 3 (overlapping: repeats "abc"), then literals "XY"
    block = bytes([0x36]) + b"abc" + b"\x03\x00" + bytes([0x20]) + b"XY"
    frame = b"\x02\x21\x4c\x18" + struct.pack("<I", len(block)) + block
    assert lz4_legacy_decompress(frame, 15) == b"abcabcabcabcaXY"


def test_lz4_long_literal_runs_use_extension_bytes():
    data = bytes(range(256)) * 3
    block = lz4_literals_block(data)
    assert lz4_legacy_decompress(b"\x02\x21\x4c\x18" + struct.pack("<I", len(block)) + block, len(data)) == data


@pytest.mark.parametrize(
    "block",
    [
        bytes([0x10]) + b"a" + b"\x05\x00",  # match offset before the start of the output
        bytes([0x50]) + b"ab",  # literals past the block
        bytes([0x1F]) + b"a" + b"\x01\x00" + b"\xff" * 3,  # match length runs off the block
    ],
)
def test_corrupt_lz4_is_refused_not_crashed_on(block):
    payload = b"\x02\x21\x4c\x18" + struct.pack("<I", len(block)) + block + struct.pack("<I", 100)
    with pytest.raises(KernelImageError, match="corrupt"):
        decompress_payload(payload)


def test_lz4_output_cannot_grow_past_the_declared_size():
    # a match of 4 + 15 + 255*k bytes would blow far past the 100 bytes declared
    block = bytes([0x1F]) + b"a" + b"\x01\x00" + b"\xff" * 1000 + b"\x00" + bytes([0x10]) + b"z"
    payload = b"\x02\x21\x4c\x18" + struct.pack("<I", len(block)) + block + struct.pack("<I", 100)
    with pytest.raises(KernelImageError):
        decompress_payload(payload)


def test_an_unknown_compression_is_left_to_the_guest():
    assert decompress_payload(b"\x28\xb5\x2f\xfd" + bytes(16)) is None


def test_parse_vmlinux_finds_segments_and_the_physical_entry():
    vmlinux = parse_vmlinux(tiny_vmlinux(paddr=16 * MIB))
    assert vmlinux.entry == 16 * MIB
    (segment,) = vmlinux.segments
    assert (segment.paddr, segment.data, segment.memsz) == (16 * MIB, ENTRY_CODE, len(ENTRY_CODE) + 4096)


def test_the_unpacked_kernel_is_placed_at_its_physical_address(tmp_path):
    path = write(tmp_path, make_bzimage(payload=gzip_payload(tiny_vmlinux(paddr=8 * MIB))))
    boot = LinuxBoot(path, None, 64 * MIB)
    assert boot.vmlinux is not None
    memory = GuestMemory(layout.ram_regions(64 * MIB))
    memory.write(8 * MIB + len(ENTRY_CODE), b"\xaa" * 16)  # the bss must be zeroed
    entry = boot.load(memory, "x")
    assert entry.entry == 8 * MIB
    assert memory.read(8 * MIB, len(ENTRY_CODE) + 16) == ENTRY_CODE + bytes(16)


def test_an_unpacked_kernel_below_1mib_is_refused(tmp_path):
    path = write(tmp_path, make_bzimage(payload=gzip_payload(tiny_vmlinux(paddr=0x10000))))
    with pytest.raises(KernelImageError, match="below 1 MiB"):
        LinuxBoot(path, None, 64 * MIB)


# --- long mode


def test_identity_map_covers_4gib_with_2mib_pages():
    memory = GuestMemory(layout.ram_regions(4 * MIB))
    cr3 = long_mode.write_boot_tables(memory)
    pml4 = memory.read_int(cr3, 8)
    pdpt = pml4 & ~0xFFF
    for gib in range(4):
        pd = memory.read_int(pdpt + 8 * gib, 8) & ~0xFFF
        for index in (0, 511):
            entry = memory.read_int(pd + 8 * index, 8)
            assert entry & 0x83 == 0x83  # present, writable, 2 MiB page
            assert entry & ~0xFFF == (gib << 30) + (index << 21)
    assert memory.read_int(long_mode.GDT_ADDR + 0x10, 8) == 0x00AF9A000000FFFF  # __BOOT_CS: L=1


def fake_vcpu():
    seg = lambda: SimpleNamespace()
    sregs = SimpleNamespace(
        cs=seg(), ds=seg(), es=seg(), fs=seg(), gs=seg(), ss=seg(), tr=seg(),
        gdt=SimpleNamespace(), idt=SimpleNamespace(), cr0=0, cr3=0, cr4=0, efer=0,
    )
    regs = SimpleNamespace()
    vcpu = SimpleNamespace(get_sregs=lambda: sregs, get_regs=lambda: regs)
    vcpu.set_sregs = lambda s: setattr(vcpu, "sregs", s)
    vcpu.set_regs = lambda r: setattr(vcpu, "regs", r)
    return vcpu


def test_long_mode_entry_state():
    vcpu = fake_vcpu()
    LongModeEntry(0x1000200, 0x7000, 0x9000).apply(vcpu)
    s, r = vcpu.sregs, vcpu.regs
    assert s.cr0 & (1 << 31) and s.cr0 & 1 and s.cr4 & (1 << 5)
    assert s.efer == (1 << 8) | (1 << 10) and s.cr3 == 0x9000
    assert (s.cs.selector, s.cs.l, s.cs.db) == (0x10, 1, 0)
    assert all(seg.selector == 0x18 for seg in (s.ds, s.es, s.ss))
    assert (r.rip, r.rsi) == (0x1000200, 0x7000)
    assert not r.rflags & (1 << 9)  # interrupts off


# --- real guests


def run_vmm(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "vmm", "run", *args], capture_output=True, timeout=timeout)


@pytest.mark.kvm
@pytest.mark.parametrize("unpacked", [False, True], ids=["guest-entry-0x200", "unpacked-vmlinux"])
def test_a_tiny_bzimage_boots_in_long_mode_and_reads_its_zero_page(tmp_path, unpacked):
    # the unpacked kernel adds 2, not 1: the status tells which entry ran
    code = ENTRY_CODE.replace(bytes.fromhex("48bb0000000001000000"), bytes.fromhex("48bb0000000002000000"))
    payload = gzip_payload(tiny_vmlinux(paddr=8 * MIB, code=code)) if unpacked else b""
    path = write(tmp_path, make_bzimage(payload=payload))
    result = run_vmm("--kernel", path, "--cmdline", "A rest", "--mem", "64", "--timeout", "20")
    assert result.returncode == ord("A") + (2 if unpacked else 1), result.stderr.decode()


@pytest.mark.kvm
def test_a_bad_bzimage_is_one_line_and_status_2(tmp_path):
    result = run_vmm("--kernel", write(tmp_path, make_bzimage(version=0x204)))
    assert result.returncode == 2
    assert result.stderr.decode().strip().startswith("vmm: ") and result.stderr.decode().count("\n") == 1


POWEROFF_BY_ACPI = bytes.fromhex(
    "b034"  # mov al, (5 << 2) | SLP_EN    (SLP_TYP of \_S5_ is 5)
    "66ba0006"  # mov dx, 0x600            (the FADT's SLEEP_CONTROL_REG)
    "ee"  # out dx, al
    "ebfe"  # jmp .
)


@pytest.mark.kvm
def test_a_guest_powers_off_through_the_acpi_sleep_register(tmp_path):
    path = write(tmp_path, make_bzimage(payload=gzip_payload(tiny_vmlinux(paddr=8 * MIB, code=POWEROFF_BY_ACPI))))
    result = run_vmm("--kernel", path, "--mem", "64", "--timeout", "20")
    assert result.returncode == 0, result.stderr.decode()


@pytest.mark.kvm
def test_the_builder_lists_disks_in_the_dsdt_and_not_on_the_command_line(tmp_path, monkeypatch):
    from vmm import builder

    monkeypatch.setenv("VMM_SOFTWARE_KVM", "0")  # no platform options: the command line is the user's
    from vmm.config import DiskConfig, VmConfig
    from vmm.x86 import acpi

    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(4096))
    config = VmConfig(kernel=write(tmp_path, make_bzimage()), cmdline="console=ttyS0", mem_mib=64, devices=(DiskConfig(str(disk)),))
    powered_off = []
    nothing = lambda *args: None
    hooks = builder.MachineHooks(powered_off.append, nothing, nothing, nothing, nothing, nothing, nothing)
    parts = builder.assemble(builder.prepare(config), hooks, nothing)
    try:
        memory = parts.memory
        assert memory.read(layout.CMDLINE_ADDR, 14) == b"console=ttyS0\0"
        params = L.BootParams.parse(memory.read(BOOT_PARAMS_ADDR, 4096))
        rsdp = acpi.Rsdp.parse(memory.read(params.acpi_rsdp_addr, 36))
        fadt_addr = memory.read_int(rsdp.xsdt_address + 36, 8)
        dsdt_addr = acpi.FadtBody.parse(memory.read(fadt_addr + 36, acpi.FadtBody.sizeof())).x_dsdt
        dsdt = memory.read(dsdt_addr, acpi.SdtHeader.parse(memory.read(dsdt_addr, 36)).length)
        (slot,) = parts.virtio
        assert b"LNRO0005" in dsdt
        assert aml.memory32_fixed(slot.addr, layout.VIRTIO_MMIO_SIZE) + aml.interrupt(slot.irq) in dsdt
        parts.pio_bus.write(acpi.SLEEP_CONTROL_PORT, 1, (acpi.S5_SLEEP_TYPE << 2) | 0x20)
        assert powered_off == [0]
    finally:
        parts.close()


def test_a_payload_claiming_an_absurd_unpacked_size_is_refused_before_allocating():
    with pytest.raises(KernelImageError, match="claims"):
        decompress_payload(b"\x1f\x8b" + bytes(8) + struct.pack("<I", 0xFFFFFFFF))


def test_the_initrd_may_come_as_bytes_and_is_placed_before_kvm(tmp_path):
    boot = LinuxBoot(write(tmp_path, make_bzimage()), b"\x5a" * 5000, 64 * MIB, unpack=False)
    assert boot.initrd_addr % 4096 == 0 and boot.initrd_addr + 5000 <= 64 * MIB
    memory = GuestMemory(layout.ram_regions(64 * MIB))
    boot.load(memory, "x")
    hdr = L.SetupHeader.parse(L.BootParams.parse(memory.read(BOOT_PARAMS_ADDR, 4096)).hdr)
    assert (hdr.ramdisk_image, hdr.ramdisk_size) == (boot.initrd_addr, 5000)
    assert memory.read(boot.initrd_addr, 5000) == b"\x5a" * 5000


def test_inputs_bigger_than_guest_ram_are_refused_before_reading(tmp_path):
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(1 << 40)  # sparse: a terabyte never read
    with pytest.raises(ConfigError, match="more than the guest's RAM"):
        LinuxBoot(write(tmp_path, make_bzimage()), str(big), 64 * MIB)
    huge_kernel = write(tmp_path, make_bzimage(), "huge")
    with open(huge_kernel, "r+b") as f:
        f.truncate(1 << 40)
    with pytest.raises(ConfigError, match="kernel .* more than the guest's RAM"):
        select_boot(huge_kernel, None, 64 * MIB)


def test_platform_options_are_added_on_a_software_kvm_only_and_never_twice(monkeypatch):
    from vmm.x86 import platform

    monkeypatch.setenv("VMM_SOFTWARE_KVM", "1")
    assert platform.linux_options("console=ttyS0") == list(platform.LINUX_OPTIONS)
    assert not any(opt.startswith("reboot=") for opt in platform.linux_options("console=ttyS0 reboot=t"))
    monkeypatch.setenv("VMM_SOFTWARE_KVM", "0")
    assert platform.linux_options("console=ttyS0") == []


def test_linux_cpuid_policy_hides_cx16_and_friends():
    from vmm.x86.cpu import CPUID_1_ECX_CX16, CPUID_7_EBX_SMAP, LINUX_HIDDEN_FEATURES, guest_cpuid

    supported = [(1, 0, 0, 0, 0, 0xFFFF_FFFF, 0), (7, 0, 1, 0, 0xFFFF_FFFF, 0, 0)]
    leaf1, leaf7 = guest_cpuid(supported, 0, 1, 0, LINUX_HIDDEN_FEATURES)
    assert not leaf1[5] & CPUID_1_ECX_CX16 and not leaf7[4] & CPUID_7_EBX_SMAP
    assert guest_cpuid(supported, 0, 1, 0)[0][5] & CPUID_1_ECX_CX16  # the bundled guest keeps it


def test_kvm_hypercall_features_are_hidden_from_linux():
    """PV IPIs, PV unhalt and PV sched-yield are hypercalls, which hang a second vCPU here."""
    from vmm.x86.cpu import KVM_FEATURE_PV_SEND_IPI, KVM_HYPERCALL_FEATURES, LINUX_HIDDEN_FEATURES, guest_cpuid

    supported = [(0x40000001, 0, 0, 0x1007EFB, 0, 0, 0)]
    (leaf,) = guest_cpuid(supported, 1, 2, 0, LINUX_HIDDEN_FEATURES)
    assert leaf[3] == 0x1007EFB & ~KVM_HYPERCALL_FEATURES and not leaf[3] & KVM_FEATURE_PV_SEND_IPI
    assert leaf[3] & 1  # kvmclock stays


# A tiny kernel that executes instructions this platform's ring-0 emulator gives up
# on (the VMM's fallback carries them out; hardware runs them) and reports the
# result as its exit status: popcnt(0x7) + (ldmxcsr/stmxcsr of 0x1fa0) - 0x1f80 = 3 + 32.
FALLBACK_INSTRUCTIONS = bytes.fromhex(
    "0f20e0" "480d00020000" "0f22e0"  # mov rax, cr4; or rax, OSFXSR; mov cr4, rax
    "c7042500800000a01f0000"  # mov dword [0x8000], 0x1fa0
    "0fae142500800000"  # ldmxcsr [0x8000]      (SIB, no base: absolute)
    "0fae1c2504800000"  # stmxcsr [0x8004]
    "8b042504800000"  # mov eax, [0x8004]
    "2d801f0000"  # sub eax, 0x1f80          (= 0x20)
    "48c7c107000000"  # mov rcx, 7
    "f3480fb8d9"  # popcnt rbx, rcx           (= 3)
    "01d8"  # add eax, ebx
    "e6f4"  # out 0xf4, al
    "ebfe"  # jmp .
)
RESET_BY_I8042 = bytes.fromhex("b0fe" "e664" "ebfe")  # mov al, 0xfe; out 0x64, al; jmp .


@pytest.mark.kvm
def test_instructions_the_emulator_lacks_are_carried_out(tmp_path):
    path = write(tmp_path, make_bzimage(payload=gzip_payload(tiny_vmlinux(paddr=8 * MIB, code=FALLBACK_INSTRUCTIONS))))
    result = run_vmm("--kernel", path, "--mem", "64", "--timeout", "20", "--stats")
    assert result.returncode == 35, result.stderr.decode()


@pytest.mark.kvm
def test_the_i8042_reset_command_stops_the_vm_as_a_reset(tmp_path):
    from vmm import MicroVM, VmConfig

    path = write(tmp_path, make_bzimage(payload=gzip_payload(tiny_vmlinux(paddr=8 * MIB, code=RESET_BY_I8042))))
    with MicroVM(VmConfig(kernel=path, mem_mib=64, timeout=20)) as vm:
        outcome = vm.wait(30)
    assert outcome.reason == "reset" and "i8042" in outcome.message


# Waits for the Delete key's set-1 code on the i8042 (polling its status), then resets.
RESET_ON_DELETE_KEY = bytes.fromhex(
    "e464" "a801" "74fa"  # loop: in al, 0x64; test al, 1 (output full?); jz loop
    "e460" "3c53" "75f4"  # in al, 0x60; cmp al, 0x53 (Delete pressed); jne loop
) + RESET_BY_I8042


@pytest.mark.kvm
def test_ctrl_alt_del_reaches_the_guest_through_the_i8042(tmp_path):
    from vmm import MicroVM, VmConfig

    path = write(tmp_path, make_bzimage(payload=gzip_payload(tiny_vmlinux(paddr=8 * MIB, code=RESET_ON_DELETE_KEY))))
    with MicroVM(VmConfig(kernel=path, mem_mib=64, timeout=20)) as vm:
        assert not vm.is_finished(0.2)  # polling, no key yet
        vm.send_ctrl_alt_del()
        outcome = vm.wait(30)
    assert outcome.reason == "reset" and "i8042" in outcome.message
