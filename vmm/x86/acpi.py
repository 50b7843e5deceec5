"""ACPI tables for the microVM, built by the VMM: RSDP, XSDT, FADT, MADT, DSDT.

Hardware-reduced ACPI (ACPI 6.x, FADT flag HW_REDUCED_ACPI): no PM timer, no
GPEs, no SCI, no FACS. What the guest learns from them:
  - MADT: one local APIC per vCPU, the IOAPIC, IRQ0 -> GSI2 (the PIT on pin 2);
  - DSDT: COM1 (PNP0501) and each virtio-mmio device (LNRO0005, the id
    Linux's virtio_mmio driver matches) with its registers and interrupt,
    and \\_S5_, the soft-off sleep type;
  - FADT: the sleep control/status registers, an I/O port the VMM decodes
    (vmm/devices/acpi_sleep.py), so a guest's poweroff stops the VM.

Everything lives at ``base`` (default 0xE0000, in the BIOS area below 1 MiB
that the E820 map reserves, where Linux also scans for the RSDP), RSDP first.
This module imports construct: only a Linux boot loads it.
"""

from __future__ import annotations

from construct import Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Struct

from ..errors import ConfigError
from . import aml

ACPI_BASE = 0xE0000
ACPI_END = 0x100000  # the BIOS area ends at 1 MiB
IOAPIC_ADDR = 0xFEC00000
LAPIC_ADDR = 0xFEE00000
COM1_PORT, COM1_IRQ = 0x3F8, 4
I8042_DATA_PORT, I8042_COMMAND_PORT, I8042_IRQ = 0x60, 0x64, 1
SLEEP_CONTROL_PORT = 0x600  # SLEEP_CONTROL_REG; SLEEP_STATUS_REG is the next port
SLEEP_PORT_SPAN = 2
S5_SLEEP_TYPE = 5  # the SLP_TYP value \_S5_ names, written to SLEEP_CONTROL_REG at poweroff

OEM_ID = b"VMMPY "
OEM_TABLE_ID = b"VMMMICRO"
CREATOR_ID = b"VMMP"

# FADT
FADT_REVISION, FADT_MINOR_REVISION = 6, 3
FADT_PWR_BUTTON = 1 << 4  # no fixed-feature power button
FADT_SLP_BUTTON = 1 << 5  # no fixed-feature sleep button
FADT_HW_REDUCED_ACPI = 1 << 20
IAPC_VGA_NOT_PRESENT = 1 << 2
IAPC_CMOS_RTC_NOT_PRESENT = 1 << 5  # and no 8042 bit: no keyboard controller to probe
GAS_SYSTEM_IO = 1
GAS_ACCESS_BYTE = 1

# MADT
MADT_PCAT_COMPAT = 1  # the 8259 pair exists (KVM's irqchip has one)
MADT_LOCAL_APIC, MADT_IO_APIC, MADT_INTERRUPT_OVERRIDE = 0, 1, 2
LAPIC_ENABLED = 1
MPS_INTI_CONFORMS = 0  # polarity and trigger as the bus defines them (ISA: edge, high)

SdtHeader = Struct(
    "signature" / Bytes(4),
    "length" / Int32ul,
    "revision" / Int8ul,
    "checksum" / Int8ul,
    "oem_id" / Bytes(6),
    "oem_table_id" / Bytes(8),
    "oem_revision" / Int32ul,
    "creator_id" / Bytes(4),
    "creator_revision" / Int32ul,
)
CHECKSUM_OFFSET = 9

Rsdp = Struct(
    "signature" / Bytes(8),
    "checksum" / Int8ul,  # over the first 20 bytes (the ACPI 1.0 part)
    "oem_id" / Bytes(6),
    "revision" / Int8ul,
    "rsdt_address" / Int32ul,
    "length" / Int32ul,
    "xsdt_address" / Int64ul,
    "extended_checksum" / Int8ul,  # over all 36 bytes
    "reserved" / Bytes(3),
)
RSDP_SIGNATURE = b"RSD PTR "

# Generic Address Structure
Gas = Struct("space_id" / Int8ul, "bit_width" / Int8ul, "bit_offset" / Int8ul, "access_size" / Int8ul, "address" / Int64ul)

FadtBody = Struct(
    "firmware_ctrl" / Int32ul,
    "dsdt" / Int32ul,
    "reserved0" / Int8ul,
    "preferred_pm_profile" / Int8ul,
    "sci_int" / Int16ul,
    "smi_cmd" / Int32ul,
    "acpi_enable" / Int8ul,
    "acpi_disable" / Int8ul,
    "s4bios_req" / Int8ul,
    "pstate_cnt" / Int8ul,
    "legacy_blocks" / Bytes(8 * 4),  # PM1a/b event, PM1a/b control, PM2 control, PM timer, GPE0/1: none
    "legacy_lengths" / Bytes(8),
    "p_lvl2_lat" / Int16ul,
    "p_lvl3_lat" / Int16ul,
    "flush_size" / Int16ul,
    "flush_stride" / Int16ul,
    "duty_offset" / Int8ul,
    "duty_width" / Int8ul,
    "day_alrm" / Int8ul,
    "mon_alrm" / Int8ul,
    "century" / Int8ul,
    "iapc_boot_arch" / Int16ul,
    "reserved1" / Int8ul,
    "flags" / Int32ul,
    "reset_reg" / Gas,
    "reset_value" / Int8ul,
    "arm_boot_arch" / Int16ul,
    "minor_revision" / Int8ul,
    "x_firmware_ctrl" / Int64ul,
    "x_dsdt" / Int64ul,
    "x_legacy_blocks" / Bytes(8 * Gas.sizeof()),  # X_ versions of the legacy blocks: none
    "sleep_control_reg" / Gas,
    "sleep_status_reg" / Gas,
    "hypervisor_vendor_id" / Int64ul,
)
FADT_LENGTH = SdtHeader.sizeof() + FadtBody.sizeof()
assert FADT_LENGTH == 276

