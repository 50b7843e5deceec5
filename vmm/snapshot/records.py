"""What restoring needs of a decoded snapshot, without construct (whose import
costs ~24 ms of a process's start): the error, the constants load.py checks
records against, vmm's version and the host CPU's identity, and a plain form
of the decoded records (dicts, lists, ints, bytes) that marshal can keep.
The sandbox keeps its warm snapshot in that form (vmm/sandbox/image_cache.py),
so a fresh `vmm exec` restores it without decoding a state file.
"""

from __future__ import annotations

from ..errors import ConfigError

NO_SIGNALLED_USED = -1  # QueueState.signalled_used None
DEVICE_KINDS = {"block": 2, "console": 3}  # virtio device IDs
# A vCPU's KVM structures, saved whole (their sizes: kvm_sizes())
VCPU_BLOBS = ("regs", "sregs", "fpu", "xsave", "xcrs", "lapic", "mp_state", "debugregs", "vcpu_events")
PLATFORM_BLOBS = ("pic_master", "pic_slave", "ioapic")  # struct kvm_irqchip each


class SnapshotError(ConfigError):
    """A snapshot that cannot be taken or restored: one line, exit status 2."""


def vmm_version() -> str:
    """vmm's version, recorded in the state file and compared on restore.
    (Not importlib.metadata: importing it costs ~15 ms of a `vmm restore`.)"""
    from .. import __version__

    return __version__[:16]


def host_cpu_from(supported_cpuid) -> tuple[str, int]:
    """(vendor string, CPUID.1:EAX) of the host, from KVM's supported CPUID."""
    leaves = {(f, i): (a, b, c, d) for f, i, _, a, b, c, d in supported_cpuid}
    _, ebx, ecx, edx = leaves.get((0, 0), (0, 0, 0, 0))
    vendor = b"".join(r.to_bytes(4, "little") for r in (ebx, edx, ecx)).decode("ascii", "replace")
    return vendor, leaves.get((1, 0), (0,))[0]


def kvm_sizes() -> dict[str, int]:
    """Sizes of the KVM structures a snapshot saves whole, from this host's <linux/kvm.h>."""
    from ..kvm._kvm_cffi import ffi
    from ..kvm.api import Vcpu

    sizes = {name: Vcpu.state_size(name) for name in Vcpu.STATE_STRUCTS}
    sizes["irqchip"] = ffi.sizeof("struct kvm_irqchip")
    return sizes


def check_plain(header, body, what: str) -> None:
    """What the state file's parser guarantees of decoded records, for records
    kept in plain form (so not parsed again): only dicts, lists, ints, bools,
    bytes and str, and every KVM structure saved whole of its exact size (load.py
    hands them to C). SnapshotError otherwise; load.py checks the meaning."""
    _check_leaves(header, what)
    _check_leaves(body, what)
    sizes = kvm_sizes()
    try:
        for index, vcpu in enumerate(body["vcpus"]):
            for name in VCPU_BLOBS:
                if not isinstance(vcpu[name], bytes) or len(vcpu[name]) != sizes[name]:
                    raise SnapshotError(f"{what}: vCPU {index}'s {name} is not a struct of this host's size")
        for name in PLATFORM_BLOBS:
            if not isinstance(body["platform"][name], bytes) or len(body["platform"][name]) != sizes["irqchip"]:
                raise SnapshotError(f"{what}: {name} is not a struct kvm_irqchip of this host's size")
    except (KeyError, TypeError):
        raise SnapshotError(f"{what}: records of another shape") from None


def _check_leaves(value, what: str, depth: int = 0) -> None:
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise SnapshotError(f"{what}: a record's field is not named by a string")
        items = value.values()
    elif isinstance(value, list):
        items = value
    elif isinstance(value, (int, bytes, str)):  # (bool is an int)
        return
    else:
        raise SnapshotError(f"{what}: a record holds a {type(value).__name__}")
    if depth > 8:
        raise SnapshotError(f"{what}: records nested too deep")
    for item in items:
        _check_leaves(item, what, depth + 1)


class Record(dict):
    """A record's fields by attribute, as construct's Container gives them."""

    __slots__ = ()

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def to_plain(value):
    """Decoded records (construct's Containers, lists and enum strings) as plain
    dicts, lists and str, without construct's private fields."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return value


def from_plain(value):
    """to_plain's output as records again (attribute access), for load.py."""
    if isinstance(value, dict):
        return Record((k, from_plain(v)) for k, v in value.items())
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    return value
