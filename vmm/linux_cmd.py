"""`vmm linux`: boot a Linux kernel to vmm's init, run one command, return its status.

The initramfs is built on the fly (initramfs.py): vmm's static init
(guest/build/linux-init, from guest/linux_init/init.c), the kernel's virtio
modules from its package tree when the kernel has them as modules, and a
static busybox when the host has one (so `sh`, `echo`, `ls`... exist). The
command travels on the kernel command line as vmm.cmd=<base64 of its
NUL-terminated arguments>; the init runs it on the serial console and powers
off through the exit device with its status, which becomes vmm's.
"""

from __future__ import annotations

import os

from .errors import ConfigError

INIT_ENV = "VMM_LINUX_INIT"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
# Kernel options for a one-command VM: a panic reboots at once instead of hanging,
# and the reboot stops the VM (the i8042 reset, or a triple fault): vmm fails.
BASE_CMDLINE = "console=ttyS0 panic=-1"


def linux_init_path() -> str:
    path = os.environ.get(INIT_ENV) or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "guest", "build", "linux-init")
    if not os.path.isfile(path):
        raise ConfigError(f"vmm's Linux init is not built ({path}): run ./build_guest.sh")
    return path


def default_module_tree(kernel_path: str) -> str | None:
    """lib/modules/VERSION beside a kernel named vmlinuz-VERSION (how fetch_kernel.sh leaves it)."""
    name = os.path.basename(kernel_path)
    for prefix in ("vmlinuz-", "vmlinux-"):
        if name.startswith(prefix):
            tree = os.path.join(os.path.dirname(os.path.abspath(kernel_path)), "lib", "modules", name[len(prefix):])
            return tree if os.path.isdir(tree) else None
    return None


def static_busybox() -> str | None:
    for path in BUSYBOX_CANDIDATES:
        try:
            with open(path, "rb") as f:
                head = f.read(4096)
        except OSError:
            continue
        if head[:4] == b"\x7fELF" and b"PT_INTERP" not in head and _is_static(path):
            return path
    return None


