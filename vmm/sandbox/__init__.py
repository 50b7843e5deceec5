"""Run untrusted static Linux programs in throwaway microVMs.

``run(args, ...)`` is subprocess.run for a sandbox (vmm/sandbox/runner.py);
``vmm exec`` is its command (vmm/sandbox/cli.py). The bundled guest's Linux
personality (guest/lx_*.c) runs the program; ``build_bundle`` packs what it
runs (vmm/sandbox/bundle.py).
"""



def __getattr__(name):
    # Loaded when used: the runner pulls in the machine and the KVM bindings,
    # and `vmm run` imports this package for the exec subcommand's parser.
    if name in ("run", "SandboxResult", "SandboxError", "ProgramError"):
        from . import runner

        return getattr(runner, name)
    if name in ("build_bundle", "BundleError"):
        from . import bundle

        return getattr(bundle, name)
    raise AttributeError(name)


__all__ = ["BundleError", "ProgramError", "SandboxError", "SandboxResult", "build_bundle", "run"]
