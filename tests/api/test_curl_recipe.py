"""The proof: a shell script with `curl --unix-socket` configures, boots (the
bundled guest), pauses, snapshots, resumes and loads a VM through `vmm serve`,
checking every answer; bad requests get Firecracker's error shape."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = Path(__file__).with_name("curl_recipe.sh")

pytestmark = [pytest.mark.vm, pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (apt-get install curl)")]


def persist_available() -> bool:
    try:
        import vmm.persist  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def serve(sock: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmm", "serve", "--api-sock", str(sock)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )
    deadline = time.monotonic() + 20
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"vmm serve did not create its socket: {err.decode()}")
        time.sleep(0.02)
    return proc


def recipe(*args) -> str:
    done = subprocess.run(["sh", str(RECIPE), *map(str, args)], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert "RECIPE-OK" in done.stdout.decode()
    return done.stdout.decode()


def finish(proc: subprocess.Popen, stdin: bytes) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(stdin, timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"vmm serve did not end: {out[-500:]!r} {err.decode()}")
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def test_curl_configures_boots_pauses_resumes(tmp_path, guest_elf):
    sock, metrics, disk = tmp_path / "api.sock", tmp_path / "metrics.ndjson", tmp_path / "root.img"
    disk.write_bytes(b"\0" * (1 << 20))
    proc = serve(sock)
    try:
        said = recipe("boot", sock, guest_elf, disk, metrics, tmp_path)
    except BaseException:
        proc.kill()
        print(finish(proc, b""))
        raise
    # The guest ran on after pause and resume: it answers on its console and powers off.
    status, out, err = finish(proc, b"echo api-resumed-ok\nexit 7\n")
    assert "api-resumed-ok" in out, (out[-2000:], err)
    assert status == 7, err
    assert not sock.exists()  # removed when the VM stopped

    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    paused_a, paused_b, last = records[0], records[1], records[-1]
    assert paused_a["vmm"]["state"] == paused_b["vmm"]["state"] == "Paused"
    assert paused_a["vmm"]["exits"] == paused_b["vmm"]["exits"]  # paused means no exits at all
    assert sum(last["vmm"]["exits"].values()) > sum(paused_a["vmm"]["exits"].values())
    assert last["vmm"]["outcome"]["status"] == 7
    assert last["vmm"]["rss_bytes"] > 0 and last["vmm"]["instance_start_ms"] > 0
    assert last["api_server"]["failed_requests"] >= 9
    if persist_available():
        assert "SNAPSHOT-CREATED" in said
    else:
        assert "SNAPSHOTS-UNAVAILABLE" in said


def test_curl_snapshot_then_load_in_a_fresh_process(tmp_path, guest_elf):
    if not persist_available():
        pytest.skip("snapshots are not available in this build (vmm.persist is missing)")
    sock, disk = tmp_path / "api.sock", tmp_path / "root.img"
    disk.write_bytes(b"\0" * (1 << 20))
    first = serve(sock)
    recipe("boot", sock, guest_elf, disk, tmp_path / "m1", tmp_path)
    first.send_signal(15)
    finish(first, b"")
    sock2 = tmp_path / "api2.sock"
    second = serve(sock2)
    recipe("load", sock2, tmp_path)
    status, out, err = finish(second, b"echo restored-ok\nexit 5\n")
    assert "restored-ok" in out, (out[-2000:], err)
    assert "vmm guest ready" not in out  # carried on where it was: no second boot
    assert status == 5


def test_serve_refuses_a_socket_path_that_is_a_file(tmp_path, run_vmm):
    path = tmp_path / "not-a-socket"
    path.write_text("keep me")
    done = run_vmm("serve", "--api-sock", str(path))
    assert done.returncode == 2
    assert done.stderr.decode().startswith("vmm: API socket") and done.stderr.count(b"\n") == 1
    assert path.read_text() == "keep me"


def test_serve_ends_on_sigterm_before_boot(tmp_path):
    sock = tmp_path / "api.sock"
    proc = serve(sock)
    proc.send_signal(15)
    status, out, err = finish(proc, b"")
    assert status == 128 + 15
    assert "stopped by signal SIGTERM" in err
    assert not sock.exists()
