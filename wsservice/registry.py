"""Loading handler objects by name and merging them into one checked dispatch registry."""

from __future__ import annotations

import importlib
import traceback
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
        raise ConfigurationError(f"{spec}: expected package.module[:attribute], e.g. myapp:App")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:
        missing = e.name if isinstance(e, ModuleNotFoundError) else None
        if missing and (module_name + ".").startswith(missing + "."):
            # The module itself (or its package) is missing, not something it imports.
            raise ConfigurationError(f"{spec}: no module named {missing!r}") from e
        # the module's own code failed: say what and where, in one line
        raise ConfigurationError(f"{spec}: importing {module_name!r} failed: {_brief(e)}") from e
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"{spec}: module {module_name!r} has no attribute {attribute!r}") from None
    return obj


def _brief(e: BaseException) -> str:
    """``Type: message (file:line)`` of an exception, where it was raised; one line."""
    if isinstance(e, SyntaxError) and e.filename:
        return f"SyntaxError: {e.msg} ({e.filename}:{e.lineno})"
    frames = traceback.extract_tb(e.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(e).__name__}: {e}{where}"


def _instantiate(obj: Any, spec: str, contracts: tuple[InterfaceClass, ...]) -> Any:
    """An object providing a contract is used as is; otherwise a zero-argument factory is called."""
    if any(c.providedBy(obj) for c in contracts):
        return obj
    if callable(obj):
        try:
            return obj()
        except Exception as e:
            raise ConfigurationError(f"{spec}: calling it to make the object failed: {_brief(e)}") from e
    return obj


def load(spec: str) -> Any:
    """Load ``package.module:attribute`` as a handler, checked against the contracts it claims."""
    handler = _instantiate(resolve(spec), spec, HANDLER_CONTRACTS)
    provided = [c for c in HANDLER_CONTRACTS if c.providedBy(handler)]
    if not provided:
        raise ConfigurationError(_no_contract(spec))
    verify(handler, provided, spec)
    return handler


def load_authenticator(spec: str, audience: str | None = None, issuer: str | None = None,
                       leeway: float = 30.0) -> Any:
    """Load an IAuthenticator: ``hmac:SECRET_FILE`` (the built-in signed tokens),
    ``jwt:KEYFILE`` (JWTs; ``audience``, ``issuer`` and ``leeway`` apply to it alone) or
    ``package.module:attribute``; verify it."""
    if spec.startswith("hmac:"):
        from .hmactokens import HMACAuthenticator
        return HMACAuthenticator.fromFile(spec[len("hmac:"):])
    if spec.startswith("jwt:"):
        from .jwtauth import JWTAuthenticator
        return JWTAuthenticator.fromFile(spec[len("jwt:"):], audience, issuer, leeway)
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
            detail = " ".join(str(e).split())  # zope's message spans lines
            raise ConfigurationError(
                f"{name}: does not satisfy {contract.__name__}: {detail}") from e


def _no_contract(name: str) -> str:
    return (f"{name}: provides none of " + ", ".join(c.__name__ for c in HANDLER_CONTRACTS)
            + "; subclass wsservice.Handler or declare one with @implementer")


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
            raise ConfigurationError(_no_contract(name))
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
                    f"{name}: {kind} {key!r} is already served by {self._owners[kind, key]}; "
                    "a name may be served once: rename one of them or leave one out")
        return kind, into, items
