"""The HTTP API for other processes (protocol.md §9), served at ``/api`` of every listener
when the service has API keys:

- ``POST /api/publish`` ``{"topic", "data"}`` → ``{"ok": true}``
- ``POST /api/push`` ``{"session", "event", "data"}`` → ``{"delivered": true|false}``
- ``GET /api/presence?topic=T`` → ``{"members": [...]}``

Each request needs ``Authorization: Bearer KEY``; answers are JSON objects (one line),
errors ``{"error": {"code", "message"}}``. Through the SessionService, so across the cluster
when it is a node of one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import orjson
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from . import errors, logflood, wire
from .apikeys import APIKeys
from .auth import bearer_credential
from .log import logger
from .peers import address_host

if TYPE_CHECKING:
    from .service import SessionService

# error codes of the HTTP API beside protocol.md's (bad_json, bad_message, unauthorized)
TOO_LARGE = "too_large"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
UNAVAILABLE = "unavailable"

class Refused(Exception):
    """An HTTP API request answered with an error: ``status``, and the body's code and
    message (plus any headers, such as 401's WWW-Authenticate)."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[bytes, bytes] | None = None) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def load_object(body: bytes, max_depth: int) -> dict[str, Any]:
    """A request body as a JSON object, under the wire protocol's own rules (wire.load_object:
    UTF-8, nested at most ``max_depth``, integers in 64 bits); Refused 400 ``bad_json``."""
    try:
        return wire.load_object(body, max_depth)
    except wire.WireError as e:
        message = "the body is not valid JSON (UTF-8)" if e.code == errors.INVALID_UTF8 \
            else f"the body: {e.message}"
        raise Refused(400, errors.BAD_JSON, message) from None


def read_object(request: Request, max_size: int, max_depth: int) -> dict[str, Any]:
    """The request's body as a JSON object of at most ``max_size`` bytes, whatever its
    Content-Length said; Refused 400 (``too_large``, ``bad_json``) otherwise."""
    content = request.content
    body = b""
    if content is not None:
        content.seek(0)
        body = content.read(max_size + 1)  # one byte past the limit tells it is too big
    if len(body) > max_size:
        raise Refused(400, TOO_LARGE, f"the body is larger than {max_size} bytes "
                                      "(max_message_size)")
    return load_object(body, max_depth)


def _member(obj: dict[str, Any], name: str) -> Any:
    if name not in obj:
        raise Refused(400, errors.BAD_MESSAGE, f"'{name}' is missing")
    return obj[name]


def _checked(kind: str, obj: dict[str, Any]) -> Any:
    """``obj`` read by the wire protocol's own parser for ``kind``: a topic or an event name
    is valid here exactly when it is in a WebSocket message."""
    try:
        return wire.PARSERS[kind](obj)
    except wire.WireError as e:
        raise Refused(400, errors.BAD_MESSAGE, e.message) from None


def _body(service: SessionService, request: Request) -> dict[str, Any]:
    settings = service.settings
    return read_object(request, settings.max_message_size, settings.max_depth)


def publish(service: SessionService, request: Request) -> Deferred[dict[str, Any]]:
    """``POST /api/publish`` ``{"topic", "data"}``: ``{"ok": true}`` once the broker took it."""
    body = _body(service, request)
    message = _checked("publish", {"topic": _member(body, "topic"), "data": body.get("data")})
    return service.publish(message.topic, message.data).addCallback(lambda _: {"ok": True})


def push(service: SessionService, request: Request) -> Deferred[dict[str, Any]]:
    """``POST /api/push`` ``{"session", "event", "data"}``: ``{"delivered": bool}``."""
    body = _body(service, request)
    session = _member(body, "session")
    if type(session) is not str or not session:
        raise Refused(400, errors.BAD_MESSAGE, "'session' must be a non-empty string")
    event = _checked("event", {"event": _member(body, "event"), "data": body.get("data")})
    return service.push(session, event.event, event.data).addCallback(
        lambda delivered: {"delivered": bool(delivered)})


def presence(service: SessionService, request: Request) -> Deferred[dict[str, Any]]:
    """``GET /api/presence?topic=T``: ``{"members": [...]}``, on every node."""
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(b"topic")
    if not values:
        raise Refused(400, errors.BAD_MESSAGE, "'topic' is missing: GET /api/presence?topic=T")
    if len(values) > 1:
        raise Refused(400, errors.BAD_MESSAGE, "give 'topic' once")
    try:
        topic = values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, errors.BAD_MESSAGE, "'topic' is not UTF-8") from None
    _checked("presence", {"topic": topic, "id": 0})
    return service.presence(topic).addCallback(lambda members: {"members": members})


