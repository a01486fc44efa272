"""The HTTP side of a listener: /ws (WebSocket), /healthz, /metrics and handlers' resources."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import orjson
from autobahn.twisted.resource import WebSocketResource
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from ._version import __version__
from .errors import ConfigurationError
from .websocket import EchoFactory, WebSocketFactory

if TYPE_CHECKING:
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
        request.setResponseCode(200 if running else 503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return orjson.dumps({"status": "ok" if running else "stopping",
                             "sessions": len(self.service.sessions), "version": __version__})


class MetricsResource(_ServiceResource):
    """``GET /metrics``: the service's metrics in Prometheus text format."""

    def render_GET(self, request: Request) -> bytes:
        """Render every metric."""
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.service.metrics.registry)


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


def check_resources(resources: Iterable[str], ws_path: str) -> None:
    """Refuse handler HTTP resources that would hide /healthz, /metrics or the WebSocket."""
    reserved = {"healthz", "metrics", ws_path.strip("/").split("/")[0]}
    for path in resources:
        top = path.strip("/").split("/")[0]
        if top in reserved:
            raise ConfigurationError(
                f"a handler's HTTP resource {path!r} would hide the service's own /{top}")


def makeSite(service: SessionService, listener: str = "", secure: bool = False,
             reactor: IReactorTime | None = None) -> Site:
    """The twisted.web Site one listener serves: WebSocket, health, metrics, handler pages."""
    root = Resource()
    for path, resource in service.registry.resources.items():
        _place(root, path, resource)  # '' is '/' itself: twisted.web's child b''
    _place(root, "healthz", HealthResource(service))
    _place(root, "metrics", MetricsResource(service))
    factory = WebSocketFactory(service, listener, secure, reactor)
    _place(root, service.settings.path, WebSocketResource(factory))
    if service.settings.conformance_echo:
        _place(root, "echo", WebSocketResource(EchoFactory(service, listener, secure, reactor)))
    site = Site(root, reactor=reactor) if reactor is not None else Site(root)
    site.displayTracebacks = False
    # Access logs per request would be noise for a WebSocket server; errors are still logged.
    site.log = lambda request: None  # type: ignore[method-assign]
    site.wsFactory = factory  # type: ignore[attr-defined]
    return site


def serves_page(resources: Iterable[str]) -> bool:
    """Whether a handler serves a page at ``/`` (the listener's start-up line then names it)."""
    return any(path.strip("/") == "" for path in resources)
