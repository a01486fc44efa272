"""``--config FILE``: twistd wsservice's options from a TOML file, the command line winning.

Keys are the options' names as ``twistd wsservice --help`` spells them (``max-message-size``;
``max_message_size`` is accepted too); an option taking a value takes a string (a number for
the numeric ones), a repeatable option an array of strings, a flag a boolean. The values
become the same text the command line gives, so one set of checks judges both; their
errors are re-worded to name the key and the file (``blame``). See docs/configuration.md.
"""

from __future__ import annotations

import difflib
import getopt
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from twisted.python import usage

Value = Union[str, list[str], bool]
# twistd wsservice options a file cannot hold: usage.Options' own, the file itself, and the
# one a --workers parent gives its workers
_NOT_IN_FILE = {"help", "version", "config", "adopt-fds"}


class ConfigFileError(ValueError):
    """A config file that cannot be used; the message is one line naming the file and key."""


@dataclass(frozen=True)
class Schema:
    """What each option takes: ``values`` (a string or number), ``numbers`` (among those, a
    number), ``lists`` (repeatable: an array of strings) and ``flags`` (a boolean)."""

    values: frozenset[str]
    numbers: frozenset[str]
    lists: frozenset[str]
    flags: frozenset[str]

    @property
    def names(self) -> frozenset[str]:
        """Every option a file may name."""
        return self.values | self.lists | self.flags


def schema(options: usage.Options, numbers: Iterable[str]) -> Schema:
    """The schema of an Options instance: its long options; those whose value is a list
    (the repeatable ones) take arrays; ``numbers`` name the numeric ones."""
    long = [name for name in options.longOpt if name.rstrip("=") not in _NOT_IN_FILE]
    taking = {name[:-1] for name in long if name.endswith("=")}
    lists = {name for name in taking if isinstance(options.get(name), list)}
    return Schema(values=frozenset(taking - lists), numbers=frozenset(numbers) & taking,
                  lists=frozenset(lists),
                  flags=frozenset(name for name in long if not name.endswith("=")))


def given(options: usage.Options, argv: list[str]) -> set[str]:
    """The long options ``argv`` gives (abbreviations spelled out, as getopt reads them);
    empty when getopt refuses it (usage.Options then reports why)."""
    try:
        found, _ = getopt.getopt(argv, options.shortOpt, options.longOpt)
    except getopt.GetoptError:
        return set()
    return {name[2:] for name, _ in found if name.startswith("--")}


def read(path: str) -> dict[str, Any]:
    """The TOML table of the file at ``path``; ConfigFileError saying why it cannot be."""
    where = f"--config {path}"
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigFileError(f"{where}: cannot read it: {e.strerror}; give the path of a "
                              "TOML file (docs/configuration.md has an example)") from e
    except tomllib.TOMLDecodeError as e:
        # the parser's message ends with "(at line L, column C)"
        raise ConfigFileError(f"{where}: not valid TOML: {' '.join(str(e).split())}") from e
    except UnicodeDecodeError as e:
        raise ConfigFileError(f"{where}: not UTF-8 text (byte {e.start}); "
                              "save it as UTF-8") from e


def _toml(value: Any) -> str:
    """A value as TOML writes it, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def _what(value: Any) -> str:
    """``VALUE is a TYPE``, for messages (a table is not shown)."""
    return "a table" if isinstance(value, dict) else f"{_toml(value)} is {_type(value)}"


def _type(value: Any) -> str:
    """The TOML type of a value, in words."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


def load(path: str, shape: Schema) -> dict[str, Value]:
    """The options a config file sets, as the command line would give them (strings, lists
    of strings, booleans), keyed by option name; ConfigFileError on any key or type error."""
    table = read(path)
    found: dict[str, Value] = {}
    spelled: dict[str, str] = {}
    for key, value in table.items():
        name = key.replace("_", "-")
        where = f"{key} in {path}"
        if name == "config":
            raise ConfigFileError(f"{where}: a config file cannot name another one; "
                                  "remove the key (give --config once, on the command line)")
        if name not in shape.names:
            close = difflib.get_close_matches(name, sorted(shape.names), n=1, cutoff=0.6)
            hint = (f"did you mean {close[0]}?" if close
                    else "'twistd wsservice --help' lists the options")
            raise ConfigFileError(f"{where}: unknown option; {hint}")
        if name in spelled:
            raise ConfigFileError(f"{where}: the same option as {spelled[name]}; keep one")
        spelled[name] = key
        found[name] = _check(where, name, value, shape)
    return found


def _check(where: str, name: str, value: Any, shape: Schema) -> Value:
    """One value, type-checked and in command-line form."""
    if name in shape.flags:
        if not isinstance(value, bool):
            raise ConfigFileError(f"{where}: {_what(value)}; a flag takes true or false, "
                                  f"e.g. {name} = true")
        return value
    if name in shape.lists:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigFileError(f"{where}: {_what(value)}; this repeatable option takes an "
                                  f'array of strings, e.g. {name} = ["…", "…"]')
        return list(value)
    if name in shape.numbers:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigFileError(f"{where}: {_what(value)}; it takes a number (no quotes)")
        return repr(value)  # the command line's text: int() and float() read it back
    if not isinstance(value, str):
        raise ConfigFileError(f'{where}: {_what(value)}; it takes a string, e.g. {name} = "…"')
    return value


_OPTION = re.compile(r"--([a-z][a-z0-9-]*)")


def blame(line: str, path: str, from_file: Iterable[str], numbers: Iterable[str]) -> str:
    """A usage error line about an option the file set, re-worded to name the key and the
    file: ``--max-depth 5000: must be ...; e.g. --max-depth 32`` becomes ``max-depth in
    FILE: 5000: must be ...; e.g. max-depth = 32``. Other lines are returned as they are."""
    match = _OPTION.match(line)
    if not match or match.group(1) not in set(from_file):
        return line
    name = match.group(1)
    rest = line[match.end():]
    line = f"{name} in {path}" + (rest if rest.startswith(":") else ":" + rest)

    def example(found: re.Match[str]) -> str:
        shown = found.group(1)
        return f"e.g. {name} = {shown if name in set(numbers) else _toml(shown)}"
    return re.sub(rf"e\.g\. --{re.escape(name)} (\S+)", example, line)
