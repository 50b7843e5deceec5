"""The state file, declared once with construct and checked on load.

Layout: a fixed header (magic, format version, the vmm version, the host
CPU's vendor and family/model/stepping, the body's length and SHA-256),
then the body: typed sections for the machine, each vCPU, the in-kernel
interrupt controller and clock, the UART and each virtio-mmio slot.

Everything in the file is untrusted. Counts are one or two bytes wide, so a
forged count cannot make the parser loop for long; every variable-length
field is bounded by the file, which is itself bounded by STATE_FILE_MAX; a
file that does not parse, or whose checksum disagrees, is a SnapshotError.
Fields with meaning beyond "bytes KVM checks" are checked in load.py.
"""

from __future__ import annotations

import hashlib

import construct as cs

from .records import DEVICE_KINDS, NO_SIGNALLED_USED, VCPU_BLOBS, SnapshotError, kvm_sizes  # noqa: F401 (re-exported)

MAGIC = b"VMMSNAP\x00"
FORMAT_VERSION = 1
STATE_FILE_MAX = 64 << 20  # a UART backlog (1 MiB) and console backlogs fit many times over
SNAPSHOT_ID_BYTES = 16


# Sizes of the KVM structures saved whole: this host's <linux/kvm.h>. A file
# written against other sizes fails to parse (and its format version differs).
KVM_SIZES = kvm_sizes()

Header = cs.Struct(
    "magic" / cs.Bytes(len(MAGIC)),
    "format_version" / cs.Int32ul,
    "vmm_version" / cs.PaddedString(16, "ascii"),
    "cpu_vendor" / cs.PaddedString(12, "ascii"),
    "cpu_signature" / cs.Int32ul,  # CPUID.1:EAX: family, model, stepping
    "body_length" / cs.Int64ul,
    "body_sha256" / cs.Bytes(32),
)

Bytes8 = cs.Prefixed(cs.Int8ul, cs.GreedyBytes)
Bytes16 = cs.Prefixed(cs.Int16ul, cs.GreedyBytes)
Bytes32 = cs.Prefixed(cs.Int32ul, cs.GreedyBytes)

Machine = cs.Struct(
    "snapshot_id" / cs.Bytes(SNAPSHOT_ID_BYTES),
    "parent_id" / cs.Bytes(SNAPSHOT_ID_BYTES),  # the snapshot a diff's pages apply onto (zeros: full)
    "memory_kind" / cs.Enum(cs.Int8ul, full=0, diff=1),
    "mem_size" / cs.Int64ul,
    "regions" / cs.PrefixedArray(cs.Int8ul, cs.Struct("guest_addr" / cs.Int64ul, "size" / cs.Int64ul)),
    "ioeventfd" / cs.Flag,
    "acpi" / cs.Flag,  # the ACPI sleep port is there (the tables are in RAM)
    "boot_protocol" / Bytes8,
)

Vcpu = cs.Struct(
    *[name / cs.Bytes(KVM_SIZES[name]) for name in VCPU_BLOBS],
    "msrs" / cs.PrefixedArray(cs.Int16ul, cs.Struct("index" / cs.Int32ul, "value" / cs.Int64ul)),
)

Platform = cs.Struct(
    "pic_master" / cs.Bytes(KVM_SIZES["irqchip"]),
    "pic_slave" / cs.Bytes(KVM_SIZES["irqchip"]),
    "ioapic" / cs.Bytes(KVM_SIZES["irqchip"]),
    "pit" / Bytes16,  # empty: no in-kernel PIT
    "clock" / cs.Int64ul,
)

Serial = cs.Struct(
    "divisor_latch_low" / cs.Int8ul, "divisor_latch_high" / cs.Int8ul, "ier" / cs.Int8ul, "lcr" / cs.Int8ul,
    "mcr" / cs.Int8ul, "msr" / cs.Int8ul, "scr" / cs.Int8ul, "fifo_control" / cs.Int8ul,
    "overrun" / cs.Flag, "thr_interrupt_pending" / cs.Flag,
    "rx_fifo" / Bytes8, "input_backlog" / Bytes32, "irq_level" / cs.Flag,
)

Queue = cs.Struct(
    "size" / cs.Int32ul, "ready" / cs.Flag,
    "desc_addr" / cs.Int64ul, "avail_addr" / cs.Int64ul, "used_addr" / cs.Int64ul,
    "next_avail" / cs.Int16ul, "next_used" / cs.Int16ul,
    "event_idx" / cs.Flag, "indirect" / cs.Flag,
    "signalled_used" / cs.Int32sl,  # NO_SIGNALLED_USED for None
)

