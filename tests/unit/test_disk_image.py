import io
import os
import tarfile

import pytest

from vmm.devices.virtio import VirtioBlock
from vmm.disk_image import MIB, build_disk_image
from vmm.errors import ConfigError


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "etc" / "empty").mkdir(parents=True)
    (src / "hello.txt").write_text("hello\n")
    (src / "bin" / "prog").write_bytes(os.urandom(3000))
    (src / "etc" / "motd").write_text("welcome\n")
    return src


def members(image):
    with open(image, "rb") as f:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            return {m.name: (m, tar.extractfile(m).read() if m.isfile() else None) for m in tar}


def test_builds_ustar_archive(tree, tmp_path):
    image = tmp_path / "disk.img"
    size = build_disk_image(tree, image)
    assert size == image.stat().st_size
    got = members(image)
    assert sorted(got) == ["bin", "bin/prog", "etc", "etc/empty", "etc/motd", "hello.txt"]
    assert got["hello.txt"][1] == b"hello\n"
    assert got["bin/prog"][1] == (tree / "bin" / "prog").read_bytes()
    assert got["etc/empty"][0].isdir()
    assert all(m.uid == 0 and m.gid == 0 for m, _ in got.values())
    raw = image.read_bytes()
    assert raw[257:263] == b"ustar\x00"  # POSIX ustar magic in the first header
    assert not any(name.startswith(("/", "./")) for name in got)


def test_default_size_leaves_free_space(tree, tmp_path):
    image = tmp_path / "disk.img"
    size = build_disk_image(tree, image)
    assert size % MIB == 0 and size % 512 == 0
    archive_end = len(image.read_bytes().rstrip(b"\0"))
    assert size - archive_end >= MIB
    assert size == MIB * 2  # a tiny archive: rounded up to 1 MiB, plus 1 MiB free


def test_explicit_size(tree, tmp_path):
    image = tmp_path / "disk.img"
    assert build_disk_image(tree, image, size_mib=3) == 3 * MIB
    assert image.stat().st_size == 3 * MIB
    assert set(members(image)) >= {"hello.txt"}


def test_usable_as_a_disk(tree, tmp_path):
    image = tmp_path / "disk.img"
    build_disk_image(tree, image)
    dev = VirtioBlock(image, read_only=True)
    assert dev.capacity * 512 == image.stat().st_size
    dev.close()


def test_archive_too_large(tree, tmp_path):
    (tree / "big").write_bytes(b"x" * (MIB + 1))
    image = tmp_path / "disk.img"
    with pytest.raises(ConfigError, match=r"larger than 1 MiB"):
        build_disk_image(tree, image, size_mib=1)
    assert not image.exists()
    assert list(tmp_path.iterdir()) == [tree]  # no temporary file left behind


def test_bad_size(tree, tmp_path):
    with pytest.raises(ConfigError):
        build_disk_image(tree, tmp_path / "disk.img", size_mib=0)


def test_source_not_a_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        build_disk_image(f, tmp_path / "disk.img")
    with pytest.raises(ConfigError, match="not a directory"):
        build_disk_image(tmp_path / "missing", tmp_path / "disk.img")


def test_name_too_long(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / ("n" * 120)).write_text("x")  # ustar: name field 100 bytes, no '/' to split at
    with pytest.raises(ConfigError, match="ustar") as info:
        build_disk_image(src, tmp_path / "disk.img")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "disk.img").exists()


def test_long_path_split_into_prefix(tmp_path):
    src = tmp_path / "src"
    deep = src / ("d" * 80) / ("e" * 60)
    deep.mkdir(parents=True)
    (deep / "file").write_text("x")
    build_disk_image(src, tmp_path / "disk.img")
    assert f"{'d' * 80}/{'e' * 60}/file" in members(tmp_path / "disk.img")


def test_image_inside_source_is_not_archived(tree):
    image = tree / "disk.img"
    build_disk_image(tree, image)
    build_disk_image(tree, image)  # the old image is there now, still excluded
    names = members(image)
    assert "disk.img" not in names and not any(n.startswith(".disk.img") for n in names)


def test_symlinks_kept_as_links(tree, tmp_path):
    (tree / "link").symlink_to("hello.txt")
    build_disk_image(tree, tmp_path / "disk.img")
    link, _ = members(tmp_path / "disk.img")["link"]
    assert link.issym() and link.linkname == "hello.txt"


def test_empty_directory(tmp_path):
    src = tmp_path / "empty"
    src.mkdir()
    size = build_disk_image(src, tmp_path / "disk.img")
    assert size == 2 * MIB
    with tarfile.open(fileobj=io.BytesIO((tmp_path / "disk.img").read_bytes())) as tar:
        assert tar.getnames() == []
