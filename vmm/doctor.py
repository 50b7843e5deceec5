"""`vmm doctor`: is this host ready to run vmm, and if not, what fixes it.

Each check gives a status (ok, warn, fail), one line of detail and, for a
problem, the command that fixes it. "fail" means vmm cannot run a VM here;
"warn" means something `make` needs to build vmm from source is missing
(a pip-installed vmm with its bindings built does not need it). No VM is
booted: the device is opened and one VM created and closed, so it is fast.

``kvm_unusable_reason`` is the one-line answer the pytest plugin skips with;
it and the doctor both go through vmm.builder.open_kvm and its
REQUIRED_CAPABILITIES, so there is one definition of "KVM is usable".
"""

from __future__ import annotations

import os
import stat
import sys

from .record import record

OK, WARN, FAIL = "ok", "warn", "fail"
DEVICE_ENV = "VMM_KVM_DEVICE"

# GitHub's Linux runners have /dev/kvm, but root-only until a udev rule opens it.
UDEV_FIX = (
    "echo 'KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0666\", OPTIONS+=\"static_node=kvm\"' "
    "| sudo tee /etc/udev/rules.d/99-kvm4all.rules && sudo udevadm control --reload-rules "
    "&& sudo udevadm trigger --name-match=kvm"
)
MODPROBE_FIX = "sudo modprobe kvm && (sudo modprobe kvm_intel || sudo modprobe kvm_amd)"
NO_VIRT_FIX = (
    "enable VT-x/AMD-V in the firmware; on a VM, turn on nested virtualization on its host "
    "(for example a GitHub-hosted Linux runner, which offers it)"
)

Check = record("Check", "name status detail fix", defaults=("",))


def kvm_device() -> str:
    from .kvm.api import KVM_DEVICE

    return os.environ.get(DEVICE_ENV) or KVM_DEVICE


def kvm_unusable_reason() -> str | None:
    """None when vmm can create VMs here, else one line saying why not."""
    try:
        from .builder import open_kvm
        from .errors import KvmUnavailableError, VmmError
    except ImportError as err:
        return f"vmm's KVM bindings cannot be loaded ({err}); build them with `make`"
    try:
        kvm = open_kvm()
    except KvmUnavailableError as err:  # missing, no permission, API version, capability
        return str(err)
    except VmmError as err:  # it opened, yet KVM's ioctls fail on it
        path = kvm_device()
        try:
            if not stat.S_ISCHR(os.stat(path).st_mode):
                return f"{path} is not a character device, so not a KVM device"
        except OSError:
            pass
        return str(err)
    try:
        kvm.create_vm().close()
    except VmmError as err:
        return f"{kvm_device()} opens, but creating a VM fails: {err}"
    finally:
        kvm.close()
    return None


def _owner(st) -> str:
    import grp
    import pwd

    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group} {stat.S_IMODE(st.st_mode):04o}"


def _permission_fix(st) -> str:
    """The udev rule, or joining the device's group when the group may already open it."""
    import grp

    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = ""
    if group and group != "root" and st.st_mode & 0o060 == 0o060:
        return f"sudo usermod -aG {group} $USER   # then log in again; on CI use the udev rule: {UDEV_FIX}"
    return UDEV_FIX


