"""Loggers that import the logging module only when something is logged.

logging costs 5-10 ms to import here, and a VM that runs cleanly logs nothing.
"""

from __future__ import annotations

import sys
import threading

_WARNING = 30
_LEVELS = {"warning": 30, "warn": 30, "error": 40, "exception": 40, "critical": 50, "fatal": 50}
_no_imports = threading.local()


def without_imports() -> None:
    """The calling thread may not import (its seccomp filter forbids opening files,
    vmm/seccomp.py): until something else has imported logging, its lines go
    where unconfigured logging would send them, without the import."""
    _no_imports.on = True


class LazyLogger:
    """Stands in for ``logging.getLogger(name)``: ``log.info(...)`` and friends."""

    __slots__ = ("_name",)

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, method: str):
        if "logging" not in sys.modules and getattr(_no_imports, "on", False):
            level = _LEVELS.get(method, 0)
            return lambda msg, *args, **kwargs: _unconfigured(level, msg, args)
        import logging

        return getattr(logging.getLogger(self._name), method)


def _unconfigured(level: int, msg, args) -> None:
    """What logging does before anyone configures it (its last-resort handler):
    WARNING and above, the bare message, on stderr; the rest is dropped."""
    if level < _WARNING:
        return
    try:
        text = str(msg) % args if args else str(msg)
    except (TypeError, ValueError):
        text = f"{msg} {args}"
    try:
        sys.stderr.write(text + "\n")
    except (OSError, ValueError):
        pass


def get_logger(name: str) -> LazyLogger:
    return LazyLogger(name)
