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
