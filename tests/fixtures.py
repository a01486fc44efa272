"""Handlers and authenticators importable by name, for tests that load them by spec."""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from wsservice.handler import Handler, call, event
from wsservice.interfaces import IAuthenticator, ICallHandler, IEventHandler


class Greeter(Handler):
    """A Handler subclass serving call 'greet' and event 'wave'."""

    @call
    def greet(self, session: Any, params: Any) -> Any:
        return f"hello {params}"

    @event
    def wave(self, session: Any, data: Any) -> None:
        pass


class OtherGreeter(Handler):
    """Serves call 'greet' too: clashes with Greeter."""

    @call("greet")
    def other(self, session: Any, params: Any) -> Any:
        return "other"


class OtherWaver(Handler):
    """Serves event 'wave' too (and no clashing call): clashes with Greeter on the event."""

    @event("wave")
    def waving(self, session: Any, data: Any) -> None:
        pass


# An instance, used as is by load().
GREETER = Greeter()

made: list[Any] = []


def make_greeter() -> Greeter:
    """A zero-argument factory."""
    handler = Greeter()
    made.append(handler)
    return handler


@implementer(ICallHandler)
class PlainCalls:
    """Not a Handler subclass: declares ICallHandler and has a calls dict."""

    def __init__(self) -> None:
        self.calls = {"plain": self.plain}

    def plain(self, session: Any, params: Any) -> Any:
        return "plain"


def _ignore(session: Any, data: Any) -> None:
    pass


@implementer(IEventHandler)
class PlainEvents:
    """Not a Handler subclass: declares IEventHandler and has an events dict."""

    events = {"plain-event": _ignore}


class Nothing:
    """Provides no contract at all."""


NOTHING = Nothing()


def make_nothing() -> Nothing:
    return Nothing()


@implementer(ICallHandler)
class NoCallsAttribute:
    """Claims ICallHandler but has no 'calls'."""


class NeedsArgument(Handler):
    """Cannot be made with zero arguments."""

    def __init__(self, required: Any) -> None:
        self.required = required


@implementer(IAuthenticator)
class Authenticator:
    """A working authenticator class (load_authenticator instantiates it)."""

    def authenticate(self, request: Any) -> Any:
        return "someone"


AUTHENTICATOR = Authenticator()


@implementer(IAuthenticator)
class BrokenAuthenticator:
    """Claims IAuthenticator but has no authenticate method."""
