"""The HTTP connection of a listener: a deadline for each request, Host check, peer accounting.

twisted.web's own idle timeout starts again on every byte received, so a client sending a
partial request one byte every few seconds holds its connection for ever (slowloris); and
nothing counts connections before the WebSocket upgrade. Here:

- ``HTTPChannel``: the whole request (request line, headers, body) must arrive within the
  Site's ``timeOut`` (``hello_timeout``) of the TCP accept, and, on a keep-alive
  connection, of the end of the previous response; else the connection is dropped. An
  upgrade to WebSocket leaves this timer off (Autobahn's and the service's timers take over).
- ``Site.peers``: when set, every accepted connection is announced (``connected(host)``);
  refused ones get a 503 and are closed; each accepted one is retired exactly once
  (``disconnected(host)``), after an upgrade to WebSocket too.
- ``Request``: the Host check (``hosts.HostPolicy``) before any resource sees the request,
  and twisted.web's versioned ``Server`` header replaced by the service's own.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IAddress, IProtocol, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import IResource

from . import logflood
from .hosts import HostPolicy, is_loopback_address
from .logflood import LogFlood
from .peers import address_host
from .log import logger

# twisted.web puts this on every response it makes (Request.process)
_TWISTED_SERVER = server.version

_BUSY_TEXT = b"Too many connections from your address; try again later.\n"
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\n"
         b"Connection: close\r\n"
         b"Retry-After: 5\r\n"
         b"Content-Type: text/plain; charset=utf-8\r\n"
         b"Content-Length: " + str(len(_BUSY_TEXT)).encode("ascii") + b"\r\n"
         b"\r\n" + _BUSY_TEXT)
_HOST_REFUSED = b"This server is not known by that Host name.\n"


class Peers(Protocol):
    """What ``Site.peers`` must provide: per-peer connection accounting (e.g. a cap)."""

    def connected(self, host: str) -> bool:
        """A connection from ``host`` (an IP address, or 'unix') was accepted: may it stay?"""

    def disconnected(self, host: str) -> None:
        """A connection for which ``connected(host)`` said True is gone (called once)."""


class HTTPChannel(http.HTTPChannel):
    """twisted.web's HTTP/1.1 channel, with a deadline per request instead of an idle
    timeout, and the Site's ``peers`` told of the connection's start and end."""

    _log = logger()
    site: Site
    # the peers object and host connected() accepted, until disconnected() is called for
    # it (or an upgraded protocol took that duty over)
    _peer: tuple[Peers, str] | None = None
    _refused = False

    def connectionMade(self) -> None:
        """Arm the deadline (twisted.web's timer, from the accept); ask ``peers``."""
        super().connectionMade()
        site = self.site
        if site.client_log is not None:
            # twisted.web's lines about this connection ("Timing out client") are the
            # client's doing: bounded like every client-caused line
            self._log = site.client_log
        peers = site.peers
        if peers is None:
            return
        transport: Any = self.transport
        host = address_host(transport.getPeer())
        if peers.connected(host):
            self._peer = (peers, host)
            return
        self._refused = True
        logs = site.logs
        if logs is not None and logs.admit(logflood.CONNECTION_REFUSED):
            self._log.info("refused a connection from {host}: over a connection limit "
                           "(HTTP 503; wsservice_connections_refused_total counts them)",
                           host=host)
        transport.write(_BUSY)
        transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        """Parse, unless the connection was refused (its bytes are not worth reading)."""
        if not self._refused:
            super().dataReceived(data)

    def resetTimeout(self) -> None:
        """Not on every byte, as twisted.web would: a request's deadline does not move.

        twisted.web itself stops the timer once a request has fully arrived
        (allContentReceived) and starts it again when its response is done (requestDone).
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """twisted.web's clean-up, then the connection's end told to ``peers``."""
        try:
            super().connectionLost(reason)
        finally:
            self._release()

    def _release(self) -> None:
        peer, self._peer = self._peer, None
        if peer is not None:
            peers, host = peer
            peers.disconnected(host)

    def upgraded(self, protocol: IProtocol | None) -> None:
        """The transport now reports to ``protocol`` (a WebSocket), no more to this channel:
        its connectionLost tells ``peers`` from now on (None: nobody will; tell them now)."""
        peer, self._peer = self._peer, None
        if peer is None:
            return
        peers, host = peer
        if protocol is None:
            self._log.warn("upgraded to an unknown protocol: connection from {host} no more "
                           "counted", host=host)
            peers.disconnected(host)
            return
        counted = getattr(protocol, "countedBy", None)
        if counted is not None:
            # wsservice's own WebSocket protocol keeps the pair and releases it when lost
            counted(peers, host)
            return
        lost = protocol.connectionLost
        proto: Any = protocol

        def connectionLost(reason: Failure) -> None:
            # only the peers and the host are held, not this channel and its request: an
            # idle WebSocket should not keep its handshake's HTTP objects alive
            try:
                lost(reason)
            finally:
                peers.disconnected(host)

        proto.connectionLost = connectionLost


class Request(server.Request):
    """twisted.web's Request, refusing a Host the Site does not answer to, naming the
    service, not twisted.web's version, in its Server header, and keeping at most the
    Site's ``max_body`` bytes of a body."""

    channel: HTTPChannel
    _kept = 0

    def handleContentChunk(self, data: bytes) -> None:
        """Keep the body up to ``max_body`` bytes and drop the rest unread: twisted.web
        would buffer any size a client sends. A resource that takes bodies sees one
        longer than it allows (it is cut at ``max_body``, one byte past the limit) and
        refuses it."""
        room = self.channel.site.max_body - self._kept
        if room <= 0:
            return
        if len(data) > room:
            data = data[:room]
        self._kept += len(data)
        super().handleContentChunk(data)

    def process(self) -> None:
        """Refuse with 403 a Host this listener does not serve; else twisted.web's process."""
        site = self.channel.site
        if site.checksHost(self) and not site.hosts.allows(self._host_header()):
            self.site = site
            self.setResponseCode(403)
            self.setHeader(b"server", site.server_name)
            self.setHeader(b"content-type", b"text/plain; charset=utf-8")
            self.setHeader(b"cache-control", b"no-store")
            self.write(_HOST_REFUSED)
            self.finish()
            return
        super().process()

    def _host_header(self) -> str | None:
        values = self.requestHeaders.getRawHeaders(b"host")
        if not values or len(values) != 1:
            return None  # missing, or sent twice: nothing to trust
        return values[0].decode("latin-1")

    def setHeader(self, name: bytes | str, value: bytes | str) -> None:
        """twisted.web's; its own Server header (naming its version) becomes the Site's."""
        if value == _TWISTED_SERVER:
            value = self.channel.site.server_name
        super().setHeader(name, value)


class Site(server.Site):
    """A twisted.web Site for one listener: ``HTTPChannel``, ``Request``, the Host policy,
    the Server header's name and the ``peers`` hook (None: no accounting)."""

    protocol = HTTPChannel  # type: ignore[assignment]  # not the HTTP/2-capable proxy: no ALPN here
    requestFactory = Request
    peers: Peers | None = None
    logs: LogFlood | None = None
    client_log: Logger | None = None
    # bytes of a request body kept (Request.handleContentChunk); makeSite sets one past
    # max_message_size, so the HTTP API can tell a body over that limit
    max_body = 1024 * 1024 + 1

    def __init__(self, resource: IResource, hosts: HostPolicy, server_name: str,
                 deadline: float, reactor: IReactorTime | None = None,
                 peers: Peers | None = None, logs: LogFlood | None = None) -> None:
        super().__init__(resource, timeout=deadline, reactor=reactor)
        self.hosts = hosts
        self.server_name = server_name.encode("ascii")
        self.peers = peers
        if logs is not None:
            # the lines clients can cause, bounded by the service's LogFlood
            self.logs = logs
            self.client_log = logs.logger(logflood.HTTP_CLIENT, "wsservice.channel.HTTPChannel")
        # whether Host is checked, once the listener's bound address is known (listening)
        self._check_hosts: bool | None = None

    def listening(self, address: IAddress) -> None:
        """Learn the address the listener is bound to (ListenerService calls it once the port
        listens: tcp:0 and systemd: sockets are known only then)."""
        self._check_hosts = self.hosts.checks(is_loopback_address(address))

    def checksHost(self, request: server.Request) -> bool:
        """Whether this listener checks the Host header of its requests."""
        check = self._check_hosts
        if check is None:
            # not told where it listens (a Site used outside ListenerService): judge by the
            # address this connection came in on, which errs on the side of checking
            return self.hosts.checks(is_loopback_address(request.getHost()))
        return check

    def log(self, request: http.Request) -> None:
        """No access log: a line per request would be noise for a WebSocket server."""
