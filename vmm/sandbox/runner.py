"""Run one static Linux program in a fresh microVM: the host side of the sandbox.

The program, its arguments, environment and input files travel into the VM
as a bundle (a ustar archive handed to the bundled guest as its PVH module,
vmm/sandbox/bundle.py). Its stdin, stdout and stderr travel over
virtio-console ports of those names; the guest reports the outcome, traced
syscalls and the program's /out on a fourth port, ``vmm.control``
(vmm/sandbox/control.py). The UART carries only the guest kernel's own log.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from ..config import VmConfig
from ..errors import ConfigError, VmmError
from ..outcome import StopReason
from . import program_cache
from .control import ControlParser
from .outdir import DEFAULT_MAX_OUT_BYTES, extract_out

DEFAULT_MEM_MIB = 128
DEFAULT_MAX_OUTPUT = 64 << 20  # bytes kept per stream; the rest is cut, with a note
PORTS = ("stdin", "stdout", "stderr", "vmm.control")
STDIN, STDOUT, STDERR, CONTROL = range(4)
GUEST_LOG_LIMIT = 64 << 10  # the guest kernel's serial log, kept for error messages

# Statuses of `vmm exec`, after timeout(1) and `docker run`.
EXEC_TIMEOUT = 124
EXEC_SANDBOX_FAILED = 125
EXEC_CANNOT_RUN = 126
EXEC_NOT_FOUND = 127


class SandboxError(VmmError):
    """The sandbox itself failed (not the program)."""

    exit_status = EXEC_SANDBOX_FAILED


class RestoreError(SandboxError):
    """The warm snapshot would not restore (before anything ran)."""


class ProgramError(VmmError):
    """The program cannot run: not found (127) or not a static x86-64 ELF (126)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.exit_status = status


class ProgramTimeout(VmmError):
    """The program ran past its timeout (run() raises subprocess.TimeoutExpired instead)."""

    def __init__(self, args, timeout: float, stdout, stderr):
        super().__init__(f"{args[0]}: timed out after {timeout:g} s")
        self.cmd, self.timeout, self.stdout, self.stderr = args, timeout, stdout, stderr


class ProgramRun:
    """What run_program() reports: SandboxResult's fields, without subprocess
    (importing it costs `vmm exec` ~2.5 ms at a cold start)."""

    def __init__(self, args, stdout, stderr):
        self.args, self.stdout, self.stderr = args, stdout, stderr
        self.returncode: int | None = None
        init_extras(self)


def init_extras(result) -> None:
    """What a sandbox reports beyond subprocess's four fields (SandboxResult's doc says what each is)."""
    result.signal = None
    result.fault_addr = None
    result.out_files = []
    result.notes = []
    result.seed = None
    result.exits = {}
    result.elapsed = 0.0


def __getattr__(name: str):
    if name == "SandboxResult":  # subprocess.CompletedProcess's subclass: loaded when used
        from .result import SandboxResult

        return SandboxResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_program(program: str) -> str:
    """The host path of ``program``: as given when it has a slash, else from $PATH."""
    if "/" in program:
        path = program
    else:
        import shutil

        found = shutil.which(program)
        if found is None:
            raise ProgramError(f"{program}: not found", EXEC_NOT_FOUND)
        path = found
    if not os.path.exists(path):
        raise ProgramError(f"{program}: not found", EXEC_NOT_FOUND)
    if not os.path.isfile(path):
        raise ProgramError(f"{program}: not a regular file", EXEC_CANNOT_RUN)
    return path


ELF_HEADERS_READ = 1 << 16  # program headers past this are refused as malformed


def check_static_elf(path: str) -> None:
    """Refuse what the guest cannot run, saying which: not ELF, not x86-64, dynamic."""
    try:
        with open(path, "rb") as f:
            head = f.read(ELF_HEADERS_READ)
    except OSError as err:
        raise ProgramError(f"{path}: {err.strerror}", EXEC_CANNOT_RUN) from None
    check_static_elf_image(head, path)


