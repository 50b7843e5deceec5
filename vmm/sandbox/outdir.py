"""Bring the program's /out back to the host without trusting a byte of it.

The archive comes from the guest, which the program may control entirely. Only
regular files and directories are extracted; every name must stay inside the
output directory (no absolute paths, no `..`, no links or devices followed or
created); counts and sizes are capped. The standard library's ``data`` filter
(PEP 706) checks each member as well, as a second line.
"""

from __future__ import annotations

import os

from ..errors import VmmError

MAX_OUT_FILES = 10_000
DEFAULT_MAX_OUT_BYTES = 256 << 20


class OutputRefused(VmmError):
    """An /out entry was unsafe or over a limit: it was skipped, and this says why."""


def extract_out(archive: bytes, dest: str, *, max_bytes: int = DEFAULT_MAX_OUT_BYTES, max_files: int = MAX_OUT_FILES) -> tuple[list[str], list[str]]:
    """Extract ``archive`` into ``dest``; returns (extracted names, skipped notes)."""
    import io
    import tarfile  # here, not at the top: vmm exec's start path has no use for it

    os.makedirs(dest, exist_ok=True)
    root = os.path.realpath(dest)
    extracted: list[str] = []
    skipped: list[str] = []
    total = 0
    try:
        tar = tarfile.open(fileobj=io.BytesIO(archive), mode="r:")
    except tarfile.TarError as err:
        return [], [f"/out archive unreadable: {err}"]
    with tar:
        try:
            members = tar.getmembers()
        except tarfile.TarError as err:
            return [], [f"/out archive unreadable: {err}"]
        for member in members[: max_files + 1]:
            name = member.name
            if len(extracted) >= max_files:
                skipped.append(f"more than {max_files} entries: the rest were skipped")
                break
            if not (member.isreg() or member.isdir()):
                skipped.append(f"{name!r}: not a regular file or directory")
                continue
            target = os.path.realpath(os.path.join(root, name))
            if os.path.isabs(name) or ".." in name.split("/") or not (target == root or target.startswith(root + os.sep)):
                skipped.append(f"{name!r}: outside the output directory")
                continue
            if member.isreg():
                if total + member.size > max_bytes:
                    skipped.append(f"{name!r}: over the {max_bytes}-byte output limit")
                    continue
                total += member.size
            try:
                tar.extract(member, root, filter="data")
            except (tarfile.TarError, OSError) as err:
                skipped.append(f"{name!r}: {err}")
                continue
            extracted.append(name)
    return extracted, skipped
