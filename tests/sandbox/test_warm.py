"""Warm sandboxes (vmm/sandbox/warm.py): clones of one snapshot, each with its own
randomness and the host's clock, and a guest that checks the bundle it is sent."""

import re
import threading
import time

import pytest

from vmm.errors import ConfigError
from vmm.sandbox import ProgramError, run

pytestmark = pytest.mark.kvm


def fields(stdout: bytes) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in stdout.decode().splitlines())


def test_clones_of_one_snapshot_draw_different_random_bytes(compile_prog):
    program = compile_prog("randbytes")
    first, second = (fields(run([program]).stdout) for _ in range(2))
    for source in ("at_random", "getrandom", "urandom"):
        assert re.fullmatch(r"[0-9a-f]{32}", first[source]), first
        assert first[source] != second[source], source


def test_the_same_seed_gives_the_same_bytes_warm_or_cold(compile_prog):
    program = compile_prog("randbytes")
    runs = [fields(run([program], seed=7, warm=warm).stdout) for warm in (True, True, False)]
    for source in ("at_random", "getrandom", "urandom"):
        assert runs[0][source] == runs[1][source] == runs[2][source], source
    assert fields(run([program], seed=8).stdout)["getrandom"] != runs[0]["getrandom"]


def test_every_run_sends_fresh_entropy_unless_seeded(compile_prog, monkeypatch):
    # Without RDRAND the guest's generator has only the TSC, which a clone
    # inherits from the snapshot: the host's entropy is what tells clones apart.
    from vmm.sandbox import bundle

    sent = []
    real = bundle.plan_bundle
    monkeypatch.setattr(bundle, "plan_bundle", lambda *a, **k: sent.append(a[4]) or real(*a, **k))
    program = compile_prog("exitcode")
    for seed in (None, None, 5):
        assert run([program, "0"], seed=seed).returncode == 0
    assert sent[0]["entropy"] != sent[1]["entropy"]
    assert "entropy" not in sent[2] and sent[2]["seed"] == "5"


def test_the_clock_is_the_hosts_not_the_snapshots(compile_prog):
    from vmm.config import bundled_guest
    from vmm.sandbox import warm

    warm.pool().image(128, bundled_guest())  # the snapshot exists (and is at least this old)
    time.sleep(3)
    before = time.time()
    realtime = float(fields(run([compile_prog("randbytes")]).stdout)["realtime"])
    assert before - 1 < realtime < time.time() + 1


def test_the_guest_refuses_a_bundle_larger_than_its_room(compile_prog, monkeypatch):
    from vmm.sandbox import warm

    real = warm.WarmImage.place

    def lying(self, vm, bundle):  # the bytes as usual, then a size past the guest's room
        real(self, vm, bundle)
        return warm.bundle_header(self.room + 4096)

    monkeypatch.setattr(warm.WarmImage, "place", lying)
    with pytest.raises(ProgramError, match="does not fit in guest RAM"):
        run([compile_prog("exitcode"), "0"])


def test_a_bundle_too_large_for_guest_ram_is_refused_on_both_paths(compile_prog, sandbox):
    with pytest.raises(ConfigError, match="does not fit"):
        sandbox.run([compile_prog("exitcode"), "0"], mem_mib=16, files={"/big": bytes(20 << 20)})


