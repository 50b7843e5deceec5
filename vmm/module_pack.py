"""vmm's modules compiled into one file, and imported from it.

Importing a module from its directory costs ~57 us here before a line of it
runs: importlib's path finder checks the directory listing and the source,
then opens, reads and closes the .pyc (system calls cost 2-4 us on this
nested machine), with its Python around each step. `vmm exec` imports 57 of
vmm's modules, `vmm run` 42: ~1.5-2 ms of either command's start.

The pack holds every module's code object, marshalled, behind one index. A
finder at the front of sys.meta_path (installed by vmm/__init__.py) maps the
pack and serves vmm's modules from it: one stat of the source per module,
and the same freshness rule as a .pyc (its size and mtime, here to the
nanosecond); no directory listing, no file opened. A module whose source
changed since the pack was built, or that the pack lacks, is imported from
its file as always; a pack for another Python (bytecode magic, optimization
level) or an unreadable one is not used at all. The loader is importlib's
own SourceFileLoader with only get_code answered from the pack, so
tracebacks, inspect, runpy and importlib.resources see ordinary modules.

Built by `make bytecode` (``vmm.module_pack.main()``) beside the .pyc files,
in vmm/__pycache__.
"""

from __future__ import annotations

import marshal
import os
import sys

# The frozen module behind importlib, always loaded: importing the importlib
# package instead would cost ~0.5 ms (it pulls in warnings).
from _frozen_importlib_external import MAGIC_NUMBER, SourceFileLoader, spec_from_file_location

FORMAT = b"vmm-module-pack-1"
_LENGTH_BYTES = 8  # the header's length, little-endian, before it


def pack_path(root: str) -> str:
    """Where the pack of the package at ``root`` lives (beside its .pyc files)."""
    return os.path.join(root, "__pycache__", f"modules.{sys.implementation.cache_tag}.pack")


def _header_fields() -> tuple:
    return FORMAT, MAGIC_NUMBER, sys.flags.optimize


_CodeType = type(_header_fields.__code__)  # (types.CodeType, without importing types)


def build(root: str, package: str, dest: str | None = None) -> int:
    """Compile every module of the package ``package`` at ``root`` (its
    subpackages too) into one pack at ``dest`` (default: pack_path(root)),
    replaced atomically; returns how many modules it holds."""
    index: dict[str, tuple] = {}
    chunks: list[bytes] = []
    offset = 0
    for dirpath, dirnames, filenames in os.walk(root):
        # Only real subpackages: a plain directory under the package is not importable as one.
        dirnames[:] = sorted(d for d in dirnames if os.path.isfile(os.path.join(dirpath, d, "__init__.py")))
        relative_dir = os.path.relpath(dirpath, root)
        prefix = package if relative_dir == "." else package + "." + relative_dir.replace(os.sep, ".")
        for filename in sorted(filenames):
            if not filename.endswith(".py"):
                continue
            path = os.path.join(dirpath, filename)
            with open(path, "rb") as source_file:
                stat = os.fstat(source_file.fileno())
                source = source_file.read()
            # As importlib compiles a source (SourceLoader.source_to_code).
            code = compile(source, path, "exec", dont_inherit=True, optimize=-1)
            data = marshal.dumps(code)
            name = prefix if filename == "__init__.py" else f"{prefix}.{filename[:-3]}"
            index[name] = (os.path.relpath(path, root), stat.st_mtime_ns, stat.st_size, offset, len(data))
            chunks.append(data)
            offset += len(data)
    header = marshal.dumps((*_header_fields(), index))
    dest = dest or pack_path(root)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    temporary = f"{dest}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as out:
            out.write(len(header).to_bytes(_LENGTH_BYTES, "little"))
            out.write(header)
            out.writelines(chunks)
        os.replace(temporary, dest)  # a process mapping the old pack keeps reading the old one
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return len(index)


class _PackedLoader(SourceFileLoader):
    """importlib's loader for a source file, with the code taken from the pack."""

    def __init__(self, fullname: str, path: str, finder: PackFinder):
        super().__init__(fullname, path)
        self._finder = finder

    def get_code(self, fullname):
        code = self._finder.code(fullname)
        return code if code is not None else super().get_code(fullname)


class PackFinder:
    """Finds the modules of one package in its pack (a meta path finder)."""

    def __init__(self, root: str, data, index: dict):
        self.root = root
        self._data = data  # the code objects' bytes (a memoryview of the mapped pack)
        self._index = index
        self.served: set[str] = set()  # the modules imported from the pack (tests)

    @classmethod
    def open(cls, root: str, path: str | None = None) -> PackFinder | None:
        """The finder for the pack at ``path`` (default: pack_path(root)), or None
        when there is none usable: missing, damaged, or for another Python."""
        import mmap

        try:
            fd = os.open(path or pack_path(root), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            mapped = mmap.mmap(fd, 0, prot=mmap.PROT_READ)  # pages read only for the modules imported
        except (OSError, ValueError):  # (ValueError: an empty file)
            return None
        finally:
            os.close(fd)
        try:
            length = int.from_bytes(mapped[:_LENGTH_BYTES], "little")
            if _LENGTH_BYTES + length > len(mapped):
                raise ValueError("cut short")
            *fields, index = marshal.loads(mapped[_LENGTH_BYTES:_LENGTH_BYTES + length])
            if tuple(fields) != _header_fields() or not isinstance(index, dict):
                raise ValueError("another format or Python")
            data = memoryview(mapped)[_LENGTH_BYTES + length:]
        except Exception:  # (any damage: marshal raises several kinds) not used
            mapped.close()
            return None
        return cls(root, data, index)

    def find_spec(self, fullname, path=None, target=None):
        entry = self._index.get(fullname)
        if entry is None:
            return None
        try:
            relative, mtime, size, _, _ = entry
            origin = os.path.join(self.root, relative)
            stat = os.stat(origin)
        except (OSError, TypeError, ValueError):  # (a damaged entry: left to the path finder)
            return None
        if stat.st_mtime_ns != mtime or stat.st_size != size:
            return None  # changed since the pack was built: its file, as always
        return spec_from_file_location(fullname, origin, loader=_PackedLoader(fullname, origin, self))

    def __len__(self) -> int:
        return len(self._index)

    def stale_modules(self) -> list[str]:
        """The modules in the pack whose source changed or went since it was built
        (vmm doctor): each is imported from its file."""
        return sorted(name for name in self._index if self.find_spec(name) is None)

    def code(self, fullname: str):
        """The code object of ``fullname`` from the pack (None: not in it)."""
        try:
            _, _, _, offset, count = self._index[fullname]
            if not 0 <= offset <= offset + count <= len(self._data):
                return None
            code = marshal.loads(self._data[offset:offset + count])
        except Exception:  # (not in the pack, or damaged: importlib reads the .pyc)
            return None
        if not isinstance(code, _CodeType):
            return None
        self.served.add(fullname)
        return code


def install(root: str) -> PackFinder | None:
    """Serve the package at ``root`` from its pack, where it has a usable one;
    the finder, or None (imports go on as without it)."""
    finder = PackFinder.open(root)
    if finder is not None:
        sys.meta_path.insert(0, finder)
    return finder


def main() -> None:
    """Pack vmm itself (`make bytecode`; vmm/__init__.py imports this module,
    so it is not run with -m)."""
    root = os.path.dirname(os.path.abspath(__file__))
    count = build(root, "vmm")
    print(f"vmm: {count} modules packed in {pack_path(root)}", file=sys.stderr)
