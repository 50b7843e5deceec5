"""`vmm exec`'s command line read without argparse (vmm/arguments.py) gives what
argparse gives, on every line it accepts; everything else it leaves to argparse."""

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmm import arguments, cli_parser
from vmm.sandbox.cli import OPTIONS, parse_plain


def by_argparse(argv: list[str]) -> dict | None:
    """argparse's reading of `vmm exec ARGV`, or None where it refuses the line."""
    line = ["exec", *argv]
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return vars(cli_parser.build_parser(line).parse_args(line))
    except SystemExit:
        return None


def by_plain_parser(argv: list[str]) -> dict | None:
    parsed = parse_plain(argv)
    return None if parsed is None else vars(parsed)


@pytest.mark.parametrize("argv", [
    ["--", "prog"],
    ["prog"],
    ["--", "prog", "a", "-b", "--c=d", ""],
    ["prog", "--mem", "64"],  # after PROGRAM everything is its own
    ["--mem", "64", "--", "prog"],
    ["--mem=2G", "--timeout", "1.5", "--in", "a:b", "--in=c", "--env", "A=B", "--env=C=-D", "--", "prog"],
    ["--trace", "--stats", "--deterministic", "--seed", "7", "--max-output", "10", "--cwd", "/tmp", "prog"],
    ["--cold", "--cold", "prog"], ["--warm", "prog"], ["--no-seccomp", "prog"],
    ["--jail", "--jail-memory", "256", "--jail-cpus", "0.5", "prog"], ["--jail", "--no-jail", "prog"],
    ["--out-dir", "out", "--rootfs", "root.img", "--mem", "64", "--mem", "32", "prog"],
    ["", "x"],
])
def test_plain_lines_read_as_argparse_reads_them(argv):
    plain = by_plain_parser(argv)
    assert plain is not None, "a plain line was left to argparse"
    assert plain == by_argparse(argv)


@pytest.mark.parametrize("argv", [
    [], ["--"], ["--mem"], ["--mem", "64"], ["--me", "64", "prog"], ["--mem", "0", "prog"], ["--mem", "-1", "prog"],
    ["--env", "-x", "prog"], ["--trace=1", "prog"], ["--cold", "--warm", "prog"], ["-h"], ["--help"],
    ["--bogus", "prog"], ["--", "-prog"], ["-", "x"], ["--", "--", "prog"], ["prog", "--", "x"],
    ["--jail-cpus", "2000", "prog"], ["--timeout", "nan", "prog"], ["--seed", "0x10", "prog"], ["--in=--", "prog"],
    ["prog", "--j"], ["prog", "--no=1"],
])
def test_the_rest_is_left_to_argparse(argv):
    assert by_plain_parser(argv) is None


_flags = [option.flag for option in OPTIONS]
_values = st.sampled_from(["64", "0", "-1", "2G", "1.5", "nan", "a:b", "K=V", "/tmp", "--", "-", "", "x y", "-x", "010", "1e3"])
_token = st.one_of(
    st.sampled_from(_flags),
    st.builds(lambda flag, value: f"{flag}={value}", st.sampled_from(_flags), _values),
    st.sampled_from([flag[: n] for flag in _flags for n in (3, 5, 7) if n < len(flag)]),  # abbreviations
    _values,
    st.sampled_from(["--", "-h", "--help", "--bogus", "prog", "-", "--in"]),
    st.text(alphabet="-=abc: ", max_size=6),
)



@st.composite
def _lines(draw):
    """Mostly well-formed lines (options, maybe '--', a program, its arguments), with noise."""
    line = []
    for option in draw(st.lists(st.sampled_from(OPTIONS), max_size=5)):
        if not option.takes_value:
            line.append(option.flag)
        elif draw(st.booleans()):
            line.append(f"{option.flag}={draw(_values)}")
        else:
            line += [option.flag, draw(_values)]
    if draw(st.booleans()):
        line.append("--")
    line.append(draw(st.sampled_from(["prog", "-prog", "--", "", "a b"])))
    line += draw(st.lists(_token, max_size=4))
    return line


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.lists(_token, max_size=9), _lines()))
def test_never_disagrees_with_argparse(argv):
    plain = by_plain_parser(argv)
    if plain is not None:
        assert plain == by_argparse(argv)


def test_option_defaults_are_argparse_defaults():
    expected = by_argparse(["prog"])
    assert by_plain_parser(["prog"]) == expected
    assert expected["warm"] is None and expected["jail"] is False and expected["seccomp"] is True
    assert expected["inputs"] == [] and expected["env"] == []


def test_append_defaults_are_fresh_lists():
    first, second = parse_plain(["--env", "A=B", "prog"]), parse_plain(["prog"])
    assert first.env == ["A=B"] and second.env == []


def test_refused_values_name_the_problem():
    with pytest.raises(Exception, match="must be positive"):
        arguments.mib("0")
    assert arguments.mib("2g") == 2048 and arguments.count("010") == 10
