"""The built-in demo app: echo, sleep, fail, reject, whoami, ask and push, plus a browser page."""

from __future__ import annotations

import os
from typing import Any

import orjson
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.web.static import File
from zope.interface import implementer

from ..errors import ApplicationError, InvalidParams
from ..handler import Handler, call, event
from ..interfaces import IResourceProvider, ISession

MAX_SLEEP = 60
MAX_PUSH = 100_000
# One small request must not make the server encode and queue gigabytes.
MAX_PUSH_BYTES = 2 * 1024 * 1024  # well under the default max_send_queue (4 MiB)
STATIC = os.path.join(os.path.dirname(__file__), "static")


def _object(params: Any, method: str) -> dict:
    if not isinstance(params, dict):
        raise InvalidParams(f"{method} takes an object")
    return params


def _jsonable(principal: Any) -> Any:
    if principal is None or isinstance(principal, (str, int, float, bool, list, dict)):
        return principal
    return str(principal)


@implementer(IResourceProvider)
class DemoApp(Handler):
    """The demo handler that ``twistd wsservice`` serves by default; tests and benchmarks use it."""

    def __init__(self, clock: IReactorTime | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock: IReactorTime = clock  # type: ignore[assignment]  # the reactor is one
        self.resources = {
            "": File(os.path.join(STATIC, "index.html"), defaultType="text/html"),
            # Browsers ask for it on every page: a 404 would be noise in their console.
            "favicon.ico": File(os.path.join(STATIC, "favicon.ico"), defaultType="image/x-icon"),
        }

    @event("echo")
    def echo_event(self, session: ISession, data: Any) -> None:
        """Push event ``echo`` back with the same data."""
        session.push("echo", data)

    @event("fail")
    def fail_event(self, session: ISession, data: Any) -> None:
        """Fail unexpectedly (the client sees ``internal``, without ``id``)."""
        raise RuntimeError("the demo's fail event failed, as asked")

    @call("echo")
    def echo(self, session: ISession, params: Any) -> Any:
        """Answer with the params."""
        return params

    @call("sleep")
    def sleep(self, session: ISession, params: Any) -> Any:
        """Answer null after ``seconds`` (at most 60); cancellable."""
        seconds: Any = _object(params, "sleep").get("seconds")
        if type(seconds) not in (int, float) or not 0 <= seconds <= MAX_SLEEP:
            raise InvalidParams(f"'seconds' must be a number from 0 to {MAX_SLEEP}")
        return deferLater(self.clock, seconds, lambda: None)

    @call("fail")
    def fail(self, session: ISession, params: Any) -> Any:
        """Fail unexpectedly (the client sees ``internal``)."""
        raise RuntimeError("the demo's fail method failed, as asked")

    @call("reject")
    def reject(self, session: ISession, params: Any) -> Any:
        """Refuse with an application error ``demo.rejected``."""
        raise ApplicationError("demo.rejected", "rejected, as asked", params)

    @call("whoami")
    def whoami(self, session: ISession, params: Any) -> Any:
        """Answer the session id, principal and meta."""
        return {"session": session.id, "principal": _jsonable(session.principal),
                "meta": session.meta}

    @call("ask")
    def ask(self, session: ISession, params: Any) -> Any:
        """Call ``method`` with ``params`` on the client (waiting at most ``timeout`` seconds,
        default the service's call_timeout) and answer with what it answers."""
        params = _object(params, "ask")
        method, timeout = params.get("method"), params.get("timeout")
        if not isinstance(method, str) or not method:
            raise InvalidParams("'method' must be a non-empty string")
        if timeout is not None and (type(timeout) not in (int, float)
                                    or not 0 < timeout <= MAX_SLEEP):
            raise InvalidParams(f"'timeout' must be a number from 0 to {MAX_SLEEP}")
        return session.call(method, params.get("params"), timeout)

    @call("tell")
    def tell(self, session: ISession, params: Any) -> Any:
        """Push event ``event`` with ``data`` to the session ``session`` on whichever node
        holds it; answer true, or false when there is no such session anywhere."""
        params = _object(params, "tell")
        target, name = params.get("session"), params.get("event")
        if not isinstance(target, str) or not target:
            raise InvalidParams("'session' must be a session id")
        if not isinstance(name, str) or not name:
            raise InvalidParams("'event' must be a non-empty string")
        return session.service.push(target, name, params.get("data"))

    @call("push")
    def push(self, session: ISession, params: Any) -> Any:
        """Push ``count`` events named ``event`` (with ``data``), then answer ``count``."""
        params = _object(params, "push")
        count, name = params.get("count"), params.get("event")
        if type(count) is not int or not 0 <= count <= MAX_PUSH:
            raise InvalidParams(f"'count' must be an integer from 0 to {MAX_PUSH}")
        if not isinstance(name, str) or not name:
            raise InvalidParams("'event' must be a non-empty string")
        data = params.get("data")
        size = len(orjson.dumps(data)) + len(name) + 48
        if count * size > MAX_PUSH_BYTES:
            raise InvalidParams(f"count x message size must stay under {MAX_PUSH_BYTES} bytes")
        for _ in range(count):
            session.push(name, data)
        return count


handler = DemoApp  # what ``--handler wsservice.demo`` loads
