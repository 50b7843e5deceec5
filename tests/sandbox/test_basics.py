"""Static programs run under the guest's Linux personality: argv, auxv, exit codes."""

import os

import pytest

from tests.sandbox.conftest import native

pytestmark = pytest.mark.kvm

COMPILERS = ["gcc", "musl"]


@pytest.mark.parametrize("compiler", [*COMPILERS, "gcc-pie"])
def test_argv_envp_auxv_as_on_linux(compile_prog, run_prog, compiler):
    exe = compile_prog("showargs", compiler)
    argv = ["showargs", "one", "two words", ""]
    env = {"HOME": "/", "LANG": "C", "EMPTY": ""}
    run = run_prog(exe, argv, env=env, exec_path="/bin/" + os.path.basename(exe))
    assert run.outcome == "status 0", run.serial
    host = native(exe, argv, env=env)
    assert host.returncode == 0
    # Native Linux may add auxv entries we do not (AT_SYSINFO_EHDR, AT_MINSIGSTKSZ...);
    # every line the program prints must match.
    assert run.text == host.stdout.decode()
    assert "AT_PLATFORM x86_64" in run.text and "AT_RANDOM 16 bytes" in run.text
    assert "AT_ENTRY _start" in run.text and "AT_PHDR at headers" in run.text


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("code", [0, 1, 42, 127, 200])
def test_exit_status(compile_prog, run_prog, compiler, code):
    run = run_prog(compile_prog("exitcode", compiler), ["exitcode", str(code)])
    assert run.outcome == f"status {code}"
    assert run.status == min(code, 127)


def test_exit_via_underscore_exit(compile_prog, run_prog):
    run = run_prog(compile_prog("exitcode"), ["exitcode", "9", "now"])
    assert (run.outcome, run.status) == ("status 9", 9)


def test_hello_output_is_exact(compile_prog, run_prog):
    run = run_prog(compile_prog("exitcode"), ["exitcode", "0"])
    assert run.output == b""


def test_not_elf_cannot_execute(run_prog):
    run = run_prog(b"#!/bin/sh\necho hi\n\0", ["script"])
    assert run.outcome == "cannot execute: not ELF"
    assert run.status == 126


def test_dynamic_program_cannot_execute(run_prog, tmp_path):
    import shutil
    import subprocess

    src = tmp_path / "dyn.c"
    src.write_text("int main(void){return 0;}\n")
    exe = tmp_path / "dyn"
    subprocess.run([shutil.which("gcc") or "gcc", "-o", str(exe), str(src)], check=True)
    run = run_prog(str(exe), ["dyn"])
    assert run.outcome == "cannot execute: dynamic"
    assert run.status == 126


def test_wrong_architecture_cannot_execute(compile_prog, run_prog):
    data = bytearray(open(compile_prog("exitcode"), "rb").read())
    data[18:20] = (183).to_bytes(2, "little")  # EM_AARCH64
    run = run_prog(bytes(data), ["exitcode"])
    assert run.outcome == "cannot execute: not x86-64"


def test_missing_program_in_bundle(run_prog, compile_prog):
    run = run_prog(compile_prog("exitcode"), ["x"], exec_path="/prog", files={})
    assert run.outcome == "status 0"


def test_trace_lines_strace_style(compile_prog, run_prog):
    run = run_prog(compile_prog("files"), ["files", "/nope"], options={"trace": 1})
    assert 'openat(AT_FDCWD, "/nope", O_RDONLY) = -2 ENOENT' in run.text
    assert "exit_group(1) = ?" in run.text
    assert run.outcome == "status 1"


def test_cxx_exceptions_and_iostreams(compile_prog, run_prog):
    exe = compile_prog("cxx", "g++")
    run = run_prog(exe, ["cxx", "b", "a", "b"])
    assert run.outcome == "status 0", run.serial
    assert run.text == native(exe, ["cxx", "b", "a", "b"]).stdout.decode()
    assert "thrown and caught\n" in run.text
