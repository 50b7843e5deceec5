"""The command's argument parsing and input checks, without booting a VM."""

import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.conftest import GUEST_ELF
from vmm import cli, cli_parser
from vmm.config import TIMEOUT_MAX, DiskConfig, VmConfig
from vmm.errors import ConfigError


def parse(*argv):
    return cli_parser.build_parser().parse_args(list(argv))


def refused(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("vmm: ") and err.count("\n") == 1, err
    return err


# --- --mem and --size: decimal MiB, or M/G suffixed (issue 8, item 10) --------------

@pytest.mark.parametrize(
    "text, mib",
    [("512", 512), ("010", 10), ("64M", 64), ("64m", 64), ("2G", 2048), ("1g", 1024), ("0064", 64)],
)
def test_memory_sizes(text, mib):
    assert parse("run", "--mem", text).mem == mib
    assert parse("mkdisk", "d", "-o", "i", "--size", text).size == mib


@pytest.mark.parametrize("text", ["0x40", "0o10", "0b1", "1_000", " 64", "64 ", "+64", "-1", "0", "0G", "G", "", "1.5G", "64K", "64MiB", "١٢", "lots"])
def test_memory_sizes_refused(capsys, text):
    assert "--mem" in refused(capsys, "run", f"--mem={text}")


def test_rounds_is_decimal(capsys):
    assert parse("bench", "--rounds", "010").rounds == 10
    refused(capsys, "bench", "--rounds", "0x10")


# --- --disk: a comma in the path is doubled, as in QEMU ---------------------------------

@pytest.mark.parametrize(
    "text, disk",
    [
        ("disk.img", DiskConfig("disk.img", False)),
        ("disk.img,ro", DiskConfig("disk.img", True)),
        ("disk.img,rw", DiskConfig("disk.img", False)),
        ("a,,b.img", DiskConfig("a,b.img", False)),
        ("a,,b.img,ro", DiskConfig("a,b.img", True)),
        ("a,,,,b,,", DiskConfig("a,,b,", False)),
        ("a,,,ro", DiskConfig("a,", True)),
        (",,", DiskConfig(",", False)),
    ],
)
def test_disk_paths_and_options(text, disk):
    assert parse("run", "--disk", text).disk == [disk]


@pytest.mark.parametrize("text, message", [(",ro", "empty disk path"), ("", "empty disk path"), ("a,b", "unknown disk option 'b'"), ("a,ro,ro", "unknown disk option 'ro,ro'"), ("a,", "unknown disk option ''")])
def test_disk_refused(capsys, text, message):
    assert message in refused(capsys, "run", f"--disk={text}")


# --- --timeout and --cmdline (issue 8, items 5 and 7) --------------------------------

@pytest.mark.parametrize("text", ["inf", "1e300", "1e10", "31536001", "nan", "-inf", "0", "-1"])
def test_timeouts_refused(capsys, text):
    assert "--timeout" in refused(capsys, "run", f"--timeout={text}")


def test_timeout_up_to_a_year():
    assert parse("run", "--timeout", "31536000").timeout == TIMEOUT_MAX == 365 * 24 * 3600
    assert parse("run", "--timeout", "0.5").timeout == 0.5


@pytest.mark.parametrize("text, message", [(os.fsdecode(b"a\xff"), "not valid UTF-8"), ("x" * 2048, "2048 bytes")])
def test_cmdlines_refused(capsys, text, message):
    assert message in refused(capsys, "run", "--cmdline", text)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(timeout=float("inf")), "too long"), (dict(timeout=1e10), "too long"), (dict(timeout="soon"), "number of seconds"),
        (dict(cmdline="\udcff"), "UTF-8"), (dict(cmdline="a\0b"), "NUL"), (dict(cmdline="x" * 2048), "2048 bytes"),
        (dict(mem_mib=1), "too small"), (dict(mem_mib="64"), "whole number"), (dict(kernel=""), "kernel path"),
        (dict(initrd="a\0b"), "NUL"), (dict(devices=(DiskConfig(""),)), "disk path"),
    ],
)
def test_vmconfig_validate_for_the_python_api(bad, message):
    with pytest.raises(ConfigError, match=message):
        VmConfig(**bad).validate()


