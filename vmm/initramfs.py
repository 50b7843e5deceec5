"""Build the initramfs `vmm linux` boots: a newc cpio of vmm's init and kernel modules.

Format: Documentation/driver-api/early-userspace/buffer-format.rst ("newc":
the ASCII header "070701", thirteen 8-digit hex fields, the NUL-terminated
name padded to 4 bytes, the data padded to 4 bytes, ended by "TRAILER!!!").

Modules come from a kernel package's /lib/modules/VERSION tree. A .deb has no
modules.dep (depmod writes it at install time), so the dependencies are read
from each module's own .modinfo section ("depends=a,b") and a modules.dep
listing only the chosen modules is written for the init, which loads them
dependencies first.
"""

from __future__ import annotations

import os
import struct

from .errors import ConfigError

NEWC_MAGIC = b"070701"
S_IFDIR, S_IFREG, S_IFCHR, S_IFLNK = 0o040000, 0o100000, 0o020000, 0o120000
# What `vmm linux` loads when the kernel has them as modules: virtio-mmio devices and disks.
DEFAULT_MODULES = ("virtio_mmio", "virtio_blk")
MODULE_DIR = "lib/modules"


class CpioWriter:
    """A newc archive, in memory."""

    def __init__(self):
        self._parts: list[bytes] = []
        self._inode = 1
        self._dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._inode, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = NEWC_MAGIC + b"".join(b"%08x" % value for value in fields)
        self._inode += 1
        self._parts += [header, encoded, bytes(-(len(header) + len(encoded)) % 4), data, bytes(-len(data) % 4)]

    def directory(self, name: str) -> None:
        """``name`` and its parents, each once."""
        path = ""
        for part in name.strip("/").split("/"):
            path = f"{path}/{part}" if path else part
            if path not in self._dirs:
                self._dirs.add(path)
                self._entry(path, S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        parent = os.path.dirname(name.strip("/"))
        if parent:
            self.directory(parent)
        self._entry(name.strip("/"), S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name.strip("/"), S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name.strip("/"), S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        archive = b"".join(self._parts)
        return archive + bytes(-len(archive) % 512)


def modinfo(image: bytes) -> dict[str, str]:
    """The key=value strings of an ELF64 module's .modinfo section (first value per key)."""
    if image[:4] != b"\x7fELF" or image[4] != 2 or image[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x3A)
    if shentsize < 64 or shoff + shnum * shentsize > len(image) or shstrndx >= shnum:
        raise ValueError("section headers outside the file")

    def section(index: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", image, shoff + index * shentsize)
        if offset + size > len(image):
            raise ValueError("section outside the file")
        return name, offset, size

    _, names_offset, names_size = section(shstrndx)
    for index in range(shnum):
        name, offset, size = section(index)
        end = image.find(b"\0", names_offset + name, names_offset + names_size)
        if image[names_offset + name : end] == b".modinfo":
            info: dict[str, str] = {}
            for item in image[offset : offset + size].split(b"\0"):
                key, sep, value = item.decode("utf-8", "replace").partition("=")
                if sep:
                    info.setdefault(key, value)
            return info
    return {}


MODULE_SIG_MAGIC = b"~Module signature appended~\n"


def strip_signature(image: bytes) -> bytes:
    """The module without its appended signature (scripts/sign-file.c: the signature,
    a 12-byte struct module_signature whose last field is the big-endian signature
    length, then the magic). Checking a signature is an RSA verification in
    ring 0, which this platform emulates; an unsigned module loads the same on a
    kernel that does not enforce signatures (it taints the kernel, and says so)."""
    if not image.endswith(MODULE_SIG_MAGIC) or len(image) < len(MODULE_SIG_MAGIC) + 12:
        return image
    info = image[-len(MODULE_SIG_MAGIC) - 12 : -len(MODULE_SIG_MAGIC)]
    signer_len, key_id_len = info[3], info[4]
    sig_len = int.from_bytes(info[8:12], "big")
    total = len(MODULE_SIG_MAGIC) + 12 + sig_len + signer_len + key_id_len
    return image[:-total] if total <= len(image) else image


def _module_index(tree: str) -> dict[str, str]:
    """Module name (dashes as underscores) -> path relative to ``tree``."""
    index = {}
    for root, _dirs, files in os.walk(tree):
        for filename in files:
            if filename.endswith(".ko"):
                index[filename[:-3].replace("-", "_")] = os.path.relpath(os.path.join(root, filename), tree)
    return index


def resolve_modules(tree: str, wanted, index: dict[str, str] | None = None, strip_signatures: bool = False) -> list[tuple[str, bytes, list[str]]]:
    """The ``wanted`` modules of ``tree`` (a /lib/modules/VERSION directory) and their
    dependencies: (relative path, image, dependency paths), dependencies first.
    A wanted module the tree does not have is taken to be built into the kernel.
    ``strip_signatures``: leave out their signatures (see strip_signature)."""
    index = _module_index(tree) if index is None else index
    done: dict[str, tuple[str, bytes, list[str]]] = {}
    visiting: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in done or name in visiting or name not in index:
            return
        visiting.add(name)
        path = index[name]
        with open(os.path.join(tree, path), "rb") as f:
            image = f.read()
        if strip_signatures:
            image = strip_signature(image)
        try:
            depends = [d for d in modinfo(image).get("depends", "").split(",") if d]
        except ValueError as err:
            raise ConfigError(f"{os.path.join(tree, path)}: not a kernel module ({err})") from None
        for dep in depends:
            visit(dep)
        done[name] = (path, image, [index[d.replace("-", "_")] for d in depends if d.replace("-", "_") in index])

    for name in wanted:
        visit(name)
    return list(done.values())


def build_initramfs(init: bytes, modules: list[tuple[str, bytes, list[str]]] = (), extra_files: dict[str, tuple[bytes, int]] | None = None) -> bytes:
    """A newc archive: /init, /dev/console, the mount points, /lib/modules with
    its modules.dep, and ``extra_files`` (name -> (data, mode), or ("symlink", target))."""
    cpio = CpioWriter()
    for directory in ("dev", "proc", "sys", "bin", "sbin", "tmp", MODULE_DIR):
        cpio.directory(directory)
    cpio.char_device("dev/console", 5, 1)  # the kernel opens it for init before devtmpfs exists
    cpio.file("init", init, 0o755)
    dep_lines = []
    for path, image, deps in modules:
        cpio.file(f"{MODULE_DIR}/{path}", image)
        dep_lines.append(f"{path}: {' '.join(deps)}".rstrip())
    if modules:
        cpio.file(f"{MODULE_DIR}/modules.dep", ("\n".join(dep_lines) + "\n").encode())
    for name, (data, mode) in (extra_files or {}).items():
        if data == "symlink":
            cpio.symlink(name, mode)
        else:
            cpio.file(name, data, mode)
    return cpio.finish()
