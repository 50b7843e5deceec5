"""What the program's root file system holds: --in files and directories, --rootfs.

Everything ends up as members of the bundle (vmm/sandbox/bundle.py): guest
path -> host path or bytes. Only regular files travel; symlinks, devices and
other special files on the host are left out (the sandbox sees no host
links it could follow).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from ..errors import ConfigError

PROGRAM_DIRS = ("/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin")


def _walk(host_dir: str, guest_dir: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for top, dirs, names in os.walk(host_dir):
        dirs.sort()
        rel = os.path.relpath(top, host_dir)
        for name in sorted(names):
            host = os.path.join(top, name)
            if stat.S_ISREG(os.lstat(host).st_mode):
                guest = "/".join(p for p in (guest_dir.rstrip("/"), "" if rel == "." else rel, name) if p)
                found["/" + guest.lstrip("/")] = host
    return found


def expand_files(files: Mapping[str, str | bytes]) -> dict[str, str | bytes]:
    """``files`` with every host directory replaced by the regular files under it."""
    out: dict[str, str | bytes] = {}
    for guest, src in files.items():
        if isinstance(src, str) and os.path.isdir(src):
            out.update(_walk(src, guest))
        elif isinstance(src, str) and not os.path.isfile(src):
            raise ConfigError(f"input {src}: no such file or directory")
        else:
            out[guest] = src
    return out


def read_root(path: str) -> dict[str, str | bytes]:
    """A root file system from a directory or a ustar image (as `vmm mkdisk` writes)."""
    import tarfile  # only for an image, and only here: not on vmm exec's start path

    if os.path.isdir(path):
        return _walk(path, "/")
    if not os.path.isfile(path):
        raise ConfigError(f"rootfs {path}: not a directory or an image file")
    root: dict[str, str | bytes] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if member.isreg():
                    name = "/" + member.name.lstrip("/")
                    if ".." in name.split("/"):
                        continue  # never outside the root
                    root[name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError) as err:
        raise ConfigError(f"rootfs {path}: not a ustar image ({err})") from None
    return root


def find_in_root(root: Mapping[str, str | bytes], program: str) -> str | None:
    """The guest path of ``program`` in ``root``: as given when absolute, else on a usual PATH."""
    if not root:
        return None
    if program.startswith("/"):
        return program if program in root else None
    if "/" in program:
        candidate = "/" + program
        return candidate if candidate in root else None
    for directory in PROGRAM_DIRS:
        candidate = f"{directory}/{program}"
        if candidate in root:
            return candidate
    return None
