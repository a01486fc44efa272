"""ListenerService: one endpoint string, listening with a Site; unix sockets private by default."""

from __future__ import annotations

from typing import Any, Callable, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from . import endpoints
from .endpoints import ListenError, private_unix
from .log import logger

__all__ = ["ListenError", "ListenerService", "describe", "private_unix"]


def describe(port: IListeningPort, path: str, secure: bool, page: bool = False) -> str:
    """A human-readable URL for where a port listens (for logs and tests); ``page`` adds the
    HTTP URL of ``/`` (a handler serves a page there, e.g. the demo)."""
    host: Any = port.getHost()  # IPv4Address/IPv6Address or UNIXAddress
    scheme = "wss" if secure else "ws"
    if hasattr(host, "port"):
        address = f"[{host.host}]" if ":" in host.host else host.host
        url = f"{scheme}://{address}:{host.port}{path}"
        # URLs end at whitespace: tools (bench/run.py) take ws://\S+ from this line
        return url + (f" (page http{scheme[2:]}://{address}:{host.port}/)" if page else "")
    name = getattr(host, "name", host)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    # the socket's path, then the WebSocket's: the form Node's ws client takes
    page_note = " (page at / on the same socket)" if page else ""
    return f"{scheme}+unix:{name}:{path}{page_note}"


class ListenerService(Service):
    """Listens on one Twisted endpoint string while running; stops listening on stop."""

    _log = logger()
    # what the start-up summary calls what it serves, beside "listening": "" for the
    # WebSocket protocol and HTTP (its line reads "listening on DESCRIPTION: URL")
    kind = ""

    def __init__(self, description: str, factory: Factory | Callable[[], Factory],
                 reactor: IReactorTime | None = None, path: str = "/ws",
                 page: bool = False, endpoint: IStreamServerEndpoint | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.description = description
        self.secure = description.split(":", 1)[0] == "ssl"
        # one reactor is both the clock and what listens (IReactorTime and IReactorCore);
        # a given endpoint (a --workers worker's socket from its parent) is used as it is
        self.endpoint = endpoint if endpoint is not None else endpoints.parse(
            cast(IReactorCore, reactor), description)  # ListenError if unusable
        self._factory = factory
        self._path = path
        self._page = page
        self.port: IListeningPort | None = None
        self.whenListening: Deferred[IListeningPort] = Deferred()
        self._listening: Deferred | None = None
        self.factory: Factory | None = None  # the one listening, once built
        # where it listens, once it does (where()): the start-up summary (summary.py) logs
        # it, the one place that says where the service listens
        self.url: str | None = None

    def privilegedStartService(self) -> None:
        """Listen before privileges are shed, so low ports work; a bind error stops start-up."""
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        """Listen, if privilegedStartService did not already."""
        super().startService()
        self._listen()

    def _listen(self) -> None:
        if self._listening is not None:
            return
        factory = self._factory if isinstance(self._factory, Factory) else self._factory()
        self.factory = factory
        self._listening = d = self.endpoint.listen(factory)
        failures: list[Failure] = []
        d.addCallbacks(self._listened, failures.append)
        if failures:
            # Fail start-up loudly, saying why and what to do, rather than run deaf.
            self._listening = None
            error = failures[0].value
            raise ListenError(self.description,
                              endpoints.listen_problem(self.description, error)) from error

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        # a factory that cares where it listens (channel.Site: the Host check applies to
        # loopback-only listeners) learns it now: tcp:0 and systemd: are known only now
        listening = getattr(self.factory, "listening", None)
        if callable(listening):
            listening(port.getHost())
        self.url = self.where(port)
        self.whenListening.callback(port)
        return port

    def where(self, port: IListeningPort) -> str:
        """Where ``port`` listens, as the start-up summary shows it: a URL (a subclass
        serving another framing says its own)."""
        return describe(port, self._path, self.secure, self._page)

    def abandon(self) -> None:
        """Stop listening at once, without the reactor (start-up failed and the process
        exits): close the socket, remove a unix socket file and its lock."""
        port, self.port = self.port, None
        self._listening = None
        if port is not None:
            port.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]

    def stopService(self) -> Deferred:
        """Stop listening (Twisted removes a unix socket file it created)."""
        super().stopService()
        port, self.port = self.port, None
        self._listening = None
        if port is None:
            return succeed(None)
        self._log.info("stopped listening on {description}", description=self.description)
        return port.stopListening() or succeed(None)
