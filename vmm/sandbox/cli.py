"""`vmm exec`: run a static Linux program in a throwaway microVM, as a command.

Statuses follow timeout(1) and `docker run`: the program's own status; 128+N
when signal N ended it; 124 when --timeout passed; 125 when the sandbox
itself failed; 126 when the program cannot run (not ELF, not x86-64,
dynamically linked); 127 when it is not found. Bad options: one line and 2,
as everywhere in vmm.
"""

from __future__ import annotations

import os
import sys

from ..arguments import SECCOMP, Option, Parsed, count, mib, parse_line, seconds
from ..jail import OPTIONS as JAIL_OPTIONS

EXEC_TIMEOUT, EXEC_SANDBOX_FAILED = 124, 125

OPTIONS = (
    Option("--mem", metavar="MIB", type=mib, default=128, help="guest RAM in MiB (default 128): bounds the program's memory and its files"),
    Option("--timeout", metavar="S", type=seconds, help="stop the program after S seconds (status 124)"),
    Option("--in", dest="inputs", metavar="HOST[:GUEST]", action="append",
           help="a host file or directory, read-only in the sandbox at GUEST (default: /NAME, beside the working directory /)"),
    Option("--out-dir", metavar="DIR", help="where to put what the program leaves under /out (safely: nothing escapes DIR)"),
    Option("--rootfs", metavar="IMAGE|DIR", help="a whole read-only root file system (a directory, or a ustar image from vmm mkdisk)"),
    Option("--env", metavar="K=V", action="append", help="an environment variable (repeatable; default: PATH and HOME only)"),
    Option("--cwd", metavar="DIR", default="/", help="the program's working directory (default /)"),
    Option("--trace", action="store_true", help="print each system call on stderr, strace style"),
    Option("--max-output", metavar="BYTES", type=count, help="cut stdout and stderr after this many bytes each (with a note)"),
    Option("--deterministic", action="store_true", help="a fixed start time and seeded random numbers: the same run every time"),
    Option("--seed", metavar="N", type=count, help="the seed for --deterministic (default: a fresh one, printed)"),
    Option("--stats", action="store_true", help="print the VM exit counts on stderr when the sandbox ends"),
    # By default the program runs in a clone of a snapshot of the booted guest,
    # kept on disk by the first run (vmm/sandbox/image_cache.py): no guest boot.
    Option("--cold", dest="warm", action="store_false", default=None, group="how",
           help="boot a fresh guest for the program instead of restoring the kept snapshot of a booted one"),
    Option("--warm", dest="warm", action="store_true", default=None, group="how",
           help="restore a snapshot of the booted guest (the default; not with --jail, which boots)"),
    SECCOMP,
    *JAIL_OPTIONS,
)


def add_parser(commands) -> None:
    """The `exec` subcommand's argparse parser (what parse_plain does not read)."""
    import argparse

    from ..arguments import add_options

    p = commands.add_parser(
        "exec",
        help="run a static x86-64 Linux program in a throwaway microVM",
        description="Run PROGRAM (a static x86-64 Linux ELF: from --rootfs, or the host's PATH) in a fresh microVM. "
        "Its stdin, stdout and stderr are this command's; its status is this command's.",
    )
    add_options(p, OPTIONS)
    p.add_argument("program", metavar="PROGRAM", help="the program (after --)")
    p.add_argument("args", metavar="ARGS", nargs=argparse.REMAINDER, help="its arguments (everything after PROGRAM)")


def parse_plain(argv: list[str]) -> Parsed | None:
    """`vmm exec`'s arguments (``argv`` after "exec") without argparse, or None where
    argparse must parse them (vmm/arguments.py)."""
    values = parse_line(argv, OPTIONS, program=True)
    return None if values is None else Parsed(command="exec", **values)


def _inputs(specs: list[str]) -> dict[str, str]:
    from ..errors import ConfigError

    files: dict[str, str] = {}
    for spec in specs:
        host, sep, guest = spec.rpartition(":") if ":" in spec else (spec, "", "")
        if not sep:
            host, guest = spec, ""
        if not host:
            raise ConfigError(f"--in {spec!r}: no host path")
        if not os.path.exists(host):
            raise ConfigError(f"--in {host}: no such file or directory")
        guest = guest or "/" + os.path.basename(os.path.normpath(host))
        if not guest.startswith("/"):
            guest = "/" + guest
        files[guest] = host
    return files


