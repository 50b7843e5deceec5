"""The `vmm` command: argument parsing, terminal plumbing and exit statuses.

Every failure reaches the user as one line, `vmm: <message>`, and a status:
2 for bad input, the guest's own status (0-127) when it powers off, and the
VMM's statuses from vmm.errors otherwise. Never a traceback.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys

from .config import DEFAULT_MEM_MIB, DiskConfig, VmConfig, check_cmdline, check_timeout
from .console import HELP, EscapeFilter, RawTerminal, write_all
from .errors import EXIT_USAGE, ConfigError, VmmError

BENCH_CASES = ("boot", "exits", "serial", "blk", "blk-busy", "memory", "density", "snapshot", "exec")
INPUT_BACKLOG_LIMIT = 1 << 16  # stop reading stdin while this much waits for the guest
EXIT_CODE_STYLES = ("vmm", "qemu")
QEMU_STYLE_TIMEOUT = 124  # timeout(1)'s status


def _help_width() -> int:
    """What shutil.get_terminal_size() gives argparse, without importing shutil."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 80
    return max(columns - 2, 20)


class _Formatter(argparse.HelpFormatter):
    # The default formatter imports shutil for the terminal width, and argparse
    # builds one on every add_argument: ~2 ms of each vmm start.
    def __init__(self, prog: str, **kwargs):
        kwargs.setdefault("width", _help_width())
        super().__init__(prog, **kwargs)


