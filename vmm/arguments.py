"""Option values and option tables, without argparse.

The types (mib, seconds, count, cmdline, disk) check one value each. An
``Option`` declares a command-line option once: ``add_options`` adds it to
an argparse parser (vmm/cli_parser.py), and ``parse_line`` reads the plain
form of a `vmm exec` or `vmm run` command line with it, without importing
argparse, re and gettext (~5 ms of every start, a seventh of either).
``parse_line`` gives up (None) on anything not plainly its own, and argparse
then parses the line and reports its errors: a test holds the two to the
same result on every line the fast one accepts (tests/unit/test_arguments.py).
"""

from __future__ import annotations

from .config import DiskConfig, check_cmdline, check_timeout
from .errors import ConfigError


def refuse(message: str):
    """Refuse a value, in the form argparse reports as ``argument --opt: message``."""
    import argparse  # only once a value is refused: argparse is then what reports it

    raise argparse.ArgumentTypeError(message)


def decimal(text: str) -> int | None:
    """A plain decimal number (ASCII digits only: no sign, base prefix, '_' or spaces), or None."""
    return int(text) if text.isascii() and text.isdigit() else None


def count(text: str) -> int:
    value = decimal(text)
    if value is None:
        refuse(f"not a whole number: {text!r}")
    if value <= 0:
        refuse(f"must be positive: {text!r}")
    return value


_SIZE_SUFFIXES = {"": 1, "M": 1, "G": 1024}


def mib(text: str) -> int:
    """A size in MiB: decimal digits, optionally followed by M (MiB) or G (GiB)."""
    suffix = text[-1:].upper() if text[-1:].upper() in ("M", "G") else ""
    value = decimal(text[: len(text) - len(suffix)])
    if value is None:
        refuse(f"not a whole number of MiB: {text!r} (decimal, optionally with M or G: 512, 512M, 2G)")
    if value <= 0:
        refuse(f"must be positive: {text!r}")
    return value * _SIZE_SUFFIXES[suffix]


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        refuse(f"not a number of seconds: {text!r}")
    try:
        return check_timeout(value)
    except ConfigError as err:
        refuse(str(err))


def cmdline(text: str) -> str:
    try:
        check_cmdline(text)
    except ConfigError as err:
        refuse(str(err))
    return text


def disk(text: str) -> DiskConfig:
    """PATH[,ro|,rw]; a comma inside PATH is written twice (a,,b.img), as QEMU does."""
    path, i = [], 0
    while i < len(text) and not (text[i] == "," and text[i + 1 : i + 2] != ","):
        path.append(text[i])
        i += 2 if text[i] == "," else 1
    options = text[i + 1 :] if i < len(text) else ""
    if not path:
        refuse("empty disk path")
    if i < len(text) and options not in ("ro", "rw"):
        refuse(f"unknown disk option {options!r} (use PATH, PATH,ro or PATH,rw; write a comma in PATH as ',,')")
    return DiskConfig("".join(path), read_only=options == "ro")


_UNSET = object()


class Option:
    """One long option: ``action`` is argparse's store, append, store_true or store_false
    (with argparse's defaults: None, a fresh list, False, True); options sharing a
    ``group`` exclude each other. Where two options share a dest, the first one's
    default is the value, as in argparse."""

    __slots__ = ("flag", "dest", "action", "type", "default", "metavar", "help", "group", "choices")

    def __init__(self, flag: str, *, dest: str | None = None, action: str = "store", type=None, default=_UNSET,
                 metavar: str | None = None, help: str = "", group: str | None = None, choices: tuple | None = None):
        self.flag, self.action, self.type, self.metavar, self.help, self.group = flag, action, type, metavar, help, group
        self.choices = choices
        self.dest = dest or flag[2:].replace("-", "_")
        if default is _UNSET:
            default = action == "store_false" if action in ("store_true", "store_false") else None
        self.default = default

    @property
    def takes_value(self) -> bool:
        return self.action in ("store", "append")

    def initial(self):
        """The value before the command line sets it (a fresh list for append)."""
        return list(self.default or ()) if self.action == "append" else self.default


SECCOMP = Option("--no-seccomp", dest="seccomp", action="store_false",
                 help="no per-thread seccomp filters (default: each vmm thread may make only the system calls it needs)")


def add_options(parser, options) -> None:
    """Add ``options`` to an argparse parser (exclusive groups as they come)."""
    groups: dict[str, object] = {}
    for option in options:
        target = parser
        if option.group is not None:
            if option.group not in groups:
                groups[option.group] = parser.add_mutually_exclusive_group()
            target = groups[option.group]
        extra = {"type": option.type, "metavar": option.metavar, "choices": option.choices} if option.takes_value else {}
        target.add_argument(option.flag, dest=option.dest, action=option.action, default=option.initial(),
                            help=option.help, **{k: v for k, v in extra.items() if v is not None})


class Parsed:
    """The parsed command line: the attributes argparse's Namespace would have."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Parsed({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


def _ambiguous(token: str, flags: list[str]) -> bool:
    """An abbreviation argparse cannot resolve (``--j`` for --jail and --jail-cpus)."""
    if not token.startswith("--") or token == "--":
        return False
    prefix = token.partition("=")[0]
    return prefix not in flags and sum(flag.startswith(prefix) for flag in flags) > 1


def parse_line(argv: list[str], options, *, program: bool) -> dict | None:
    """``OPTION...``, or with ``program`` ``OPTION... [--] PROGRAM ARG...``, read with
    ``options``: the values by dest, with ``program`` and ``args`` (everything after
    PROGRAM, as argparse.REMAINDER takes it). None for whatever argparse should parse
    instead: an unknown or abbreviated option, a missing value or one that looks like
    an option, a value its type or choices refuse, two options of one group; without
    ``program`` any other word; with it no PROGRAM, a PROGRAM that starts with '-', a
    '--' after PROGRAM, an ambiguous abbreviation after PROGRAM unless a '--' came first."""
    by_flag = {option.flag: option for option in options}
    values: dict = {}
    for option in options:
        values.setdefault(option.dest, option.initial())
    groups: dict[str, str] = {}
    i, separated = 0, False
    while i < len(argv):
        token = argv[i]
        if token == "--":
            i, separated = i + 1, True
            break
        if not token.startswith("-"):
            break
        flag, has_value, value = token.partition("=")
        option = by_flag.get(flag)
        if option is None or (has_value and not option.takes_value):
            return None
        if option.group is not None and groups.setdefault(option.group, flag) != flag:
            return None
        i += 1
        if option.takes_value:
            if has_value and value == "--":
                return None  # argparse drops a '--' even from there
            if not has_value:
                if i == len(argv) or argv[i].startswith("-"):
                    return None
                value = argv[i]
                i += 1
            if option.type is not None:
                try:
                    value = option.type(value)
                except Exception:  # argparse says what is wrong with it
                    return None
            if option.choices is not None and value not in option.choices:
                return None
            if option.action == "append":
                values[option.dest].append(value)
            else:
                values[option.dest] = value
        else:
            values[option.dest] = option.action == "store_true"
    if not program:
        return values if i == len(argv) and not separated else None
    if i == len(argv) or argv[i].startswith("-") or "--" in argv[i + 1:]:
        return None
    flags = [*by_flag, "--help"]
    if not separated and any(_ambiguous(token, flags) for token in argv[i + 1:]):  # argparse refuses them even there
        return None
    values["program"], values["args"] = argv[i], argv[i + 1:]
    return values