def _is_static(path: str) -> bool:
    """No program interpreter: ELF64 program headers without PT_INTERP."""
    import struct

    with open(path, "rb") as f:
        data = f.read(65536)
    if len(data) < 64 or data[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        offset = phoff + i * phentsize
        if offset + 4 > len(data):
            return False
        if struct.unpack_from("<I", data, offset)[0] == 3:  # PT_INTERP
            return False
    return True


def busybox_files(path: str) -> dict:
    """/bin/busybox and a link per applet."""
    with open(path, "rb") as f:
        image = f.read()
    import subprocess

    applets = subprocess.run([path, "--list"], capture_output=True, text=True, check=False).stdout.split()
    files = {"bin/busybox": (image, 0o755)}
    for applet in applets:
        if applet and "/" not in applet and applet != "busybox":
            files[f"bin/{applet}"] = ("symlink", "busybox")
    return files


def build_linux_initramfs(kernel_path: str, module_tree: str | None, busybox: str | None, modules=None) -> bytes:
    from .initramfs import DEFAULT_MODULES, build_initramfs, resolve_modules
    from .x86.platform import software_kvm

    with open(linux_init_path(), "rb") as f:
        init = f.read()
    # unsigned on a software KVM: each signature check is an RSA verification in emulated ring 0
    chosen = resolve_modules(module_tree, modules or DEFAULT_MODULES, strip_signatures=software_kvm()) if module_tree else []
    return build_initramfs(init, chosen, busybox_files(busybox) if busybox else None)


def encode_command(argv: list[str]) -> str:
    """vmm.cmd=...: base64 of each argument NUL-terminated (the kernel command line has no quoting)."""
    if not argv:
        raise ConfigError("vmm linux needs a command after --")
    raw = b"".join(os.fsencode(arg) + b"\0" for arg in argv)
    if any(b"\0" in os.fsencode(arg) for arg in argv):
        raise ConfigError("a command argument contains a NUL byte")
    import base64  # here, not at the top: `vmm run` imports this module for its parser

    return base64.b64encode(raw).decode("ascii")


def linux_cmdline(argv: list[str], root: str | None = None, extra: str | None = None) -> str:
    parts = [BASE_CMDLINE]
    if extra:
        parts.append(extra)
    if root:
        parts.append(f"vmm.root={root}")
    parts.append(f"vmm.cmd={encode_command(argv)}")
    return " ".join(parts)


def extract_vmlinux(bzimage: str, cache_dir: str | None = None) -> str:
    """The ELF kernel inside ``bzimage`` (unpacked as boot/unpack.py does), written once
    beside it, or in ``cache_dir``, as vmlinux-NAME; returns its path. Debian's has a
    PVH entry note, so it boots by PVH."""
    from .boot.linux import BzImage
    from .boot.protocol import _read_within
    from .errors import KernelImageError

    name = os.path.basename(bzimage).replace("vmlinuz", "vmlinux", 1)
    if name == os.path.basename(bzimage):
        name = f"vmlinux-{name}"
    target = os.path.join(cache_dir or os.path.dirname(os.path.abspath(bzimage)), name)
    if os.path.exists(target) and os.path.getmtime(target) >= os.path.getmtime(bzimage):
        return target
    image = BzImage(bzimage, _read_within(bzimage, "kernel", KernelImageError, 1 << 30))
    hdr = image.hdr
    if hdr.version < 0x208 or not hdr.payload_length:
        raise KernelImageError(f"{bzimage}: no payload fields: cannot unpack a vmlinux from it")
    from .boot.unpack import decompress_payload

    elf = decompress_payload(image.kernel[hdr.payload_offset : hdr.payload_offset + hdr.payload_length])
    if elf is None:
        raise KernelImageError(f"{bzimage}: compressed in a format vmm does not unpack")
    partial = f"{target}.part{os.getpid()}"
    with open(partial, "wb") as f:
        f.write(elf)
    os.replace(partial, target)
    return target


def linux_config(args):
    """The VmConfig for `vmm linux` arguments."""
    from .config import VmConfig

    if args.initrd:
        initrd = args.initrd
    else:
        tree = args.modules if args.modules else default_module_tree(args.kernel)
        if args.modules and not os.path.isdir(args.modules):
            raise ConfigError(f"--modules {args.modules}: not a directory")
        busybox = None if args.no_busybox else static_busybox()
        initrd = build_linux_initramfs(args.kernel, tree, busybox)
    kernel = extract_vmlinux(args.kernel) if args.pvh else args.kernel
    return VmConfig(
        kernel=kernel,
        cmdline=linux_cmdline(args.guest_command, args.root, args.append),
        initrd=initrd,
        mem_mib=args.mem,
        timeout=args.timeout,
        serial_log=args.serial_log,
        devices=tuple(args.disk),
        vcpus=args.cpus,
    )


# --- the `vmm linux` command -------------------------------------------------
def add_parser(commands) -> None:
    """The `linux` subcommand."""
    from .arguments import count, disk, mib, seconds

    linux = commands.add_parser("linux", help="boot a Linux kernel, run one command in it, return its exit status")
    linux.add_argument("--kernel", metavar="K", required=True, help="Linux bzImage (or vmlinux with a PVH note)")
    linux.add_argument("--pvh", action="store_true", help="boot the vmlinux inside the bzImage by PVH (unpacked once, beside it)")
    linux.add_argument("--initrd", metavar="I", help="boot this initramfs instead of building one (it must run the command itself)")
    linux.add_argument("--modules", metavar="DIR", help="the kernel's /lib/modules/VERSION tree (default: lib/modules/VERSION beside a vmlinuz-VERSION)")
    linux.add_argument("--no-busybox", action="store_true", help="leave the host's static busybox out of the initramfs")
    linux.add_argument("--disk", metavar="PATH[,ro]", type=disk, action="append", default=[], help="a virtio-blk disk (repeatable): /dev/vda, /dev/vdb...")
    linux.add_argument("--root", metavar="DEV", help="mount DEV (ext4, e.g. /dev/vda) and run the command inside it")
    linux.add_argument("--append", metavar="STR", help="more kernel command line")
    linux.add_argument("--cpus", metavar="N", type=count, default=1, help="vCPUs (default 1)")
    linux.add_argument("--mem", metavar="MIB", type=mib, default=256, help="guest RAM in MiB (default 256)")
    linux.add_argument("--timeout", metavar="S", type=seconds, help="stop the guest after S seconds")
    linux.add_argument("--serial-log", metavar="PATH", help="also append serial output to PATH")
    linux.add_argument("--stats", action="store_true", help="print the boot protocol, VM exit counts and instruction fallbacks on stderr")
    from .cli_parser import add_seccomp_option

    add_seccomp_option(linux)
    linux.add_argument("guest_command", nargs="+", metavar="CMD", help="the command to run in the guest, after --, with its arguments")
    linux.set_defaults(snapshot_path=None, mem_file_path=None)  # cmd_run's snapshot trigger: off here


def cmd_linux(args) -> int:
    from .cli import cmd_run

    args.exit_code_style = "vmm"
    args.command_must_finish = True
    args.snapshot_path = args.mem_file_path = None  # cmd_run's snapshot trigger: vmm linux has no snapshot options
    return cmd_run(args, linux_config(args))
