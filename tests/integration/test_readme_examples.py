"""The examples proposed for README.md run as written (issue 8, item 11)."""

import subprocess
import sys
import tarfile

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.kvm


def test_api_example_matches_the_output_not_the_echo(guest_elf):
    from vmm import MicroVM, VmConfig

    with MicroVM(VmConfig(mem_mib=64, timeout=30)) as vm:
        vm.expect("$ ")
        vm.send("echo hi\r")
        echo = vm.expect("echo hi\r\n")  # the shell echoes what it is sent...
        output = vm.expect("hi\r\n")  # ...then the command's output follows
        vm.send("exit 5\r")
        outcome = vm.wait(10)
    assert output.group() == b"hi\r\n"
    assert output.start() == echo.end()  # the line after the echoed command
    assert outcome.status == 5


def test_api_example_pitfall_a_bare_expect_matches_the_echo(guest_elf):
    # What the old README did: "hi\r\n" is found at the end of the echoed "echo hi\r\n".
    from vmm import MicroVM, VmConfig

    with MicroVM(VmConfig(mem_mib=64, timeout=30)) as vm:
        vm.expect("$ ")
        vm.send("echo hi\r")
        match = vm.expect("hi\r\n")
        assert match.string[match.start() - 5 : match.start()] == b"echo "
        vm.send("exit 0\r")
        vm.wait(10)


def test_mkdisk_example_from_a_fresh_directory(guest_elf, tmp_path):
    vmm = [sys.executable, "-m", "vmm"]
    env_cwd = dict(cwd=tmp_path, capture_output=True, timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "README").write_text("hello from the host\n")
    made = subprocess.run([*vmm, "mkdisk", "demo", "-o", "disk.img", "--size", "16"], **env_cwd)
    assert made.returncode == 0, made.stderr
    assert made.stdout == b"disk.img: 16 MiB ustar disk image of demo\n"
    ran = subprocess.run([*vmm, "run", "--disk", "disk.img"], input=b"ls\ncat README\nwrite note.txt hi\nsync\nexit 0\n", **env_cwd)
    assert ran.returncode == 0, ran.stderr
    assert b"hello from the host\r\n" in ran.stdout
    with tarfile.open(tmp_path / "disk.img") as tar:
        assert tar.getnames() == ["README", "note.txt"]
        assert tar.extractfile("note.txt").read() == b"hi\n"


def test_the_readme_api_example_runs_as_written(guest_elf, capsys):
    text = (ROOT / "README.md").read_text()
    section = text.split("## The Python API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "b'hi\\r\\n'"
    assert printed[1] == "VmOutcome(status=5, reason='poweroff', message='')"
    assert "io" in printed[2]
