"""Authentication: the request an authenticator sees, and the default (everyone anonymous)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from zope.interface import implementer

from .interfaces import IAuthenticator, IAuthRequest


@implementer(IAuthRequest)
@dataclass(frozen=True)
class AuthRequest:
    """What an authenticator sees of a ``hello``: its auth member, headers, peer and listener."""

    auth: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    peer: str = ""
    listener: str = ""


def bearer_credential(value: str) -> str | None:
    """The credential of an ``Authorization`` header value ``Bearer CREDENTIAL`` (the
    scheme in any case), else None."""
    scheme, _, credential = value.strip().partition(" ")
    credential = credential.strip()
    return credential if scheme.lower() == "bearer" and credential else None


def hello_token(request: IAuthRequest) -> Any:
    """The token a hello carries: its ``auth`` (``{"token": ...}`` or the value itself),
    else the handshake's ``Authorization: Bearer`` credential; None without one."""
    token = request.auth
    if isinstance(token, dict):
        token = token.get("token")
    if token is None:
        token = bearer_credential(request.headers.get("authorization", ""))
    return token


class Anonymous:
    """The principal of every client under the default authenticator."""

    def __repr__(self) -> str:
        return "anonymous"


ANONYMOUS = Anonymous()


@implementer(IAuthenticator)
class AnonymousAuthenticator:
    """The default authenticator: everyone is ``ANONYMOUS``."""

    def authenticate(self, request: IAuthRequest) -> Any:
        """Accept anyone."""
        return ANONYMOUS
