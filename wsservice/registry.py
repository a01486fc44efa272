"""Loading handler objects by name and merging them into one checked dispatch registry."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable

from zope.interface.exceptions import Invalid
from zope.interface.interface import InterfaceClass
from zope.interface.verify import verifyObject

from .errors import ConfigurationError
from .interfaces import (
    IAuthenticator,
    ICallHandler,
    IEventHandler,
    IResourceProvider,
    ISessionObserver,
    ITopicAuthorizer,
)

HANDLER_CONTRACTS: tuple[InterfaceClass, ...] = (
    ICallHandler, IEventHandler, ISessionObserver, IResourceProvider, ITopicAuthorizer,
)


def resolve(spec: str) -> Any:
    """Import ``package.module:attribute`` (``attribute`` may be dotted) and return it;
    a bare ``package.module`` means its ``handler`` attribute."""
    module_name, sep, attribute = spec.partition(":")
    if not sep:
        attribute = "handler"
    if not module_name or not attribute:
        raise ConfigurationError(f"{spec!r}: expected 'package.module[:attribute]'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigurationError(f"{spec!r}: cannot import {module_name!r}: {e}") from e
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(f"{spec!r}: {module_name!r} has no {attribute!r}") from None
    return obj


def _instantiate(obj: Any, spec: str, contracts: tuple[InterfaceClass, ...]) -> Any:
    """An object providing a contract is used as is; otherwise a zero-argument factory is called."""
    if any(c.providedBy(obj) for c in contracts):
        return obj
    if callable(obj):
        try:
            return obj()
        except Exception as e:
            raise ConfigurationError(f"{spec!r}: calling it to make the object failed: {e!r}") from e
    return obj


def load(spec: str) -> Any:
    """Load ``package.module:attribute`` as a handler, checked against the contracts it claims."""
    handler = _instantiate(resolve(spec), spec, HANDLER_CONTRACTS)
    provided = [c for c in HANDLER_CONTRACTS if c.providedBy(handler)]
    if not provided:
        raise ConfigurationError(
            f"{spec}: provides none of " + ", ".join(c.__name__ for c in HANDLER_CONTRACTS))
    verify(handler, provided, spec)
    return handler


def load_authenticator(spec: str) -> Any:
    """Load an IAuthenticator: ``hmac:SECRET_FILE`` (the built-in signed tokens) or
    ``package.module:attribute``; verify it."""
    if spec.startswith("hmac:"):
        from .tokens import HMACAuthenticator
        return HMACAuthenticator.fromFile(spec[len("hmac:"):])
    obj = _instantiate(resolve(spec), spec, (IAuthenticator,))
    verify(obj, (IAuthenticator,), spec)
    return obj


def verify(obj: Any, contracts: Iterable[InterfaceClass], name: str) -> None:
    """Raise ConfigurationError naming ``name`` unless ``obj`` fully provides each contract."""
    for contract in contracts:
        if not contract.providedBy(obj):
            raise ConfigurationError(f"{name}: does not provide {contract.__name__}")
        try:
            verifyObject(contract, obj)
        except Invalid as e:
            raise ConfigurationError(f"{name}: does not satisfy {contract.__name__}: {e}") from e


Route = Callable[[Any, Any], Any]


class Registry:
    """Every handler's calls, events, observers and HTTP resources, merged and checked once."""

    def __init__(self, handlers: Iterable[Any] = ()) -> None:
        self.calls: dict[str, Route] = {}
        self.events: dict[str, Route] = {}
        self.observers: list[Any] = []
        self.authorizers: list[Any] = []
        self.resources: dict[str, Any] = {}
        self._owners: dict[tuple[str, str], str] = {}
        for handler in handlers:
            self.add(handler)

    def add(self, handler: Any, name: str | None = None) -> None:
        """Add one handler object; raise ConfigurationError on a broken contract or a clash."""
        name = name or repr(handler)
        provided = [c for c in HANDLER_CONTRACTS if c.providedBy(handler)]
        if not provided:
            raise ConfigurationError(
                f"{name}: provides none of "
                + ", ".join(c.__name__ for c in HANDLER_CONTRACTS)
            )
        verify(handler, provided, name)
        # Check everything before changing anything, so a refused handler leaves no trace.
        merges = []
        if ICallHandler.providedBy(handler):
            merges.append(self._check("call", self.calls, handler.calls, name))
        if IEventHandler.providedBy(handler):
            merges.append(self._check("event", self.events, handler.events, name))
        if IResourceProvider.providedBy(handler):
            merges.append(self._check("resource", self.resources, handler.resources, name))
        for kind, into, items in merges:
            for key, target in items:
                into[key] = target
                self._owners[kind, key] = name
        if ISessionObserver.providedBy(handler):
            self.observers.append(handler)
        if ITopicAuthorizer.providedBy(handler):
            self.authorizers.append(handler)

    def _check(self, kind: str, into: dict[str, Any], routes: Any,
               name: str) -> tuple[str, dict[str, Any], list[tuple[str, Any]]]:
        try:
            items = list(routes.items())
        except AttributeError:
            raise ConfigurationError(f"{name}: its {kind}s must be a mapping") from None
        for key, target in items:
            if not isinstance(key, str) or (kind != "resource" and not key):
                raise ConfigurationError(f"{name}: {kind} name {key!r} is not a non-empty string")
            if kind != "resource" and not callable(target):
                raise ConfigurationError(f"{name}: {kind} {key!r} is not callable")
            if key in into:
                raise ConfigurationError(
                    f"{kind} {key!r} is served twice: by {self._owners[kind, key]} and by {name}"
                )
        return kind, into, items
