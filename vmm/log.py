"""Loggers that import the logging module only when something is logged.

logging costs 5-10 ms to import here, and a VM that runs cleanly logs nothing.
"""

from __future__ import annotations


class LazyLogger:
    """Stands in for ``logging.getLogger(name)``: ``log.info(...)`` and friends."""

    __slots__ = ("_name",)

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, method: str):
        import logging

        return getattr(logging.getLogger(self._name), method)


def get_logger(name: str) -> LazyLogger:
    return LazyLogger(name)