def check_static_elf_image(image: bytes, name: str) -> None:
    """check_static_elf on the file's first bytes (at least its headers)."""
    import struct

    from ..boot.elf import Elf64Header, Elf64ProgramHeader

    if image[:4] != b"\x7fELF":
        raise ProgramError(f"{name}: not an ELF executable", EXEC_CANNOT_RUN)
    if len(image) < Elf64Header.size or image[4] != 2 or image[5] != 1:
        raise ProgramError(f"{name}: not a 64-bit little-endian ELF", EXEC_CANNOT_RUN)
    header = Elf64Header.unpack_from(image)
    if header.machine != 62:
        raise ProgramError(f"{name}: not an x86-64 program (ELF machine {header.machine})", EXEC_CANNOT_RUN)
    if header.type not in (2, 3):
        raise ProgramError(f"{name}: not an executable (ELF type {header.type})", EXEC_CANNOT_RUN)
    if header.phentsize != Elf64ProgramHeader.size or not 0 < header.phnum <= 256:
        raise ProgramError(f"{name}: malformed ELF program headers", EXEC_CANNOT_RUN)
    try:
        types = [Elf64ProgramHeader.unpack_from(image, header.phoff + i * header.phentsize).type for i in range(header.phnum)]
    except struct.error:
        raise ProgramError(f"{name}: truncated or malformed ELF", EXEC_CANNOT_RUN) from None
    if 3 in types:  # PT_INTERP
        raise ProgramError(f"{name}: dynamically linked; the sandbox runs static programs only", EXEC_CANNOT_RUN)


class _Stream:
    """One output stream: kept up to a limit, and passed on as it comes."""

    def __init__(self, keep: bool, limit: int, callback: Callable[[bytes], None] | None):
        self.data = bytearray() if keep else None
        self.limit = limit
        self.callback = callback
        self.cut = 0  # bytes past the limit

    def write(self, chunk: bytes) -> None:
        if self.callback is not None:
            self.callback(chunk)
        if self.data is not None:
            room = self.limit - len(self.data)
            if room >= len(chunk):
                self.data += chunk
            else:
                self.data += chunk[: max(room, 0)]
                self.cut += len(chunk) - max(room, 0)


