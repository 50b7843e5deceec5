"""Hostile clients on the socket of a running VM: each gets an error answer or
a closed connection, and the guest runs on (it answers on its console after)."""

import select
import socket
import time

import pytest

from .test_curl_recipe import finish, serve
from .test_server import closed, read_response, request

pytestmark = pytest.mark.vm


def connect(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(path))
    return sock


def _closed_within(socks, seconds, want):
    """The sockets the server closes within ``seconds`` (stops looking once ``want`` are)."""
    deadline, done = time.monotonic() + seconds, set()
    while time.monotonic() < deadline and len(done) < want:
        ready, _, _ = select.select([s for s in socks if s not in done], [], [], 0.1)
        for s in ready:
            if closed(s):
                done.add(s)
    return done


def call(path, method, target, body=None):
    sock = connect(path)
    try:
        sock.sendall(request(method, target, body))
        return read_response(sock)
    finally:
        sock.close()


def test_bad_clients_never_stop_the_vm(tmp_path, guest_elf):
    sock = tmp_path / "api.sock"
    proc = serve(sock)
    try:
        assert call(sock, "PUT", "/boot-source", {"kernel_image_path": str(guest_elf)})[0] == 204
        assert call(sock, "PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64})[0] == 204
        assert call(sock, "PUT", "/actions", {"action_type": "InstanceStart"})[0] == 204

        slow = connect(sock)
        slow.sendall(b"PATCH /vm HTTP/1.1\r\nHost: x\r\nContent-Le")  # and nothing more, for now

        garbage = connect(sock)
        garbage.sendall(bytes(range(256)) * 4 + b"\r\n\r\n")
        status, _, body = read_response(garbage)
        assert status == 400 and body["fault_message"].startswith("Malformed HTTP request")
        assert closed(garbage)

        huge = connect(sock)
        huge.sendall(b"PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
        assert read_response(huge)[0] == 413

        bad_json = connect(sock)
        bad_json.sendall(b"PATCH /vm HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{\"st\x00")
        assert "deserializing" in read_response(bad_json)[2]["fault_message"]

        crowd = []  # more connections than the server keeps: the rest are closed (or refused by the backlog)
        for _ in range(80):
            try:
                crowd.append(connect(sock))
            except BlockingIOError:
                pass
        assert len(crowd) > 32
        # at most 32 are kept (two slots are held by `slow` and `bad_json`): the others see end of file
        assert len(_closed_within(crowd, 5.0, len(crowd) - 30)) >= len(crowd) - 30
        for c in crowd:
            c.close()
        # the server frees the crowd's slots as it sees them close; then it answers again
        deadline = time.monotonic() + 5
        while True:
            try:
                assert call(sock, "GET", "/")[0] == 200
                break
            except (ConnectionError, OSError):
                assert time.monotonic() < deadline, "the server did not free the crowd's connections"
                time.sleep(0.05)

        # The one slow client holds nobody up: pause and resume go through meanwhile.
        assert call(sock, "PATCH", "/vm", {"state": "Paused"})[0] == 204
        assert call(sock, "GET", "/")[2]["state"] == "Paused"
        assert call(sock, "PATCH", "/vm", {"state": "Resumed"})[0] == 204
        slow.sendall(b"ngth: 19\r\n\r\n{\"state\": \"Paused\"}")
        assert read_response(slow)[0] == 204  # a late request, complete in time, is served
        assert call(sock, "PATCH", "/vm", {"state": "Resumed"})[0] == 204
    except BaseException:
        proc.kill()
        print(finish(proc, b""))
        raise
    status, out, err = finish(proc, b"echo still-alive\nexit 3\n")
    assert "still-alive" in out, (out[-2000:], err)
    assert status == 3


def test_full_then_diff_snapshot_then_load(tmp_path, guest_elf):
    """Firecracker's incremental flow: a Full snapshot, the guest runs on, a Diff
    snapshot; the diff laid onto the full memory file (vmm.persist.merge_diff,
    as Firecracker's snapshot-editor does) loads and carries on."""
    try:
        from vmm.persist import merge_diff
    except ImportError:
        pytest.skip("snapshots are not available in this build (vmm.persist is missing)")
    sock = tmp_path / "api.sock"
    proc = serve(sock)
    try:
        assert call(sock, "PUT", "/boot-source", {"kernel_image_path": str(guest_elf)})[0] == 204
        assert call(sock, "PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64, "track_dirty_pages": True})[0] == 204
        assert call(sock, "PUT", "/actions", {"action_type": "InstanceStart"})[0] == 204
        assert call(sock, "PATCH", "/vm", {"state": "Paused"})[0] == 204
        full = {"snapshot_type": "Full", "snapshot_path": str(tmp_path / "full.state"), "mem_file_path": str(tmp_path / "full.mem")}
        assert call(sock, "PUT", "/snapshot/create", full)[0] == 204
        assert call(sock, "PATCH", "/vm", {"state": "Resumed"})[0] == 204
        proc.stdin.write(b"echo between-snapshots\n")
        proc.stdin.flush()
        time.sleep(0.5)  # let the guest run (and dirty pages) before the diff; nothing is asserted on time
        assert call(sock, "PATCH", "/vm", {"state": "Paused"})[0] == 204
        diff = {"snapshot_type": "Diff", "snapshot_path": str(tmp_path / "diff.state"), "mem_file_path": str(tmp_path / "diff.mem")}
        assert call(sock, "PUT", "/snapshot/create", diff)[0] == 204
    finally:
        proc.kill()
        finish(proc, b"")
    merge_diff(str(tmp_path / "diff.mem"), str(tmp_path / "full.mem"))
    sock2 = tmp_path / "api2.sock"
    second = serve(sock2)
    load = {"snapshot_path": str(tmp_path / "diff.state"), "mem_backend": {"backend_type": "File", "backend_path": str(tmp_path / "full.mem")}, "resume_vm": False}
    try:
        assert call(sock2, "PUT", "/snapshot/load", load)[0] == 204
        assert call(sock2, "GET", "/")[2]["state"] == "Paused"
        assert call(sock2, "GET", "/machine-config")[2]["mem_size_mib"] == 64  # the snapshot's machine
        assert call(sock2, "PATCH", "/vm", {"state": "Resumed"})[0] == 204
    except BaseException:
        second.kill()
        print(finish(second, b""))
        raise
    status, out, err = finish(second, b"echo after-diff-load\nexit 4\n")
    assert "after-diff-load" in out, (out[-2000:], err)
    assert "vmm guest ready" not in out
    assert status == 4
