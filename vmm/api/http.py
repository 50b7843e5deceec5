"""HTTP/1.1 for the API socket, sans-IO: bytes in, requests out, bytes back.

h11 does the parsing (request line, headers, Content-Length and chunked
bodies, keep-alive, pipelining) and turns every protocol violation into a
typed error; this module adds the limits an API socket needs (Firecracker's
51200-byte payload cap, a header size cap) and the answers: a request that
cannot be parsed gets a JSON error body and the connection is closed, as
Firecracker's micro_http does. Nothing here touches a socket or a clock.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import h11

MAX_BODY = 51200  # bytes; Firecracker's default --http-api-max-payload-size
MAX_HEADERS = 16 * 1024  # request line plus headers
SERVER_NAME = b"vmm API"

_REASONS = {
    200: b"OK",
    204: b"No Content",
    400: b"Bad Request",
    404: b"Not Found",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    503: b"Service Unavailable",
    505: b"HTTP Version Not Supported",
}


class ApiRequest(NamedTuple):
    method: str  # "GET", "PUT", ... as sent
    target: str  # the request target, decoded as Latin-1 (what h11 gives is bytes)
    body: bytes | None  # None when the request has no body (or an empty one)


class ProtocolFailure(NamedTuple):
    """The bytes were not an acceptable HTTP request: answer, then close."""

    status: int
    message: str


def fault_body(message: str) -> bytes:
    """Firecracker's error body."""
    return json.dumps({"fault_message": message}).encode()


def _status_line_bytes(status: int, body: bytes | None, close: bool) -> bytes:
    """A complete response written by hand, for when h11 cannot send one (the
    request line itself was bad, so h11 never reached SEND_RESPONSE)."""
    body = body or b""
    head = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error")), b"Server: " + SERVER_NAME]
    if body:
        head += [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    elif status != 204:
        head.append(b"Content-Length: 0")
    head.append(b"Connection: close" if close else b"Connection: keep-alive")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class HttpConnection:
    """One client connection's protocol state.

    Feed received bytes with ``receive(data)`` (``b""`` at end of file), then
    take requests with ``next_request()`` until it returns None; answer each
    with ``respond()`` before asking for the next, and send what it returns.
    After a ``ProtocolFailure`` (answer it with ``respond`` too) or once
    ``must_close`` is true, send what is left and close the connection.
    """

    def __init__(self, max_body: int = MAX_BODY, max_headers: int = MAX_HEADERS):
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_headers)
        self._max_body = max_body
        self._request: h11.Request | None = None
        self._body = bytearray()
        self._awaiting_response = False
        self._failed = False
        self._interim = b""
        self._eof = False
        self.must_close = False

    def receive(self, data: bytes) -> None:
        """Bytes received; ``b""`` is end of file, after which nothing more is taken."""
        if not self._failed and not self._eof:
            self._eof = not data
            self._h11.receive_data(data)

    def next_request(self) -> ApiRequest | ProtocolFailure | None:
        """The next complete request, a failure to answer, or None (need more bytes)."""
        if self._failed or self._awaiting_response or self.must_close:
            return None
        try:
            while True:
                event = self._h11.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return None
                if isinstance(event, h11.Request):
                    failure = self._check_head(event)
                    if failure is not None:
                        return self._fail(failure)
                    self._request = event
                    self._body.clear()
                    if self._h11.client_is_waiting_for_100_continue:  # curl does for larger bodies
                        self._interim += self._h11.send(h11.InformationalResponse(status_code=100, headers=[]))
                elif isinstance(event, h11.Data):
                    if len(self._body) + len(event.data) > self._max_body:
                        return self._fail(self._too_large(len(self._body) + len(event.data)))
                    self._body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    request, self._request = self._request, None
                    self._awaiting_response = True
                    return ApiRequest(request.method.decode("ascii", "replace"), request.target.decode("latin-1"), bytes(self._body) or None)
                elif isinstance(event, h11.ConnectionClosed):
                    self.must_close = True
                    return None
        except h11.RemoteProtocolError as err:
            status = err.error_status_hint if err.error_status_hint in _REASONS else 400
            return self._fail(ProtocolFailure(status, f"Malformed HTTP request: {err}."))

    def take_interim(self) -> bytes:
        """Bytes to send before the final answer ("100 Continue"), if any."""
        out, self._interim = self._interim, b""
        return out

    def _check_head(self, request: h11.Request) -> ProtocolFailure | None:
        if request.http_version != b"1.1":
            # micro_http speaks HTTP/1.1 only; 1.0 has no keep-alive or chunking worth supporting.
            return ProtocolFailure(505, f"Unsupported HTTP version: {request.http_version.decode('ascii', 'replace')}.")
        for name, value in request.headers:
            if name == b"content-length" and value.isdigit() and int(value) > self._max_body:
                return self._too_large(int(value))
        return None

    def _too_large(self, size: int) -> ProtocolFailure:
        return ProtocolFailure(
            413, f"Request payload with size {size} is larger than the limit of {self._max_body} allowed by server."
        )

    def _fail(self, failure: ProtocolFailure) -> ProtocolFailure:
        self._failed = True
        self.must_close = True
        return failure

    def respond(self, status: int, body: bytes | None = None) -> bytes:
        """The bytes of the answer to the request (or failure) just returned."""
        if self._failed:
            return _status_line_bytes(status, body, close=True)
        self._awaiting_response = False
        headers = [("Server", SERVER_NAME)]
        if body:
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        elif status != 204:
            headers.append(("Content-Length", "0"))
        try:
            out = self._h11.send(h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b"")))
            if body:
                out += self._h11.send(h11.Data(data=body))
            out += self._h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            # Our side cannot send (a bug, or the client broke the state machine): close after a plain answer.
            self._failed = self.must_close = True
            return _status_line_bytes(status, body, close=True)
        if self._h11.our_state is h11.MUST_CLOSE:
            self.must_close = True
        elif self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
        return out

    @property
    def mid_request(self) -> bool:
        """Bytes of an unfinished request are waiting (for the slow-client timer)."""
        return self._request is not None or bool(self._h11.trailing_data[0])
