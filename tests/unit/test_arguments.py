"""`vmm exec`'s and `vmm run`'s command lines read without argparse (vmm/arguments.py)
give what argparse gives, on every line they accept; everything else they leave to argparse."""

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmm import arguments, cli, cli_parser
from vmm.sandbox.cli import OPTIONS, parse_plain


def by_argparse(argv: list[str], command: str = "exec") -> dict | None:
    """argparse's reading of `vmm COMMAND ARGV`, or None where it refuses the line."""
    line = [command, *argv]
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



_GOOD = {arguments.mib: "64", arguments.count: "2", arguments.seconds: "1.5", arguments.disk: "a.img,ro",
         arguments.cmdline: "console=ttyS0"}


@st.composite
def _option_words(draw, options):
    """Options with values their types take (mostly) or noise, each as one word or two."""
    words = []
    for option in draw(st.lists(st.sampled_from(options), max_size=5)):
        if not option.takes_value:
            words.append(option.flag)
            continue
        good = st.sampled_from(option.choices) if option.choices else st.just(_GOOD.get(option.type, "x"))
        value = draw(st.one_of(good, good, _values))
        words += [f"{option.flag}={value}"] if draw(st.booleans()) else [option.flag, value]
    return words


@st.composite
def _lines(draw):
    """Mostly well-formed lines (options, maybe '--', a program, its arguments), with noise."""
    line = draw(_option_words(OPTIONS))
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


# --- vmm run: options only -------------------------------------------------------------------

def run_by_plain_parser(argv: list[str]) -> dict | None:
    values = arguments.parse_line(argv, cli.RUN_OPTIONS, program=False)
    return None if values is None else {"command": "run", **values}


@pytest.mark.parametrize("argv", [
    [], ["--mem", "64"], ["--kernel=k.elf", "--cmdline", "console=ttyS0 quiet", "--initrd", "i"],
    ["--disk", "a.img,ro", "--disk=b,,c.img", "--cpus", "2", "--timeout", "3", "--serial-log", "log"],
    ["--no-ioeventfd", "--stats", "--exit-code-style", "qemu", "--snapshot-path", "s", "--mem-file-path", "m"],
    ["--jail", "--jail-memory=512", "--no-seccomp"],
])
def test_plain_run_lines_read_as_argparse_reads_them(argv):
    plain = run_by_plain_parser(argv)
    assert plain is not None, "a plain line was left to argparse"
    assert plain == by_argparse(argv, "run")


@pytest.mark.parametrize("argv", [
    ["x"], ["--"], ["--", "x"], ["--mem"], ["--exit-code-style", "bogus"], ["--disk", ""], ["--cpus", "0"], ["--k", "x"],
    ["--stats=1"], ["-h"],
])
def test_the_rest_of_run_is_left_to_argparse(argv):
    assert run_by_plain_parser(argv) is None


_run_flags = [option.flag for option in cli.RUN_OPTIONS]


@settings(max_examples=800, deadline=None)
@given(st.one_of(
    _option_words(cli.RUN_OPTIONS),
    st.builds(lambda words, noise: words + noise, _option_words(cli.RUN_OPTIONS), st.lists(_token, min_size=1, max_size=2)),
    st.lists(st.one_of(st.sampled_from(_run_flags), st.builds(lambda flag, value: f"{flag}={value}", st.sampled_from(_run_flags), _values),
                       _values), max_size=8),
))
def test_run_never_disagrees_with_argparse(argv):
    plain = run_by_plain_parser(argv)
    if plain is not None:
        assert plain == by_argparse(argv, "run")
