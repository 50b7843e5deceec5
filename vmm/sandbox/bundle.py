"""Pack a static Linux program, its arguments and files into a bundle.

A bundle is a POSIX ustar archive handed to the bundled guest as its PVH
module (`vmm run --initrd BUNDLE`).  Its presence puts the guest in sandbox
mode.  Members (see guest/README.md, "Linux personality"):

    .vmm/argv   argv strings, each NUL-terminated (argv[0] as the program sees it)
    .vmm/envp   environment strings K=V, each NUL-terminated
    .vmm/exec   guest path of the program to execute
    .vmm/opts   key=value lines: seed, clock, now, entropy, trace, dumpout, noout, cwd
    the rest    the program's read-only root file system

The .vmm/ members come first: the guest recognises a bundle by them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from ..errors import ConfigError
from . import program_cache
from .placement import PAGE

# Options the guest understands, and how each value is checked.
_U64_OPTIONS = ("seed", "clock", "now", "entropy")
_FLAG_OPTIONS = ("trace", "dumpout", "noout", "drained")
_NAME_LIMIT = 255  # ustar: 155-byte prefix + 100-byte name


class BundleError(ConfigError):
    """A bundle cannot be built from what was given (one-line message)."""


def _guest_path(path: str) -> str:
    if not path.startswith("/") or "\0" in path:
        raise BundleError(f"guest path must be absolute: {path!r}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts or not parts:
        raise BundleError(f"guest path must name a file below /: {path!r}")
    name = "/".join(parts)
    if len(name.encode()) > _NAME_LIMIT:
        raise BundleError(f"guest path too long for ustar: {path!r}")
    return name


def _strings(items: list[str], what: str) -> bytes:
    out = bytearray()
    for item in items:
        data = item.encode() if isinstance(item, str) else bytes(item)
        if b"\0" in data:
            raise BundleError(f"{what} string contains a NUL byte: {item!r}")
        out += data + b"\0"
    return bytes(out)


def _env_list(env: Mapping[str, str] | list[str] | None) -> list[str]:
    if env is None:
        return []
    if isinstance(env, Mapping):
        items = []
        for key, value in env.items():
            if not key or "=" in key:
                raise BundleError(f"bad environment variable name: {key!r}")
            items.append(f"{key}={value}")
        return items
    return list(env)


def _u64(key: str, value: object) -> int:
    """An integer option: an int or a string of decimal digits (as vmm.sandbox.run passes)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise BundleError(f"option {key} must be an integer from 0 to 2**64-1, not {value!r}")
    return value


def _flag(key: str, value: object) -> int:
    if value in (True, False, 0, 1, "0", "1", "true", "false", "yes", "no", "on", "off"):
        return 1 if value in (True, 1, "1", "true", "yes", "on") else 0
    raise BundleError(f"option {key} must be a boolean, 0 or 1, not {value!r}")


def _opts_text(options: Mapping[str, object] | None) -> bytes:
    options = dict(options or {})
    if "clock" not in options and "now" not in options:
        options["now"] = time.time_ns()  # the guest has no wall clock of its own
    lines = []
    for key, value in options.items():
        if key in _U64_OPTIONS:
            lines.append(f"{key}={_u64(key, value)}")
        elif key in _FLAG_OPTIONS:
            lines.append(f"{key}={_flag(key, value)}")
        elif key == "cwd":
            if not isinstance(value, str) or not value.startswith("/") or "\n" in value or len(value) > 255:
                raise BundleError(f"option cwd must be an absolute path, not {value!r}")
            lines.append(f"cwd={value}")
        else:
            raise BundleError(f"unknown bundle option: {key}")
    return "".join(line + "\n" for line in lines).encode()


def _read_host(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise BundleError(f"cannot read {os.fsdecode(path)}: {e.strerror}") from None


# ustar (POSIX.1-1988) written directly: the same bytes tarfile's USTAR_FORMAT
# writes (tests/unit/test_bundle_ustar.py compares them), without importing
# tarfile (~9 ms at a cold start) or its per-member objects (~1 ms a bundle).
_BLOCK = 512
_RECORD = 20 * _BLOCK  # tarfile pads the archive to a whole record
_REGTYPE, _DIRTYPE = b"0", b"5"


def _octal(value: int, width: int) -> bytes:
    """A numeric field: zero-padded octal digits and a NUL, as tarfile's itn() writes them."""
    digits = b"%0*o" % (width - 1, value)
    if len(digits) > width - 1:
        raise BundleError(f"ustar field overflows ({value} does not fit {width - 1} octal digits)")
    return digits + b"\0"


def _split_name(name: str) -> tuple[bytes, bytes]:
    """(prefix, name) of a member: a name past 100 bytes splits at the first slash
    that leaves a prefix of at most 155 bytes and a name of at most 100 (as tarfile does)."""
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) <= 100:
        return b"", encoded
    parts = encoded.split(b"/")
    for i in range(1, len(parts)):
        prefix, rest = b"/".join(parts[:i]), b"/".join(parts[i:])
        if len(prefix) <= 155 and len(rest) <= 100:
            return prefix, rest
    raise BundleError(f"guest path too long for ustar: /{name}")