Transport = cs.Struct(
    "status" / cs.Int8ul, "device_features_sel" / cs.Int32ul, "driver_features_sel" / cs.Int32ul,
    "driver_features" / cs.Int64ul, "unknown_feature_bits" / cs.Flag, "queue_sel" / cs.Int32ul,
    "interrupt_status" / cs.Int32ul, "config_generation" / cs.Int32ul, "acked_features" / cs.Int64ul,
    "queues" / cs.PrefixedArray(cs.Int8ul, Queue),
)

Block = cs.Struct(
    "path" / Bytes16,  # os.fsencode of the path the disk was opened by
    "size" / cs.Int64ul,
    "read_only" / cs.Flag,
    "disk_id" / Bytes8,
    # The identity check on restore: modification time and a hash of the
    # first and last 64 KiB (cheap, and survives `cp -p` to another host).
    "mtime_ns" / cs.Int64ul,
    "fingerprint" / cs.Bytes(32),
)

ConsolePort = cs.Struct(
    "name" / Bytes8, "guest_ready" / cs.Flag, "guest_open" / cs.Flag, "host_open" / cs.Flag,
    "eof_sent" / cs.Flag, "backlog" / Bytes32,
)

Console = cs.Struct(
    "cols" / cs.Int16ul, "rows" / cs.Int16ul, "max_input_backlog" / cs.Int64ul,
    "console_port" / cs.Int16sl,  # -1: none
    "acked_features" / cs.Int64ul, "device_ready" / cs.Flag,
    "ports" / cs.PrefixedArray(cs.Int8ul, ConsolePort),
    "control_pending" / cs.PrefixedArray(cs.Int16ul, Bytes8),
)

VirtioSlot = cs.Struct(
    "addr" / cs.Int64ul,
    "irq" / cs.Int8ul,
    "kind" / cs.Enum(cs.Int8ul, **DEVICE_KINDS),
    "transport" / Transport,
    "device" / cs.Switch(cs.this.kind, {"block": Block, "console": Console}, default=cs.Error),
)

Body = cs.Struct(
    "machine" / Machine,
    "vcpus" / cs.PrefixedArray(cs.Int8ul, Vcpu),
    "platform" / Platform,
    "uart" / Serial,
    "virtio" / cs.PrefixedArray(cs.Int8ul, VirtioSlot),
    cs.Terminated,
)


def encode(header: dict, body: dict) -> bytes:
    data = Body.build(body)
    head = Header.build(dict(header, magic=MAGIC, format_version=FORMAT_VERSION, body_length=len(data),
                             body_sha256=hashlib.sha256(data).digest()))
    return head + data


def decode(data: bytes, what: str) -> tuple:
    """(header, body) of a state file's bytes; SnapshotError for anything malformed.

    ``what`` names the file in messages. Host and version checks are the
    caller's (they need this host's facts)."""
    if len(data) < Header.sizeof():
        raise SnapshotError(f"{what}: truncated ({len(data)} bytes; not a vmm snapshot state file)")
    try:
        header = Header.parse(data)
    except (cs.ConstructError, UnicodeDecodeError, ValueError):
        raise SnapshotError(f"{what}: not a vmm snapshot state file (bad header)") from None
    if header.magic != MAGIC:
        raise SnapshotError(f"{what}: not a vmm snapshot state file (bad magic)")
    if header.format_version != FORMAT_VERSION:
        raise SnapshotError(
            f"{what}: snapshot format version {header.format_version}, this vmm reads version {FORMAT_VERSION}"
        )
    body_bytes = data[Header.sizeof():]
    if header.body_length != len(body_bytes):
        raise SnapshotError(f"{what}: truncated or extended (body of {len(body_bytes)} bytes, header says {header.body_length})")
    if hashlib.sha256(body_bytes).digest() != header.body_sha256:
        raise SnapshotError(f"{what}: checksum mismatch (the file is corrupt or was changed)")
    try:
        body = Body.parse(body_bytes)
    except (cs.ConstructError, UnicodeDecodeError, ValueError, OverflowError) as err:
        raise SnapshotError(f"{what}: malformed state ({_reason(err)})") from None
    return header, body


def _reason(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:120]


def read_state_file(path: str) -> bytes:
    import os
    import stat

    what = f"snapshot {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block us
    except OSError as err:
        raise SnapshotError(f"{what}: {err.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SnapshotError(f"{what}: not a regular file")
        if info.st_size > STATE_FILE_MAX:
            raise SnapshotError(f"{what}: {info.st_size} bytes, more than any state file ({STATE_FILE_MAX})")
        chunks, total = [], 0
        while total <= STATE_FILE_MAX:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > STATE_FILE_MAX:
            raise SnapshotError(f"{what}: larger than any state file ({STATE_FILE_MAX} bytes)")
        return b"".join(chunks)
    except OSError as err:
        raise SnapshotError(f"{what}: {err.strerror}") from None
    finally:
        os.close(fd)