class Sandbox:
    """One run; ``run()`` below is the usual way in."""

    def __init__(self, args: Sequence[str], *, mem_mib: int, max_output: int, capture_output: bool,
                 on_stdout=None, on_stderr=None, trace: Callable[[str], None] | None = None):
        from ..devices.virtio.console import VirtioConsole

        self.args = list(args)
        self.stdout = _Stream(capture_output, max_output, on_stdout)
        self.stderr = _Stream(capture_output, max_output, on_stderr)
        self.trace = trace
        self.control = ControlParser()
        self.report: list[tuple] = []
        self.notes: list[str] = []
        self.out_archive: bytes | None = None
        self.guest_log = bytearray()
        self.mem_mib = mem_mib
        self.exits: dict[str, int] = {}
        self.console = VirtioConsole(PORTS, on_output=self._on_output)
        self.ready: tuple[int, int] | None = None  # a fresh guest's "ready ROOM TOP"
        self._ready_event = threading.Event()

    def _on_output(self, port: int, data: bytes) -> None:
        if port == STDOUT:
            self.stdout.write(data)
        elif port == STDERR:
            self.stderr.write(data)
        elif port == CONTROL:
            for event in self.control.feed(data):
                if event[0] == "trace":
                    if self.trace is not None:
                        self.trace(event[1])
                elif event[0] == "out":
                    self.out_archive = event[1]
                elif event[0] in ("note", "invalid"):
                    self.notes.append(event[1])
                elif event[0] == "ready":
                    self.ready = event[1:]
                    self._ready_event.set()
                else:
                    self.report.append(event)

    def _on_serial(self, data: bytes) -> None:
        room = GUEST_LOG_LIMIT - len(self.guest_log)
        if room > 0:
            self.guest_log += data[:room]

    def _feed_stdin(self, vm, data: bytes | None, fd: int | None) -> None:
        """Feed ``data``, or everything read from ``fd`` until its end, then EOF."""
        try:
            if fd is None:
                self._feed(vm, data or b"")
            else:
                import select

                while not vm.is_finished():
                    if not select.select([fd, vm.finished_fd], [], [], 0.5)[0]:
                        continue
                    if vm.is_finished():
                        return
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        break
                    self._feed(vm, chunk)
            self.console.close_port(STDIN)
        except (VmmError, OSError, ValueError):
            pass  # the VM went away (or its finished fd closed): nothing left to feed

    def _feed(self, vm, data: bytes) -> None:
        view = memoryview(data)
        while view and not vm.is_finished():
            view = view[self.console.write(STDIN, view) :]
            if view:
                self.console.wait_writable(STDIN, 0.1)

    def _cold_vm(self, seccomp: bool | None):
        """A VM booting the guest in warm mode (not started): it says "ready" and
        takes its bundle over the control port, as a warm clone does, with no
        snapshot. Cheaper than a PVH module: the host writes the bundle once, in
        place, and the program's segments too (warm.place_bundle)."""
        from ..config import bundled_guest
        from ..machine import MicroVM
        from .warm import WARM_CMDLINE

        config = VmConfig(kernel=bundled_guest(), mem_mib=self.mem_mib, cmdline=WARM_CMDLINE)
        return MicroVM(config, output=self._on_serial, capture=False, virtio_devices=[self.console], seccomp=seccomp)

    def _await_ready(self, vm, timeout: float | None) -> tuple[int, int] | None:
        """(ROOM, TOP) once the fresh guest is ready; None if it stopped first."""
        from .warm import READY_TIMEOUT

        deadline = time.monotonic() + min(READY_TIMEOUT, timeout if timeout is not None else READY_TIMEOUT)
        while self.ready is None:
            if vm.is_finished():
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the sandbox guest did not get ready in time")
            self._ready_event.wait(min(left, 0.05))
        return self.ready

    def _warm_vm(self, image, seccomp: bool | None):
        """A clone of the warm snapshot (paused), its console this sandbox's."""
        try:
            vm = image.clone(on_output=self._on_output, output=self._on_serial, seccomp=seccomp)
        except VmmError as err:
            raise RestoreError(f"cannot restore the warm sandbox: {err}") from None
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as err:
            if image.cache_key is None:
                raise  # a bug here, not a record of the disk cache's
            raise RestoreError(f"cannot restore the warm sandbox: a record it kept does not fit ({err})") from None
        self.console = vm.devices[-1]
        return vm

    def _send_header(self, header: bytes) -> None:
        """The bundle's header over the control port, once the bundle is in RAM (guest/lx_main.c)."""
        if self.console.write(CONTROL, header) != len(header):
            raise SandboxError("the sandbox's control port has no room for the bundle header")

    def execute(self, bundle: bytes, stdin: bytes | None, timeout: float | None, stdin_fd: int | None = None,
                warm_image=None, seccomp: bool | None = None):
        """Run the bundle: in a clone of ``warm_image`` when given, else in a fresh boot.
        ``seccomp`` filters the VM's own threads (None: as the process switch says)."""
        from ..startup import vm_running

        vm = self._cold_vm(seccomp) if warm_image is None else self._warm_vm(warm_image, seccomp)
        try:
            if stdin_fd is not None and _at_end(stdin_fd):
                stdin_fd = None
            feed = stdin_fd is not None or bool(stdin)
            if not feed:
                self.console.close_port(STDIN)  # nothing to feed: EOF at once, and no feeder thread to start
            if warm_image is None:
                from .warm import place_bundle

                vm.start()
                ready = self._await_ready(vm, timeout)
                if ready is not None:  # else it stopped: vm.wait() below says why
                    self._send_header(place_bundle(vm.memory, bundle, *ready))
            else:
                self._send_header(warm_image.place(vm, bundle))  # paused: it all waits for the guest
                vm.resume()
            vm_running()  # the main thread's filter (`vmm exec` only: the process switch); the feeder starts under it
            if feed:
                feeder = threading.Thread(target=self._feed_stdin, args=(vm, stdin, stdin_fd), name="sandbox-stdin", daemon=True)
                feeder.start()
            try:
                outcome = vm.wait(timeout)
            except TimeoutError:
                vm.stop()
                vm.wait()
                raise
            self.exits = vm.exit_summary()
            return outcome
        finally:
            vm.close()


