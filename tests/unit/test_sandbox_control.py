import io
import os
import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from vmm.sandbox.control import MAX_LINE, ControlParser
from vmm.sandbox.outdir import extract_out


def feed_in_pieces(parser, data, size):
    events = []
    for i in range(0, len(data), size):
        events += parser.feed(data[i : i + size])
    return events


def test_lines_become_events_however_they_are_split():
    stream = b"trace write(1, ...) = 5\nout 5\nhello" + b"exit 3\nsignal 11 0x10\nerror 126 dynamic\n"
    for size in (1, 2, 7, len(stream)):
        events = feed_in_pieces(ControlParser(), stream, size)
        assert events == [
            ("trace", "write(1, ...) = 5"),
            ("out", b"hello"),
            ("exit", 3),
            ("signal", 11, 0x10),
            ("error", 126, "dynamic"),
        ]


def test_hostile_lines_are_invalid_events_not_errors():
    parser = ControlParser(max_archive=10)
    events = parser.feed(b"exit 999\nexit x\nsignal 0 0\nbogus\nout -1\nout 11\n" + b"A" * 11 + b"exit 1\n")
    kinds = [e[0] for e in events]
    assert kinds == ["invalid"] * 6 + ["exit"]
    assert events[-1] == ("exit", 1)  # the oversized archive was skipped, not parsed as lines


def test_an_endless_line_is_bounded():
    parser = ControlParser()
    events = []
    for _ in range(100):
        events += parser.feed(b"x" * 10000)
    assert events == [("invalid", f"control line longer than {MAX_LINE} bytes")]
    assert len(parser._buffer) == 0
    assert parser.feed(b"tail\nexit 0\n") == [("exit", 0)]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 64))
def test_arbitrary_bytes_never_raise(data, size):
    for event in feed_in_pieces(ControlParser(max_archive=100), data, size):
        assert event[0] in ("exit", "signal", "error", "trace", "note", "out", "invalid")


def tar_of(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name, data=b"", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def test_out_extracts_files_and_refuses_every_escape(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    archive = tar_of(
        member("result.txt", b"42\n"),
        member("sub", kind=tarfile.DIRTYPE),
        member("sub/data.bin", b"\0\1\2"),
        member("../escape", b"x"),
        member("/abs", b"x"),
        member("sub/../../escape2", b"x"),
        member("link", kind=tarfile.SYMTYPE, link=str(outside)),
        member("hard", kind=tarfile.LNKTYPE, link="result.txt"),
        member("dev", kind=tarfile.CHRTYPE),
        member("fifo", kind=tarfile.FIFOTYPE),
    )
    extracted, skipped = extract_out(archive, str(dest))
    assert extracted == ["result.txt", "sub", "sub/data.bin"]
    assert len(skipped) == 7
    assert (dest / "result.txt").read_bytes() == b"42\n"
    assert sorted(os.listdir(dest)) == ["result.txt", "sub"]
    assert os.listdir(outside) == [] and not (tmp_path / "escape").exists()


def test_out_caps_sizes_and_counts(tmp_path):
    archive = tar_of(*(member(f"f{i}", b"x" * 100) for i in range(20)))
    extracted, skipped = extract_out(archive, str(tmp_path / "a"), max_bytes=1000)
    assert len(extracted) == 10 and len(skipped) == 10
    extracted, skipped = extract_out(archive, str(tmp_path / "b"), max_files=5)
    assert len(extracted) == 5 and "more than 5 entries" in skipped[-1]
    assert extract_out(b"not a tar at all" * 40, str(tmp_path / "c"))[0] == []
