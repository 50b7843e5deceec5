"""PUT /metrics: newline-delimited JSON records of what the VM is doing.

One record per flush (FlushMetrics, a timer, and the end of the VM): VM exits
by reason (totals since start), how long InstanceStart (or a snapshot load)
took, uptime, the process's resident memory and the API's own counters. The
file is opened non-blocking: a FIFO nobody reads drops records rather than
stalling the API thread.
"""

from __future__ import annotations

import json
import os
import time

from .routes import ApiError

FLUSH_INTERVAL_S = 60.0  # Firecracker's periodic flush


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (no psutil on this path)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def metrics_record(instance) -> dict:
    vm = instance.vm
    record = {
        "utc_timestamp_ms": int(time.time() * 1000),
        "vmm": {
            "state": instance.state,
            "rss_bytes": rss_bytes(),
            "instance_start_ms": None if instance.instance_start_ms is None else round(instance.instance_start_ms, 3),
            "uptime_ms": None if instance.started_at is None else round((time.monotonic() - instance.started_at) * 1000, 3),
        },
        "api_server": {"requests": instance.requests, "failed_requests": instance.failed_requests},
    }
    if vm is not None:
        record["vmm"]["exits"] = vm.exit_summary()
        record["vmm"]["unhandled_accesses"] = vm.unhandled_accesses
        outcome = vm.outcome
        if outcome is not None:
            record["vmm"]["outcome"] = {"status": outcome.status, "reason": str(outcome.reason), "message": outcome.message}
    return record


class MetricsSink:
    def __init__(self, fd: int, path: str):
        self._fd = fd
        self.path = path
        self.dropped = 0

    @classmethod
    def open(cls, path: str) -> MetricsSink:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise ApiError(f"Cannot open the metrics file {path}: {err.strerror}.") from None
        return cls(fd, path)

    def write(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        try:
            written = os.write(self._fd, line)
        except BlockingIOError:
            written = 0
        except OSError as err:
            raise ApiError(f"Cannot write metrics to {self.path}: {err.strerror}.") from None
        if written < len(line):
            self.dropped += 1  # a full pipe: this record is lost, the next one may fit

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