Action = Callable[["SessionService", Request], "Deferred[dict[str, Any]]"]

# The one registry of endpoints: path segment below /api -> (method, action).
ENDPOINTS: dict[bytes, tuple[bytes, Action]] = {
    b"publish": (b"POST", publish),
    b"push": (b"POST", push),
    b"presence": (b"GET", presence),
}


def _json(request: Request, status: int, body: dict[str, Any]) -> bytes:
    data = orjson.dumps(body) + b"\n"  # a line, for shells (curl prints it as it is)
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    # also when written after render returned: not chunked, for the simplest clients
    request.setHeader(b"content-length", b"%d" % len(data))
    return data


def bearer(request: Request) -> bytes | None:
    """The key of the request's one ``Authorization: Bearer KEY`` header, else None."""
    values = request.requestHeaders.getRawHeaders(b"authorization")
    if not values or len(values) != 1:
        return None  # none, or two: nothing to trust
    key = bearer_credential(values[0].decode("latin-1"))
    return None if key is None else key.encode("latin-1")


class APIResource(Resource):
    """``/api``: the HTTP API's endpoints for holders of one of ``keys``."""

    isLeaf = True
    _log = logger()

    def __init__(self, service: SessionService, keys: APIKeys) -> None:
        super().__init__()
        self.service = service
        self.keys = keys
        # anyone can knock with a wrong key as often as they connect: bounded lines
        self._refusals = service.logs.logger(logflood.HTTP_CLIENT,
                                             "wsservice.httpapi.APIResource")

    def render(self, request: Request) -> bytes | int:
        """Route, check method, key and state; answer at once or when the action is done."""
        try:
            name, action = self._route(request)
        except Refused as refused:
            return self._refuse(request, refused)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answered(body: dict[str, Any]) -> None:
            if not gone:
                request.write(_json(request, 200, body))
                request.finish()

        def failed(failure: Failure) -> None:
            refused = failure.value
            if not isinstance(refused, Refused):
                # mostly Redis being away, which /healthz and the engine report too: one
                # line an interval, no traceback
                if self.service.logs.admit(logflood.STORE_FAILURE):
                    self._log.warn("HTTP API: /api/{name} failed (answered 503): {error}",
                                   name=name.decode("ascii"),
                                   error=f"{failure.type.__name__}: {failure.getErrorMessage()}")
                refused = Refused(503, UNAVAILABLE,
                                  "the service cannot do this now; try again later")
            if not gone:
                request.write(self._refuse(request, refused))
                request.finish()

        maybeDeferred(action, self.service, request).addCallbacks(answered, failed) \
            .addErrback(lambda f: self._log.failure("HTTP API: answering a request failed", f))
        return NOT_DONE_YET

    def _route(self, request: Request) -> tuple[bytes, Action]:
        """The endpoint for this request, once its method, key and the service allow it."""
        path = request.postpath or []
        endpoint = ENDPOINTS.get(path[0]) if len(path) == 1 else None
        if endpoint is None:
            raise Refused(404, NOT_FOUND, "no such API endpoint: /api/publish, /api/push and "
                                          "/api/presence are")
        method, action = endpoint
        if request.method != method:
            raise Refused(405, METHOD_NOT_ALLOWED, f"use {method.decode('ascii')}",
                          {b"allow": method})
        key = bearer(request)
        if key is None or not self.keys.check(key):
            self._refusals.info(
                "HTTP API: refused {method} /api/{name} from {host}: {why}",
                method=method.decode("ascii"), name=path[0].decode("ascii"),
                host=address_host(request.getClientAddress()),
                why="no bearer key" if key is None else "not a key of the API key file")
            raise Refused(401, errors.UNAUTHORIZED, "a key of the API key file is needed: "
                                                    "Authorization: Bearer KEY",
                          {b"www-authenticate": b"Bearer"})
        if not self.service.running:
            raise Refused(503, UNAVAILABLE, "the server is shutting down; try another")
        return path[0], action

    def _refuse(self, request: Request, refused: Refused) -> bytes:
        for name, value in refused.headers.items():
            request.setHeader(name, value)
        return _json(request, refused.status,
                     {"error": {"code": refused.code, "message": refused.message}})