def _environment(pairs: list[str]) -> dict[str, str]:
    from ..errors import ConfigError

    env = {"PATH": "/bin:/usr/bin", "HOME": "/tmp"}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env {pair!r}: expected K=V")
        env[key] = value
    return env


class _Limited:
    """Writes a stream to an fd as it comes, cut after ``limit`` bytes."""

    def __init__(self, fd: int, limit: int | None):
        self.fd, self.limit, self.written, self.cut = fd, limit, 0, 0

    def __call__(self, data: bytes) -> None:
        from ..console import write_all

        if self.limit is not None:
            room = max(self.limit - self.written, 0)
            self.cut += max(len(data) - room, 0)
            data = data[:room]
        if data:
            write_all(self.fd, data)
            self.written += len(data)


def cmd_exec(args) -> int:
    warm = args.warm if args.warm is not None else not args.jail  # the jail's root has no snapshot
    if not args.jail:  # (a jailed run opens KVM in its namespace, and boots)
        from ..builder import open_kvm_ahead

        open_kvm_ahead()  # KVM opened and the VM created while the imports below run
        if warm:
            from .image_cache import start_source_identity

            start_source_identity()  # the kept snapshot's key: walked while the imports below run
    from ..jail import JailError, jail_exec
    from . import runner

    if args.jail and args.warm:
        from ..errors import ConfigError

        raise ConfigError("--warm cannot be combined with --jail: the jail's empty root has no snapshot to restore "
                          "(a jailed vmm exec boots the guest)")
    stdout, stderr = _Limited(1, args.max_output), _Limited(2, args.max_output)
    inputs = _inputs(args.inputs)
    try:  # --jail (vmm/jail.py): namespaces, an empty root, no capabilities; /out is extracted inside it
        jail_exec(args, inputs, runner.DEFAULT_MAX_OUT_BYTES)
    except JailError as err:
        print(f"vmm: {err}", file=sys.stderr)
        return EXEC_SANDBOX_FAILED
    try:
        result = runner.run_program(
            [args.program, *args.args],
            timeout=args.timeout,
            files=inputs,
            env=_environment(args.env),
            mem_mib=args.mem,
            capture_output=False,
            out_dir=args.out_dir,
            seed=args.seed,
            deterministic=args.deterministic or args.seed is not None,
            trace=args.trace,
            on_stdout=stdout,
            on_stderr=stderr,
            stdin_fd=0,
            rootfs=args.rootfs,
            cwd=args.cwd,
            warm=warm,
        )
    except runner.ProgramTimeout:
        print(f"vmm: {args.program}: timed out after {args.timeout:g} s", file=sys.stderr)
        return EXEC_TIMEOUT
    except runner.ProgramError as err:
        print(f"vmm: {err}", file=sys.stderr)
        return err.exit_status
    except runner.SandboxError as err:
        print(f"vmm: {err}", file=sys.stderr)
        return EXEC_SANDBOX_FAILED
    for sink, name in ((stdout, "stdout"), (stderr, "stderr")):
        if sink.cut:
            print(f"vmm: {name} cut at {args.max_output} bytes ({sink.cut} more bytes dropped)", file=sys.stderr)
    for note in result.notes:
        print(f"vmm: {note}", file=sys.stderr)
    if args.stats:
        print("vmm: exits: " + ", ".join(f"{name} {n}" for name, n in result.exits.items()), file=sys.stderr)
    if result.seed is not None and args.seed is None and args.deterministic:
        print(f"vmm: seed {result.seed} (--seed {result.seed} repeats this run)", file=sys.stderr)
    if result.signal is not None:
        print(f"vmm: {args.program}: killed by signal {result.signal} (fault address 0x{result.fault_addr:x})", file=sys.stderr)
        return 128 + result.signal
    return result.returncode
