"""Child of `vmm bench density`: N VMs in one process; prints seconds-to-all-prompts and RSS MiB."""

from __future__ import annotations

import sys
import time

import psutil

from ..config import VmConfig
from ..machine import MicroVM


def main(count: int, guest: str, mem_mib: int) -> None:
    start = time.monotonic()
    vms = [MicroVM(VmConfig(kernel=guest, mem_mib=mem_mib), capture=True).start() for _ in range(count)]
    try:
        for vm in vms:
            vm.expect("$ ", timeout=300)
        elapsed = time.monotonic() - start
        rss = psutil.Process().memory_info().rss
    finally:
        for vm in vms:
            vm.close()
    print(f"{elapsed:.4f} {rss / 2**20:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