MadtBody = Struct("local_apic_address" / Int32ul, "flags" / Int32ul)
MadtLocalApic = Struct("type" / Int8ul, "length" / Int8ul, "processor_uid" / Int8ul, "apic_id" / Int8ul, "flags" / Int32ul)
MadtIoApic = Struct("type" / Int8ul, "length" / Int8ul, "ioapic_id" / Int8ul, "reserved" / Int8ul, "address" / Int32ul, "gsi_base" / Int32ul)
MadtOverride = Struct("type" / Int8ul, "length" / Int8ul, "bus" / Int8ul, "source" / Int8ul, "gsi" / Int32ul, "flags" / Int16ul)

MAX_ACPI_VCPUS = 255  # MADT local APIC entries carry 8-bit ids


def checksum_fix(table: bytes, offset: int) -> bytes:
    """``table`` with the byte at ``offset`` set so that all its bytes sum to 0 (mod 256)."""
    data = bytearray(table)
    data[offset] = 0
    data[offset] = -sum(data) & 0xFF
    return bytes(data)


def sdt(signature: bytes, revision: int, body: bytes) -> bytes:
    """A System Description Table: the standard header, checksummed, then ``body``."""
    header = SdtHeader.build(
        dict(
            signature=signature,
            length=SdtHeader.sizeof() + len(body),
            revision=revision,
            checksum=0,
            oem_id=OEM_ID,
            oem_table_id=OEM_TABLE_ID,
            oem_revision=1,
            creator_id=CREATOR_ID,
            creator_revision=1,
        )
    )
    return checksum_fix(header + body, CHECKSUM_OFFSET)


def _io_gas(port: int) -> dict:
    return dict(space_id=GAS_SYSTEM_IO, bit_width=8, bit_offset=0, access_size=GAS_ACCESS_BYTE, address=port)


_NO_GAS = dict(space_id=0, bit_width=0, bit_offset=0, access_size=0, address=0)


def fadt(dsdt_addr: int) -> bytes:
    body = FadtBody.build(
        dict(
            firmware_ctrl=0,
            dsdt=dsdt_addr,
            reserved0=0,
            preferred_pm_profile=0,
            sci_int=0,
            smi_cmd=0,
            acpi_enable=0,
            acpi_disable=0,
            s4bios_req=0,
            pstate_cnt=0,
            legacy_blocks=bytes(32),
            legacy_lengths=bytes(8),
            p_lvl2_lat=0,
            p_lvl3_lat=0,
            flush_size=0,
            flush_stride=0,
            duty_offset=0,
            duty_width=0,
            day_alrm=0,
            mon_alrm=0,
            century=0,
            iapc_boot_arch=IAPC_VGA_NOT_PRESENT | IAPC_CMOS_RTC_NOT_PRESENT,
            reserved1=0,
            flags=FADT_HW_REDUCED_ACPI | FADT_PWR_BUTTON | FADT_SLP_BUTTON,
            reset_reg=_NO_GAS,
            reset_value=0,
            arm_boot_arch=0,
            minor_revision=FADT_MINOR_REVISION,
            x_firmware_ctrl=0,
            x_dsdt=dsdt_addr,
            x_legacy_blocks=bytes(8 * Gas.sizeof()),
            sleep_control_reg=_io_gas(SLEEP_CONTROL_PORT),
            sleep_status_reg=_io_gas(SLEEP_CONTROL_PORT + 1),
            hypervisor_vendor_id=0,
        )
    )
    return sdt(b"FACP", FADT_REVISION, body)


def madt(vcpus: int) -> bytes:
    entries = [MadtBody.build(dict(local_apic_address=LAPIC_ADDR, flags=MADT_PCAT_COMPAT))]
    for index in range(vcpus):
        entries.append(MadtLocalApic.build(dict(type=MADT_LOCAL_APIC, length=8, processor_uid=index, apic_id=index, flags=LAPIC_ENABLED)))
    entries.append(MadtIoApic.build(dict(type=MADT_IO_APIC, length=12, ioapic_id=0, reserved=0, address=IOAPIC_ADDR, gsi_base=0)))
    # The PIT's IRQ0 is wired to IOAPIC pin 2 (KVM's irqchip routes it there, as PCs do).
    entries.append(MadtOverride.build(dict(type=MADT_INTERRUPT_OVERRIDE, length=10, bus=0, source=0, gsi=2, flags=MPS_INTI_CONFORMS)))
    return sdt(b"APIC", 5, b"".join(entries))


