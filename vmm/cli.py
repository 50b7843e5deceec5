"""The `vmm` command: running each command, terminal plumbing and exit statuses
(its parser: vmm/cli_parser.py, vmm/arguments.py).

Every failure reaches the user as one line, `vmm: <message>`, and a status:
2 for bad input, the guest's own status (0-127) when it powers off, and the
VMM's statuses from vmm.errors otherwise. Never a traceback.
"""

from __future__ import annotations

import os
import select
import sys

from .arguments import SECCOMP, Option, Parsed, cmdline, count, disk, mib, parse_line, seconds
from .config import DEFAULT_MEM_MIB, VmConfig
from .console import HELP, EscapeFilter, RawTerminal, write_all
from .errors import ConfigError, VmmError
from .jail import OPTIONS as JAIL_OPTIONS
from .startup import vm_running

BENCH_CASES = ("boot", "exits", "serial", "blk", "blk-busy", "memory", "density", "snapshot", "exec")
INPUT_BACKLOG_LIMIT = 1 << 16  # stop reading stdin while this much waits for the guest
EXIT_CODE_STYLES = ("vmm", "qemu")
QEMU_STYLE_TIMEOUT = 124  # timeout(1)'s status


# vmm run's and vmm restore's: SIGUSR1/SIGUSR2 or C-a s take a snapshot (_SnapshotTrigger)
SNAPSHOT_OPTIONS = (
    Option("--snapshot-path", metavar="STATE", help="where SIGUSR1, SIGUSR2 or C-a s write a snapshot's state file"),
    Option("--mem-file-path", metavar="MEM", help="where they write its memory file"),
)


# vmm run's, for its argparse parser (vmm/cli_parser.py) and read without it (vmm/arguments.py)
RUN_OPTIONS = (
    Option("--kernel", metavar="FILE", help="kernel: a PVH ELF, a Multiboot v1 image or a Linux bzImage (default: the bundled guest)"),
    Option("--cmdline", metavar="STR", type=cmdline, help="kernel command line, UTF-8, at most 2047 bytes with the VMM's disk entries (default: console=ttyS0)"),
    Option("--initrd", metavar="PATH", help="initial ramdisk: the first PVH or Multiboot module, or Linux's initrd"),
    Option("--mem", metavar="MIB", type=mib, default=DEFAULT_MEM_MIB, help=f"guest RAM in MiB, decimal, or with a G suffix in GiB (default {DEFAULT_MEM_MIB})"),
    Option("--cpus", metavar="N", type=count, default=1, help="vCPUs, each on a thread of its own (default 1; the bundled guest runs on the first)"),
    Option("--timeout", metavar="S", type=seconds, help="stop the guest after S seconds (at most a year)"),
    Option("--serial-log", metavar="PATH", help="also append serial output to PATH"),
    Option("--disk", metavar="PATH[,ro]", type=disk, action="append", help="a virtio-blk disk backed by PATH (repeatable); ',ro' makes it read-only; write a comma in PATH as ',,'"),
    Option("--no-ioeventfd", dest="ioeventfd", action="store_false", help="handle virtio queue notifications on the vCPU thread, always (default: by ioeventfd on an I/O thread, moving a queue to the vCPU thread while that thread is late for it)"),
    Option("--stats", action="store_true", help="print the boot protocol found and the VM exit counts on stderr when the VM stops"),
    Option("--exit-code-style", choices=EXIT_CODE_STYLES, default="vmm", help="vmm: the guest's status as is; qemu: as QEMU's isa-debug-exit reports it, (status << 1) | 1, and 124 for --timeout"),
    *SNAPSHOT_OPTIONS,
    *JAIL_OPTIONS,
    SECCOMP,
)



