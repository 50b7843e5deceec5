"""The program's file system: bundled files, /tmp, /out, descriptors."""

import base64
import io
import re
import tarfile

import pytest

from tests.sandbox.conftest import native

pytestmark = pytest.mark.kvm

INPUT = b"alpha\nbeta\ngamma\n"


@pytest.mark.parametrize("compiler", ["gcc", "musl"])
def test_files_like_native(compile_prog, run_prog, tmp_path, compiler):
    exe = compile_prog("files", compiler)
    run = run_prog(exe, ["files", "/data/in.txt", "/tmp"], files={"/data/in.txt": INPUT})
    assert run.outcome == "status 0", run.serial
    (tmp_path / "in.txt").write_bytes(INPUT)
    work = tmp_path / "work"
    work.mkdir()
    host = native(exe, ["files", str(tmp_path / "in.txt"), str(work)], cwd="/")
    assert host.returncode == 0
    assert run.text == host.stdout.decode()
    assert "in: beta\n" in run.text and "readback: first line\nsecond line\n" in run.text
    assert "entry: renamed.txt\nentry: sub\n" in run.text


def test_root_file_system_is_read_only(compile_prog, run_prog):
    run = run_prog(compile_prog("files"), ["files", "/data/in.txt", "/data"], files={"/data/in.txt": INPUT})
    assert "create: -1 Read-only file system" in run.text


def test_out_serialised_as_ustar(compile_prog, run_prog):
    run = run_prog(compile_prog("outfiles"), ["outfiles"], options={"dumpout": 1})
    assert run.outcome == "status 0", run.serial
    match = re.search(rb"vmm-out: ([A-Za-z0-9+/=]+)\r\n", run.serial)
    assert match, run.serial
    archive = tarfile.open(fileobj=io.BytesIO(base64.b64decode(match.group(1))))
    names = sorted(archive.getnames())
    assert names == ["logs", "logs/run.log", "result.txt"]
    assert archive.extractfile("result.txt").read() == b"answer 42\n"
    log = archive.extractfile("logs/run.log").read().decode()
    assert log.splitlines()[99] == "line 99"


def test_stdin_to_stdout(compile_prog, run_prog):
    text = b"hello sandbox\nsecond line\n"
    run = run_prog(compile_prog("catstdin"), ["catstdin"], stdin=text + b"\x04")
    assert run.outcome == "status 0", run.serial
    assert run.output == b"HELLO SANDBOX\nSECOND LINE\ntotal 26\n"


@pytest.mark.parametrize("compiler", ["gcc", "musl"])
def test_memory_calls_like_native(compile_prog, run_prog, tmp_path, compiler):
    exe = compile_prog("memory", compiler)
    run = run_prog(exe, ["memory", "/data/in.txt"], files={"/data/in.txt": INPUT})
    assert run.outcome == "status 0", run.serial
    (tmp_path / "in.txt").write_bytes(INPUT)
    host = native(exe, ["memory", str(tmp_path / "in.txt")])
    assert run.text == host.stdout.decode()
    assert "file map: alpha" in run.text


@pytest.mark.kvm
def test_out_is_packed_only_when_the_host_keeps_it(compile_prog, sandbox, tmp_path):
    """/out over the guest's 8 MiB archive: with an out_dir the host hears it was too
    large; without one (noout=1) the guest packs and sends nothing, so no note."""
    program = compile_prog("bigout")
    kept = sandbox.run([program, "9"], out_dir=str(tmp_path / "out"))
    assert kept.returncode == 0 and any("too large to collect" in note for note in kept.notes), kept.notes
    dropped = sandbox.run([program, "9"])
    assert dropped.returncode == 0 and not dropped.notes, dropped.notes
