"""The C floor: a bare KVM_RUN loop that boots the same guest, for baselines.

``floor.c`` (next to this file) boots the bundled guest ELF with the same
layout, CPUID policy and entry state as ``vmm run`` but handles exits in a
minimal C loop. Benchmarks run it in the same session as the VMM to show how
much of a figure is this KVM's exit cost rather than ours.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from ..errors import ConfigError

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor.c")
BINARY_NAME = "vmm-floor"
CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror"]


def default_cache_dir() -> str:
    from ..user_cache import cache_dir

    return cache_dir()


def build_floor(cache_dir: str | None = None) -> str:
    """Compile floor.c with the system gcc (only when it changed); returns the binary's path."""
    cache_dir = cache_dir or default_cache_dir()
    binary = os.path.join(cache_dir, BINARY_NAME)
    try:
        source_mtime = os.stat(SOURCE).st_mtime
    except OSError as err:
        raise ConfigError(f"C floor source {SOURCE} is missing: {err.strerror}") from None
    try:
        if os.stat(binary).st_mtime >= source_mtime and os.access(binary, os.X_OK):
            return binary
    except OSError:
        pass

    gcc = shutil.which("gcc")
    if gcc is None:
        raise ConfigError("cannot build the C floor: gcc not found (install the system gcc)")
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create cache directory {cache_dir}: {err.strerror}") from None
    # Build beside the target, then rename: concurrent builds never see a half-written binary.
    fd, tmp = tempfile.mkstemp(prefix=BINARY_NAME + ".", dir=cache_dir)
    os.close(fd)
    try:
        try:
            result = subprocess.run([gcc, *CFLAGS, "-o", tmp, SOURCE], capture_output=True, text=True)
        except OSError as err:
            raise ConfigError(f"cannot build the C floor: cannot run {gcc}: {err.strerror}") from None
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            detail = next((line for line in lines if "error" in line), lines[0] if lines else f"status {result.returncode}")
            raise ConfigError(f"cannot build the C floor: gcc failed: {detail.strip()}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, binary)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return binary
