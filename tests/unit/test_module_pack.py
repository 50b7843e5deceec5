"""vmm/module_pack.py: a package's modules served from one compiled file, exactly
as importlib would import them from their own; anything stale, missing or
damaged falls back to the files."""

from __future__ import annotations

import inspect
import os
import runpy
import subprocess
import sys
import traceback

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
from vmm import module_pack
from vmm.module_pack import PackFinder, build, pack_path

FILES = {
    "__init__.py": "from . import a\n",
    "a.py": "from .sub import b\nVALUE = 'a1'\n\ndef fails():\n    raise ValueError('from a')  # this line\n",
    "sub/__init__.py": "",
    "sub/b.py": "WHERE = __name__\n",
    "sub/c.py": "if __name__ == '__main__':\n    RAN_AS_MAIN = True\n",
    "notes/x.py": "raise SystemExit('a plain directory is not a package')\n",
}


@pytest.fixture
def package(tmp_path, request):
    """A package with a unique name under tmp_path; yields (name, root). Its
    modules and any finder the test installs are gone afterwards."""
    name = "packtest_" + request.node.name.replace("[", "_").replace("]", "_").replace("-", "_")
    root = tmp_path / name
    for relative, text in FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    sys.path.insert(0, str(tmp_path))
    finders_before = list(sys.meta_path)
    try:
        yield name, str(root)
    finally:
        sys.path.remove(str(tmp_path))
        sys.meta_path[:] = finders_before
        for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[module]


def install(root: str) -> PackFinder:
    finder = module_pack.install(root)
    assert finder is not None
    return finder


def test_modules_come_from_the_pack_and_behave_as_from_their_files(package):
    name, root = package
    assert build(root, name) == 5  # the package, a, sub, sub.b and sub.c; not notes/x.py
    finder = install(root)
    module = __import__(f"{name}.a", fromlist=["VALUE"])
    assert module.VALUE == "a1" and sys.modules[f"{name}.sub.b"].WHERE == f"{name}.sub.b"
    assert finder.served == {name, f"{name}.a", f"{name}.sub", f"{name}.sub.b"}
    assert module.__file__ == os.path.join(root, "a.py")
    assert module.__spec__.origin == module.__file__ and module.__spec__.parent == name
    assert sys.modules[f"{name}.sub"].__path__ == [os.path.join(root, "sub")]
    assert "raise ValueError('from a')" in inspect.getsource(module.fails)
    with pytest.raises(ValueError) as raised:
        module.fails()
    frame = traceback.extract_tb(raised.value.__traceback__)[-1]
    assert (frame.filename, frame.lineno, frame.line) == (module.__file__, 5, "raise ValueError('from a')  # this line")


def test_runpy_gets_the_code_from_the_pack(package):
    name, root = package
    build(root, name)
    finder = install(root)
    namespace = runpy.run_module(f"{name}.sub.c", run_name="__main__")
    assert namespace["RAN_AS_MAIN"] is True and f"{name}.sub.c" in finder.served


@pytest.mark.parametrize("change", ["content", "same size, new mtime", "removed"])
def test_a_changed_source_is_imported_from_its_file(package, change):
    name, root = package
    build(root, name)
    path = os.path.join(root, "a.py")
    stat = os.stat(path)
    if change == "content":
        with open(path, "a") as source:
            source.write("VALUE = 'edited after the pack'\n")
    elif change == "same size, new mtime":
        with open(path, "w") as source:
            source.write(FILES["a.py"].replace("a1", "a2"))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    else:
        os.unlink(path)
    finder = install(root)
    if change == "removed":
        with pytest.raises(ImportError):
            __import__(f"{name}.a")
        assert f"{name}.a" not in finder.served
        return
    module = __import__(f"{name}.a", fromlist=["VALUE"])
    assert module.VALUE == ("edited after the pack" if change == "content" else "a2")
    assert f"{name}.a" not in finder.served and f"{name}.sub.b" in finder.served  # the others still from the pack


def test_a_pack_for_another_python_is_not_used(package, monkeypatch):
    name, root = package
    monkeypatch.setattr(module_pack, "_header_fields", lambda: (module_pack.FORMAT, b"\0\0\r\n", 0))
    build(root, name)
    monkeypatch.undo()
    assert PackFinder.open(root) is None
    assert module_pack.install(root) is None


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated header", "garbage", "header says too long"])
def test_a_missing_or_damaged_pack_is_not_used(package, damage):
    name, root = package
    build(root, name)
    path = pack_path(root)
    data = open(path, "rb").read()
    if damage == "missing":
        os.unlink(path)
    else:
        damaged = {"empty": b"", "truncated header": data[:40], "garbage": os.urandom(len(data)),
                   "header says too long": (1 << 40).to_bytes(8, "little") + data[8:]}[damage]
        with open(path, "wb") as out:
            out.write(damaged)
    assert PackFinder.open(root) is None
    assert __import__(f"{name}.a", fromlist=["VALUE"]).VALUE == "a1"  # from the files


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 600), flip=st.integers(0, 600), byte=st.integers(0, 255))
def test_opening_a_damaged_pack_header_never_raises(tmp_path_factory, cut, flip, byte):
    root = tmp_path_factory.mktemp("damaged")
    (root / "m.py").write_text("X = 1\n")
    build(str(root), "m")
    path = pack_path(str(root))
    data = bytearray(open(path, "rb").read())
    if flip < len(data):
        data[flip] = byte
    with open(path, "wb") as out:
        out.write(data[: len(data) - cut] if cut else data)
    finder = PackFinder.open(str(root))  # None, or a finder: never an exception
    if finder is not None:
        finder.find_spec("m")
        finder.find_spec("not.there")


def test_vmm_itself_is_served_from_its_pack():
    """`make bytecode` packs vmm: a fresh interpreter imports the sandbox's modules from it."""
    if not os.path.exists(pack_path(os.path.join(ROOT, "vmm"))):
        pytest.skip("vmm has no module pack here: `make bytecode` builds it")
    code = ("import sys, vmm.sandbox.runner, vmm.devices.virtio.console\n"
            "finder = next(f for f in sys.meta_path if type(f).__name__ == 'PackFinder')\n"
            "print(' '.join(sorted(finder.served)))")
    served = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
    assert {"vmm.sandbox.runner", "vmm.devices.virtio.console", "vmm.config", "vmm.errors"} <= set(served)


def test_the_pack_holds_every_vmm_module(tmp_path):
    root = os.path.join(ROOT, "vmm")
    packages = [d for d, _, files in os.walk(root) if "__init__.py" in files]  # (vmm/_build is not one)
    modules = [f for d in packages for f in os.listdir(d) if f.endswith(".py")]
    assert build(root, "vmm", dest=str(tmp_path / "vmm.pack")) == len(modules)


def test_vmm_doctor_says_whether_the_pack_is_used_and_fresh(package):
    from vmm.doctor import FAIL, OK, WARN, check_module_pack

    name, root = package
    missing = check_module_pack(root)
    assert missing.status == WARN and "none usable" in missing.detail and "make bytecode" in missing.fix
    build(root, name)
    fresh = check_module_pack(root)
    assert fresh.status == OK and "5 modules" in fresh.detail
    with open(os.path.join(root, "sub", "b.py"), "a") as source:
        source.write("# edited\n")
    stale = check_module_pack(root)
    assert stale.status == WARN and "1 of its 5 modules changed" in stale.detail and f"{name}.sub.b" in stale.detail
    assert FAIL not in (missing.status, fresh.status, stale.status)  # vmm works the same without it
