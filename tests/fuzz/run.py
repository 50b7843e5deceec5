"""Run one fuzz target under atheris (libFuzzer): ``python -m tests.fuzz.run NAME [libFuzzer options] [corpus dirs]``.

vmm (and h11, under the API target) is instrumented for coverage; the
target's saved corpus (tests/fuzz/corpus/NAME) is run once inside the
instrumentation first, so modules the code under test imports lazily are
instrumented too. ``make fuzz`` calls this once per target.
"""

from __future__ import annotations

import importlib
import os
import sys

from . import TARGETS

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _self_command(name: str) -> str:
    """An executable that runs this target again: libFuzzer's -merge (and -fork)
    re-runs argv[0] with its own options, and a module run by -m is no executable."""
    import shlex

    folder = os.path.join(ROOT, "fuzz-out", "bin")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    script = f'#!/bin/sh\ncd {shlex.quote(ROOT)} && exec {shlex.quote(sys.executable)} -m tests.fuzz.run {name} "$@"\n'
    with open(path, "w") as f:
        f.write(script)
    os.chmod(path, 0o755)
    return path


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.run {{{','.join(TARGETS)}}} [libFuzzer options] [corpus dirs]")
    import atheris  # the engine: needed to fuzz, not to replay (test_corpus_replay.py)

    name = argv[1]
    include = ["vmm", "h11"] if name == "api" else ["vmm"]
    with atheris.instrument_imports(include=include):
        target = importlib.import_module(f"tests.fuzz.fuzz_{name}")
        seeds = os.path.join(HERE, "corpus", name)
        for entry in sorted(os.listdir(seeds)) if os.path.isdir(seeds) else []:
            with open(os.path.join(seeds, entry), "rb") as f:
                data = f.read()
            try:
                target.test_one_input(data)
            except Exception:  # noqa: BLE001 - a saved crash-* still failing: libFuzzer reports it next
                pass
    atheris.Setup([_self_command(name), *argv[2:]], target.test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
