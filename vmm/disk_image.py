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


USTAR_SIZE_MAX = 8**11 - 1  # eleven octal digits
USTAR_NAME_MAX, USTAR_PREFIX_MAX = 100, 155


def _ustar_problem(info: tarfile.TarInfo, err: ValueError) -> str:
    """Why tarfile refused this member, in words that name the limit."""
    reason = str(err)
    if "name is too long" in reason and "link" not in reason:
        encoded = info.name.encode("utf-8", "surrogateescape")
        last = encoded.rsplit(b"/", 1)[-1]
        if len(last) > USTAR_NAME_MAX:
            return f"its name {last[:20].decode('utf-8', 'replace')}... is {len(last)} bytes, more than ustar's {USTAR_NAME_MAX}"
        return (
            f"its path is {len(encoded)} bytes, more than ustar holds "
            f"({USTAR_PREFIX_MAX} + {USTAR_NAME_MAX} split at a '/')"
        )
    if "linkname is too long" in reason:
        return f"its link target is {len(info.linkname.encode('utf-8', 'surrogateescape'))} bytes, more than ustar's {USTAR_NAME_MAX}"
    if info.size > USTAR_SIZE_MAX:
        return f"it is {info.size} bytes, more than ustar's {USTAR_SIZE_MAX} (8 GiB - 1)"
    return f"ustar cannot hold it: {reason}"


def _output_path(image_path) -> Path:
    """The image path, refused early when it cannot be written."""
    if not os.fspath(image_path):
        raise ConfigError("disk image output path is empty")
    image = Path(image_path)
    if image.is_dir():
        raise ConfigError(f"disk image {image} is a directory; give a file name (-o DIR/disk.img)")
    if image.exists() and not image.is_file():
        # The image replaces the target by rename: never a device, FIFO or socket.
        raise ConfigError(f"disk image {image} exists and is not a regular file; refusing to replace it")
    parent = image.parent
    if not parent.exists():
        raise ConfigError(f"disk image {image}: directory {parent} does not exist")
    if not parent.is_dir():
        raise ConfigError(f"disk image {image}: {parent} is not a directory")
    return image


def _create_temporary(image: Path) -> tuple[int, Path]:
    """A new file beside ``image``, mode 0666 less the umask (mkstemp would give 0600)."""
    for _ in range(100):
        tmp = image.parent / f".{image.name}.{os.urandom(6).hex()}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as err:
            raise ConfigError(f"disk image {image}: {err.strerror}") from None
    raise ConfigError(f"disk image {image}: cannot create a temporary file beside it")


def build_disk_image(source_dir, image_path, size_mib: int | None = None) -> int:
    """Write the image; return its size in bytes (a multiple of 1 MiB)."""
    source = Path(source_dir)
    if not source.is_dir():
        raise ConfigError(f"disk image source {source}: not a directory")
    if size_mib is not None and size_mib <= 0:
        raise ConfigError(f"disk image size must be positive, not {size_mib} MiB")
    image = _output_path(image_path)
    # Build next to the target and rename at the end: no half-written image.
    fd, tmp = _create_temporary(image)
    try:
        with os.fdopen(fd, "wb") as out:
            # The image (old or being built) may live inside the source tree.
            exclude = {_identity(tmp), _identity(image)} - {None}
            try:
                with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                    for path, name in _members(source, exclude):
                        info = tar.gettarinfo(path, arcname=name)
                        if info is None:  # a socket: nothing ustar can hold
                            continue
                        info = _as_root(info)
                        try:
                            info.tobuf(tarfile.USTAR_FORMAT, tar.encoding, tar.errors)
                        except ValueError as err:  # checked here, before anything is written
                            raise ConfigError(f"disk image {image}: cannot archive {path}: {_ustar_problem(info, err)}") from None
                        if info.isreg():
                            with open(path, "rb") as data:
                                tar.addfile(info, data)
                        else:
                            tar.addfile(info)
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
            try:
                out.truncate(size)  # zero padding (sparse where the filesystem can)
            except OSError as err:  # EFBIG: larger than this filesystem allows
                raise ConfigError(f"disk image {image}: cannot make it {size >> 20} MiB: {err.strerror}") from None
        try:
            os.replace(tmp, image)
        except OSError as err:
            raise ConfigError(f"disk image {image}: {err.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size
