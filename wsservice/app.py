"""makeService: the whole product as one Twisted service, for twistd or any application."""

from __future__ import annotations

from typing import Any, Iterable

from twisted.application.service import IService, MultiService, Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred

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

    def __init__(self, sessions: SessionService, reactor: IReactorTime | None = None) -> None:
        super().__init__()
        check_resources(sessions.registry.resources, sessions.settings.path)
        self.sessions = sessions
        self.listeners: list[ListenerService] = []
        self._reactor = reactor
        sessions.setServiceParent(self)

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

    def listen(self, description: str) -> ListenerService:
        """Add a listener on a Twisted server endpoint string (tcp:, unix:, ssl:, systemd:)."""
        sessions, reactor = self.sessions, self._reactor

        def site() -> Any:
            return makeSite(sessions, description, listener.secure, reactor)

        listener = ListenerService(description, site, reactor, sessions.settings.path,
                                   serves_page(sessions.registry.resources))
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
                node_id: str | None = None) -> WSService:
    """Build the service: handlers (objects, or a Registry) served on every ``listen`` string;
    with ``redis`` (a URL) a node of the cluster on that Redis."""
    sessions, engine = sessionService(handlers, settings, authenticator, reactor, redis,
                                      node_id)
    service = WSService(sessions, reactor)
    if engine is not None:
        engine.setServiceParent(service)
    for description in listen:
        service.listen(description)
    return service
