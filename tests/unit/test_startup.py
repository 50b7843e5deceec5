"""vmm/startup.py: the command pauses garbage collection while it starts; a library user's process is left alone."""

import subprocess
import sys

from tests.conftest import ROOT


def python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout


def test_the_command_pauses_collection_until_its_vm_runs():
    out = python("import gc, vmm.command; from vmm import startup; print(gc.isenabled()); "
                 "startup.resume_collection(); print(gc.isenabled(), gc.get_freeze_count() > 1000); "
                 "gc.disable(); startup.resume_collection(); print(gc.isenabled())")
    assert out.split() == ["False", "True", "True", "False"]  # resumed once; a later resume leaves the caller's choice


def test_importing_vmm_as_a_library_leaves_collection_alone():
    out = python("import gc, vmm.cli, vmm.machine, vmm.sandbox; from vmm import startup; startup.resume_collection(); "
                 "print(gc.isenabled(), gc.get_freeze_count())")
    assert out.split() == ["True", "0"]


def test_commands_without_a_vm_resume_at_once():
    out = python("import contextlib, gc, io, vmm.command, vmm.cli\n"
                 "with contextlib.redirect_stderr(io.StringIO()):\n"
                 "    status = vmm.cli.main(['bench', 'no-such-case'])\n"
                 "print(status, gc.isenabled())")
    assert out.split() == ["2", "True"]
