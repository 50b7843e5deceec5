"""The sans-IO HTTP layer: bytes in, requests or failures out, answers as bytes."""

import json

import pytest

from vmm.api.http import MAX_BODY, ApiRequest, HttpConnection, ProtocolFailure


def feed(data: bytes, conn=None):
    conn = conn or HttpConnection()
    conn.receive(data)
    return conn, conn.next_request()


def test_put_with_body():
    body = b'{"vcpu_count": 2, "mem_size_mib": 256}'
    conn, req = feed(b"PUT /machine-config HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert req == ApiRequest("PUT", "/machine-config", body)
    out = conn.respond(204)
    assert out.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert b"content-length" not in out.lower()
    assert not conn.must_close


def test_get_without_body_and_json_answer():
    conn, req = feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert req == ApiRequest("GET", "/", None)
    out = conn.respond(200, b'{"a": 1}')
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-type: application/json" in head.lower()
    assert json.loads(body) == {"a": 1}


def test_request_split_byte_by_byte():
    raw = b"PATCH /vm HTTP/1.1\r\nHost: x\r\nContent-Length: 18\r\n\r\n{\"state\":\"Paused\"}"
    conn = HttpConnection()
    for i in range(len(raw) - 1):
        conn.receive(raw[i : i + 1])
        assert conn.next_request() is None
        assert conn.mid_request
    conn.receive(raw[-1:])
    assert conn.next_request() == ApiRequest("PATCH", "/vm", b'{"state":"Paused"}')


def test_pipelined_requests_answered_in_order():
    conn, first = feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /machine-config HTTP/1.1\r\nHost: x\r\n\r\n")
    assert first.target == "/"
    assert conn.next_request() is None  # the first must be answered before the second is given
    conn.respond(200, b"{}")
    assert conn.next_request().target == "/machine-config"


def test_chunked_body():
    conn, req = feed(b"PUT /actions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n")
    assert req.body == b'{"a": 1}'


def test_connection_close_honoured():
    conn, req = feed(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    conn.respond(200, b"{}")
    assert conn.must_close


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"garbage\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: -3\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET / HTTP/1.0\r\n\r\n", 505),
        (b"\x00\xff\x10 / HTTP/1.1\r\n\r\n", 400),
    ],
)
def test_malformed_requests_get_an_error_then_close(raw, status):
    conn, failure = feed(raw)
    assert isinstance(failure, ProtocolFailure) and failure.status == status, failure
    out = conn.respond(failure.status, json.dumps({"fault_message": failure.message}).encode())
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert b"Connection: close" in head
    assert json.loads(body)["fault_message"]
    assert conn.must_close
    conn.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.next_request() is None  # nothing more is read from a broken connection


def test_body_over_the_limit_refused_before_it_is_read():
    conn, failure = feed(b"PUT /drives/a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
    assert failure.status == 413
    assert "larger than the limit of 51200" in failure.message


def test_chunked_body_over_the_limit():
    conn = HttpConnection()
    conn.receive(b"PUT /drives/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (4096, b"a" * 4096)
    result = None
    for _ in range(20):
        conn.receive(chunk)
        result = conn.next_request()
        if result is not None:
            break
    assert isinstance(result, ProtocolFailure) and result.status == 413


def test_headers_over_the_limit():
    conn, failure = feed(b"GET / HTTP/1.1\r\n" + b"X-Filler: " + b"a" * 20000)
    assert isinstance(failure, ProtocolFailure) and failure.status == 431


def test_expect_100_continue():
    conn = HttpConnection()
    conn.receive(b"PUT /actions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert conn.next_request() is None
    assert conn.take_interim().startswith(b"HTTP/1.1 100 ")
    conn.receive(b"{}")
    assert conn.next_request().body == b"{}"
