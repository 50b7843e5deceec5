"""`vmm serve --api-sock PATH`: one microVM driven through Firecracker's API.

The process serves the socket until the VM it starts (InstanceStart) or
restores (PUT /snapshot/load) stops, then exits with the VM's status, as
`vmm run` does; before that, SIGTERM, SIGHUP or Ctrl-C end it (128+N). Serial
output goes to standard output (or PUT /serial's file) and standard input
to the guest once it runs. Nothing heavy is imported until `serve` runs.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

METRICS_FLUSH_S = 60.0


def add_parser(commands) -> None:
    p = commands.add_parser(
        "serve",
        help="serve Firecracker's REST API for one microVM on a Unix socket",
        description="Serve a subset of Firecracker's REST API on a Unix socket: configure a microVM "
        "(PUT /machine-config, /boot-source, /drives/ID), start it (PUT /actions InstanceStart), "
        "pause and resume it (PATCH /vm), snapshot and load it (PUT /snapshot/create, /snapshot/load). "
        "Exits with the VM's status once it stops.",
    )
    p.add_argument("--api-sock", metavar="PATH", required=True, help="the Unix socket to serve (a stale socket file is replaced)")
    p.add_argument("--id", metavar="ID", default="vmm", help="the instance id GET / reports (default: vmm)")
    from ..cli_parser import add_seccomp_option

    add_seccomp_option(p)


def _preload() -> None:
    """Import what InstanceStart and a snapshot load need while the API waits for
    its first request, so that neither pays for imports (construct alone is ~40 ms)."""
    from importlib import import_module

    from .instance import vmm_version

    vmm_version()  # importlib.metadata: GET / and the snapshot loader both use it
    # vmm.snapshot.load is what vmm.persist.restore imports on its first call.
    for name in ("vmm.machine", "vmm.persist", "vmm.snapshot.load"):
        try:
            import_module(name)
        except ImportError:
            pass  # a build without snapshots: the endpoint says so when asked


def cmd_serve(args) -> int:
    from ..cli import _pump_input, exit_status, print_error
    from ..console import RawTerminal, write_all
    from ..errors import EXIT_VMM_FAILURE
    from ..outcome import StopReason, VmOutcome
    from .instance import ApiInstance
    from .server import ApiServer

    instance = ApiInstance(args.id, output_fd=1)
    stop = threading.Event()
    ended: list[VmOutcome] = []

    def end(outcome: VmOutcome) -> None:
        ended.append(outcome)
        stop.set()
        if instance.vm is not None:
            instance.vm.stop(outcome)

    def on_server_error(err: BaseException) -> None:
        end(VmOutcome(EXIT_VMM_FAILURE, StopReason.ERROR, f"internal error in the API server: {err!r}"))

    def on_signal(signum, frame):
        end(VmOutcome(128 + signum, StopReason.QUIT, f"stopped by signal {signal.Signals(signum).name}"))

    server = ApiServer(args.api_sock, instance, on_error=on_server_error)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def flush_metrics() -> None:
        # On the API loop: a failure here is reported, never allowed to stop the loop (and the VM).
        try:
            if instance.metrics is not None:
                instance.flush_metrics()
        except Exception as err:  # noqa: BLE001
            print_error(f"metrics: {err}")
        server.loop.call_later(METRICS_FLUSH_S, flush_metrics)

    outcome = None
    interactive = os.isatty(0)
    if args.seccomp:
        server.loop.seccomp_kind = "api"  # it builds the VM, so its list covers the VM's threads (vmm/seccomp_policy.py)
    try:
        server.start()
        server.loop.call_later(METRICS_FLUSH_S, flush_metrics)
        _preload()
        while not instance.started.wait(0.2):
            if stop.is_set():
                break
        if stop.is_set() and instance.vm is not None:
            instance.vm.stop(ended[0])  # a signal that came while InstanceStart was under way
        if instance.vm is not None:
            from ..startup import vm_running

            vm_running()
            with RawTerminal(0):
                _pump_input(instance.vm, interactive)
            outcome = instance.vm.wait()
    except KeyboardInterrupt:
        end(VmOutcome(130, StopReason.QUIT, "interrupted"))
    finally:
        server.close()  # no request runs from here on
        try:
            if instance.metrics is not None:
                instance.flush_metrics()  # the last record carries the outcome
        except Exception as err:  # noqa: BLE001 (reported; the VM's outcome still decides the status)
            print_error(f"metrics: {err}")
        if instance.vm is not None:
            outcome = outcome or instance.vm.wait()
            instance.vm.close()
        instance.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if outcome is None:
        outcome = ended[0] if ended else VmOutcome(0, StopReason.QUIT, "")
    if interactive and instance.vm is not None:
        write_all(1, b"\r\n")
    if outcome.reason != "poweroff" and outcome.message:
        print_error(outcome.message)
    sys.stdout.flush()
    return exit_status(outcome)