def one_line(message: str) -> str:
    """``message`` with anything that is not printable escaped: user input (a path,
    a command line) may hold newlines, control characters or undecodable bytes,
    and an error must stay one line."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii") for c in message)


def print_error(message: str) -> None:
    print(f"vmm: {one_line(message)}", file=sys.stderr)


def _signals():
    """The signal module's functions without its IntEnum wrappers, which import enum
    (~2.5 ms of every `vmm run` start). Every handler is set and restored through
    it, so a previous handler comes back as the plain value it takes."""
    import _signal

    return _signal


class _SnapshotTrigger:
    """SIGUSR1: snapshot and go on; SIGUSR2: snapshot and stop (status 0); C-a s as SIGUSR1.
    The handler only sets a flag: the input loop takes the snapshot."""

    def __init__(self, args):
        self.state, self.mem = args.snapshot_path, args.mem_file_path
        if (self.state is None) != (self.mem is None):
            raise ConfigError("--snapshot-path and --mem-file-path go together")
        self.taken = 0
        self.pending: str | None = None  # "continue" or "stop"

    @property
    def enabled(self) -> bool:
        return self.state is not None

    def install(self) -> dict:
        if not self.enabled:
            return {}
        signal = _signals()

        def on_signal(signum, frame):
            self.pending = "stop" if signum == signal.SIGUSR2 else "continue"

        return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGUSR1, signal.SIGUSR2)}

    def run(self, vm) -> None:
        """Take the pending snapshot, if any (on the main thread)."""
        what, self.pending = self.pending, None
        if what is None or vm.is_finished():
            return
        from .persist import snapshot

        vm.pause()
        try:
            snapshot(vm, self.state, self.mem)  # full: diffs (Python API) need a file per snapshot
            self.taken += 1
            print_error(f"snapshot written to {self.state} and {self.mem}")
        except VmmError as err:
            print_error(f"snapshot failed: {err}")
        if what == "stop":
            from .machine import StopReason, VmOutcome

            vm.stop(VmOutcome(0, StopReason.QUIT, "stopped after a snapshot"))
        else:
            vm.resume()


def _config(args) -> VmConfig:
    return VmConfig(
        kernel=args.kernel,
        cmdline=args.cmdline,
        initrd=args.initrd,
        mem_mib=args.mem,
        vcpus=args.cpus,
        timeout=args.timeout,
        serial_log=args.serial_log,
        devices=tuple(args.disk),
        ioeventfd=args.ioeventfd,
    )


def _pump_input(vm, interactive: bool, snapshots: _SnapshotTrigger | None = None) -> None:
    """Feed stdin to the guest until the VM stops; handle the Ctrl-A escape on a tty."""
    escape = EscapeFilter()
    stdin_open = True
    while not vm.is_finished():
        if snapshots is not None and snapshots.pending:
            snapshots.run(vm)
            continue
        watch = [vm.finished_fd]
        if stdin_open and vm.input_backlog < INPUT_BACKLOG_LIMIT:
            watch.append(0)
        ready, _, _ = select.select(watch, [], [], 0.2)
        if 0 not in ready:
            if stdin_open and vm.input_backlog >= INPUT_BACKLOG_LIMIT:
                vm.wait_input_space(0.2)
            continue
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if not data:
            stdin_open = False
            continue
        commands: list[str] = []
        if interactive:
            data, commands = escape.feed(data)
        if data:
            vm.send(data)
        if "help" in commands:
            write_all(1, HELP.encode())
        if "snapshot" in commands:
            if snapshots is not None and snapshots.enabled:
                snapshots.pending = "continue"
            else:
                write_all(1, b"\r\nvmm: no snapshot paths: start with --snapshot-path and --mem-file-path\r\n")
        if "quit" in commands:
            vm.stop()


def cmd_run(args, config: VmConfig | None = None) -> int:
    from .machine import MicroVM

    snapshots = _SnapshotTrigger(args)
    config = config or _config(args)
    if getattr(args, "jail", None) is not None:  # --jail: namespaces, an empty root, no capabilities (vmm/jail.py)
        from .jail import jail_vm

        jail_vm(args, config, snapshots.state, snapshots.mem)
    # MicroVM() refuses unloadable inputs (a device as kernel, an initrd too
    # big for the guest) before it reads them or touches KVM.
    vm = MicroVM(config, output_fd=1, capture=False)
    return _run_on_terminal(vm, args, snapshots)


def cmd_restore(args) -> int:
    from .persist import restore

    snapshots = _SnapshotTrigger(args)
    from .jail import jail_restore

    jail_restore(args)
    vm = restore(args.state, args.mem, resume=False, allow_disk_change=args.allow_disk_change,
                 timeout=args.timeout, serial_log=args.serial_log, output_fd=1, capture=False)
    return _run_on_terminal(vm, args, snapshots)


def _run_on_terminal(vm, args, snapshots: _SnapshotTrigger) -> int:
    """Run ``vm`` (new, or restored and paused) with its console on this terminal until it stops."""
    from .machine import StopReason, VmOutcome

    interactive = os.isatty(0)
    signal = _signals()
    names = {signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}

    def terminate(signum, frame):
        vm.stop(VmOutcome(128 + signum, StopReason.QUIT, f"stopped by signal {names[signum]}"))

    previous = {sig: signal.signal(sig, terminate) for sig in names}
    try:
        previous.update(snapshots.install())
        with RawTerminal(0):
            if vm.paused:
                vm.resume()
            else:
                vm.start()
            vm_running()  # the vCPU and I/O threads run: from here on, the main thread's list
            try:
                _pump_input(vm, interactive, snapshots)
            except KeyboardInterrupt:
                vm.stop(VmOutcome(130, StopReason.QUIT, "interrupted"))
            outcome = vm.wait()
    finally:
        vm.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if interactive:
        write_all(1, b"\r\n")
    if args.stats:
        counts = ", ".join(f"{name} {n}" for name, n in vm.exit_summary().items())
        print(f"vmm: boot: {vm.boot_protocol}", file=sys.stderr)  # "snapshot" for vmm restore
        print(f"vmm: exits: {counts}", file=sys.stderr)
        fallbacks: dict[str, int] = {}
        for thread in vm.vcpus:
            for name, n in thread.fallback_counts.items():
                fallbacks[name] = fallbacks.get(name, 0) + n
        if fallbacks:
            print("vmm: carried out for the emulator: " + ", ".join(f"{name} {n}" for name, n in sorted(fallbacks.items())), file=sys.stderr)
        misses = vm.unhandled_accesses
        if any(misses.values()):
            print(f"vmm: accesses that hit no device: port I/O {misses['pio']}, MMIO {misses['mmio']}", file=sys.stderr)
    if outcome.reason != "poweroff" and outcome.message:
        print_error(outcome.message)
    if getattr(args, "command_must_finish", False) and outcome.reason == "reset":
        # `vmm linux`: the init powers off with the command's status; a reset
        # before that is a reboot or a panic (panic=-1 with reboot=k), never a success
        from .errors import EXIT_GUEST_CRASHED

        return EXIT_GUEST_CRASHED
    return exit_status(outcome, args.exit_code_style)


def exit_status(outcome, style: str = "vmm") -> int:
    """The command's status. QEMU style is what scripts written against QEMU's
    isa-debug-exit expect: (status << 1) | 1 for a guest power-off, and 124 for
    a timeout (what `timeout` returns around QEMU, as kvm-unit-tests reads it)."""
    if style == "qemu":
        if outcome.reason == "poweroff":
            return ((outcome.status << 1) | 1) & 0xFF
        if outcome.reason == "timeout":
            return QEMU_STYLE_TIMEOUT
    return outcome.status


def cmd_mkdisk(args) -> int:
    from .disk_image import build_disk_image

    size = build_disk_image(args.directory, args.output, args.size)
    # Names as the user gave them, even when not UTF-8 (argv is decoded with surrogateescape).
    line = b"%s: %d MiB ustar disk image of %s\n" % (os.fsencode(args.output), size >> 20, os.fsencode(args.directory))
    sys.stdout.flush()
    write_all(1, line)
    return 0


def cmd_bench(args) -> int:
    from .bench.compare import run_compare

    if args.cases == ["linux"]:  # Linux boots (minutes each here): only when asked for by name
        from .bench.linux import run

        return run(json_path=args.json)
    unknown = [case for case in args.cases if case not in BENCH_CASES]
    if unknown:
        raise ConfigError(f"unknown benchmark case {unknown[0]!r} (choose from {', '.join(BENCH_CASES)})")
    return run_compare(args.cases, args.rounds, args.quick, args.json)


def console_main() -> None:
    """The `vmm` command: main(), then out without the interpreter's own teardown.
    Every command has closed its VM and files by the time main returns; what
    is left (module and object teardown) took 5-15 ms here, a sixth of a
    `vmm exec` hello."""
    status = main(lock_down=True)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # a closed or broken pipe: nothing more can be said on it
    builder = sys.modules.get("vmm.builder")  # only where a VM was made
    if builder is not None:
        builder.hand_over_teardown()
    os._exit(status if isinstance(status, int) else 0)


def _parse(argv: list[str]):
    """The command line's arguments: a plain `vmm exec` or `vmm run` line without argparse (vmm/arguments.py)."""
    if argv[:1] == ["exec"]:
        from .sandbox.cli import parse_plain

        args = parse_plain(argv[1:])
        if args is not None:
            return args
    if argv[:1] == ["run"]:
        values = parse_line(argv[1:], RUN_OPTIONS, program=False)
        if values is not None:
            return Parsed(command="run", **values)
    from .cli_parser import build_parser

    return build_parser(argv).parse_args(argv)


