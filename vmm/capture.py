"""Where the guest's console output goes: sinks, and a capture with expect().

``OutputFanout`` hands every chunk of serial output to each sink in turn: a
callback, a host fd (the CLI's stdout), a log file, and an ``OutputCapture``.
``OutputCapture`` keeps the most recent output (bounded: a guest may print
forever) and lets the host wait for a pattern in it, the way pexpect does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import re  # (at run time only where expect() is called: `vmm exec` starts without re)

from .console import write_all

DEFAULT_CAPTURE_LIMIT = 16 << 20


class OutputCapture:
    """Bounded record of console output with ``expect()``.

    Holds at most ``limit`` bytes: when more arrives, the oldest half is
    dropped. ``expect`` searches from just after its previous match.
    """

    def __init__(self, limit: int = DEFAULT_CAPTURE_LIMIT):
        if limit <= 0:
            raise ValueError("capture limit must be positive")
        self._limit = limit
        self._buffer = bytearray()
        self._dropped = 0  # bytes dropped from the front so far
        self._cursor = 0  # offset in _buffer just after the last match
        self._cond = threading.Condition()
        self._closed_reason: str | None = None  # set once no more output can come

    def write(self, data: bytes) -> None:
        with self._cond:
            self._buffer += data
            if len(self._buffer) > self._limit:
                excess = len(self._buffer) - self._limit // 2
                del self._buffer[:excess]
                self._dropped += excess
                self._cursor = max(0, self._cursor - excess)
            self._cond.notify_all()

    def close(self, reason: str) -> None:
        """No more output will come (the VM stopped): wake every waiter."""
        with self._cond:
            if self._closed_reason is None:
                self._closed_reason = reason
            self._cond.notify_all()

    @property
    def data(self) -> bytes:
        with self._cond:
            return bytes(self._buffer)

    def expect(self, pattern: bytes | str | re.Pattern, timeout: float = 10.0) -> re.Match:
        """Wait until the output after the last match matches ``pattern``.

        A str or bytes pattern is matched literally; pass a compiled regex for more.
        Raises TimeoutError (with the output's tail) on timeout or once closed.
        """
        if isinstance(pattern, str):
            pattern = pattern.encode()
        import re  # here: a `vmm exec` never waits for a pattern

        literal = not isinstance(pattern, re.Pattern)
        regex = re.compile(re.escape(pattern)) if literal else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            searched_to = self._dropped + self._cursor  # absolute: output may be dropped meanwhile
            while True:
                start = max(self._cursor, searched_to - self._dropped)
                match = regex.search(self._buffer, start)
                if match:
                    self._cursor = match.end()
                    return match
                if literal:  # a literal can only complete in output not yet searched
                    searched_to = self._dropped + len(self._buffer) - len(pattern) + 1
                remaining = deadline - time.monotonic()
                if self._closed_reason is not None or remaining <= 0:
                    tail = bytes(self._buffer[-300:]).decode(errors="replace")
                    state = self._closed_reason or f"timed out after {timeout} s"
                    raise TimeoutError(f"{regex.pattern!r} not seen: {state}; output ends with {tail!r}")
                self._cond.wait(min(remaining, 0.5))
                if not literal:
                    # A regex is searched again from the cursor: let output
                    # accumulate first, or a long stream costs quadratic time.
                    self._cond.wait(min(max(deadline - time.monotonic(), 0), 0.01))


class OutputFanout:
    """Serial output to every configured sink, in order.

    ``plain_fds`` reports whether every sink is a plain fd (no callback, no
    capture): then the VMM may write UART bytes to those fds in C.
    """

    def __init__(
        self,
        *,
        callback: Callable[[bytes], None] | None = None,
        fd: int | None = None,
        log_file=None,
        capture: OutputCapture | None = None,
        give_up: Callable[[], bool] = lambda: False,
    ):
        self.callback = callback
        self.fd = fd
        self.log_file = log_file
        self.capture = capture
        self._give_up = give_up

    @property
    def plain_fds(self) -> list[int] | None:
        if self.callback is not None or self.capture is not None:
            return None
        return [fd for fd in (self.fd, self.log_file and self.log_file.fileno()) if fd is not None]

    def __call__(self, data: bytes) -> None:
        if self.callback is not None:
            self.callback(data)
        if self.fd is not None:
            write_all(self.fd, data, give_up=self._give_up)
        if self.log_file is not None:
            self.log_file.write(data)
        if self.capture is not None:
            self.capture.write(data)

    def close(self) -> None:
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None
