"""Replay every saved fuzz input through its target: a crash once found stays found.

tests/fuzz/corpus/<target>/ holds the seeds, the (minimised) inputs the
fuzzer found interesting, and ``regress-*`` inputs that once broke the
contract (each names the fix in its name). No fuzzing engine is needed: the
targets read their input with their own small provider.
"""

from __future__ import annotations

import importlib
import os
import traceback

import pytest

from . import TARGETS, guard

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


@pytest.fixture(scope="module", autouse=True)
def scratch_under_tmp(tmp_path_factory):
    """Every file a target writes lives under pytest's tmp_path."""
    guard.set_root(tmp_path_factory.mktemp("fuzz"))


def _entries(name: str) -> list[str]:
    folder = os.path.join(CORPUS, name)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.mark.parametrize("name", TARGETS)
def test_saved_corpus_replays_cleanly(name):
    target = importlib.import_module(f"tests.fuzz.fuzz_{name}")
    entries = _entries(name)
    assert any(os.path.basename(e).startswith("seed-") for e in entries), f"no seed corpus for {name}"
    failures = []
    for path in entries:
        with open(path, "rb") as f:
            data = f.read()
        try:
            target.test_one_input(data)
        except Exception:  # noqa: BLE001 - every failure is reported, with its input's name
            failures.append(f"{os.path.relpath(path, CORPUS)}:\n{traceback.format_exc(limit=-3)}")
    assert not failures, f"{len(failures)} of {len(entries)} saved inputs break the contract:\n" + "\n".join(failures[:5])


def test_corpus_stays_small():
    total = sum(os.path.getsize(p) for name in TARGETS for p in _entries(name))
    assert total < 2 << 20, f"the saved corpus is {total} bytes; minimise it (make fuzz-merge)"
