"""Test stand-ins for what users plug in: an authenticator whose principals have a public
name (what presence shows as ``user``), and a topic authorizer with forbidden topics."""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from wsservice import IAuthenticator, ITopicAuthorizer


class Named:
    """A principal with a public name (what presence shows as ``user``)."""

    def __init__(self, name: str) -> None:
        self.publicName = name


@implementer(IAuthenticator)
class ByName:
    """The hello's auth is the user's name; the principal has it as its publicName."""

    def authenticate(self, request: Any) -> Any:
        return Named(request.auth) if isinstance(request.auth, str) else "anonymous"


@implementer(ITopicAuthorizer)
class NoSecrets:
    """Nobody may subscribe to (or publish on) a topic starting with 'secret.'."""

    def allowSubscribe(self, session: Any, topic: str) -> bool:
        return not topic.startswith("secret.")

    def allowPublish(self, session: Any, topic: str) -> bool:
        return not topic.startswith("secret.")
