"""The natural way to write handlers: a class whose methods are marked ``@call`` / ``@event``."""

from __future__ import annotations

from typing import Any, Callable, TypeVar, overload

from zope.interface import implementer

from .interfaces import ICallHandler, IEventHandler, ISession, ISessionObserver

F = TypeVar("F", bound=Callable[..., Any])

_CALL_MARK = "_wsservice_call"
_EVENT_MARK = "_wsservice_event"


def _marker(attribute: str, kind: str) -> Callable[..., Any]:
    @overload
    def mark(name: F) -> F: ...
    @overload
    def mark(name: str) -> Callable[[F], F]: ...

    def mark(name: Any) -> Any:
        if callable(name):
            setattr(name, attribute, name.__name__)
            return name
        if not isinstance(name, str) or not name:
            raise TypeError(f"@{kind} takes a non-empty name, got {name!r}")

        def decorate(fn: F) -> F:
            setattr(fn, attribute, name)
            return fn

        return decorate

    mark.__name__ = kind
    mark.__doc__ = f"Mark a Handler method as serving the client's ``{kind}`` of that name."
    return mark


call = _marker(_CALL_MARK, "call")
event = _marker(_EVENT_MARK, "event")


def _collect(cls: type, attribute: str) -> dict[str, str]:
    """Map served name -> method name over the class's MRO; a subclass overrides its bases.

    An override without a mark keeps serving the base's name; an override marked with
    another name serves only the new one.
    """
    served: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        owner: dict[str, str] = {}
        for attr, value in vars(klass).items():
            name = getattr(value, attribute, None)
            if name is None:
                continue
            if name in owner:
                raise TypeError(
                    f"{klass.__qualname__}: both {owner[name]}() and {attr}() serve {name!r}"
                )
            owner[name] = attr
        remarked = set(owner.values())
        served = {name: attr for name, attr in served.items() if attr not in remarked}
        served.update(owner)
    return served


@implementer(ICallHandler, IEventHandler, ISessionObserver)
class Handler:
    """Base class for handlers: subclass it and mark methods with ``@call`` and ``@event``.

    Marked methods take ``(self, session, params_or_data)``. Override ``sessionOpened`` /
    ``sessionClosed`` to hear about sessions.
    """

    _call_names: dict[str, str] = {}
    _event_names: dict[str, str] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Resolved once per class, so building the dispatch maps costs nothing per message.
        cls._call_names = _collect(cls, _CALL_MARK)
        cls._event_names = _collect(cls, _EVENT_MARK)

    @property
    def calls(self) -> dict[str, Callable[[ISession, Any], Any]]:
        """Method name -> bound method, from the ``@call`` marks."""
        return {name: getattr(self, attr) for name, attr in self._call_names.items()}

    @property
    def events(self) -> dict[str, Callable[[ISession, Any], Any]]:
        """Event name -> bound method, from the ``@event`` marks."""
        return {name: getattr(self, attr) for name, attr in self._event_names.items()}

    def sessionOpened(self, session: ISession) -> None:
        """A session began; override to react."""

    def sessionClosed(self, session: ISession, reason: str) -> None:
        """A session ended; override to react."""
