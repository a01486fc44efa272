"""The bearer keys of the HTTP API (protocol.md §9): loaded from a key file, checked in
constant time.

The file holds one key a line; surrounding whitespace is ignored, and so are blank lines
and lines starting with ``#`` (comments). It must be readable by the service's user alone
(``chmod 600``): start-up refuses a missing, unreadable, empty or group/world-accessible
file with one line saying what to do.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Iterable

from .errors import ConfigurationError
from .hmactokens import read_secret_file

_WHAT = "the API key file"


def _example(path: str) -> str:
    """A shell line that makes a key file holding one good key."""
    return (f"'python3 -c \"import secrets; print(secrets.token_urlsafe(32))\" > {path}; "
            f"chmod 600 {path}'")


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def parse_keys(text: bytes) -> list[bytes]:
    """The keys a key file's bytes hold: each non-blank line, stripped, that is no comment."""
    keys = []
    for line in text.splitlines():
        key = line.strip()
        if key and not key.startswith(b"#"):
            keys.append(key)
    return keys


class APIKeys:
    """The keys that open the HTTP API; ``check`` compares a presented key with every one
    in constant time."""

    def __init__(self, keys: Iterable[str | bytes]) -> None:
        # Only digests are kept: comparing two digests of equal length tells nothing of a
        # key's length, and no key stays readable in this process's memory.
        self._digests = [_digest(k.encode("utf-8") if isinstance(k, str) else k)
                         for k in keys]
        if not self._digests:
            raise ConfigurationError("no API key given: the HTTP API needs at least one")

    @classmethod
    def fromFile(cls, path: str) -> APIKeys:
        """The keys of a key file; ConfigurationError naming the file and what to do when it
        is missing, unreadable, open to group or others, or holds no key."""
        keys = parse_keys(read_secret_file(path, _WHAT, f"make one with {_example(path)}"))
        if not keys:
            raise ConfigurationError(
                f"{_WHAT} {path} holds no key; put one key a line in it (blank lines and "
                f"lines starting with # are ignored), e.g. {_example(path)}")
        return cls(keys)

    def __len__(self) -> int:
        return len(self._digests)

    def check(self, presented: bytes) -> bool:
        """Whether ``presented`` is one of the keys; the time taken does not depend on which
        key matched, how much of one did, or the keys' lengths."""
        digest = _digest(presented)
        found = False
        for known in self._digests:
            # no early exit: every key is compared, whichever matches
            found |= hmac.compare_digest(digest, known)
        return found
