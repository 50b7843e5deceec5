"""Benchmarks that print figures, baseline ratios and VM exit counts."""

from __future__ import annotations

from ..errors import ConfigError


def run_benchmark(case: str, runs: int) -> int:
    if case == "boot":
        from .boot import bench_boot

        return bench_boot(runs)
    if case == "blk":
        from .blk import bench_blk

        return bench_blk(runs)
    raise ConfigError(f"unknown benchmark {case!r}")
