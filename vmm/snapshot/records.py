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