def _at_end(fd: int) -> bool:
    """``fd`` has nothing to give (/dev/null, or a regular file read to its end):
    the program gets EOF at once and no feeder thread starts (~1 ms)."""
    import stat

    try:
        st = os.fstat(fd)
        if stat.S_ISCHR(st.st_mode):
            return st.st_rdev == os.makedev(1, 3)
        return stat.S_ISREG(st.st_mode) and os.lseek(fd, 0, os.SEEK_CUR) >= st.st_size
    except OSError:
        return False  # the feeder reports what it finds


def run(args: Sequence[str], *, check: bool = False, **options):
    """Run ``args`` (a static x86-64 Linux program and its arguments) in a throwaway
    microVM, as subprocess.run runs it on the host; returns a SandboxResult (a
    subprocess.CompletedProcess). ``options`` are run_program's (input, timeout,
    files, env, mem_mib, capture_output, text, out_dir, ...). Raises
    subprocess.TimeoutExpired on timeout (with the output so far),
    subprocess.CalledProcessError with ``check`` on a non-zero status,
    ProgramError when the program cannot be run, SandboxError when the sandbox fails.
    """
    import subprocess

    from .result import SandboxResult

    try:
        done = run_program(args, **options)
    except ProgramTimeout as err:
        raise subprocess.TimeoutExpired(err.cmd, err.timeout, output=err.stdout, stderr=err.stderr) from None
    result = SandboxResult.of(done)
    if check and result.returncode:
        raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
    return result


