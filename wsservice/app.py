"""makeService: the whole product as one Twisted service, for twistd or any application."""

from __future__ import annotations

from typing import Any, Iterable

from twisted.application.service import IService, MultiService, Service
from twisted.internet.interfaces import IReactorTime, IStreamServerEndpoint
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred

from . import ndjson, summary
from .apikeys import APIKeys
from .config import Settings
from .listener import ListenerService
from .log import logger
from .registry import Registry
from .service import SessionService
from .web import check_resources, makeSite, serves_page

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"


class WSService(MultiService):
    """A SessionService plus one ListenerService per endpoint string; ``sessions`` is the former.

    Stopping drains first (new handshakes get 503, /healthz 503, every connection is closed
    1001 and given up to ``drain_timeout`` to go), then stops listening (unix socket files
    are removed), then stops every other child service, in reverse order of addition.
    """

    _log = logger()

    def __init__(self, sessions: SessionService, reactor: IReactorTime | None = None,
                 api_keys: APIKeys | None = None) -> None:
        super().__init__()
        check_resources(sessions.registry.resources, sessions.settings.path,
                        api=api_keys is not None)
        self.sessions = sessions
        # with keys, every listener also serves the HTTP API at /api (protocol.md §9)
        self.api_keys = api_keys
        self.listeners: list[ListenerService] = []
        # (name, object) of each handler, for the start-up summary; empty: it lists what
        # the sessions' registry serves, without names (makeService fills it)
        self.handlers: list[tuple[str, Any]] = []
        self._reactor = reactor
        sessions.setServiceParent(self)

    def startService(self) -> None:
        """Start every child; once every listener listens, log the start-up summary."""
        super().startService()
        summary.announce(self)

    def stopService(self) -> Deferred:
        """Drain the sessions, then stop the listeners, then every other child."""
        Service.stopService(self)  # not MultiService's: it would stop listeners first
        others = [child for child in reversed(list(self))
                  if child is not self.sessions and child not in self.listeners]

        def stop(services: list[IService]) -> Deferred[Any]:
            def logged(results: list[tuple[bool, Any]]) -> None:
                for ok, failure in results:
                    if not ok:
                        self._log.failure("a service failed to stop", failure)
            return DeferredList([maybeDeferred(service.stopService) for service in services
                                 if service.running], consumeErrors=True).addCallback(logged)

        d = maybeDeferred(self.sessions.stopService)
        d.addBoth(lambda _: stop(list(self.listeners)))
        d.addBoth(lambda _: stop(others))
        d.addCallback(lambda _: None)
        return d

    def listen(self, description: str,
               endpoint: IStreamServerEndpoint | None = None) -> ListenerService:
        """Add a listener on a Twisted server endpoint string (tcp:, unix:, ssl:, systemd:);
        with ``endpoint``, listen there instead (a --workers worker's inherited socket)."""
        sessions, reactor, api_keys = self.sessions, self._reactor, self.api_keys

        def site() -> Any:
            return makeSite(sessions, description, listener.secure, reactor, api_keys)

        listener = ListenerService(description, site, reactor, sessions.settings.path,
                                   serves_page(sessions.registry.resources), endpoint)
        listener.setServiceParent(self)
        self.listeners.append(listener)
        return listener

    def listenNDJSON(self, description: str,
                     endpoint: IStreamServerEndpoint | None = None) -> ListenerService:
        """Add a listener serving the protocol as newline-delimited JSON (protocol.md
        section 8: no WebSocket, no HTTP) on a server endpoint string (or ``endpoint``)."""
        listener = ndjson.listener(self.sessions, description, self._reactor, endpoint)
        listener.setServiceParent(self)
        self.listeners.append(listener)
        return listener


def sessionService(handlers: Iterable[Any] | Registry = (), settings: Settings | None = None,
                   authenticator: Any = None, reactor: IReactorTime | None = None,
                   redis: str | None = None,
                   node_id: str | None = None) -> tuple[SessionService, Service | None]:
    """The SessionService, in memory or as a node of the cluster on ``redis`` (then also the
    engine service that links it to Redis)."""
    if redis is None:
        return SessionService(handlers, settings, authenticator, clock=reactor), None
    from .cluster import cluster_seams
    engine, store, broker = cluster_seams(redis, node_id, settings, reactor)
    return SessionService(handlers, settings, authenticator, clock=reactor, store=store,
                          broker=broker), engine


def makeService(handlers: Iterable[Any] | Registry = (), listen: Iterable[str] = (DEFAULT_LISTEN,),
                settings: Settings | None = None, authenticator: Any = None,
                reactor: IReactorTime | None = None, redis: str | None = None,
                node_id: str | None = None, listen_ndjson: Iterable[str] = (),
                api_keys: APIKeys | None = None) -> WSService:
    """Build the service: handlers (objects, or a Registry) served on every ``listen`` string
    (and as NDJSON on every ``listen_ndjson`` one); with ``redis`` (a URL) a node of the
    cluster on that Redis; with ``api_keys`` (e.g. ``APIKeys.fromFile(path)``) every
    ``listen`` listener also serves the HTTP API at /api."""
    if not isinstance(handlers, Registry):
        handlers = list(handlers)  # read twice: by the registry, and named in the summary
    sessions, engine = sessionService(handlers, settings, authenticator, reactor, redis,
                                      node_id)
    service = WSService(sessions, reactor, api_keys)
    if not isinstance(handlers, Registry):
        service.handlers = [(summary.handlerName(h), h) for h in handlers]
    if engine is not None:
        engine.setServiceParent(service)
    for description in listen:
        service.listen(description)
    for description in listen_ndjson:
        service.listenNDJSON(description)
    return service