def dsdt(devices: list[tuple[int, int, int]], keyboard: bool = False) -> bytes:
    """COM1, the i8042 keyboard controller if ``keyboard``, one LNRO0005 device per (addr, size, irq), and \\_S5_."""
    com1 = aml.device(
        "COM1",
        [
            aml.name("_HID", aml.eisa_id("PNP0501")),
            aml.name("_UID", aml.integer(0)),
            aml.name("_CRS", aml.resource_template([aml.io(COM1_PORT, COM1_PORT, 8, 8), aml.irq_no_flags([COM1_IRQ])])),
        ],
    )
    legacy = [com1]
    if keyboard:  # Linux's i8042 driver finds the controller by this PNP id (our FADT claims no legacy 8042)
        legacy.append(aml.device("KBD_", [
            aml.name("_HID", aml.eisa_id("PNP0303")),
            aml.name("_CRS", aml.resource_template([
                aml.io(I8042_DATA_PORT, I8042_DATA_PORT, 1, 1), aml.io(I8042_COMMAND_PORT, I8042_COMMAND_PORT, 1, 1),
                aml.irq_no_flags([I8042_IRQ])])),
        ]))
    virtio = []
    for index, (addr, size, irq) in enumerate(devices):
        virtio.append(
            aml.device(
                f"V{index:03X}",
                [
                    aml.name("_HID", aml.string("LNRO0005")),
                    aml.name("_UID", aml.integer(index)),
                    # the VMM raises these by an edge on an IOAPIC pin (irqfd)
                    aml.name("_CRS", aml.resource_template([aml.memory32_fixed(addr, size), aml.interrupt(irq, edge=True)])),
                ],
            )
        )
    s5 = aml.name("_S5_", aml.package([aml.integer(S5_SLEEP_TYPE), aml.integer(S5_SLEEP_TYPE), aml.integer(0), aml.integer(0)]))
    return sdt(b"DSDT", 2, aml.scope("\\_SB_", legacy + virtio) + s5)


def xsdt(table_addrs: list[int]) -> bytes:
    return sdt(b"XSDT", 1, b"".join(addr.to_bytes(8, "little") for addr in table_addrs))


def rsdp(xsdt_addr: int) -> bytes:
    raw = Rsdp.build(
        dict(
            signature=RSDP_SIGNATURE,
            checksum=0,
            oem_id=OEM_ID,
            revision=2,
            rsdt_address=0,  # ACPI 2.0+: the XSDT alone
            length=Rsdp.sizeof(),
            xsdt_address=xsdt_addr,
            extended_checksum=0,
            reserved=bytes(3),
        )
    )
    raw = checksum_fix(raw[:20], 8) + raw[20:]
    return checksum_fix(raw, 32)


def _align(value: int, alignment: int = 16) -> int:
    return -(-value // alignment) * alignment


def build_tables(vcpus: int, devices: list[tuple[int, int, int]], base: int = ACPI_BASE,
                 keyboard: bool = False) -> list[tuple[bytes, int, bytes]]:
    """Every table as (signature, guest address, bytes); the RSDP first, at ``base``."""
    if not 1 <= vcpus <= MAX_ACPI_VCPUS:
        raise ConfigError(f"ACPI tables describe 1-{MAX_ACPI_VCPUS} vCPUs ({vcpus} asked for)")
    if base % 16:
        raise ValueError("the RSDP must be 16-byte aligned")
    addr = _align(base + Rsdp.sizeof())
    placed = []

    def place(signature: bytes, table: bytes) -> int:
        nonlocal addr
        at = addr
        placed.append((signature, at, table))
        addr = _align(at + len(table))
        return at

    dsdt_addr = place(b"DSDT", dsdt(devices, keyboard))
    fadt_addr = place(b"FACP", fadt(dsdt_addr))
    madt_addr = place(b"APIC", madt(vcpus))
    xsdt_addr = place(b"XSDT", xsdt([fadt_addr, madt_addr]))
    return [(RSDP_SIGNATURE, base, rsdp(xsdt_addr))] + placed


def build_acpi(memory, vcpus: int, devices: list[tuple[int, int, int]], base: int = ACPI_BASE, keyboard: bool = False) -> int:
    """Write the tables into guest RAM at ``base``; returns the RSDP's address.

    ``devices`` lists each virtio-mmio device as (MMIO address, size, IRQ);
    ``keyboard`` describes the i8042 too."""
    tables = build_tables(vcpus, devices, base, keyboard)
    _signature, last_addr, last = tables[-1]
    end = last_addr + len(last)
    # in the BIOS area they must stay below 1 MiB, where the E820 map reserves them
    if (base < ACPI_END < end) or not memory.contains(base, end - base):
        raise ConfigError(f"ACPI tables for {len(devices)} devices do not fit at 0x{base:x}")
    for _signature, addr, table in tables:
        memory.write(addr, table)
    return base