def check_device(path: str) -> list[Check]:
    """The device node, opening it, the API version, capabilities, and a VM."""
    checks = []
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.environ.get(DEVICE_ENV):
            fix = f"unset {DEVICE_ENV}, or point it at the KVM device"
        else:
            fix = MODPROBE_FIX if _cpu_virt_flag() else NO_VIRT_FIX
        return [Check("device", FAIL, f"{path} does not exist", fix)]
    except OSError as err:
        return [Check("device", FAIL, f"cannot stat {path}: {err.strerror}")]
    if not stat.S_ISCHR(st.st_mode):
        return [Check("device", FAIL, f"{path} is not a character device", f"unset {DEVICE_ENV} or point it at /dev/kvm")]
    checks.append(Check("device", OK, f"{path}: character device {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}, {_owner(st)}"))

    from .builder import REQUIRED_CAPABILITIES
    from .errors import VmmError
    from .kvm import Kvm
    from .kvm._kvm_cffi import lib

    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except PermissionError:
        who = f"uid {os.getuid()}"
        checks.append(Check("open", FAIL, f"no permission to open {path} read/write ({who}; device is {_owner(st)})", _permission_fix(st)))
        return checks
    except OSError as err:
        checks.append(Check("open", FAIL, f"cannot open {path}: {err.strerror}", MODPROBE_FIX))
        return checks
    os.close(fd)
    checks.append(Check("open", OK, f"{path} opens read/write"))

    try:
        kvm = Kvm(path)
    except VmmError as err:
        checks.append(Check("api version", FAIL, str(err), "upgrade the host kernel"))
        return checks
    try:
        checks.append(Check("api version", OK, f"KVM_GET_API_VERSION = {lib.KVM_API_VERSION}"))
        for name, purpose in REQUIRED_CAPABILITIES:
            if kvm.check_extension(getattr(lib, name)):
                checks.append(Check(name, OK, purpose))
            else:
                checks.append(Check(name, FAIL, f"missing: {purpose}", "use a newer host kernel (vmm needs this capability)"))
        vcpus = kvm.check_extension(lib.KVM_CAP_MAX_VCPUS) or kvm.check_extension(lib.KVM_CAP_NR_VCPUS)
        checks.append(Check("vcpus", OK, f"up to {vcpus or 1} vCPUs per VM"))
        try:
            kvm.create_vm().close()
            checks.append(Check("create vm", OK, "KVM_CREATE_VM works"))
        except VmmError as err:
            checks.append(Check("create vm", FAIL, str(err), "check `dmesg` for KVM errors; another hypervisor may hold VT-x/AMD-V"))
    finally:
        kvm.close()
    return checks


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cpu_flags() -> set[str]:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def _cpu_virt_flag() -> str | None:
    flags = _cpu_flags()
    return "vmx" if "vmx" in flags else "svm" if "svm" in flags else None


def check_virtualization() -> Check:
    """Which KVM this is, and whether it is nested (information, never a failure)."""
    flags = _cpu_flags()
    in_vm = "hypervisor" in flags
    parts = []
    for module in ("kvm_intel", "kvm_amd"):
        if os.path.isdir(f"/sys/module/{module}"):
            nested = _read(f"/sys/module/{module}/parameters/nested")
            parts.append(f"{module} (nested={nested})" if nested is not None else module)
    if os.path.isdir("/sys/module/kvm_pvm"):
        parts.append("kvm_pvm (software, Pagetable-based Virtual Machine: guest ring 0 is emulated, slow)")
    virt = _cpu_virt_flag()
    cpu = f"CPU flag {virt}" if virt else "no vmx/svm CPU flag"
    where = "this host is itself a VM, so KVM here is nested" if in_vm else "bare metal"
    modules = ", ".join(parts) if parts else "no KVM module found in /sys/module"
    return Check("virtualization", OK, f"{modules}; {cpu}; {where}")


def check_memory(needed_mib: int) -> Check:
    text = _read("/proc/meminfo") or ""
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            mib = int(line.split()[1]) >> 10
            if mib < needed_mib:
                return Check("memory", FAIL, f"{mib} MiB available, a default VM needs {needed_mib} MiB", "free memory, or run with a smaller --mem")
            return Check("memory", OK, f"{mib} MiB available")
    return Check("memory", WARN, "cannot read MemAvailable from /proc/meminfo")