def test_valid_vmconfig_passes():
    config = VmConfig(timeout=TIMEOUT_MAX, mem_mib=64, cmdline="x" * 2047, devices=(DiskConfig("a,b.img"),))
    assert config.validate() is config


# --- fuzz: any argv gives status 0 or 2 and a one-line error, never a traceback -------

class _Built(Exception):
    """The arguments got as far as building a VM: the stub stops here."""


class _StubMachine:
    def __init__(self, config, **kwargs):
        assert isinstance(config, VmConfig)
        raise _Built


def _tokens(tmp):
    fifo = os.path.join(tmp, "fifo")
    sparse = os.path.join(tmp, "sparse")
    return [
        "run", "mkdisk", "bench", "launch", "--help", "-h",
        "--kernel", "--initrd", "--mem", "--timeout", "--cmdline", "--disk", "--serial-log",
        "--stats", "--no-ioeventfd", "-o", "--output", "--size", "--rounds", "--quick", "--json",
        "/dev/zero", "/dev/null", fifo, tmp, sparse, "/nonexistent", str(GUEST_ELF), os.path.join(tmp, "text"),
        os.path.join(tmp, "src"), os.path.join(tmp, "out.img"), "src", "",
        "0", "-1", "1", "2", "010", "0x40", "2G", "64", "64M", "1e300", "inf", "nan", "99999999999", "1_000", "\u0661",
        "a,,b", ",ro", "x,ro", "x,bad", "boot", "exits",
        "x" * 3000, os.fsdecode(b"\xff\xfe"), "--mem=64", "--timeout=-inf", "--",
    ]


def _confined_build(fuzz_dir):
    """mkdisk for the fuzzer: the real one, but only ever writing inside the
    fuzz directory (random argv once had `mkdisk DIR -o /etc/passwd` overwrite
    the host's file when the suite ran as root)."""
    import vmm.disk_image

    real = vmm.disk_image.build_disk_image
    root = os.path.realpath(fuzz_dir)

    def build(source, output, size_mib=None):
        target = os.path.realpath(os.path.join(os.getcwd(), os.fspath(output))) if os.fspath(output) else root
        if os.path.commonpath([root, target]) != root:
            raise ConfigError(f"fuzz: mkdisk output {output!r} is outside the fuzz directory")
        return real(source, output, size_mib)

    return build


@pytest.fixture
def fuzz_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    os.mkfifo(tmp / "fifo")
    with open(tmp / "sparse", "wb") as f:
        f.truncate(4 << 30)
    (tmp / "src").mkdir()
    (tmp / "src" / "file").write_text("x")
    (tmp / "text").write_text("not a kernel\n")
    return str(tmp)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_argv_gets_status_0_or_2_and_one_line(fuzz_dir, monkeypatch, capfd, data):
    import vmm.bench.compare
    import vmm.disk_image
    import vmm.machine

    tokens = _tokens(fuzz_dir)
    free_text = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), max_size=12)
    token = st.one_of(st.sampled_from(tokens), free_text, st.binary(max_size=6).map(os.fsdecode).filter(lambda t: "/" not in t and "\0" not in t))
    argv = data.draw(st.tuples(st.sampled_from(["run", "mkdisk", "bench", "launch"]), st.lists(token, max_size=8)).map(lambda t: [t[0], *t[1]]))
    # Never archive or overwrite anything outside the fuzz directory.
    assume(not any(t in (".", "..") for t in argv))
    monkeypatch.chdir(fuzz_dir)
    monkeypatch.setattr(vmm.machine, "MicroVM", _StubMachine)
    monkeypatch.setattr(vmm.bench.compare, "run_compare", lambda *a: 0)
    monkeypatch.setattr(vmm.disk_image, "build_disk_image", _confined_build(fuzz_dir))
    try:
        status = cli.main(argv)
    except SystemExit as exit:
        status = exit.code
    except _Built:
        status = 0
    out, err = capfd.readouterr()
    assert status in (0, 2), (argv, status, err)
    if status == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("vmm: "), (argv, err)
