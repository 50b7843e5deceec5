"""Debian's busybox-static: applets on bundled files, output equal to native."""

import os
import subprocess

import pytest

pytestmark = pytest.mark.kvm

BUSYBOX = "/bin/busybox"
FRUIT = b"pear\napple\nfig\nbanana\napple\n"
WORDS = b"the quick brown fox\njumps over\nthe lazy dog\n"


@pytest.fixture(scope="module")
def busybox():
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static not installed (apt-get install busybox-static)")
    return BUSYBOX


@pytest.mark.parametrize(
    "applet",
    [
        ["echo", "hello", "from", "busybox"],
        ["cat", "data/fruit.txt", "data/words.txt"],
        ["wc", "data/words.txt"],
        ["sort", "data/fruit.txt"],
        ["sort", "-r", "-u", "data/fruit.txt"],
        ["sha256sum", "data/fruit.txt", "data/words.txt"],
        ["ls", "data"],
        ["head", "-n", "2", "data/words.txt"],
        ["uniq", "-c", "data/fruit.txt"],
        ["grep", "-n", "o", "data/words.txt"],
        ["sed", "s/o/0/g", "data/words.txt"],
        ["awk", "{print $2}", "data/words.txt"],
        ["md5sum", "data/fruit.txt"],
        ["base64", "data/fruit.txt"],
        ["find", "data"],
        ["du", "-a", "data"],
        ["od", "-c", "data/fruit.txt"],
        ["xxd", "data/fruit.txt"],
        ["date", "-u", "-d", "@0"],
        ["dd", "if=data/words.txt", "bs=4", "count=3"],
        ["seq", "1", "5"],
        ["diff", "data/fruit.txt", "data/words.txt"],
    ],
    ids=lambda a: " ".join(a),
)
def test_applet_matches_native(busybox, run_prog, tmp_path, applet):
    run = run_prog(
        busybox, applet, env={"PATH": "/bin"},
        files={"/data/fruit.txt": FRUIT, "/data/words.txt": WORDS}, options={"cwd": "/"},
    )
    data = tmp_path / "data"
    data.mkdir()
    (data / "fruit.txt").write_bytes(FRUIT)
    (data / "words.txt").write_bytes(WORDS)
    host = subprocess.run([busybox, *applet], capture_output=True, cwd=tmp_path, timeout=30)
    assert run.outcome == f"status {host.returncode}", run.serial
    # stdout and stderr share the serial console; these applets use one or the other
    assert run.output == host.stdout + host.stderr


def test_applet_reads_stdin(busybox, run_prog):
    run = run_prog(busybox, ["tr", "a-z", "A-Z"], stdin=b"shout this\nand this\n\x04")
    assert run.outcome == "status 0", run.serial
    assert run.output == b"SHOUT THIS\nAND THIS\n"


def test_busybox_shell_builtins_use_tmp(busybox, run_prog):
    script = "echo saved > /tmp/x; read v < /tmp/x; echo got $v; cd /tmp; pwd"
    run = run_prog(busybox, ["sh", "-c", script], env={"PATH": "/bin"})
    assert run.outcome == "status 0", run.serial
    assert run.output == b"got saved\n/tmp\n"


def test_fork_is_refused_clearly(busybox, run_prog):
    run = run_prog(busybox, ["sh", "-c", "cat /nothing | wc"], env={"PATH": "/bin"}, options={"trace": 1})
    assert "(no processes in the sandbox)" in run.text
    assert b"can't fork" in run.output
