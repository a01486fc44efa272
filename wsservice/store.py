"""What every session store shares: the claim it answers and how it keeps tokens."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any


def token_hash(token: str) -> bytes:
    """The only form a store keeps a session token in."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def token_matches(kept: bytes, token: str) -> bool:
    """Whether ``token`` is the one ``kept`` was made from (constant time)."""
    return hmac.compare_digest(kept, token_hash(token))


@dataclass(frozen=True)
class Claim:
    """A session taken back for a resuming client: its record and what to send again."""

    record: Any  # ISessionRecord
    replay: list[bytes] | None  # None: some frames after last_seq are gone (a gap)