def _header(name: str, size: int, mode: int, mtime: int, kind: bytes) -> bytes:
    prefix, short = _split_name(name)
    header = bytearray(_BLOCK)
    header[0:len(short)] = short
    header[100:108] = _octal(mode, 8)
    header[108:116] = _octal(0, 8)  # uid
    header[116:124] = _octal(0, 8)  # gid
    header[124:136] = _octal(size, 12)
    header[136:148] = _octal(mtime, 12)
    header[148:156] = b" " * 8  # the checksum counts its own field as spaces
    header[156:157] = kind
    header[257:265] = b"ustar\x0000"
    # uname, gname, devmajor, devminor: left NUL, as tarfile leaves them for files and directories
    header[345:345 + len(prefix)] = prefix
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


class _HostFile:
    """A regular host file, read when the bundle is written out: straight into
    its destination (guest RAM, for a warm sandbox), with no copy between."""

    __slots__ = ("path", "size", "identity")

    def __init__(self, path, size: int, identity: tuple):
        self.path, self.size = path, size
        self.identity = identity  # what names these bytes (program_cache.py keeps them by it)

    def __len__(self) -> int:
        return self.size

    def read_into(self, view: memoryview, start: int = 0) -> None:
        """Bytes ``start``.. of the file into ``view`` (as long as the rest of the file)."""
        try:
            with open(self.path, "rb", buffering=0) as f:
                if start:
                    f.seek(start)
                done = start
                while done < self.size:
                    n = f.readinto(view[done - start:])
                    if not n:
                        break
                    done += n
                if done != self.size or f.read(1):
                    raise BundleError(f"{os.fsdecode(self.path)} changed size while the bundle was built")
        except OSError as e:
            raise BundleError(f"cannot read {os.fsdecode(self.path)}: {e.strerror}") from None


class _Ustar:
    """Members gathered as parts (bytes, or host files read at the end); ``write_into()``
    lays them out once, with the end blocks and the record padding."""

    def __init__(self):
        self.parts: list = []
        self.size = 0
        self.offsets: dict[str, int] = {}  # member name -> where its data starts

    def _append(self, *parts) -> None:
        self.parts.extend(parts)
        self.size += sum(len(p) for p in parts)

    def add(self, name: str, data, mode: int = 0o644, mtime: int = 0, page_aligned: bool = False) -> None:
        """A regular file; ``page_aligned`` puts its data at a multiple of PAGE
        in the archive (a .vmm/pad member before it: the guest keeps .vmm/
        members aside), so guest RAM can map it from a file."""
        if page_aligned:
            pad = -(self.size + _BLOCK) % PAGE
            if pad:
                self._append(_header(".vmm/pad", pad - _BLOCK, 0o644, 0, _REGTYPE), bytes(pad - _BLOCK))
        self.offsets[name] = self.size + _BLOCK
        self._append(_header(name, len(data), mode, mtime, _REGTYPE), data, bytes(-len(data) % _BLOCK))

    def add_dir(self, name: str) -> None:
        self._append(_header(name + "/", 0, 0o755, 0, _DIRTYPE))

    @property
    def total(self) -> int:
        return self.size + self._end()

    def _end(self) -> int:
        end = 2 * _BLOCK
        return end + (-(self.size + end) % _RECORD)

    def write_into(self, view: memoryview, skip: tuple[int, int] = (0, 0)) -> None:
        """The archive into ``view`` (at least ``total`` bytes; the end blocks
        included), but for the ``skip`` = (offset, length) bytes of one host
        file's data from its start: the caller has them in place already."""
        offset = 0
        for part in self.parts:
            n = len(part)
            if isinstance(part, _HostFile):
                done = skip[1] if skip[0] == offset and skip[1] <= n else 0
                part.read_into(view[offset + done : offset + n], done)
            else:
                view[offset : offset + n] = part
            offset += n
        view[offset : offset + self._end()] = bytes(self._end())

    def finish(self) -> bytes:
        out = bytearray(self.total)
        self.write_into(memoryview(out))
        return bytes(out)


