"""The API socket's request path (api/http.py, routes.py, instance.py) on hostile bytes.

Input: where the bytes are cut into reads (two u16s), then what a client
sends on one connection. A fake VM stands behind the instance (as in
tests/api) and a fake vmm.persist; files the requests name may be opened
only in a scratch directory, and written only as serial.out / metrics.json
there. Contract: every request gets a well-formed HTTP/1.1 answer, never a
500 (a VMM bug); an error answer's body is {"fault_message": one line};
nothing raises; a connection that failed stays closed.
"""

from __future__ import annotations

import json
import os
import sys

from tests.api.fakes import FakePersist, FakeVm

from vmm.api.http import ApiRequest, HttpConnection, ProtocolFailure, fault_body
from vmm.api.instance import ApiInstance
from vmm.api.routes import handle

from .guard import confined, quiet_logs, scratch_dir
from .provider import Provider

quiet_logs()
MAX_REQUESTS = 64  # a pipelined flood is answered request by request; this bounds a case's work
_dir: str | None = None


def _scratch() -> tuple[str, list[str]]:
    global _dir
    if _dir is None:
        _dir = scratch_dir("api")
        for name in ("vmlinux", "rootfs.ext4"):
            with open(os.path.join(_dir, name), "wb") as f:
                f.write(b"\0" * 512)
    writable = [os.path.join(_dir, name) for name in ("serial.out", "metrics.json")]
    for path in writable:  # a case starts with them empty: flushes cannot grow them without bound
        if os.path.exists(path):
            os.truncate(path, 0)
    return _dir, writable


def _check_answer(out: bytes, status: int, body: bytes | None) -> None:
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:40]
    assert b"\r\n\r\n" in out
    if status >= 400:
        fault = json.loads(body)
        assert list(fault) == ["fault_message"] and "\n" not in fault["fault_message"], body


def _answer_all(conn: HttpConnection, instance, answered: list[int]) -> None:
    while answered[0] < MAX_REQUESTS:
        request = conn.next_request()
        if request is None:
            return
        answered[0] += 1
        if isinstance(request, ProtocolFailure):
            assert 400 <= request.status < 600 and "\n" not in request.message, request
            body = fault_body(request.message)
            _check_answer(conn.respond(request.status, body), request.status, body)
            assert conn.must_close and conn.next_request() is None
            return
        assert isinstance(request, ApiRequest)
        conn.take_interim()
        status, body = handle(instance, request)
        assert status != 500, (request.method, request.target[:80], body[:300])
        _check_answer(conn.respond(status, body), status, body)


def test_one_input(data: bytes) -> None:
    directory, writable = _scratch()
    p = Provider(data)
    cuts = sorted({p.u16(), p.u16()})
    raw = p.rest()
    saved_persist = sys.modules.get("vmm.persist")
    sys.modules["vmm.persist"] = FakePersist()
    old_cwd = os.getcwd()
    os.chdir(directory)  # relative paths in requests land in the scratch directory
    try:
        with confined(directory, writable):
            instance = ApiInstance("fuzz", microvm_factory=FakeVm, output_fd=-1)
            try:
                conn, answered = HttpConnection(), [0]
                last = 0
                for cut in [*cuts, len(raw)]:
                    cut = min(max(cut, last), len(raw))
                    if cut > last:  # (b"" would be the end of the stream)
                        conn.receive(raw[last:cut])
                    last = cut
                    _answer_all(conn, instance, answered)
                conn.receive(b"")
                _answer_all(conn, instance, answered)
            finally:
                instance.close()
    finally:
        os.chdir(old_cwd)
        if saved_persist is None:
            sys.modules.pop("vmm.persist", None)
        else:
            sys.modules["vmm.persist"] = saved_persist
