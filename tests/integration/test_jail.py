"""--jail end to end: what the jailed VMM can see and do, through the CLI in a subprocess.

VMM_JAIL_PROBE=1 makes the jailed VMM describe its jail on stderr just before it
builds the VM (vmm/jail.py: _probe): every path under /, its PID, its
/proc/self/status capability lines, /proc/net/dev, and what a read-write open
of each read-only file gives; it also reports any module imported after the
pivot (which would fail: the host's Python files are not in the jail).
"""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import GUEST_ELF, ROOT
from vmm.disk_image import build_disk_image

pytestmark = pytest.mark.kvm

PROBE = {"VMM_JAIL_PROBE": "1"}


def vmm(*args, stdin=b"", env=None, timeout=90, user=None):
    command = [sys.executable, "-m", "vmm", *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(command, input=stdin, capture_output=True, timeout=timeout, cwd=ROOT, check=False,
                          env={**os.environ, **(env or {})})


def probe(stderr: bytes) -> dict[str, list[str]]:
    """The probe's lines, by key ("files", "pid", "status", "net", "read-only ...", "late import")."""
    found: dict[str, list[str]] = {}
    for line in stderr.decode(errors="replace").splitlines():
        if line.startswith("jail-probe: "):
            key, _, value = line[len("jail-probe: "):].partition(": ")
            found.setdefault(key, []).append(value)
    return found


def with_ancestors(*paths) -> set[str]:
    out = set()
    for path in map(str, paths):
        while path not in ("/", ""):
            out.add(path)
            path = os.path.dirname(path)
    return out


def assert_locked_up(seen: dict, uid: int = 0) -> None:
    assert seen["pid"] == ["1"]
    status = dict(line.split(" ", 1) for line in seen["status"])
    for cap in ("CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"):
        assert int(status[cap], 16) == 0, (cap, status)
    assert status["NoNewPrivs:"] == "1"
    assert status["Uid:"].split() == [str(uid)] * 4
    assert seen["net"] == ["lo"] and seen["interfaces"] == ["lo"]
    assert "late import" not in seen, seen["late import"]


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def disks(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.txt").write_text("hello from the host\n")
    rw, ro = tmp_path / "rw.img", tmp_path / "ro.img"
    build_disk_image(str(src), str(rw), 2)
    build_disk_image(str(src), str(ro), 2)
    return rw, ro


def test_jailed_run_sees_only_its_files_and_still_uses_its_disks(guest_elf, disks):
    rw, ro = disks
    before = sha256(ro)
    result = vmm("run", "--jail", "--timeout", "60", "--disk", str(rw), "--disk", f"{ro},ro",
                 stdin=b"cat hello.txt\ncat 1:hello.txt\nwrite jailed.txt written from the jail\nsync\nexit 7\n", env=PROBE)
    assert result.returncode == 7, result.stderr
    assert result.stdout.count(b"hello from the host\r\n") == 2, result.stdout
    seen = probe(result.stderr)
    assert_locked_up(seen)
    # nothing of the host but the kernel, the two disks, /dev/kvm, and the (empty) working directory
    assert set(seen["files"][0].split()) == {"/dev", "/dev/kvm", "/proc"} | with_ancestors(GUEST_ELF, rw, ro, ROOT)
    # the read-only disk is a read-only bind: even the VMM cannot open it for writing
    assert seen[f"read-only {ro}"] == ["EROFS"]
    # no file may grow past the writable disk's size; no core files; few descriptors and threads
    limits = dict(item.split("=") for item in seen["rlimits"][0].split())
    assert limits == {"nofile": "1024", "fsize": str(rw.stat().st_size), "nproc": str(64 + 1 + 4 * 2), "core": "0"}
    assert sha256(ro) == before
    with tarfile.open(rw) as archive:
        assert archive.extractfile("jailed.txt").read() == b"written from the jail\n"


def test_jailed_run_passes_statuses_and_signals_through(guest_elf):
    # SIGTERM: the waiter outside forwards it; vmm run stops the VM with 128+15, as unjailed
    proc = subprocess.Popen([sys.executable, "-m", "vmm", "run", "--jail", "--timeout", "60"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = b""
    while b"$ " not in seen:
        chunk = os.read(proc.stdout.fileno(), 4096)
        assert chunk, proc.stderr.read()
        seen += chunk
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert b"stopped by signal SIGTERM" in err


def test_snapshot_from_a_jail_and_restore_into_one(guest_elf, disks, tmp_path):
    rw, _ = disks
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    state, mem = snaps / "vm.state", snaps / "vm.mem"
    proc = subprocess.Popen([sys.executable, "-m", "vmm", "run", "--jail", "--timeout", "60", "--disk", str(rw),
                             "--snapshot-path", str(state), "--mem-file-path", str(mem)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **PROBE})
    seen = b""
    while b"$ " not in seen:
        chunk = os.read(proc.stdout.fileno(), 4096)
        assert chunk, proc.stderr.read()
        seen += chunk
    proc.send_signal(signal.SIGUSR2)  # snapshot (modules imported after the pivot would fail here) and stop
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "late import" not in probe(err)
    assert state.stat().st_size > 0 and mem.stat().st_size == 128 << 20
    result = vmm("restore", "--jail", str(state), str(mem), stdin=b"cat hello.txt\nexit 5\n", env=PROBE)
    assert result.returncode == 5, result.stderr
    assert b"hello from the host\r\n" in result.stdout
    seen = probe(result.stderr)
    assert_locked_up(seen)
    assert set(seen["files"][0].split()) == {"/dev", "/dev/kvm", "/proc"} | with_ancestors(state, mem, rw, ROOT)
    assert seen[f"read-only {mem}"] == ["EROFS"]


@pytest.fixture
def outfiles(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    exe = tmp_path / "outfiles"
    subprocess.run(["gcc", "-static", "-O2", "-w", "-o", str(exe), str(ROOT / "tests/sandbox/progs/outfiles.c")], check=True)
    return exe


def test_jailed_exec_reads_inputs_and_writes_out_dir(guest_elf, outfiles, tmp_path):
    out = tmp_path / "out"
    result = vmm("exec", "--jail", "--out-dir", str(out), "--", str(outfiles), env=PROBE)
    assert result.returncode == 0, result.stderr
    assert (out / "result.txt").read_text() == "answer 42\n"
    assert sorted(os.listdir(out)) == ["logs", "result.txt"]
    seen = probe(result.stderr)
    assert_locked_up(seen)
    # /out is extracted inside the jail, into the bound --out-dir: the tar parser never runs with the host in view
    files = set(seen["files"][0].split())
    assert files == {"/dev", "/dev/kvm", "/proc"} | with_ancestors(GUEST_ELF, outfiles, out, ROOT)

    data = tmp_path / "in"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    result = vmm("exec", "--jail", "--in", f"{data}:/x", "--", "busybox", "cat", "/x/a.txt", env=PROBE)
    if result.returncode == 127:
        pytest.skip("no busybox on this host's PATH")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"alpha\n"
    seen = probe(result.stderr)
    assert_locked_up(seen)
    assert seen[f"read-only {data}"] == ["EROFS"]


def test_jailed_exec_dies_of_the_signal_that_killed_it(guest_elf):
    if shutil.which("busybox") is None:
        pytest.skip("no busybox on this host's PATH")
    statuses = []
    for jail in ("--no-jail", "--jail"):
        proc = subprocess.Popen([sys.executable, "-m", "vmm", "exec", jail, "--", "busybox", "cat"], cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdin.write(b"ping\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"ping\n"  # the program runs: the jail (if any) is set up
        proc.send_signal(signal.SIGTERM)  # vmm exec has no handler for it: it dies of it, jailed or not
        proc.communicate(timeout=30)
        statuses.append(proc.returncode)
    assert statuses == [-signal.SIGTERM, -signal.SIGTERM]


def test_jailed_exec_boots_and_refuses_warm_in_one_line(guest_elf):
    """A jail's empty root has no snapshot cache: a jailed `vmm exec` boots the guest,
    and --warm with --jail is refused with one line and status 2 (it once ended in a traceback)."""
    prog = shutil.which("busybox")
    if prog is None:
        pytest.skip("no busybox on this host's PATH")
    both = subprocess.run([sys.executable, "-m", "vmm", "exec", "--jail", "--warm", "--", prog, "true"], cwd=ROOT,
                          capture_output=True, timeout=60)
    assert both.returncode == 2 and both.stderr.count(b"\n") == 1 and b"--jail" in both.stderr, both.stderr
    jailed = subprocess.run([sys.executable, "-m", "vmm", "exec", "--jail", "--stats", "--", prog, "echo", "hi"],
                            cwd=ROOT, capture_output=True, timeout=60)
    assert (jailed.returncode, jailed.stdout) == (0, b"hi\n"), jailed.stderr
    assert b"mmio" in jailed.stderr  # booted: the console's set-up exits are there


def test_jail_as_a_plain_user(guest_elf):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) not installed")
    if os.getuid() != 0:
        pytest.skip("switching to a plain user needs root")
    check = vmm("--help", user=65534)
    if check.returncode != 0:
        pytest.skip(f"the venv's Python is not usable by uid 65534: {check.stderr.decode()[-200:]}")
    result = vmm("run", "--jail", "--timeout", "30", stdin=b"exit 3\n", env=PROBE, user=65534)
    seen = probe(result.stderr)
    assert_locked_up(seen, uid=65534)
    assert set(seen["files"][0].split()) == {"/dev", "/dev/kvm", "/proc"} | with_ancestors(GUEST_ELF, ROOT)
    kvm_usable = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "test", "-w", "/dev/kvm"], check=False).returncode == 0
    if kvm_usable:
        assert result.returncode == 3, result.stderr
    else:  # /dev/kvm is root's alone here: the jail is complete, and KVM then refuses, in one line
        assert result.returncode == 2, result.stderr
        assert result.stderr.decode().splitlines()[-1].startswith("vmm: no permission to open /dev/kvm")


def test_jail_option_errors_are_one_line(guest_elf):
    result = vmm("run", "--jail-memory", "256", stdin=b"exit 0\n")
    assert result.returncode == 2
    assert result.stderr.decode() == "vmm: --jail-memory and --jail-cpus need --jail\n"
    result = vmm("exec", "--jail", "--jail-cpus", "0", "--", "true")
    assert result.returncode == 2 and b"must be between 0.01 and 1024" in result.stderr
    result = vmm("run", "--jail", "--jail-memory", "512", "--jail-cpus", "1", "--timeout", "60", stdin=b"exit 4\n")
    if result.returncode == 2:  # no cgroup v2 memory/cpu controllers delegated to us on this host
        assert "Traceback" not in result.stderr.decode() and len(result.stderr.decode().splitlines()) == 1
        assert b"cgroup" in result.stderr
    else:
        assert result.returncode == 4, result.stderr


def test_every_import_inside_a_function_is_made_before_the_pivot():
    """Nothing of the host's Python is in the jail: a module first imported after the
    pivot (by a function-level `import x` on an error path, say) would fail there. So
    every function-level import in the modules the jail preloads must name a module the
    preload imported, or one of the commands the jail never runs (vmm serve, bench...)."""
    import ast
    import importlib.util

    from vmm import jail
    from vmm.jail import preload

    script = ("import sys, vmm.cli; from vmm import jail; from vmm.jail import preload; spec = jail.JailSpec(); "
              "spec.sandbox = spec.snapshots = True; preload.preload(spec); print(' '.join(sys.modules))")
    loaded = set(subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, cwd=ROOT).stdout.decode().split())
    spec = jail.JailSpec()
    spec.sandbox = spec.snapshots = True
    missing = []

    def is_module(name: str) -> bool:  # `from x import y`: y may be a module or a name in x
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    for name in preload.vmm_modules(spec):
        path = importlib.util.find_spec(name).origin
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        with open(path) as source:
            tree = ast.parse(source.read())
        top_level = set(map(id, tree.body))
        for node in ast.walk(tree):
            if id(node) in top_level or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module
                submodules = [f"{base}.{alias.name}" for alias in node.names]
                targets = [base] + [m for m in submodules if is_module(m)]
            for target in targets:
                if target == "secrets":  # only for --deterministic without --seed: jail_exec preloads it then
                    continue
                if name == "vmm.seccomp":  # its imports happen in enable(), at the CLI's start, before any jail
                    continue
                if not target.startswith(preload.SKIP_MODULES) and target not in loaded:
                    missing.append(f"{name} imports {target}")
    assert not missing, missing
