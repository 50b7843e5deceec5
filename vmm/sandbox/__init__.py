"""Run untrusted static Linux programs in throwaway microVMs.

``run(args, ...)`` is subprocess.run for a sandbox (vmm/sandbox/runner.py);
``vmm exec`` is its command (vmm/sandbox/cli.py). The bundled guest's Linux
personality (guest/lx_*.c) runs the program; ``build_bundle`` packs what it
runs (vmm/sandbox/bundle.py).
"""

from .bundle import BundleError, build_bundle


def __getattr__(name):
    # The runner pulls in the machine and the KVM bindings: only when used.
    if name in ("run", "SandboxResult", "SandboxError", "ProgramError"):
        from . import runner

        return getattr(runner, name)
    raise AttributeError(name)


__all__ = ["BundleError", "ProgramError", "SandboxError", "SandboxResult", "build_bundle", "run"]
