"""A guest shell in a child process (vmm, QEMU or the C floor), driven over pipes."""

from __future__ import annotations

import os
import re
import select
import subprocess
import time

import psutil

PROMPT = b"$ "


class GuestSession:
    """Spawn a monitor process whose serial console is its stdin/stdout."""

    def __init__(self, argv: list[str], env: dict | None = None):
        self.argv = argv
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        self.output = bytearray()
        self._cursor = 0
        self.stderr = b""

    def _read(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{self.argv[0]}: timed out; output ends {bytes(self.output[-200:])!r}")
        ready, _, _ = select.select([self.proc.stdout], [], [], min(remaining, 1.0))
        if ready:
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                self.proc.wait(5)
                err = self.proc.stderr.read().decode(errors="replace").strip()
                raise RuntimeError(f"{os.path.basename(self.argv[0])} exited ({self.proc.returncode}): {err[-300:]}")
            self.output += chunk

    def expect(self, pattern: bytes, timeout: float = 60) -> float:
        """Wait for ``pattern`` after the last match; returns the monotonic time it arrived."""
        deadline = time.monotonic() + timeout
        while True:
            index = self.output.find(pattern, self._cursor)
            if index >= 0:
                self._cursor = index + len(pattern)
                return time.monotonic()
            self._read(deadline)

    def command(self, line: str, timeout: float = 120) -> tuple[str, float]:
        """Run a shell line; returns (its output, seconds from sending to the next prompt)."""
        sent = time.monotonic()
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        self.expect(line.encode() + b"\r\n", timeout)
        start = self._cursor
        deadline = time.monotonic() + timeout
        while True:
            # the next prompt: at the start of the output, or after a line end
            if self.output.startswith(PROMPT, start):
                end = start
                break
            end = self.output.find(b"\r\n" + PROMPT, start)
            if end >= 0:
                end += 2
                break
            self._read(deadline)
        done = time.monotonic()
        self._cursor = end + len(PROMPT)
        return bytes(self.output[start:end]).decode(errors="replace"), done - sent

    def rss_bytes(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss

    def guest_ram_resident(self, mem_bytes: int) -> int:
        """Resident bytes of the anonymous mapping that is guest RAM (the one of exactly its size)."""
        resident = 0
        for mapping in psutil.Process(self.proc.pid).memory_maps(grouped=False):
            start, _, end = mapping.addr.partition("-")
            if int(end, 16) - int(start, 16) == mem_bytes and not mapping.path.startswith("/"):
                resident = max(resident, mapping.rss)
        return resident

    def finish(self, timeout: float = 30) -> str:
        """Power the guest off; returns the monitor's stderr."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"exit 0\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.stderr = err
        return err.decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def parse_exit_count(stderr: str) -> int | None:
    """Total VM exits from `vmm run --stats` or the floor's closing line."""
    match = re.search(r"exits: (.*)", stderr)
    if match and "floor" not in stderr:
        return sum(int(item.rpartition(" ")[2]) for item in match.group(1).split(", ") if item)
    match = re.search(r"floor: exits (\d+)", stderr)
    return int(match.group(1)) if match else None