def one_line(message: str) -> str:
    """``message`` with anything that is not printable escaped: user input (a path,
    a command line) may hold newlines, control characters or undecodable bytes,
    and an error must stay one line."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii") for c in message)


def print_error(message: str) -> None:
    print(f"vmm: {one_line(message)}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"vmm: {one_line(message)} (see 'vmm --help')\n")


def _decimal(text: str) -> int | None:
    """A plain decimal number (ASCII digits only: no sign, base prefix, '_' or spaces), or None."""
    return int(text) if text.isascii() and text.isdigit() else None


def _count(text: str) -> int:
    value = _decimal(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


_SIZE_SUFFIXES = {"": 1, "M": 1, "G": 1024}


def _mib(text: str) -> int:
    """A size in MiB: decimal digits, optionally followed by M (MiB) or G (GiB)."""
    suffix = text[-1:].upper() if text[-1:].upper() in ("M", "G") else ""
    value = _decimal(text[: len(text) - len(suffix)])
    if value is None:
        raise argparse.ArgumentTypeError(f"not a whole number of MiB: {text!r} (decimal, optionally with M or G: 512, 512M, 2G)")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value * _SIZE_SUFFIXES[suffix]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    try:
        return check_timeout(value)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _cmdline(text: str) -> str:
    try:
        check_cmdline(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _disk(text: str) -> DiskConfig:
    """PATH[,ro|,rw]; a comma inside PATH is written twice (a,,b.img), as QEMU does."""
    path, i = [], 0
    while i < len(text) and not (text[i] == "," and text[i + 1 : i + 2] != ","):
        path.append(text[i])
        i += 2 if text[i] == "," else 1
    options = text[i + 1 :] if i < len(text) else ""
    if not path:
        raise argparse.ArgumentTypeError("empty disk path")
    if i < len(text) and options not in ("ro", "rw"):
        raise argparse.ArgumentTypeError(
            f"unknown disk option {options!r} (use PATH, PATH,ro or PATH,rw; write a comma in PATH as ',,')"
        )
    return DiskConfig("".join(path), read_only=options == "ro")


# Each subcommand: its one-line help, and what adds its parser. Only the
# command being run gets its arguments defined: argparse's add_argument calls
# for every command cost ~2.5 ms of each start (a tenth of `vmm run`'s).
_COMMANDS = {
    "run": "boot a guest with its serial console on this terminal",
    "exec": "run a static x86-64 Linux program in a throwaway microVM",
    "linux": "boot a Linux kernel, run one command in it, return its exit status",
    "restore": "restore a snapshot and run it with its serial console on this terminal",
    "merge-diff": "lay a diff snapshot's memory file onto its base's memory file",
    "serve": "serve Firecracker's REST API for one microVM on a Unix socket",
    "mkdisk": "make a disk image holding a directory as a ustar archive",
    "bench": "measure vmm against QEMU microvm and the bare KVM floor",
    "doctor": "check that this host can run vmm, and print the fix for each problem",
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the command it names gets its arguments."""
    # argparse passes each of its own messages through gettext, which looks for
    # a catalog on disk every time (~30 lookups, 1-10 ms of every start); Python
    # ships none for argparse, so the messages are English either way.
    argparse._ = str
    parser = _Parser(prog="vmm", description="A minimal KVM virtual machine monitor.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    named = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    full = named not in _COMMANDS
    for name, help_text in _COMMANDS.items():
        if full or name == named:
            _ADD_COMMAND[name](commands)
        else:
            commands.add_parser(name, help=help_text)
    return parser


def _add_run(commands) -> None:
    run = commands.add_parser("run", help=_COMMANDS["run"])
    run.add_argument("--kernel", metavar="FILE", help="kernel: a PVH ELF, a Multiboot v1 image or a Linux bzImage (default: the bundled guest)")
    run.add_argument("--cmdline", metavar="STR", type=_cmdline, help="kernel command line, UTF-8, at most 2047 bytes with the VMM's disk entries (default: console=ttyS0)")
    run.add_argument("--initrd", metavar="PATH", help="initial ramdisk: the first PVH or Multiboot module, or Linux's initrd")
    run.add_argument("--mem", metavar="MIB", type=_mib, default=DEFAULT_MEM_MIB, help=f"guest RAM in MiB, decimal, or with a G suffix in GiB (default {DEFAULT_MEM_MIB})")
    run.add_argument("--cpus", metavar="N", type=_count, default=1, help="vCPUs, each on a thread of its own (default 1; the bundled guest runs on the first)")
    run.add_argument("--timeout", metavar="S", type=_seconds, help="stop the guest after S seconds (at most a year)")
    run.add_argument("--serial-log", metavar="PATH", help="also append serial output to PATH")
    run.add_argument("--disk", metavar="PATH[,ro]", type=_disk, action="append", default=[], help="a virtio-blk disk backed by PATH (repeatable); ',ro' makes it read-only; write a comma in PATH as ',,'")
    run.add_argument("--no-ioeventfd", dest="ioeventfd", action="store_false", help="handle virtio queue notifications on the vCPU thread, always (default: by ioeventfd on an I/O thread, moving a queue to the vCPU thread while that thread is late for it)")
    run.add_argument("--stats", action="store_true", help="print the boot protocol found and the VM exit counts on stderr when the VM stops")
    run.add_argument("--exit-code-style", choices=EXIT_CODE_STYLES, default="vmm", help="vmm: the guest's status as is; qemu: as QEMU's isa-debug-exit reports it, (status << 1) | 1, and 124 for --timeout")
    _add_snapshot_options(run)
    _add_jail_options(run)
    add_seccomp_option(run)


def _add_jail_options(parser) -> None:
    from .jail import add_options

    add_options(parser, _mib, default=False)


def _add_restore(commands) -> None:
    restore = commands.add_parser("restore", help=_COMMANDS["restore"])
    restore.add_argument("state", metavar="STATE", help="the snapshot's state file")
    restore.add_argument("mem", metavar="MEM", help="its memory file (a diff's pages merged onto its base: vmm merge-diff)")
    restore.add_argument("--timeout", metavar="S", type=_seconds, help="stop the guest after S seconds of running (at most a year)")
    restore.add_argument("--serial-log", metavar="PATH", help="also append serial output to PATH")
    restore.add_argument("--allow-disk-change", action="store_true", help="restore even if a disk changed since the snapshot (its guest may then corrupt it)")
    restore.add_argument("--stats", action="store_true", help="print the VM exit counts on stderr when the VM stops")
    restore.add_argument("--exit-code-style", choices=EXIT_CODE_STYLES, default="vmm", help="as for vmm run")
    _add_snapshot_options(restore)
    _add_jail_options(restore)
    add_seccomp_option(restore)


def _add_merge_diff(commands) -> None:
    merge = commands.add_parser("merge-diff", help=_COMMANDS["merge-diff"])
    merge.add_argument("diff", metavar="DIFF_MEM")
    merge.add_argument("base", metavar="BASE_MEM")


def _add_mkdisk(commands) -> None:
    mkdisk = commands.add_parser("mkdisk", help=_COMMANDS["mkdisk"])
    mkdisk.add_argument("directory", metavar="DIR")
    mkdisk.add_argument("-o", "--output", metavar="IMAGE", required=True, help="the image file to write")
    mkdisk.add_argument("--size", metavar="MIB", type=_mib, help="pad the image to MIB MiB (default: the archive plus 1 MiB, rounded up)")


def _add_bench(commands) -> None:
    bench = commands.add_parser("bench", help=_COMMANDS["bench"])
    bench.add_argument("cases", nargs="*", metavar="CASE", help=f"cases to run: {', '.join(BENCH_CASES)} (default: all); or linux alone (Linux boot times, beside QEMU; make bench runs it too)")
    bench.add_argument("--rounds", type=_count, help="rounds per case and contender (default 3; 1 with --quick)")
    bench.add_argument("--quick", action="store_true", help="small sizes and one round: a smoke run")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def _add_exec(commands) -> None:
    from .sandbox.cli import add_parser

    add_parser(commands, {"mib": _mib, "seconds": _seconds, "count": _count})
    from .jail import add_options

    add_options(commands.choices["exec"], _mib, default=False)


def _add_serve(commands) -> None:
    from .api.cli import add_parser  # Firecracker's API on a Unix socket (vmm/api/)

    add_parser(commands)


def _add_linux(commands) -> None:
    from .linux_cmd import add_parser

    add_parser(commands, {"mib": _mib, "seconds": _seconds, "count": _count, "disk": _disk})
    _add_jail_options(commands.choices["linux"])


def _add_doctor(commands) -> None:
    doctor = commands.add_parser("doctor", help=_COMMANDS["doctor"])
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")


_ADD_COMMAND = {
    "run": _add_run, "exec": _add_exec, "linux": _add_linux, "restore": _add_restore, "merge-diff": _add_merge_diff,
    "serve": _add_serve, "mkdisk": _add_mkdisk, "bench": _add_bench, "doctor": _add_doctor,
}


def filter_main_thread() -> None:
    """The VM runs: the main thread's seccomp filter, where the process switch is
    on (vmm/seccomp.py), and the end of the command's start-up (vmm/startup.py)."""
    from .seccomp import filter_main_thread
    from .startup import resume_collection

    filter_main_thread()
    resume_collection()


def add_seccomp_option(parser) -> None:
    """--no-seccomp, for the commands that run a VM (vmm/seccomp.py)."""
    parser.add_argument("--no-seccomp", dest="seccomp", action="store_false",
                        help="no per-thread seccomp filters (default: each vmm thread may make only the system calls it needs)")


def _add_snapshot_options(parser) -> None:
    parser.add_argument("--snapshot-path", metavar="STATE", help="where SIGUSR1, SIGUSR2 or C-a s write a snapshot's state file")
    parser.add_argument("--mem-file-path", metavar="MEM", help="where they write its memory file")


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

    def terminate(signum, frame):
        vm.stop(VmOutcome(128 + signum, StopReason.QUIT, f"stopped by signal {signal.Signals(signum).name}"))

    previous = {sig: signal.signal(sig, terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        previous.update(snapshots.install())
        with RawTerminal(0):
            if vm.paused:
                vm.resume()
            else:
                vm.start()
            filter_main_thread()  # the vCPU and I/O threads run: from here on, the main thread's list
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


def main(argv: list[str] | None = None, *, lock_down: bool = False) -> int:
    """Run one vmm command. ``lock_down`` (the `vmm` command itself) turns on the
    process-wide seccomp switch unless --no-seccomp: it filters the calling
    thread too, so an application or test calling main() in-process keeps it off."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
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
