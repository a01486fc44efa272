"""What every session store shares: the claim it answers and how it keeps tokens."""

from __future__ import annotations

import base64
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


def public_id(session_id: str) -> str:
    """A session's public client id (protocol.md §7): the same on every node, and no way
    back to the session id (a one-way hash of it: 96 bits, URL-safe)."""
    digest = hashlib.sha256(b"wsservice.client:" + session_id.encode("utf-8", "surrogatepass"))
    return base64.urlsafe_b64encode(digest.digest()[:12]).decode("ascii")


def public_name(principal: Any) -> str | None:
    """What presence shows of a principal: its ``publicName`` when that is a string."""
    name = getattr(principal, "publicName", None)
    return name if isinstance(name, str) else None


def member_of(session_id: str, principal: Any, meta: Any) -> dict[str, Any]:
    """A session as presence lists it: public client id, user, and its meta's ``public``."""
    public = meta.get("public") if isinstance(meta, dict) else None
    return {"client": public_id(session_id), "user": public_name(principal), "meta": public}


def memberships(topics: dict[str, set[Any]]) -> int:
    """How many topic memberships a broker's local subscribers hold (for metrics)."""
    return sum(len(subscribers) for subscribers in topics.values())


@dataclass(frozen=True)
class Claim:
    """A session taken back for a resuming client: its record and what to send again."""

    record: Any  # ISessionRecord
    replay: list[bytes] | None  # None: some frames after last_seq are gone (a gap)
