"""ACPI tables and the AML encoder: checksums and structure with construct, and
the tables as ACPICA's own disassembler (iasl -d) reads them."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from vmm.devices.acpi_sleep import AcpiSleepControl
from vmm.errors import ConfigError
from vmm.memory import GuestMemory
from vmm.x86 import acpi, aml, layout

DEVICES = [(0xD0000000, 0x1000, 5), (0xD0001000, 0x1000, 6), (0xD0002000, 0x1000, 17)]


def tables(vcpus=2, devices=DEVICES):
    return {signature: (addr, data) for signature, addr, data in acpi.build_tables(vcpus, devices)}


# --- AML encoding


@pytest.mark.parametrize(
    "length, encoded",
    [(0, b"\x01"), (62, b"\x3f"), (63, bytes([0x41, 0x04])), (0x0FFD, bytes([0x4F, 0xFF])), (0x0FFE, bytes([0x81, 0x00, 0x01]))],
)
def test_pkg_length_counts_its_own_bytes(length, encoded):
    assert aml.pkg_length(length) == encoded


def test_integers_take_the_shortest_form():
    assert aml.integer(0) == b"\x00" and aml.integer(1) == b"\x01"
    assert aml.integer(5) == b"\x0a\x05"
    assert aml.integer(0x1234) == b"\x0b\x34\x12"
    assert aml.integer(0xD0000000) == b"\x0c\x00\x00\x00\xd0"
    assert aml.integer(1 << 40) == b"\x0e" + (1 << 40).to_bytes(8, "little")


def test_eisa_id_compresses_as_acpica_does():
    assert aml.eisa_id("PNP0501") == b"\x0c\x41\xd0\x05\x01"  # 0x0105D041


def test_name_strings():
    assert aml.name_string("_HID") == b"_HID"
    assert aml.name_string("\\_SB") == b"\\_SB_"
    assert aml.name_string("\\_SB.COM1") == b"\\\x2e_SB_COM1"
    with pytest.raises(ValueError):
        aml.name_seg("TOOLONG")


def test_resource_descriptors():
    assert aml.io(0x3F8, 0x3F8, 8, 8) == bytes([0x47, 1, 0xF8, 3, 0xF8, 3, 8, 8])
    assert aml.irq_no_flags([4]) == bytes([0x22, 0x10, 0x00])
    assert aml.memory32_fixed(0xD0000000, 0x1000) == bytes([0x86, 9, 0, 1, 0, 0, 0, 0xD0, 0, 0x10, 0, 0])
    assert aml.interrupt(17) == bytes([0x89, 6, 0, 0x03, 1, 17, 0, 0, 0])
    with pytest.raises(ValueError):
        aml.irq_no_flags([16])


# --- checksums and structure


def test_every_table_checksums_to_zero_and_rsdp_both_ways():
    for signature, (addr, data) in tables().items():
        if signature == acpi.RSDP_SIGNATURE:
            assert sum(data[:20]) % 256 == 0 and sum(data) % 256 == 0
        else:
            assert sum(data) % 256 == 0, signature
            assert acpi.SdtHeader.parse(data).length == len(data)


def test_rsdp_points_at_the_xsdt_which_lists_fadt_and_madt():
    t = tables()
    rsdp = acpi.Rsdp.parse(t[acpi.RSDP_SIGNATURE][1])
    assert (rsdp.signature, rsdp.revision, rsdp.length) == (b"RSD PTR ", 2, 36)
    assert t[acpi.RSDP_SIGNATURE][0] == 0xE0000
    assert rsdp.xsdt_address == t[b"XSDT"][0]
    xsdt = t[b"XSDT"][1]
    entries = [int.from_bytes(xsdt[i : i + 8], "little") for i in range(36, len(xsdt), 8)]
    assert entries == [t[b"FACP"][0], t[b"APIC"][0]]


def test_fadt_is_hardware_reduced_with_sleep_registers_on_the_sleep_port():
    t = tables()
    fadt = acpi.FadtBody.parse(t[b"FACP"][1][36:])
    assert fadt.flags & acpi.FADT_HW_REDUCED_ACPI
    assert fadt.x_dsdt == fadt.dsdt == t[b"DSDT"][0]
    assert (fadt.sleep_control_reg.space_id, fadt.sleep_control_reg.address) == (1, acpi.SLEEP_CONTROL_PORT)
    assert fadt.sleep_status_reg.address == acpi.SLEEP_CONTROL_PORT + 1
    assert acpi.SdtHeader.parse(t[b"FACP"][1]).revision == 6


def test_madt_has_one_local_apic_per_vcpu_the_ioapic_and_irq0_override():
    data = tables(vcpus=3)[b"APIC"][1]
    pos, seen = 44, []
    while pos < len(data):
        kind, length = data[pos], data[pos + 1]
        seen.append((kind, data[pos : pos + length]))
        pos += length
    lapics = [acpi.MadtLocalApic.parse(raw) for kind, raw in seen if kind == 0]
    assert [(x.processor_uid, x.apic_id, x.flags) for x in lapics] == [(0, 0, 1), (1, 1, 1), (2, 2, 1)]
    (ioapic,) = [acpi.MadtIoApic.parse(raw) for kind, raw in seen if kind == 1]
    assert (ioapic.address, ioapic.gsi_base) == (0xFEC00000, 0)
    (override,) = [acpi.MadtOverride.parse(raw) for kind, raw in seen if kind == 2]
    assert (override.source, override.gsi) == (0, 2)


def test_build_acpi_writes_the_tables_into_guest_ram():
    memory = GuestMemory(layout.ram_regions(4 << 20))
    rsdp = acpi.build_acpi(memory, 1, DEVICES)
    assert rsdp == 0xE0000 and memory.read(rsdp, 8) == b"RSD PTR "
    for signature, addr, data in acpi.build_tables(1, DEVICES):
        assert memory.read(addr, len(data)) == data


def test_many_devices_still_fit_below_1mib():
    devices = [(0xD0000000 + i * 0x1000, 0x1000, irq) for i, irq in enumerate(layout.DEVICE_IRQS)]
    memory = GuestMemory(layout.ram_regions(4 << 20))
    acpi.build_acpi(memory, 64, devices)
    *_, (_, addr, data) = acpi.build_tables(64, devices)
    assert addr + len(data) <= acpi.ACPI_END


def test_too_many_vcpus_for_8bit_apic_ids_is_a_config_error():
    with pytest.raises(ConfigError):
        acpi.build_tables(256, [])


# --- what ACPICA makes of them


def disassemble(tmp_path, signature: bytes, data: bytes) -> str:
    path = tmp_path / (signature.decode() + ".dat")
    path.write_bytes(data)
    result = subprocess.run(["iasl", "-d", str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not re.search(r"\b(Error|Warning)\b", result.stdout + result.stderr), result.stdout
    return (tmp_path / (signature.decode() + ".dsl")).read_text()


needs_iasl = pytest.mark.skipif(shutil.which("iasl") is None, reason="iasl (acpica-tools) is not installed")


@needs_iasl
@pytest.mark.parametrize("signature", [b"XSDT", b"FACP", b"APIC", b"DSDT"])
def test_iasl_disassembles_each_table_cleanly(tmp_path, signature):
    disassemble(tmp_path, signature, tables()[signature][1])


@needs_iasl
def test_dsdt_disassembly_describes_com1_the_virtio_devices_and_s5(tmp_path):
    dsl = disassemble(tmp_path, b"DSDT", tables()[b"DSDT"][1])
    com1 = dsl[dsl.index("Device (COM1)") :]
    assert 'EisaId ("PNP0501")' in com1[:200]
    assert re.search(r"IO \(Decode16,\s*0x03F8,\s*//[^\n]*\n\s*0x03F8,[^\n]*\n\s*0x08,[^\n]*\n\s*0x08,", com1)
    assert re.search(r"IRQNoFlags \(\)\s*\{4\}", com1)
    devices = re.findall(r'Device \((V\w+)\)\s*\{\s*Name \(_HID, "LNRO0005"\).*?Memory32Fixed \(ReadWrite,\s*0x([0-9A-F]+),.*?0x([0-9A-F]+),.*?Interrupt \(ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, \)\s*\{\s*0x([0-9A-F]+),', dsl, re.S)
    assert [(int(a, 16), int(s, 16), int(i, 16)) for _, a, s, i in devices] == DEVICES
    assert re.search(r"Name \(_S5, Package \(0x04\)[^\n]*\s*\{\s*0x05,\s*0x05,\s*Zero,\s*Zero\s*\}\)", dsl)


@needs_iasl
def test_dsdt_describes_the_i8042_for_linux_guests(tmp_path):
    dsdt = acpi.build_tables(1, DEVICES, keyboard=True)[1][2]
    assert dsdt[:4] == b"DSDT"
    dsl = disassemble(tmp_path, b"DSDT", dsdt)
    kbd = dsl[dsl.index("Device (KBD)") :]
    assert 'EisaId ("PNP0303")' in kbd[:200]
    assert re.search(r"IO \(Decode16,\s*0x0060,", kbd) and re.search(r"IO \(Decode16,\s*0x0064,", kbd)
    assert re.search(r"IRQNoFlags \(\)\s*\{1\}", kbd)
    assert "PNP0303" not in disassemble(tmp_path, b"DSDT", tables()[b"DSDT"][1])  # other guests: no keyboard


@needs_iasl
def test_madt_disassembly_lists_the_processors(tmp_path):
    dsl = disassemble(tmp_path, b"APIC", tables(vcpus=4)[b"APIC"][1])
    assert dsl.count("[Processor Local APIC]") == 4
    assert "Address : FEC00000" in dsl and "[Interrupt Source Override]" in dsl


# --- the sleep port


def test_writing_s5_with_slp_en_powers_off():
    calls = []
    device = AcpiSleepControl(calls.append, acpi.S5_SLEEP_TYPE)
    device.write(0, 1, acpi.S5_SLEEP_TYPE << 2)  # no SLP_EN: nothing yet
    device.write(0, 1, (3 << 2) | 0x20)  # S3: not ours to do
    assert calls == []
    device.write(0, 1, (acpi.S5_SLEEP_TYPE << 2) | 0x20)
    assert calls == [0]
    assert device.read(1, 1) & 0x80  # WAK_STS


@pytest.mark.skipif(shutil.which("acpiexec") is None, reason="acpiexec (acpica-tools) is not installed")
def test_acpica_loads_the_dsdt_namespace_and_evaluates_its_objects(tmp_path):
    path = tmp_path / "dsdt.dat"
    path.write_bytes(tables()[b"DSDT"][1])
    commands = "evaluate \\_S5_; evaluate \\_SB.V002._CRS; evaluate \\_SB.V000._HID"
    out = subprocess.run(["acpiexec", "-b", commands, str(path)], capture_output=True, text=True, timeout=30).stdout
    assert f"with   {1 + len(DEVICES)} Devices" in out, out
    s5 = out[out.index("Evaluating \\_S5_") :]
    assert re.search(r"Contains 4 Elements:\s*\[Integer\] = 0+5\s*\[Integer\] = 0+5", s5)
    crs = out[out.index("Evaluating \\_SB.V002._CRS") :]
    expected = aml.memory32_fixed(0xD0002000, 0x1000) + aml.interrupt(17) + bytes([0x79, 0])
    dumped = bytes.fromhex("".join(re.findall(r"^\s+[0-9A-F]{4}: ((?:[0-9A-F]{2} )+)", crs, re.M)[:2]).replace(" ", ""))
    assert dumped == expected
    assert '"LNRO0005"' in out[out.index("Evaluating \\_SB.V000._HID") :]


def test_tables_that_would_run_past_1mib_are_refused():
    memory = GuestMemory(layout.ram_regions(4 << 20))
    with pytest.raises(ConfigError, match="do not fit"):
        acpi.build_acpi(memory, 1, DEVICES, base=acpi.ACPI_END - 0x100)