def check_build_tools(bindings_built: bool) -> list[Check]:
    """What `make` needs. Only a failure when the bindings are not built yet."""
    import shutil
    import sysconfig

    level = WARN if bindings_built else FAIL
    checks = []
    for tool, package in (("gcc", "gcc"), ("make", "make"), ("readelf", "binutils")):
        found = shutil.which(tool)
        checks.append(Check(tool, OK, found) if found else Check(tool, level, f"{tool} not found", f"sudo apt-get install -y {package}"))
    include = sysconfig.get_paths().get("include", "")
    header = os.path.join(include, "Python.h")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if os.path.exists(header):
        checks.append(Check("Python.h", OK, header))
    else:
        checks.append(Check("Python.h", level, f"{header} is missing", f"sudo apt-get install -y python{version}-dev"))
    for directory in ("/usr/include", "/usr/local/include", "/usr/include/x86_64-linux-gnu"):
        if os.path.exists(os.path.join(directory, "linux", "kvm.h")):
            checks.append(Check("linux/kvm.h", OK, os.path.join(directory, "linux", "kvm.h")))
            break
    else:
        checks.append(Check("linux/kvm.h", level, "the kernel's UAPI header linux/kvm.h is missing", "sudo apt-get install -y linux-libc-dev"))
    return checks


PACK_FIX = "make bytecode   # or: python -c 'import vmm.module_pack as p; p.main()'"


def check_module_pack(root: str | None = None) -> Check:
    """Whether vmm's modules come from its module pack (vmm/module_pack.py): a
    command starts ~2 ms slower without it, and works the same."""
    from . import module_pack

    root = root or os.path.dirname(os.path.abspath(__file__))
    finder = module_pack.PackFinder.open(root)
    if finder is None:
        return Check("module pack", WARN, f"none usable at {module_pack.pack_path(root)}: "
                     "each command imports vmm's modules from their files (~2 ms slower)", PACK_FIX)
    stale = finder.stale_modules()
    if stale:
        return Check("module pack", WARN, f"{len(stale)} of its {len(finder)} modules changed since it was built "
                     f"({', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''}): imported from their files", PACK_FIX)
    return Check("module pack", OK, f"vmm's {len(finder)} modules imported from {module_pack.pack_path(root)}")


def diagnose() -> list[Check]:
    from .config import DEFAULT_MEM_MIB

    checks = []
    try:
        from .kvm import _kvm_cffi  # noqa: F401

        bindings_built = True
        checks.append(Check("bindings", OK, "vmm's cffi KVM bindings are built"))
    except ImportError as err:
        bindings_built = False
        checks.append(Check("bindings", FAIL, f"vmm's KVM bindings are not built ({err})", "make   # or: python vmm/kvm/ffi_build.py"))
    if bindings_built:
        checks.extend(check_device(kvm_device()))
    checks.append(check_virtualization())
    checks.append(check_memory(DEFAULT_MEM_MIB))
    checks.extend(check_build_tools(bindings_built))
    checks.append(check_module_pack())
    return checks


def ready(checks: list[Check]) -> bool:
    return all(check.status != FAIL for check in checks)


def format_text(checks: list[Check], device: str) -> str:
    lines = [f"vmm doctor: checking {device}"]
    width = max(len(c.name) for c in checks)
    for check in checks:
        mark = {OK: "ok", WARN: "WARN", FAIL: "FAIL"}[check.status]
        lines.append(f"  {mark:4}  {check.name:{width}}  {check.detail}")
        if check.fix and check.status != OK:
            lines.append(f"        {'':{width}}  fix: {check.fix}")
    problems = sum(c.status == FAIL for c in checks)
    if problems:
        lines.append(f"not ready: {problems} problem(s); the fixes are above")
    else:
        lines.append("ready: vmm can run VMs on this host")
    return "\n".join(lines) + "\n"


def format_json(checks: list[Check], device: str) -> str:
    import json

    return json.dumps({"ready": ready(checks), "device": device, "checks": [c._asdict() for c in checks]}, indent=2) + "\n"


def run_doctor(as_json: bool = False) -> int:
    """Print the report; 0 when ready, 1 when not."""
    checks = diagnose()
    device = kvm_device() if checks[0].status == OK else os.environ.get(DEVICE_ENV) or "/dev/kvm"
    sys.stdout.write(format_json(checks, device) if as_json else format_text(checks, device))
    return 0 if ready(checks) else 1