class Bundle:
    """A bundle not yet laid out: ``len()`` bytes, written by ``write_into`` (into
    guest RAM, for a warm sandbox) or made whole by ``bytes()``."""

    def __init__(self, tar: _Ustar, exec_name: str, exec_data):
        self._tar = tar
        self.exec_member = (tar.offsets[exec_name], len(exec_data))  # (offset, length) of the program the guest runs
        # The program's host file (path, device, inode, size, times): the same
        # bytes whenever it is the same; None for bytes given directly.
        self.exec_identity = exec_data.identity if isinstance(exec_data, _HostFile) else None

    def __len__(self) -> int:
        return self._tar.total

    def write_into(self, view: memoryview, skip: tuple[int, int] = (0, 0)) -> None:
        """(``skip``: see _Ustar.write_into; the program's data is the one host file that may be skipped.)"""
        self._tar.write_into(view, skip)

    def __bytes__(self) -> bytes:
        return self._tar.finish()


def _add_dirs(tar: _Ustar, name: str, made: set[str]) -> None:
    parts = name.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d not in made:
            made.add(d)
            tar.add_dir(d)


def build_bundle(program, argv, env=None, files=None, options=None, *, exec_path=None) -> bytes:
    """The bundle as bytes (see plan_bundle for the arguments)."""
    return bytes(plan_bundle(program, argv, env, files, options, exec_path=exec_path))


def _host_member(path) -> tuple[object, int, int]:
    """(data, mode, mtime) of a host file: a regular file is read later, into place."""
    import stat

    try:
        st = os.stat(path)
    except OSError as e:
        raise BundleError(f"cannot read {os.fsdecode(path)}: {e.strerror}") from None
    if stat.S_ISREG(st.st_mode):
        data = _HostFile(path, st.st_size, program_cache.file_identity(path, st))
    else:
        data = _read_host(path)
    return data, st.st_mode & 0o777, int(st.st_mtime)


def plan_bundle(
    program: str | bytes | os.PathLike,
    argv: list[str],
    env: Mapping[str, str] | list[str] | None = None,
    files: Mapping[str, str | bytes | os.PathLike] | None = None,
    options: Mapping[str, object] | None = None,
    *,
    exec_path: str | None = None,
) -> Bundle:
    """The bundle, to be laid out by its consumer (bytes(), or write_into()).

    program: the host path of the program (str, bytes or PathLike), or its
    contents as bytes (told apart by NUL bytes, which every ELF file has and
    no path has); it is placed at exec_path (default: /prog, or /bin/<name> of a host path
    named busybox) unless files already put something there.  argv[0] is what
    the program sees.  files maps guest paths to host paths or bytes.
    """
    if not argv:
        raise BundleError("argv must hold at least argv[0]")
    program_mtime = 0
    if isinstance(program, (bytes, bytearray, memoryview)) and b"\0" in program:
        program_data = bytes(program)  # an image: every ELF file holds NUL bytes
        default_exec = "/prog"
    else:  # a host path, str, PathLike or bytes
        program_data, _, program_mtime = _host_member(program)
        base = os.path.basename(os.fsdecode(program))
        default_exec = "/bin/busybox" if base == "busybox" else "/prog"
    exec_path = exec_path or default_exec
    exec_name = _guest_path(exec_path)

    # guest name -> (data, mode, mtime): host files keep their mode and mtime
    members: dict[str, tuple[bytes, int, int]] = {}
    for guest, src in (files or {}).items():
        name = _guest_path(guest)
        if name.split("/")[0] == ".vmm":
            raise BundleError(f"guest path {guest!r} is reserved for the bundle's control files")
        if isinstance(src, (bytes, bytearray, memoryview)):
            members[name] = (bytes(src), 0o644, 0)
        else:
            members[name] = _host_member(src)
    members.setdefault(exec_name, (program_data, 0o755, program_mtime))

    tar = _Ustar()
    tar.add(".vmm/argv", _strings(argv, "argv"))
    tar.add(".vmm/envp", _strings(_env_list(env), "environment"))
    tar.add(".vmm/exec", ("/" + exec_name).encode())
    tar.add(".vmm/opts", _opts_text(options))
    made: set[str] = set()
    for name, (data, mode, mtime) in sorted(members.items()):
        _add_dirs(tar, name, made)
        # the program's data page-aligned: a warm clone maps it (program_cache.py)
        tar.add(name, data, mode, mtime, page_aligned=name == exec_name and isinstance(data, _HostFile))
    return Bundle(tar, exec_name, members[exec_name][0])
