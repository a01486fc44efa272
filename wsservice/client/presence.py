"""Presence as the client sees it (protocol.md §7): the members of a ``presence`` answer and
of ``presence.join`` / ``presence.leave`` events, checked before the application gets them."""

from __future__ import annotations

from typing import Any, Callable

from .errors import ClientError

# the client's own error code: a presence answer that is not {"members": [...]}
BAD_RESULT = "bad_result"

# event name -> the kind a presence listener is given
EVENTS = {"presence.join": "join", "presence.leave": "leave"}

PresenceListener = Callable[[str, dict[str, Any]], Any]  # (kind, member)


def member(value: Any) -> dict[str, Any] | None:
    """``value`` as a member ``{"client", "user", "meta"}``, or None when it is malformed
    (``client`` must be a non-empty string, ``user`` a string or null); members a newer
    server adds are kept."""
    if type(value) is not dict:
        return None
    client, user = value.get("client"), value.get("user")
    if type(client) is not str or not client or (user is not None and type(user) is not str):
        return None
    return {**value, "user": user, "meta": value.get("meta")}


def members(result: Any, topic: str) -> tuple[list[dict[str, Any]], list[Any]]:
    """The members of a ``presence`` answer, and the malformed entries left out; raises
    ClientError ``bad_result`` when it holds no members list."""
    listed = result.get("members") if type(result) is dict else None
    if type(listed) is not list:
        raise ClientError(BAD_RESULT, f"presence {topic!r}: the server's answer has no "
                          f"members list: {result!r:.80}", result)
    good: list[dict[str, Any]] = []
    bad: list[Any] = []
    for value in listed:
        checked = member(value)
        if checked is None:
            bad.append(value)
        else:
            good.append(checked)
    return good, bad
