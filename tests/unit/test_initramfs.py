"""The newc cpio `vmm linux` boots, the module dependency order, and the command encoding."""

from __future__ import annotations

import base64
import os
import struct

import pytest

from vmm.errors import ConfigError
from vmm.initramfs import CpioWriter, build_initramfs, modinfo, resolve_modules
from vmm.linux_cmd import encode_command, linux_cmdline


def read_newc(archive: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, data, (rdevmajor, rdevminor)), parsed as the kernel does."""
    entries, pos = {}, 0
    while True:
        assert archive[pos : pos + 6] == b"070701"
        fields = [int(archive[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_start = pos + 110
        name = archive[name_start : name_start + namesize - 1].decode()
        assert archive[name_start + namesize - 1] == 0
        data_start = name_start + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (fields[1], archive[data_start : data_start + filesize], (fields[9], fields[10]))
        pos = data_start + filesize + (-filesize % 4)


def fake_module(depends: str) -> bytes:
    """An ELF64 with a section-name table and a .modinfo section."""
    shstr = b"\0.shstrtab\0.modinfo\0"
    info = b"license=GPL\0depends=" + depends.encode() + b"\0name=x\0"
    body_off = 64
    shstr_off, info_off = body_off, body_off + len(shstr)
    shoff = info_off + len(info)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 1)
    sections = bytes(64)
    sections += struct.pack("<IIQQQQ", 1, 3, 0, 0, shstr_off, len(shstr)) + bytes(24)
    sections += struct.pack("<IIQQQQ", 11, 1, 0, 0, info_off, len(info)) + bytes(24)
    return bytes(header) + shstr + info + sections


def test_newc_archive_holds_init_console_modules_and_links():
    archive = build_initramfs(b"\x7fELFinit", [("kernel/a.ko", b"A", []), ("kernel/b.ko", b"B", ["kernel/a.ko"])],
                              {"bin/busybox": (b"BB", 0o755), "bin/sh": ("symlink", "busybox")})
    assert len(archive) % 512 == 0
    entries = read_newc(archive)
    assert entries["init"][0] == 0o100755 and entries["init"][1] == b"\x7fELFinit"
    assert entries["dev/console"][0] == 0o020600 and entries["dev/console"][2] == (5, 1)
    assert entries["lib/modules/modules.dep"][1] == b"kernel/a.ko:\nkernel/b.ko: kernel/a.ko\n"
    assert entries["lib/modules/kernel"][0] == 0o040755  # parents are created
    assert entries["bin/sh"] == (0o120777, b"busybox", (0, 0))


def test_a_directory_is_written_once():
    cpio = CpioWriter()
    cpio.file("a/b/c", b"1")
    cpio.file("a/b/d", b"2")
    names = list(read_newc(cpio.finish()))
    assert names.count("a") == 1 and names.count("a/b") == 1


def test_modinfo_and_dependency_order(tmp_path):
    tree = tmp_path / "6.1.0-test"
    (tree / "kernel").mkdir(parents=True)
    (tree / "kernel" / "virtio_ring.ko").write_bytes(fake_module(""))
    (tree / "kernel" / "virtio.ko").write_bytes(fake_module("virtio_ring"))
    (tree / "kernel" / "virtio_blk.ko").write_bytes(fake_module("virtio,virtio_ring"))
    assert modinfo(fake_module("a,b"))["depends"] == "a,b"
    order = [path for path, _, _ in resolve_modules(str(tree), ["virtio_blk", "not_a_module"])]
    assert order == ["kernel/virtio_ring.ko", "kernel/virtio.ko", "kernel/virtio_blk.ko"]


def test_a_file_that_is_not_a_module_is_refused(tmp_path):
    (tmp_path / "bad.ko").write_bytes(b"not an elf")
    with pytest.raises(ConfigError, match="not a kernel module"):
        resolve_modules(str(tmp_path), ["bad"])


def test_the_command_travels_as_base64_of_nul_terminated_arguments():
    line = linux_cmdline(["sh", "-c", "echo 'a b'; exit 3"], root="/dev/vda")
    assert "vmm.root=/dev/vda" in line and line.startswith("console=ttyS0")
    encoded = line.split("vmm.cmd=")[1]
    assert base64.b64decode(encoded) == b"sh\0-c\0echo 'a b'; exit 3\0"
    with pytest.raises(ConfigError):
        encode_command([])


@pytest.mark.skipif(not os.path.isdir(os.path.expanduser("~/.cache/vmm/kernels/lib/modules")), reason="no Debian kernel modules cached (tests/linux/fetch_kernel.sh)")
def test_debian_virtio_modules_resolve_in_dependency_order():
    from vmm.initramfs import DEFAULT_MODULES

    root = os.path.expanduser("~/.cache/vmm/kernels/lib/modules")
    tree = os.path.join(root, sorted(os.listdir(root))[-1])
    names = [os.path.basename(path) for path, _, _ in resolve_modules(tree, DEFAULT_MODULES)]
    assert names.index("virtio_ring.ko") < names.index("virtio.ko") < names.index("virtio_mmio.ko")
    assert "virtio_blk.ko" in names


def test_a_module_signature_is_stripped_exactly():
    from vmm.initramfs import MODULE_SIG_MAGIC, strip_signature

    body = fake_module("virtio")
    signature, signer, key_id = b"S" * 300, b"", b""
    info = bytes([0, 0, 2, len(signer), len(key_id), 0, 0, 0]) + len(signature).to_bytes(4, "big")
    signed = body + signer + key_id + signature + info + MODULE_SIG_MAGIC
    assert strip_signature(signed) == body
    assert strip_signature(body) == body  # unsigned: as it is
