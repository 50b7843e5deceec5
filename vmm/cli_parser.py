"""The argparse parser of every `vmm` command (vmm/cli.py runs them).

Only the command being run gets its arguments defined, and a plain `vmm exec`
or `vmm run` line is read without argparse at all (vmm/arguments.py):
importing argparse, re and gettext and building a parser is ~5 ms, a seventh
of either command.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import arguments
from .arguments import count, mib, seconds
from .cli import BENCH_CASES, EXIT_CODE_STYLES, RUN_OPTIONS, SNAPSHOT_OPTIONS, one_line
from .errors import EXIT_USAGE
from .jail import OPTIONS as JAIL_OPTIONS


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


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"vmm: {one_line(message)} (see 'vmm --help')\n")


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
    arguments.add_options(commands.add_parser("run", help=_COMMANDS["run"]), RUN_OPTIONS)


def _add_jail_options(parser) -> None:
    arguments.add_options(parser, JAIL_OPTIONS)


def _add_restore(commands) -> None:
    restore = commands.add_parser("restore", help=_COMMANDS["restore"])
    restore.add_argument("state", metavar="STATE", help="the snapshot's state file")
    restore.add_argument("mem", metavar="MEM", help="its memory file (a diff's pages merged onto its base: vmm merge-diff)")
    restore.add_argument("--timeout", metavar="S", type=seconds, help="stop the guest after S seconds of running (at most a year)")
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
    mkdisk.add_argument("--size", metavar="MIB", type=mib, help="pad the image to MIB MiB (default: the archive plus 1 MiB, rounded up)")


def _add_bench(commands) -> None:
    bench = commands.add_parser("bench", help=_COMMANDS["bench"])
    bench.add_argument("cases", nargs="*", metavar="CASE", help=f"cases to run: {', '.join(BENCH_CASES)} (default: all); or linux alone (Linux boot times, beside QEMU; make bench runs it too)")
    bench.add_argument("--rounds", type=count, help="rounds per case and contender (default 3; 1 with --quick)")
    bench.add_argument("--quick", action="store_true", help="small sizes and one round: a smoke run")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def _add_exec(commands) -> None:
    from .sandbox.cli import add_parser

    add_parser(commands)


def _add_serve(commands) -> None:
    from .api.cli import add_parser  # Firecracker's API on a Unix socket (vmm/api/)

    add_parser(commands)


def _add_linux(commands) -> None:
    from .linux_cmd import add_parser

    add_parser(commands)
    _add_jail_options(commands.choices["linux"])


def _add_doctor(commands) -> None:
    doctor = commands.add_parser("doctor", help=_COMMANDS["doctor"])
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")


_ADD_COMMAND = {
    "run": _add_run, "exec": _add_exec, "linux": _add_linux, "restore": _add_restore, "merge-diff": _add_merge_diff,
    "serve": _add_serve, "mkdisk": _add_mkdisk, "bench": _add_bench, "doctor": _add_doctor,
}


def add_seccomp_option(parser) -> None:
    """--no-seccomp, for the commands that run a VM (vmm/seccomp.py)."""
    arguments.add_options(parser, [arguments.SECCOMP])


def _add_snapshot_options(parser) -> None:
    arguments.add_options(parser, SNAPSHOT_OPTIONS)
