"""QEMU's nearest equivalent of a snapshot, for `vmm bench snapshot`: migration to a file.

The guest is stopped (QMP `stop`), migrated to a file (`migrate
exec:cat > FILE`), and a new QEMU started with `-incoming exec:cat FILE`
loads it; a stopped source stays stopped at the destination, so the driver
sends `cont` once `query-migrate` says completed. QEMU's `savevm` needs a
qcow2 disk to hold the state, which the bench's guest does not have.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import time

from .session import GuestSession


class Qmp:
    """A minimal QMP client: one command at a time, events skipped."""

    def __init__(self, path: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.001)
        self.file = self.sock.makefile("rwb")
        self.file.readline()  # the greeting
        self.command("qmp_capabilities")

    def command(self, name: str, **arguments) -> dict:
        message = {"execute": name, **({"arguments": arguments} if arguments else {})}
        self.file.write(json.dumps(message).encode() + b"\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "error" in reply:
                raise RuntimeError(f"QMP {name}: {reply['error']}")
            if "return" in reply:
                return reply["return"]

    def wait_migration(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (status := self.command("query-migrate").get("status")) != "completed":
            if status == "failed" or time.monotonic() > deadline:
                raise RuntimeError(f"QEMU migration {status}")
            time.sleep(0.0005)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _restored(argv: list[str], image: str, qmp_path: str) -> GuestSession:
    """A QEMU loading ``image``, running once it printed its first byte."""
    if os.path.exists(qmp_path):
        os.unlink(qmp_path)
    session = GuestSession(argv + ["-qmp", f"unix:{qmp_path},server=on,wait=off", "-incoming", f"exec:cat {image}"])
    try:
        qmp = Qmp(qmp_path)
        qmp.wait_migration()
        qmp.command("cont")
        qmp.close()
        deadline = time.monotonic() + 30
        while not session.output:
            session._read(deadline)
    except BaseException:
        session.kill()
        raise
    return session


def _clones(argv: list[str], image: str, workdir: str, count: int) -> dict:
    started = time.monotonic()
    sessions: list[GuestSession] = []
    try:
        for index in range(count):
            sessions.append(_restored(argv, image, os.path.join(workdir, f"qmp-{index}.sock")))
        elapsed = time.monotonic() - started
        rss = sum(s.rss_bytes() for s in sessions)
    finally:
        for session in sessions:
            session.kill()
    return {"seconds_to_all_answering": elapsed, "rss_mib": rss / 2**20}


def measure_qemu(contender, guest: str, mem_mib: int, rounds: int, workdir: str, clone_counts=()) -> dict:
    qmp_path = os.path.join(workdir, "qmp.sock")
    image = os.path.join(workdir, "qemu.mig")
    argv = contender.argv(guest, mem_mib, []) + ["-qmp", f"unix:{qmp_path},server=on,wait=off"]
    session = GuestSession(argv)
    try:
        session.expect(b"$ ", timeout=120)
        session.proc.stdin.write(b"count 100000000 1\n")
        session.proc.stdin.flush()
        session.expect(b"count 20\r\n", timeout=60)
        qmp = Qmp(qmp_path)
        started = time.monotonic()
        qmp.command("stop")
        qmp.command("migrate", uri=f"exec:cat > {image}")
        qmp.wait_migration()
        create_ms = (time.monotonic() - started) * 1000
        qmp.close()
    finally:
        session.kill()
    result = {"full_create_ms": create_ms, "full_mem_on_disk_kib": os.stat(image).st_blocks * 512 / 1024}
    plain = contender.argv(guest, mem_mib, [])
    to_output = []
    for _ in range(rounds):
        started = time.monotonic()
        _restored(plain, image, qmp_path).kill()
        to_output.append((time.monotonic() - started) * 1000)
    result["process_restore_to_first_output_ms"] = statistics.median(to_output)
    for count in clone_counts:
        result[f"clones_{count}"] = _clones(plain, image, workdir, count)
    return result
