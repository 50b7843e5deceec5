"""Reading boot inputs (kernel, initrd) from the host, bounded by what was checked.

A path may name a FIFO, a device (/dev/zero reads forever), a directory or a
sparse file of terabytes. Each input is opened without blocking (a FIFO with
no writer would hang an ordinary open), must be a regular file, and is read
only up to the size checked before reading: a file that grows meanwhile
cannot push more than that into the VMM, one that shrinks is an error.
"""

from __future__ import annotations

import os
import stat

from ..errors import ConfigError


class InputFile:
    """A regular file opened for reading; ``size`` is its size when opened."""

    __slots__ = ("path", "what", "fd", "size")

    def __init__(self, path: str, what: str, error=ConfigError):
        self.path, self.what = path, what
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise error(f"{what} file not found: {path}") from None
        except (OSError, ValueError) as err:  # ValueError: a NUL in the path
            raise error(f"cannot read {what} {path}: {getattr(err, 'strerror', None) or err}") from None
        try:
            st = os.fstat(self.fd)
            if stat.S_ISDIR(st.st_mode):
                raise error(f"{what} path is a directory: {path}")
            if not stat.S_ISREG(st.st_mode):
                raise error(f"{what} {path} is not a regular file (a device, FIFO or socket)")
            self.size = st.st_size
        except BaseException:
            os.close(self.fd)
            raise

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``, inside the size checked at open."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ConfigError(f"{self.what} {self.path}: read past its end")
        chunks, done = [], 0
        while done < length:
            try:
                chunk = os.pread(self.fd, min(length - done, 1 << 26), offset + done)
            except OSError as err:
                raise ConfigError(f"cannot read {self.what} {self.path}: {err.strerror}") from None
            if not chunk:
                raise ConfigError(f"{self.what} {self.path} shrank while it was being read")
            chunks.append(chunk)
            done += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
