import io
import os
import stat
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


# --- issue 8, item 9 ------------------------------------------------------------------

def test_name_too_long_names_the_file(tmp_path):
    src = tmp_path / "src"
    (src / "ok").mkdir(parents=True)
    long_name = "n" * 120
    (src / "ok" / long_name).write_text("x")
    with pytest.raises(ConfigError) as info:
        build_disk_image(src, tmp_path / "disk.img")
    message = str(info.value)
    assert f"ok/{long_name}:" in message
    assert "is 120 bytes, more than ustar's 100" in message


def test_path_too_long_names_the_file(tmp_path):
    src = tmp_path / "src"
    deep = src / ("d" * 90) / ("e" * 90) / ("f" * 90)
    deep.mkdir(parents=True)  # no '/' splits d/e/f into 155 + 100 bytes
    with pytest.raises(ConfigError, match=r"/f{90}: its path is 27\d bytes, more than ustar holds \(155 \+ 100"):
        build_disk_image(src, tmp_path / "disk.img")


def test_symlink_target_too_long_names_the_link(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "link").symlink_to("t" * 150)
    with pytest.raises(ConfigError, match=r"cannot archive .*/link: its link target is 150 bytes"):
        build_disk_image(src, tmp_path / "disk.img")


def test_file_too_big_for_ustar_names_the_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "huge", "wb") as f:
        f.truncate(9 << 30)  # sparse; refused before a byte of it is read
    with pytest.raises(ConfigError, match=r"cannot archive .*/huge: it is 9663676416 bytes, more than ustar's 8589934591"):
        build_disk_image(src, tmp_path / "disk.img")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no temporary left


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_image_mode_honours_the_umask(tree, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        build_disk_image(tree, tmp_path / "disk.img")
    finally:
        os.umask(old)
    assert (tmp_path / "disk.img").stat().st_mode & 0o777 == mode


@pytest.mark.parametrize(
    "output, message",
    [
        ("", "output path is empty"),
        (".", r"is a directory; give a file name"),
        ("missing/disk.img", r"directory .*missing does not exist"),
        ("tree_file/disk.img", r"tree_file is not a directory"),
    ],
)
def test_unusable_output_paths(tree, tmp_path, monkeypatch, output, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tree_file").write_text("x")
    with pytest.raises(ConfigError, match=message) as info:
        build_disk_image(tree, output)
    assert "\n" not in str(info.value)


def test_size_beyond_the_filesystem_is_a_config_error(tree, tmp_path):
    with pytest.raises(ConfigError, match=r"cannot make it 99999999999 MiB: File too large"):
        build_disk_image(tree, tmp_path / "disk.img", size_mib=99999999999)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_an_existing_device_or_fifo_is_never_replaced(tmp_path):
    (tmp_path / "src").mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (str(fifo), "/dev/null"):
        with pytest.raises(ConfigError, match="not a regular file; refusing to replace it"):
            build_disk_image(tmp_path / "src", target)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)
