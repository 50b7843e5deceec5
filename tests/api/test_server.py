"""The socket server: hostile and clumsy clients get an answer or a closed
connection, never a stopped server (a fake VM stands behind it)."""

import json
import os
import socket
import time

import pytest

from vmm.api import server as server_module
from vmm.api.instance import ApiInstance
from vmm.api.server import ApiServer
from vmm.errors import ConfigError

from .fakes import FakeVm


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setattr(server_module, "REQUEST_TIMEOUT_S", 0.5)
    monkeypatch.setattr(server_module, "SWEEP_INTERVAL_S", 0.1)
    path = str(tmp_path / "api.sock")
    instance = ApiInstance("t", microvm_factory=FakeVm)
    errors = []
    srv = ApiServer(path, instance, on_error=errors.append)
    srv.start()
    yield path, srv
    srv.close()
    assert not errors
    assert not os.path.exists(path)


def connect(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    return sock


_pending: dict = {}  # bytes received past the last response, per socket


def read_response(sock):
    """One response: (status, headers dict, parsed JSON body or None)."""
    data = _pending.pop(sock, b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", 0))
    while len(rest) < length:
        rest += sock.recv(4096)
    _pending[sock] = rest[length:]
    return status, headers, (json.loads(rest[:length]) if length else None)


def request(method, path, body=None):
    raw = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
    return head.encode() + b"\r\n" + raw


def closed(sock) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_keep_alive_and_pipelining(served):
    path, _ = served
    sock = connect(path)
    sock.sendall(request("GET", "/") + request("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64}) + request("GET", "/machine-config"))
    assert read_response(sock)[2]["state"] == "Not started"
    assert read_response(sock)[0] == 204
    assert read_response(sock)[2]["mem_size_mib"] == 64


def test_garbage_gets_an_error_and_the_server_goes_on(served):
    path, _ = served
    bad = connect(path)
    bad.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
    status, headers, body = read_response(bad)
    assert status == 400 and "Malformed HTTP request" in body["fault_message"]
    assert headers["connection"] == "close" and closed(bad)
    good = connect(path)
    good.sendall(request("GET", "/"))
    assert read_response(good)[0] == 200


def test_huge_body_refused_without_reading_it(served):
    path, _ = served
    sock = connect(path)
    sock.sendall(b"PUT /drives/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n" + b"x" * 65536)
    status, _, body = read_response(sock)
    assert status == 413 and "larger than the limit" in body["fault_message"]


def test_slow_client_is_answered_408_and_dropped(served):
    path, _ = served
    slow = connect(path)
    slow.sendall(b"PUT /actions HTTP/1.1\r\nHost: x\r\n")
    begin = time.monotonic()
    # trickling bytes does not keep the request alive past its deadline
    for _ in range(3):
        time.sleep(0.2)
        try:
            slow.sendall(b"X-A: b\r\n")
        except OSError:
            break
    status, headers, body = read_response(slow)
    assert status == 408 and headers["connection"] == "close"
    assert time.monotonic() - begin < 3
    other = connect(path)
    other.sendall(request("GET", "/"))
    assert read_response(other)[0] == 200


def test_too_many_connections_are_closed_not_queued(served):
    path, _ = served
    socks = [connect(path) for _ in range(server_module.MAX_CONNECTIONS)]
    for s in socks:
        s.sendall(request("GET", "/"))
        assert read_response(s)[0] == 200
    extra = connect(path)
    extra.sendall(request("GET", "/"))
    assert closed(extra)
    socks[0].close()
    deadline = time.monotonic() + 5  # the slot is free once the server has seen the close
    while True:
        again = connect(path)
        try:
            again.sendall(request("GET", "/"))
            assert read_response(again)[0] == 200
            break
        except OSError:  # ConnectionError, or refused by a full backlog
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_client_that_never_reads_is_dropped_with_bounded_memory(served):
    path, srv = served
    sock = connect(path)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    many = request("GET", "/machine-config") * 2000  # about 100 KiB of requests, 200 KiB of answers
    sock.settimeout(10)
    try:
        for _ in range(20):
            sock.sendall(many)
    except OSError:
        pass  # dropped while sending: that is the point
    time.sleep(0.3)
    assert all(len(c.out) <= server_module.MAX_PENDING_OUTPUT for c in srv._clients.values())
    other = connect(path)
    other.sendall(request("GET", "/"))
    assert read_response(other)[0] == 200


def test_half_closed_client_still_gets_its_answer(served):
    path, _ = served
    sock = connect(path)
    sock.sendall(request("GET", "/"))
    sock.shutdown(socket.SHUT_WR)
    assert read_response(sock)[0] == 200
    assert closed(sock)


def test_refuses_to_replace_a_live_socket_or_a_file(served, tmp_path):
    path, _ = served
    with pytest.raises(ConfigError, match="another process is serving it"):
        ApiServer(path, ApiInstance())
    regular = tmp_path / "file"
    regular.write_text("x")
    with pytest.raises(ConfigError, match="not a socket"):
        ApiServer(str(regular), ApiInstance())


def test_stale_socket_file_is_replaced(tmp_path):
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()
    srv = ApiServer(path, ApiInstance())
    srv.start()
    try:
        sock = connect(path)
        sock.sendall(request("GET", "/"))
        assert read_response(sock)[0] == 200
    finally:
        srv.close()


def test_socket_path_too_long(tmp_path):
    with pytest.raises(ConfigError, match="API socket"):
        ApiServer(str(tmp_path / ("x" * 200)), ApiInstance())
