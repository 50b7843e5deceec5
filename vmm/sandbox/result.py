"""What vmm.sandbox.run returns: a subprocess.CompletedProcess with a sandbox's extras."""

from __future__ import annotations

import subprocess


class SandboxResult(subprocess.CompletedProcess):
    """subprocess.CompletedProcess plus what only a sandbox knows.

    ``returncode`` is the program's exit status, or -N when signal N ended it
    (as subprocess reports it). ``signal`` and ``fault_addr`` say which and
    where; ``out_files`` lists what was extracted from /out; ``notes`` holds
    anything cut or refused (output over the limit, unsafe /out entries);
    ``seed`` the seed of a deterministic run; ``exits`` the VM exits by kind;
    ``elapsed`` seconds from start to the program's end.
    """

    def __init__(self, args, returncode, stdout=None, stderr=None):
        from .runner import init_extras

        super().__init__(args, returncode, stdout, stderr)
        init_extras(self)

    @classmethod
    def of(cls, done) -> "SandboxResult":
        """From a runner.ProgramRun."""
        result = cls(done.args, done.returncode, done.stdout, done.stderr)
        result.__dict__.update(vars(done))
        return result
