"""Reading the documentation's code blocks, so tests run what the docs say, not a copy."""

from __future__ import annotations

import os
import re
import sys
import textwrap
from typing import Any

from . import processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
HANDLERS_MD = os.path.join(ROOT, "docs", "handlers.md")
DEPLOYMENT_MD = os.path.join(ROOT, "docs", "deployment.md")

_BLOCK = re.compile(r"^( *)```(\w*)\n(.*?)^\1```$", re.S | re.M)
_NAMED = re.compile(r"# ([\w.-]+\.\w+)\n")


def blocks(path: str) -> list[tuple[str, str]]:
    """Every fenced block of a Markdown file as (language, text), indentation removed."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [(lang, textwrap.dedent(body)) for _, lang, body in _BLOCK.findall(text)]


def files(path: str) -> dict[str, str]:
    """The blocks that open with a ``# name.ext`` line: what the docs ask you to save."""
    found = {}
    for _, body in blocks(path):
        named = _NAMED.match(body)
        if named:
            found[named.group(1)] = body
    return found


def commands(path: str) -> list[str]:
    """Each command line of the ```sh blocks (continuations joined, comments dropped)."""
    lines = []
    for lang, body in blocks(path):
        if lang == "sh":
            for line in body.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line and not line.startswith("#"):
                    lines.append(" ".join(line.split()))
    return lines


def command(path: str, prefix: str) -> str:
    """The one documented command starting with ``prefix``; fails if the docs lost it."""
    found = [c for c in commands(path) if c.startswith(prefix)]
    assert len(found) == 1, f"{os.path.basename(path)}: commands starting {prefix!r}: {found}"
    return found[0]


def text_lines(path: str, start: str) -> list[str]:
    """Lines of the ```text blocks that start with ``start``."""
    return [line for lang, body in blocks(path) if lang == "text"
            for line in body.splitlines() if line.startswith(start)]


def scratch(testcase: Any, saved: dict[str, str]) -> str:
    """A fresh directory holding ``saved`` files and ``.venv``, the virtualenv running
    these tests (a link), as a user's project directory would after ``make``."""
    where = processes.scratch(testcase, "wsdoc")
    os.symlink(sys.prefix, os.path.join(where, ".venv"))
    for name, text in saved.items():
        target = os.path.join(where, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
    return where
