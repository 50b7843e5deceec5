"""build_bundle: the archive the guest reads (no VM needed)."""

import io
import tarfile

import pytest

from vmm.errors import ConfigError
from vmm.sandbox import BundleError, build_bundle


def members(bundle: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        assert tar.getmembers()[0].name == ".vmm/argv"  # the guest recognises bundles by it
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}


def test_control_members_and_files(tmp_path):
    host_file = tmp_path / "in.txt"
    host_file.write_bytes(b"from the host\n")
    bundle = build_bundle(
        b"\x7fELF\0..", ["prog", "a b", ""], {"A": "1", "B": ""},
        {"/data/in.txt": str(host_file), "/etc/motd": b"hi\n"}, {"seed": 5, "trace": True, "cwd": "/data"},
    )
    m = members(bundle)
    assert m[".vmm/argv"] == b"prog\0a b\0\0"
    assert m[".vmm/envp"] == b"A=1\0B=\0"
    assert m[".vmm/exec"] == b"/prog"
    opts = m[".vmm/opts"].decode().splitlines()
    assert "seed=5" in opts and "trace=1" in opts and "cwd=/data" in opts
    assert any(line.startswith("now=") for line in opts)
    assert m["prog"] == b"\x7fELF\0.."
    assert m["data/in.txt"] == b"from the host\n" and m["etc/motd"] == b"hi\n"
    assert "data" in m and "etc" in m  # directories as members
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        assert tar.getmember("prog").mode == 0o755
        assert tar.getmember("data/in.txt").mtime == int(host_file.stat().st_mtime)


def test_clock_option_replaces_now():
    opts = members(build_bundle(b"x\0", ["p"], options={"clock": 10**18}))[".vmm/opts"].decode()
    assert "clock=1000000000000000000" in opts and "now=" not in opts


def test_options_as_strings_as_vmm_sandbox_run_passes_them():
    opts = members(build_bundle(b"x\0", ["p"], options={"seed": "42", "clock": "1700000000000000000", "trace": "1"}))
    lines = opts[".vmm/opts"].decode().splitlines()
    assert lines == ["seed=42", "clock=1700000000000000000", "trace=1"]
    off = members(build_bundle(b"x\0", ["p"], options={"trace": "0", "dumpout": False}))[".vmm/opts"].decode()
    assert "trace=0" in off and "dumpout=0" in off


def test_busybox_goes_to_bin(tmp_path):
    exe = tmp_path / "busybox"
    exe.write_bytes(b"\x7fELF")
    assert members(build_bundle(str(exe), ["sh"]))[".vmm/exec"] == b"/bin/busybox"
    assert members(build_bundle(bytes(exe), ["sh"]))["bin/busybox"] == b"\x7fELF"  # a bytes path


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"argv": []}, "argv"),
        ({"argv": ["a\0b"]}, "NUL"),
        ({"env": {"A=B": "1"}}, "environment variable"),
        ({"files": {"relative/path": b""}}, "absolute"),
        ({"files": {"/a/../etc": b""}}, "below /"),
        ({"files": {"/.vmm/opts": b""}}, "reserved"),
        ({"files": {"/" + "x" * 300: b""}}, "too long"),
        ({"files": {"/f": "/no/such/host/file"}}, "cannot read"),
        ({"options": {"seed": -1}}, "seed"),
        ({"options": {"clock": "soon"}}, "clock"),
        ({"options": {"seed": "-5"}}, "seed"),
        ({"options": {"trace": "maybe"}}, "trace"),
        ({"options": {"bogus": 1}}, "unknown"),
        ({"options": {"cwd": "relative"}}, "cwd"),
    ],
)
def test_bad_input_is_one_line_config_error(kwargs, fragment):
    args = {"program": b"x\0", "argv": ["p"], **kwargs}
    with pytest.raises(BundleError) as info:
        build_bundle(**args)
    assert isinstance(info.value, ConfigError)
    message = str(info.value)
    assert fragment in message and "\n" not in message
