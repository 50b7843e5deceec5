"""Shared by the snapshot tests: boot, count, and check a count's continuity."""

import hashlib
import re

from vmm import MicroVM, VmConfig
from vmm.snapshot import format as fmt

COUNT_LINE = re.compile(rb"count (\d+)\r\n")


def boot(guest_elf, mem_mib=128, **kwargs) -> MicroVM:
    vm = MicroVM(VmConfig(kernel=str(guest_elf), mem_mib=mem_mib, timeout=120, **kwargs)).start()
    vm.expect("$ ", timeout=30)
    return vm


def counts(output: bytes) -> list[int]:
    return [int(n) for n in COUNT_LINE.findall(output)]


def assert_consecutive(numbers: list[int], start: int = 1) -> None:
    """1, 2, 3, ...: nothing repeated, nothing missing."""
    assert numbers, "no count lines"
    expected = list(range(start, start + len(numbers)))
    if numbers != expected:
        bad = next(i for i, (a, b) in enumerate(zip(numbers, expected)) if a != b)
        raise AssertionError(f"count broken at position {bad}: {numbers[max(0, bad - 3):bad + 3]}")


def resign(data: bytes, **header_changes) -> bytes:
    """A state file whose body (and header fields) were changed, with a valid checksum again."""
    header = fmt.Header.parse(data)
    body = data[fmt.Header.sizeof():]
    fields = {k: v for k, v in header.items() if not k.startswith("_")}
    fields.update(header_changes)
    fields["body_length"] = len(body)
    fields["body_sha256"] = hashlib.sha256(body).digest()
    return fmt.Header.build(fields) + body


def rebuild(data: bytes, change) -> bytes:
    """Parse a state file's body, let ``change(body)`` edit it, build and re-sign it."""
    header = fmt.Header.parse(data)
    body = fmt.Body.parse(data[fmt.Header.sizeof():])
    change(body)
    new_body = fmt.Body.build(body)
    fields = {k: v for k, v in header.items() if not k.startswith("_")}
    fields["body_length"] = len(new_body)
    fields["body_sha256"] = hashlib.sha256(new_body).digest()
    return fmt.Header.build(fields) + new_body