def run_program(
    args: Sequence[str],
    *,
    input: bytes | str | None = None,
    timeout: float | None = None,
    files: Mapping[str, str | bytes] | None = None,
    env: Mapping[str, str] | None = None,
    mem_mib: int = DEFAULT_MEM_MIB,
    capture_output: bool = True,
    text: bool = False,
    out_dir: str | None = None,
    max_output: int = DEFAULT_MAX_OUTPUT,
    seed: int | None = None,
    deterministic: bool = False,
    trace: bool | Callable[[str], None] = False,
    on_stdout: Callable[[bytes], None] | None = None,
    on_stderr: Callable[[bytes], None] | None = None,
    stdin_fd: int | None = None,
    rootfs: str | None = None,
    max_out_bytes: int = DEFAULT_MAX_OUT_BYTES,
    cwd: str = "/",
    warm: bool = True,
    seccomp: bool | None = None,
) -> ProgramRun:
    """run() without subprocess (what `vmm exec` calls): a ProgramRun, ProgramTimeout
    on timeout.

    ``files`` maps guest paths to host paths (a file, or a directory taken
    whole) or bytes: read-only inputs in the sandbox's root file system.
    ``rootfs`` (a directory or a ustar image) gives a whole read-only root;
    the program is looked up there first. ``stdin_fd`` streams the program's
    stdin from an fd (to its end) instead of ``input``. ``out_dir`` receives what the program left
    under /out. ``deterministic`` starts the clock at a fixed time and seeds
    every random source (``seed``, or a fresh one reported in ``result.seed``).
    ``warm`` (the default) runs in a clone of a snapshot of the booted guest
    that this process keeps (vmm/sandbox/warm.py; the first run builds it);
    ``warm=False`` boots a fresh guest for the bundle, as `vmm exec --cold` does.
    ``seccomp`` filters the VM's vCPU and I/O threads (vmm/seccomp.py; None: as
    the process switch says, off unless vmm.seccomp.enable() was called).
    """
    from .bundle import plan_bundle

    args = [os.fspath(a) for a in args]
    if not args:
        raise ConfigError("no program given")
    if timeout is not None and not 0 < timeout <= 365 * 86400:
        raise ConfigError("timeout must be a positive number of seconds (at most a year)")
    if rootfs is not None or files:  # (rootfs.py: ~0.2 ms of a `vmm exec` start without them)
        from .rootfs import expand_files, find_in_root, read_root

        root = read_root(rootfs) if rootfs is not None else {}
        inside, files = find_in_root(root, args[0]), expand_files(files or {})
    else:
        root, inside, files = {}, None, {}
    if inside is not None:
        exec_path, program = inside, root[inside]
        if isinstance(program, str):
            check_static_elf(program)
        else:
            check_static_elf_image(program[:ELF_HEADERS_READ], args[0])
    else:
        program = resolve_program(args[0])
        if not program_cache.ran_before(program):  # (one that did skips the ELF parser's imports: ~0.6 ms)
            check_static_elf(program)
        exec_path = "/bin/" + os.path.basename(program)
    if isinstance(input, str):
        input = input.encode()
    # "drained": this VMM serves every queue the guest notified before it powers
    # off (virtio_slots.py), and nothing here pauses the console's output, so the
    # guest sends its last output and exit line without waiting for them (~0.3 ms).
    options: dict[str, str] = {"drained": "1"}
    if deterministic or seed is not None:
        if seed is None:
            import secrets

            seed = secrets.randbits(63)
        options["seed"] = str(seed)
    else:  # fresh for every run: warm clones share the guest's random state until here
        options["entropy"] = str(int.from_bytes(os.urandom(8), "little"))
    if deterministic:
        options["clock"] = "1700000000000000000"  # 2023-11-14T22:13:20Z, the same every run
    if trace:
        options["trace"] = "1"
    if out_dir is None:
        options["noout"] = "1"  # nobody keeps /out: the guest need not pack and send it
    if cwd != "/":
        options["cwd"] = cwd
    environment = dict(env) if env is not None else {"PATH": "/bin:/usr/bin", "HOME": "/tmp"}
    bundle = plan_bundle(program, args, environment, {**root, **files}, options, exec_path=exec_path)
    trace_sink = trace if callable(trace) else (_trace_to_stderr if trace else None)
    box = Sandbox(args, mem_mib=mem_mib, max_output=max_output, capture_output=capture_output,
                  on_stdout=on_stdout, on_stderr=on_stderr, trace=trace_sink)

    def streams():
        out = bytes(box.stdout.data) if box.stdout.data is not None else None
        err = bytes(box.stderr.data) if box.stderr.data is not None else None
        if text:
            out = out.decode(errors="replace") if out is not None else None
            err = err.decode(errors="replace") if err is not None else None
        return out, err

    image = None
    if warm:
        from ..config import bundled_guest
        from .warm import pool

        image = pool().image(mem_mib, bundled_guest())
        image.check_fits(len(bundle))
    started = time.monotonic()
    try:
        try:
            outcome = box.execute(bundle, input, timeout, stdin_fd, warm_image=image, seccomp=seccomp)
        except RestoreError:
            if image is None or image.cache_key is None:
                raise
            # Kept on disk by another process and refused here (a host whose CPU
            # changed under the same kernel): build this host's own, once.
            pool().discard(image)
            image = pool().image(mem_mib, bundled_guest())
            outcome = box.execute(bundle, input, timeout, stdin_fd, warm_image=image, seccomp=seccomp)
    except TimeoutError:
        out, err = streams()
        raise ProgramTimeout(args, timeout, out, err) from None
    out, err = streams()
    result = ProgramRun(args, out, err)
    result.seed = seed
    result.exits = box.exits
    result.elapsed = time.monotonic() - started
    for stream, name in ((box.stdout, "stdout"), (box.stderr, "stderr")):
        if stream.cut:
            result.notes.append(f"{name} cut at {max_output} bytes ({stream.cut} more bytes dropped)")
    result.notes += box.notes
    _settle(result, box, outcome)
    if out_dir is not None and box.out_archive is not None:
        result.out_files, skipped = extract_out(box.out_archive, out_dir, max_bytes=max_out_bytes)
        result.notes += skipped
    return result


def _settle(result: ProgramRun, box: Sandbox, outcome) -> None:
    """The program's status from the control reports, or why there is none."""
    for event in box.report:
        kind = event[0]
        if kind == "exit":
            result.returncode = event[1]
            return
        if kind == "signal":
            result.returncode = -event[1]
            result.signal, result.fault_addr = event[1], event[2]
            return
        if kind == "error":
            raise ProgramError(event[2] or f"{result.args[0]}: cannot run", event[1])
    log = box.guest_log.decode(errors="replace").strip().splitlines()
    tail = f"; guest log ends: {log[-1]!r}" if log else ""
    if outcome.reason == StopReason.CRASH:
        raise SandboxError(f"the sandbox's guest crashed: {outcome.message}{tail}")
    raise SandboxError(f"the guest stopped ({outcome.reason}, status {outcome.status}) without reporting the program's end{tail}")


def _trace_to_stderr(line: str) -> None:
    os.write(2, f"[sandbox] {line}\n".encode(errors="replace"))
