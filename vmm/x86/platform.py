"""Which KVM this is, and what a Linux guest needs on it.

On a software, page-table-based KVM (module kvm_pvm) every guest ring-0
instruction goes through KVM's instruction emulator (see PLATFORM.md). Linux
boots there only with a few kernel options the user cannot be expected to
know, so the VMM adds them itself (and says so under --stats):

- ``noxsave``: the emulator cannot execute xsave/xrstor, and CPUID cannot hide
  them. Why clearing the XSAVE CPUID bit alone did not stop Linux using XSAVE
  (measured by tests/unit/test_cpuid_policy.py's real-mode probe): the guest's
  CPUID shows KVM_SET_CPUID2's value only for the bits KVM_GET_SUPPORTED_CPUID
  lists; every other bit is the hardware's. This KVM lists no XSAVE (leaf 1
  ECX 0x81202000 here: CX16 yes; XSAVE, OSXSAVE, SSSE3, POPCNT no; no SMAP in
  leaf 7), so the guest sees the host CPU's XSAVE whatever the VMM sets.
- ``clearcpuid=cx16,ssse3,popcnt,smap``: the same for instructions the emulator
  lacks (cx16 is also hidden by CPUID; saying it twice is harmless). Hiding SMAP
  removes ~11,600 clac/stac fallbacks per boot; POPCNT ~830.
- ``cryptomgr.notests``: the RSA self-tests cost ~390 s of emulated ring 0.
- ``reboot=k``: a reboot (or a panic with panic=N) pulses the i8042's reset line,
  which stops the VM as a "reset" (devices/i8042.py), rather than trying the
  real-mode BIOS code the default order ends in (reboot=t, a triple fault, was
  the earlier choice: it looks like a crash).
- ``nowatchdog``: at ~1 MIPS the soft-lockup detector fires during ftrace's
  kallsyms check and prints a stack dump over the UART (one exit per byte).
  (The hung-task detector also fires once, on PID 1 waiting for the kprobe
  trace set-up; sysctl.kernel.hung_task_timeout_secs=0 on the command line is
  applied only after the initcalls, too late, so it is not added.)
"""

from __future__ import annotations

import os

PVM_MODULE = "/sys/module/kvm_pvm"
LINUX_OPTIONS = ("noxsave", "clearcpuid=cx16,ssse3,popcnt,smap", "cryptomgr.notests", "reboot=k", "nowatchdog")


def software_kvm() -> bool:
    """True on a PVM (software) KVM; VMM_SOFTWARE_KVM=0/1 overrides the probe."""
    forced = os.environ.get("VMM_SOFTWARE_KVM")
    if forced in ("0", "1"):
        return forced == "1"
    return os.path.isdir(PVM_MODULE)


def linux_options(cmdline: str) -> list[str]:
    """The options this platform needs that ``cmdline`` does not already set."""
    if not software_kvm():
        return []
    present = {word.split("=", 1)[0] for word in cmdline.split()}
    return [opt for opt in LINUX_OPTIONS if opt.split("=", 1)[0] not in present]
