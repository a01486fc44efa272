"""ListenerService: one endpoint string, listening with a Site; unix sockets private by default."""

from __future__ import annotations

import re
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from .log import logger
from twisted.python.failure import Failure

_MODE = re.compile(r"(?<!\\):mode=")


def private_unix(description: str) -> str:
    """Give a ``unix:`` endpoint ``mode=600`` unless it names a mode itself."""
    if description.startswith("unix:") and not _MODE.search(description):
        return description + ":mode=600"
    return description


def describe(port: IListeningPort, path: str, secure: bool) -> str:
    """A human-readable URL for where a port listens (for logs and tests)."""
    host = port.getHost()
    scheme = "wss" if secure else "ws"
    if hasattr(host, "port"):
        address = f"[{host.host}]" if ":" in host.host else host.host
        return f"{scheme}://{address}:{host.port}{path}"
    name = getattr(host, "name", host)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return f"{scheme} over unix socket {name}, path {path}"


class ListenerService(Service):
    """Listens on one Twisted endpoint string while running; stops listening on stop."""

    _log = logger()

    def __init__(self, description: str, factory: Factory | Callable[[], Factory],
                 reactor: Any = None, path: str = "/ws") -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.description = description
        self.secure = description.split(":", 1)[0] == "ssl"
        self.endpoint = serverFromString(reactor, private_unix(description))
        self._factory = factory
        self._path = path
        self.port: IListeningPort | None = None
        self.whenListening: Deferred[IListeningPort] = Deferred()
        self._listening: Deferred | None = None

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
        self._listening = d = self.endpoint.listen(factory)
        failures: list[Failure] = []
        d.addCallbacks(self._listened, failures.append)
        if failures:
            # Fail start-up loudly (twistd exits with the reason) rather than run deaf.
            failures[0].raiseException()

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        self._log.info("listening on {description}: {url}", description=self.description,
                       url=describe(port, self._path, self.secure))
        self.whenListening.callback(port)
        return port

    def stopService(self) -> Deferred:
        """Stop listening (Twisted removes a unix socket file it created)."""
        super().stopService()
        port, self.port = self.port, None
        self._listening = None
        if port is None:
            return succeed(None)
        self._log.info("stopped listening on {description}", description=self.description)
        return port.stopListening() or succeed(None)
