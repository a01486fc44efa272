"""The HTTP side of a listener: /ws (WebSocket), /healthz, /metrics and handlers' resources."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import orjson
from autobahn.twisted import resource as autobahn_resource
from autobahn.twisted.websocket import WebSocketServerProtocol
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.interfaces import IProtocol, IReactorTime
from twisted.protocols.policies import ProtocolWrapper
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ._version import __version__, server_header
from .channel import HTTPChannel, Site
from .errors import ConfigurationError
from .hosts import HostPolicy
from .httpapi import APIResource
from .websocket import EchoFactory, WebSocketFactory

if TYPE_CHECKING:
    from .apikeys import APIKeys
    from .service import SessionService


class _ServiceResource(Resource):
    """A leaf resource that reports on a SessionService."""

    isLeaf = True

    def __init__(self, service: SessionService) -> None:
        super().__init__()
        self.service = service


class HealthResource(_ServiceResource):
    """``GET /healthz``: 200 with the session count while serving, 503 when not."""

    def render_GET(self, request: Request) -> bytes:
        """Answer the health probe."""
        running = bool(self.service.running)
        away = self.service.unavailable() if running else None
        request.setResponseCode(200 if running and away is None else 503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        body: dict = {"status": "ok" if running and away is None else
                      "stopping" if not running else "unavailable",
                      "sessions": len(self.service.sessions), "version": __version__}
        if away is not None:
            body["reason"] = away
        return orjson.dumps(body)


class MetricsResource(_ServiceResource):
    """``GET /metrics``: the service's metrics in Prometheus text format."""

    def render_GET(self, request: Request) -> bytes:
        """Render every metric."""
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.service.metrics.registry)


# The browser client and its TypeScript declarations, served next to /ws (clients.md).
CLIENT_FILES = ("wsservice.js", "wsservice.d.ts")


_NOT_UPGRADE = b"This is a WebSocket endpoint: connect with a WebSocket client.\n"
_OLD_HTTP = b"A WebSocket handshake needs HTTP/1.1 or later.\n"


def _text(request: Request, code: int, body: bytes, phrase: bytes | None = None) -> bytes:
    request.setResponseCode(code, phrase)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return body


def _http_version(request: Request) -> tuple[int, int]:
    """(major, minor) of the request's HTTP version; (0, 9) when unreadable."""
    _, _, number = request.clientproto.partition(b"/")
    major, _, minor = number.partition(b".")
    try:
        return int(major), int(minor or b"0")
    except ValueError:
        return 0, 9


class WebSocketResource(autobahn_resource.WebSocketResource):
    """Autobahn's resource, with the HTTP answers RFC 6455 asks for before any handshake:
    426 for a request without ``Upgrade: websocket`` (not Autobahn's status page, which
    names its version), 400 for an HTTP version before 1.1 (Autobahn's resource replays
    every request to its handshake as HTTP/1.1); and the channel told of the upgrade."""

    def render(self, request: Request) -> bytes | int:
        """Answer 426 or 400, or hand the connection to Autobahn's handshake."""
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        # (the header is nearly always exactly "websocket": no split then)
        if upgrade != b"websocket" \
                and b"websocket" not in (token.strip() for token in upgrade.split(b",")):
            request.setHeader(b"upgrade", b"websocket")
            request.setHeader(b"connection", b"Upgrade")
            # twisted.web knows no phrase for 426 ("Unknown Status")
            return _text(request, 426, _NOT_UPGRADE, b"Upgrade Required")
        if _http_version(request) < (1, 1):  # RFC 6455 section 4.2.1
            return _text(request, 400, _OLD_HTTP)
        channel = request.channel
        transport = channel.transport
        result = super().render(request)
        if result == NOT_DONE_YET and isinstance(channel, HTTPChannel):
            channel.upgraded(_receiver(transport))
        return result


def _receiver(transport: Any) -> IProtocol | None:
    """The protocol ``transport`` delivers to after Autobahn's resource took it over (the
    same three cases, by public attributes, as its render), if it is a WebSocket's."""
    protocol: Any
    if isinstance(transport, ProtocolWrapper):  # TLS
        protocol = transport.wrappedProtocol
    elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
        protocol = transport.protocol.wrappedProtocol
    else:
        protocol = getattr(transport, "protocol", None)
    return protocol if isinstance(protocol, WebSocketServerProtocol) else None


def _place(root: Resource, path: str, resource: Any) -> None:
    """Put ``resource`` at ``path`` (e.g. '/ws' or '/api/ws') below ``root``."""
    segments = [s.encode("utf-8") for s in path.strip("/").split("/")]
    node = root
    for segment in segments[:-1]:
        child = node.children.get(segment)
        if child is None:
            child = Resource()
            node.putChild(segment, child)
        node = child
    node.putChild(segments[-1], resource)


def check_resources(resources: Iterable[str], ws_path: str, api: bool = False) -> None:
    """Refuse handler HTTP resources that would hide /healthz, /metrics or the WebSocket
    (and /api when the HTTP API is on)."""
    reserved = {"healthz", "metrics", *CLIENT_FILES, ws_path.strip("/").split("/")[0]}
    if api:
        if "api" in reserved:
            raise ConfigurationError(f"the WebSocket path {ws_path} is below /api, where the "
                                     "HTTP API is served; choose another path")
        reserved.add("api")
    for path in resources:
        top = path.strip("/").split("/")[0]
        if top in reserved:
            raise ConfigurationError(
                f"a handler's HTTP resource {path!r} would hide the service's own /{top}")


def makeSite(service: SessionService, listener: str = "", secure: bool = False,
             reactor: IReactorTime | None = None, api_keys: APIKeys | None = None) -> Site:
    """The twisted.web Site one listener serves: WebSocket, health, metrics, handler pages,
    and the HTTP API (/api) when given its keys."""
    root = Resource()
    for path, resource in service.registry.resources.items():
        _place(root, path, resource)  # '' is '/' itself: twisted.web's child b''
    _place(root, "healthz", HealthResource(service))
    _place(root, "metrics", MetricsResource(service))
    if api_keys is not None:
        _place(root, "api", APIResource(service, api_keys))
    from .clientfiles import client_resource  # twisted.web.static warns when imported
    for name in CLIENT_FILES:
        _place(root, name, client_resource(name))
    factory = WebSocketFactory(service, listener, secure, reactor)
    _place(root, service.settings.path, WebSocketResource(factory))
    if service.settings.conformance_echo:
        _place(root, "echo", WebSocketResource(EchoFactory(service, listener, secure, reactor)))
    settings = service.settings
    # every listener counts its connections from the accept in the service's one PeerLimits
    site = Site(root, HostPolicy(settings.allowed_hosts), server_header(settings.server_version),
                deadline=settings.hello_timeout, reactor=reactor, peers=service.peers,
                logs=service.logs)
    site.displayTracebacks = False
    site.max_body = settings.max_message_size + 1
    site.wsFactory = factory  # type: ignore[attr-defined]
    return site


def serves_page(resources: Iterable[str]) -> bool:
    """Whether a handler serves a page at ``/`` (the listener's start-up line then names it)."""
    return any(path.strip("/") == "" for path in resources)
