"""The sandbox's control channel: what the guest tells the host about its program.

The guest writes to the console port named ``vmm.control``, in lines:

    exit N              the program exited with status N (0-255)
    signal N ADDR       signal N ended it; ADDR (hex) is the faulting address, 0 if none
    error STATUS TEXT   the program could not be run (126: cannot execute, 127: not found)
    trace TEXT          one traced syscall (with --trace)
    note TEXT           something the host should pass on (e.g. /out too large)
    out SIZE            then SIZE bytes: a ustar archive of the program's /out
    ready ROOM TOP      warm mode: waiting for its bundle, which may be up to ROOM
                        bytes and goes page-aligned just under address TOP

A sans-IO parser: bytes in, events out. The guest is untrusted (the program
may have overwritten the guest kernel), so every line and size is bounded and
anything malformed becomes an ``("invalid", reason)`` event, never an error.
"""

from __future__ import annotations

MAX_LINE = 4096  # a control line longer than this is refused
DEFAULT_MAX_ARCHIVE = 256 << 20


class ControlParser:
    def __init__(self, max_archive: int = DEFAULT_MAX_ARCHIVE):
        self._max_archive = max_archive
        self._buffer = bytearray()
        self._archive: bytearray | None = None  # collecting an /out archive
        self._archive_left = 0
        self._discard_left = 0  # skipping an archive that was too large
        self._overlong = False  # inside a line that passed MAX_LINE

    def feed(self, data: bytes) -> list[tuple]:
        events: list[tuple] = []
        view = memoryview(data)
        while view:
            if self._discard_left:
                n = min(self._discard_left, len(view))
                self._discard_left -= n
                view = view[n:]
                continue
            if self._archive is not None:
                n = min(self._archive_left, len(view))
                self._archive += view[:n]
                self._archive_left -= n
                view = view[n:]
                if not self._archive_left:
                    events.append(("out", bytes(self._archive)))
                    self._archive = None
                continue
            newline = bytes(view).find(b"\n") if len(view) < 65536 else bytes(view[:65536]).find(b"\n")
            if newline < 0:
                self._take_partial(view, events)
                break
            self._take_partial(view[:newline], events)
            view = view[newline + 1 :]
            if self._overlong:
                self._overlong = False
                self._buffer.clear()
                continue
            line = bytes(self._buffer)
            self._buffer.clear()
            self._line(line, events)
        return events

    def _take_partial(self, piece: memoryview, events: list) -> None:
        if self._overlong:
            return
        self._buffer += piece
        if len(self._buffer) > MAX_LINE:
            self._buffer.clear()
            self._overlong = True
            events.append(("invalid", f"control line longer than {MAX_LINE} bytes"))

    def _line(self, line: bytes, events: list) -> None:
        text = line.decode("utf-8", errors="replace")
        word, _, rest = text.partition(" ")
        try:
            if word == "exit":
                status = int(rest)
                if not 0 <= status <= 255:
                    raise ValueError
                events.append(("exit", status))
            elif word == "signal":
                number, _, addr = rest.partition(" ")
                signo = int(number)
                if not 1 <= signo <= 64:
                    raise ValueError
                events.append(("signal", signo, int(addr or "0", 16) & (2**64 - 1)))
            elif word == "error":
                status, _, message = rest.partition(" ")
                events.append(("error", int(status) if status in ("126", "127") else 126, message))
            elif word == "ready":
                room, _, top = rest.partition(" ")
                room, top = int(room), int(top)
                if not 0 <= room <= top < 2**64 or top % 4096:
                    raise ValueError
                events.append(("ready", room, top))
            elif word == "trace":
                events.append(("trace", rest))
            elif word == "note":
                events.append(("note", rest))
            elif word == "out":
                size = int(rest)
                if size < 0:
                    raise ValueError
                if size > self._max_archive:
                    self._discard_left = size
                    events.append(("invalid", f"/out archive of {size} bytes is over the {self._max_archive}-byte limit"))
                elif size == 0:
                    events.append(("out", b""))
                else:
                    self._archive, self._archive_left = bytearray(), size
            else:
                events.append(("invalid", f"unknown control line {text[:80]!r}"))
        except ValueError:
            events.append(("invalid", f"malformed control line {text[:80]!r}"))
