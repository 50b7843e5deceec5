"""The API socket: a Unix stream socket served from an event loop thread of its own.

Each connection is non-blocking and has its protocol state in an
HttpConnection (vmm/api/http.py). The limits that keep a client from hurting
the VMM or the VM: at most MAX_CONNECTIONS at once (more are closed at
accept), a request must arrive whole within REQUEST_TIMEOUT_S of its first
byte and an idle connection is closed after IDLE_TIMEOUT_S, answers waiting
for a client that does not read are capped at MAX_PENDING_OUTPUT. The VM
runs on its own threads and its own loop: nothing here blocks it.
"""

from __future__ import annotations

import os
import select
import socket
import stat
import time

from ..errors import ConfigError
from ..event_loop import EventLoop
from ..log import get_logger
from .http import HttpConnection, ProtocolFailure, fault_body
from .routes import handle

log = get_logger("vmm.api")

MAX_CONNECTIONS = 32
REQUEST_TIMEOUT_S = 10.0  # from a request's first byte to its last
IDLE_TIMEOUT_S = 300.0
MAX_PENDING_OUTPUT = 256 * 1024
RECV_SIZE = 64 * 1024
SWEEP_INTERVAL_S = 1.0
UNIX_PATH_MAX = 108  # sun_path, with its terminating NUL


class _Client:
    __slots__ = ("fd", "http", "last_active", "out", "request_began", "sock", "want_write")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.fd = sock.fileno()
        self.http = HttpConnection()
        self.out = bytearray()
        self.request_began: float | None = None
        self.last_active = time.monotonic()
        self.want_write = False


class ApiServer:
    """Serve ``instance`` (vmm/api/instance.py) on a Unix socket at ``path``."""

    def __init__(self, path: str, instance, on_error=None):
        self.path = path
        self.instance = instance
        self._clients: dict[int, _Client] = {}
        self._listener = _listen(path)
        self.loop = EventLoop("vmm-api", on_error=on_error)
        self.loop.register(self._listener.fileno(), self._accept)
        self._sweeper = None

    def start(self) -> None:
        self.loop.start()
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    def close(self) -> None:
        """Stop serving, close every connection and remove the socket file."""
        self.loop.stop()
        for client in list(self._clients.values()):
            self._drop(client)
        self.loop.close()
        self._listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    # --- on the loop thread ---------------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # EMFILE and the like: refuse this one, keep serving
                log.debug("API accept failed: %s", err)
                return
            if len(self._clients) >= MAX_CONNECTIONS:
                sock.close()
                continue
            sock.setblocking(False)
            client = _Client(sock)
            self._clients[client.fd] = client
            self.loop.register(client.fd, lambda c=client: self._on_ready(c), select.EPOLLIN)

    def _on_ready(self, client: _Client) -> None:
        try:
            if client.want_write:
                self._flush(client)
                if client.fd in self._clients and not client.out:
                    self._serve(client)  # requests pipelined behind the answers just sent
            else:
                self._read(client)
        except Exception as err:  # never let one connection stop the server
            log.debug("API connection failed: %r", err, exc_info=True)
            self._drop(client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        now = time.monotonic()
        client.last_active = now
        if data and client.request_began is None:
            client.request_began = now
        client.http.receive(data)
        self._serve(client)
        if not data and client.fd in self._clients and not client.out:
            self._drop(client)  # the client closed its end and nothing more is coming

    def _serve(self, client: _Client) -> None:
        """Answer every complete request received, then send the answers."""
        while client.fd in self._clients:
            answered = 0
            backlog = False
            while True:
                request = client.http.next_request()
                client.out += client.http.take_interim()
                if request is None:
                    break
                answered += 1
                client.out += self._answer(client, request)
                if len(client.out) > MAX_PENDING_OUTPUT:
                    backlog = True  # a client pipelining requests faster than it reads answers
                    break
            if not client.http.mid_request:
                client.request_began = None
            elif answered:
                client.request_began = time.monotonic()  # a new request has begun behind those answered
            self._flush(client)
            if not backlog or client.out:
                return

    def _answer(self, client: _Client, request) -> bytes:
        if isinstance(request, ProtocolFailure):
            self.instance.failed_requests += 1
            return client.http.respond(request.status, fault_body(request.message))
        self.instance.requests += 1
        status, body = handle(self.instance, request)
        if status >= 400:
            self.instance.failed_requests += 1
        return client.http.respond(status, body)

    def _flush(self, client: _Client) -> None:
        while client.out:
            try:
                sent = client.sock.send(client.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(client)
                return
            del client.out[:sent]
        if len(client.out) > MAX_PENDING_OUTPUT or not client.out and client.http.must_close:
            self._drop(client)
        elif client.out and not client.want_write:
            self._watch(client, select.EPOLLOUT)
        elif not client.out and client.want_write:
            self._watch(client, select.EPOLLIN)

    def _watch(self, client: _Client, events: int) -> None:
        self.loop.unregister(client.fd)
        client.want_write = events == select.EPOLLOUT
        self.loop.register(client.fd, lambda c=client: self._on_ready(c), events)

    def _drop(self, client: _Client) -> None:
        if self._clients.pop(client.fd, None) is None:
            return
        self.loop.unregister(client.fd)
        client.sock.close()

    def _sweep(self) -> None:
        """Close connections whose request is too slow to arrive, or idle too long."""
        now = time.monotonic()
        for client in list(self._clients.values()):
            if client.request_began is not None and now - client.request_began > REQUEST_TIMEOUT_S:
                client.out += _timeout_answer()
                client.http.must_close = True
                self._flush_and_close(client)
            elif now - client.last_active > IDLE_TIMEOUT_S and not client.out:
                self._drop(client)
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    def _flush_and_close(self, client: _Client) -> None:
        try:
            client.sock.send(client.out)
        except OSError:
            pass
        self._drop(client)


def _timeout_answer() -> bytes:
    body = fault_body(f"The request did not arrive within {REQUEST_TIMEOUT_S:g} s.")
    return (
        b"HTTP/1.1 408 Request Timeout\r\nServer: vmm API\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    ) + body


def _listen(path: str) -> socket.socket:
    """A listening Unix socket at ``path``. A stale socket file is replaced (as
    Firecracker requires it not to exist, we at least refuse to replace anything
    that is not a socket)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as err:
        raise ConfigError(f"API socket {path}: {err.strerror}") from None
    if mode is not None:
        if not stat.S_ISSOCK(mode):
            raise ConfigError(f"API socket {path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens there: a leftover of a VMM that died
        else:
            raise ConfigError(f"API socket {path}: another process is serving it")
        finally:
            probe.close()
    # Bound and listening under a temporary name, then renamed: a client that
    # waits for the path to appear (as scripts do) never finds it refusing.
    staging = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.{os.getpid()}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    try:
        for where in (path, staging):  # the path's own length is what the user must hear about
            if len(os.fsencode(where)) >= UNIX_PATH_MAX:
                raise ConfigError(f"API socket {path}: path too long for a Unix socket (at most {UNIX_PATH_MAX - 1 - (len(where) - len(path))} bytes here)")
        if os.path.lexists(staging):
            os.unlink(staging)
        sock.bind(staging)
        sock.listen(MAX_CONNECTIONS)
        os.rename(staging, path)
    except OSError as err:
        sock.close()
        try:
            os.unlink(staging)
        except OSError:
            pass
        raise ConfigError(f"API socket {path}: {err.strerror or err}") from None
    except ConfigError:
        sock.close()
        raise
    return sock
