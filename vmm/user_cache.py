"""vmm's files in the user's cache ($XDG_CACHE_HOME, else ~/.cache): where they
live, which may be trusted, and the keys that name them. Its users: the seccomp
filters (vmm/seccomp.py), the sandbox's snapshot (vmm/sandbox/image_cache.py),
laid-out programs (vmm/sandbox/program_cache.py), the bench's floor binary."""

from __future__ import annotations

import os
import stat

try:
    from _sha256 import sha256  # the C module itself: hashlib would load OpenSSL (~1 ms)
except ImportError:
    from hashlib import sha256


def cache_dir(*parts: str) -> str:
    """vmm's directory in the user's cache, joined with ``parts``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "vmm", *parts)


def trusted(st: os.stat_result) -> bool:
    """A cache file or directory this process may use: the user's own, writable by nobody else."""
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def key(data: bytes) -> str:
    """A name for what ``data`` describes (128 bits of its SHA-256, in hex)."""
    return sha256(data).hexdigest()[:32]