def test_snapshots_are_kept_per_memory_size_and_built_once_under_threads(compile_prog):
    from vmm.config import bundled_guest
    from vmm.sandbox import warm

    pool = warm.WarmPool()
    images = []
    threads = [threading.Thread(target=lambda: images.append(pool.image(64, bundled_guest()))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(images) == 4 and all(image is images[0] for image in images)
    assert pool.image(96, bundled_guest()) is not images[0]
    pool.clear()
    result = run([compile_prog("exitcode"), "3"], mem_mib=64)
    assert result.returncode == 3


def test_ready_lines_are_checked():
    from vmm.sandbox.control import ControlParser

    parser = ControlParser()
    assert parser.feed(b"ready 1048576 134209536\n") == [("ready", 1048576, 134209536)]
    for bad in (b"ready\n", b"ready 5\n", b"ready 10 8192 x\n", b"ready 9000 8192\n", b"ready 10 4097\n", b"ready -1 4096\n"):
        assert parser.feed(bad)[0][0] == "invalid", bad


def test_a_big_input_arrives_whole_in_huge_pages(tmp_path):
    """Inputs of 4 MiB and more go into fresh anonymous huge pages of the clone's
    RAM (vmm/memory.py view_to_fill): every byte must still be the file's."""
    import hashlib
    import os
    import shutil

    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox-static is not installed (make tools)")
    data = os.urandom(9 << 20)
    (tmp_path / "big.bin").write_bytes(data)
    for warm in (True, False):
        result = run([busybox, "sha256sum", "/in/big.bin"], files={"/in/big.bin": str(tmp_path / "big.bin")}, warm=warm)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest(), warm


@pytest.mark.parametrize("compiler", ["gcc", "gcc-pie", "musl"])
def test_the_host_places_the_programs_segments_and_the_guest_takes_them(compile_prog, monkeypatch, compiler):
    """The host writes the segments where the guest's loader would (vmm/sandbox/placement.py),
    static-PIE at the guest's base too; the program then runs from those very bytes."""
    from vmm.sandbox import placement, program_cache

    monkeypatch.setattr(program_cache, "lookup", lambda identity: None)  # placed, not mapped from an entry
    spans = []
    real = placement.place_program
    monkeypatch.setattr(placement, "place_program", lambda *a: spans.append(real(*a)) or spans[-1])
    result = run([compile_prog("showargs", compiler), "one", "two"])
    assert result.returncode == 0 and b"one" in result.stdout and b"two" in result.stdout, result
    start, end = spans[0]
    assert end > start > 0
    assert start == (placement.STATIC_PIE_BASE if compiler == "gcc-pie" else 0x400000)


def test_a_span_the_guest_does_not_take_is_zeroed_before_reuse(compile_prog, monkeypatch):
    """A placed span that is not the program's (here: garbage where the program's
    anonymous memory will come from) is given up as used RAM, so the program's
    fresh pages there still read as zeroes."""
    from vmm.sandbox import placement, program_cache, warm

    monkeypatch.setattr(program_cache, "lookup", lambda identity: None)

    def garbage(memory, program_addr, program_size, floor, limit):
        start = limit - (8 << 20)
        memory.view(start, limit - start)[:] = b"\xaa" * (limit - start)
        return start, limit

    monkeypatch.setattr(placement, "place_program", garbage)
    program = compile_prog("zeroes")
    result = run([program, "24"], mem_mib=128)
    assert (result.returncode, result.stdout) == (0, b"all 25165824 bytes zero\n"), result
    monkeypatch.undo()
    assert warm.bundle_header(5, (4096, 8192))[16:] == (4096).to_bytes(8, "little") + (8192).to_bytes(8, "little")


def test_a_program_run_again_is_mapped_and_a_rebuilt_one_is_not_served_stale(compile_prog, tmp_path, monkeypatch):
    """From a program's second run its file and laid-out segments are kept in the
    user's cache (vmm/sandbox/program_cache.py) and later clones map them;
    replacing the file on disk (same path, same inode, rewritten) must give the
    new program, not the kept one. A program with an entry ran here, so its ELF
    checks are skipped; a rewritten one is checked again."""
    import os
    import shutil

    from vmm.sandbox import runner, warm

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    mapped, checked = [], []
    real = warm._map_program
    monkeypatch.setattr(warm, "_map_program", lambda *a: mapped.append(real(*a)) or mapped[-1])
    real_check = runner.check_static_elf
    monkeypatch.setattr(runner, "check_static_elf", lambda path: checked.append(path) or real_check(path))
    program = tmp_path / "prog"
    shutil.copy(compile_prog("exitcode"), program)
    for code in ("3", "4", "5"):
        result = run([str(program), code])
        assert result.returncode == int(code), result
    assert [span is not None for span in mapped] == [False, False, True]  # a marker, the entry, then mapped
    assert len(checked) == 2  # not the third run's: its entry says it ran
    kept = os.listdir(tmp_path / "cache" / "vmm" / "programs")
    assert len(kept) == 1 and not kept[0].endswith(".seen")
    shutil.copy(compile_prog("showargs"), program)  # rewritten in place: new size and times
    result = run([str(program), "fresh"])
    assert result.returncode == 0 and b"fresh" in result.stdout, result
    assert mapped[-1] is None and len(checked) == 3
    for code in ("1", "2"):  # showargs gets its own entry
        run([str(program), code])
    program.write_bytes(b"#!/bin/sh\necho not ELF\n")
    with pytest.raises(ProgramError) as refused:
        run([str(program)])
    assert refused.value.exit_status == 126 and "not an ELF" in str(refused.value)


def test_a_mapped_program_reads_its_own_file_whole(tmp_path, monkeypatch):
    """The program's file in the bundle is mapped from its entry but for its
    last page, written with what follows it: read back in the guest
    (/proc/self/exe), every byte must be the host file's, run after run."""
    import hashlib
    import shutil

    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox-static is not installed (make tools)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with open(busybox, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    for _ in range(3):
        result = run([busybox, "sha256sum", "/proc/self/exe"])
        assert result.returncode == 0 and result.stdout.split()[0].decode() == digest, result


@pytest.mark.parametrize("damage", ["group-writable", "short", "bad-magic", "other-size"])
def test_an_entry_that_is_not_the_users_own_or_not_whole_is_not_used(compile_prog, tmp_path, monkeypatch, damage):
    from vmm.sandbox import program_cache, warm

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(program_cache, "_open", {})
    program = compile_prog("exitcode")
    for code in ("1", "2"):
        assert run([program, code]).returncode == int(code)
    [entry] = [p for p in (tmp_path / "cache" / "vmm" / "programs").iterdir() if not p.name.endswith(".seen")]
    monkeypatch.setattr(program_cache, "_open", {})
    data = entry.read_bytes()
    if damage == "group-writable":
        entry.chmod(0o620)
    elif damage == "short":
        entry.write_bytes(data[:-4096])
    elif damage == "bad-magic":
        entry.write_bytes(b"NOTVMMPR" + data[8:])
    else:  # says the program has another size than the one run
        entry.write_bytes(data[:8] + (int.from_bytes(data[8:16], "little") + 1).to_bytes(8, "little") + data[16:])
    mapped = []
    real = warm._map_program
    monkeypatch.setattr(warm, "_map_program", lambda *a: mapped.append(real(*a)) or mapped[-1])
    result = run([program, "7"])
    assert result.returncode == 7, result
    assert mapped == [None]


def test_every_pad_before_the_program_is_kept_aside(compile_prog):
    """The program's data is page-aligned in the bundle by a .vmm/pad member of 1-7
    blocks, or none (bundle.py): with each the program runs, sees its environment
    whole, and no .vmm entry shows in its root."""
    import io
    import shutil
    import tarfile

    from vmm.sandbox.bundle import plan_bundle

    program = compile_prog("showargs")
    pads = set()
    for n in range(0, 4096, 512):
        env = {"A": "x" * n}
        bundle = plan_bundle(program, [program], env, {}, {"clock": 1}, exec_path="/bin/showargs")
        assert bundle.exec_member[0] % 4096 == 0
        with tarfile.open(fileobj=io.BytesIO(bytes(bundle))) as tar:
            pad = [m.size for m in tar.getmembers() if m.name == ".vmm/pad"]
        pads.add(pad[0] // 512 + 1 if pad else 0)
        result = run([program, "/"], env=env)
        assert result.returncode == 0 and ("env=A=" + "x" * n).encode() in result.stdout, (n, result)
    assert pads == set(range(8))  # every pad size, and none
    busybox = shutil.which("busybox")
    if busybox is not None:
        listing = run([busybox, "ls", "-a", "/"], env={"A": "x" * 1000})
        assert listing.returncode == 0 and b".vmm" not in listing.stdout, listing