def main(argv: list[str] | None = None, *, lock_down: bool = False) -> int:
    """Run one vmm command. ``lock_down`` (the `vmm` command itself) turns on the
    process-wide seccomp switch unless --no-seccomp: it filters the calling
    thread too, so an application or test calling main() in-process keeps it off."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    if args.command not in ("run", "exec", "restore", "linux"):  # these resume once their VM runs
        from .startup import resume_collection

        resume_collection()
    try:
        if lock_down and args.command in ("run", "exec"):
            from .builder import leave_teardown_to_exit

            leave_teardown_to_exit()  # console_main ends the process right after
        if lock_down and getattr(args, "seccomp", False):
            from .seccomp import VIOLATION_STATUS, enable

            enable(125 if args.command == "exec" else VIOLATION_STATUS)  # 125: `vmm exec`'s "the sandbox failed"
        if args.command == "serve":  # Firecracker's API socket (vmm/api/)
            from .api.cli import cmd_serve

            return cmd_serve(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "exec":
            from .sandbox.cli import cmd_exec

            return cmd_exec(args)
        if args.command == "restore":
            return cmd_restore(args)
        if args.command == "merge-diff":
            from .persist import merge_diff

            copied = merge_diff(args.diff, args.base)
            print(f"vmm: {copied} bytes of {args.diff} merged onto {args.base}", file=sys.stderr)
            return 0
        if args.command == "linux":
            from .linux_cmd import cmd_linux

            return cmd_linux(args)
        if args.command == "mkdisk":
            return cmd_mkdisk(args)
        if args.command == "doctor":
            from .doctor import run_doctor

            return run_doctor(args.json)
        return cmd_bench(args)
    except VmmError as err:
        print_error(str(err))
        return err.exit_status
    except KeyboardInterrupt:
        print("vmm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
