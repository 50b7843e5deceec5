"""Build a raw disk image holding a directory as a POSIX ustar archive.

The guest reads the tar straight off the virtio-blk disk; the zero padding
after the archive is free space it may append to (a tar ends at the first
zero blocks, so appended members extend the archive). Names are relative
(no leading "./"), sorted, owned by uid/gid 0 so the image does not depend on
who built it.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path

from .errors import ConfigError

MIB = 1 << 20
SECTOR_SIZE = 512


def _identity(path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _members(source: Path, exclude: set):
    """(path, archive name) of every entry under ``source``, parents before children."""
    for root, dirs, files in os.walk(source):
        dirs.sort()
        root_path = Path(root)
        for name in dirs + sorted(files):
            path = root_path / name
            if _identity(path) in exclude:
                continue
            yield path, path.relative_to(source).as_posix()


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build_disk_image(source_dir, image_path, size_mib: int | None = None) -> int:
    """Write the image; return its size in bytes (a multiple of 1 MiB)."""
    source = Path(source_dir)
    image = Path(image_path)
    if not source.is_dir():
        raise ConfigError(f"disk image source {source}: not a directory")
    if size_mib is not None and size_mib <= 0:
        raise ConfigError(f"disk image size must be positive, not {size_mib} MiB")
    # Build next to the target and rename at the end: no half-written image.
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{image.name}.", dir=image.parent or ".")
    except OSError as err:
        raise ConfigError(f"disk image {image}: {err.strerror}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            # The image (old or being built) may live inside the source tree.
            exclude = {_identity(tmp), _identity(image)} - {None}
            try:
                with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                    for path, name in _members(source, exclude):
                        tar.add(path, arcname=name, recursive=False, filter=_as_root)
            except ValueError as err:  # name/linkname too long, number overflow
                raise ConfigError(f"disk image {image}: cannot archive {source} as ustar: {err}") from None
            except OSError as err:
                raise ConfigError(f"disk image {image}: {err.filename or source}: {err.strerror}") from None
            archive = out.tell()
            if size_mib is None:
                size = -(-(archive + MIB) // MIB) * MIB  # at least 1 MiB free
            else:
                size = size_mib * MIB
                if archive > size:
                    raise ConfigError(
                        f"disk image {image}: archive of {source} is {archive} bytes, "
                        f"larger than {size_mib} MiB"
                    )
            out.truncate(size)  # zero padding (sparse where the filesystem can)
        try:
            os.replace(tmp, image)
        except OSError as err:
            raise ConfigError(f"disk image {image}: {err.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size
