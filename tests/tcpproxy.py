"""A TCP proxy of our own between a client and a server, for tests of network faults.

``proxy = await TCPProxy(host, port).start(testcase)``; clients connect to
``127.0.0.1:proxy.port``. ``cut()`` aborts every current connection (both sides);
``stall()`` stops forwarding on every current connection without closing it (new ones still
work); ``refuse(True)`` closes every new connection at once until ``refuse(False)``;
``retarget(host, port)`` sends new connections elsewhere.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure


class _Server(Protocol):
    """The proxy's side facing the real server: forwards what it reads to the client side."""

    def __init__(self, pair: _Pair) -> None:
        self.pair = pair

    def dataReceived(self, data: bytes) -> None:
        if not self.pair.stalled:
            self.pair.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.pair.serverLost()


class _Pair(Protocol):
    """One proxied connection: this protocol faces the client, ``server`` the target."""

    def __init__(self, proxy: TCPProxy) -> None:
        self.proxy = proxy
        self.server: _Server | None = None
        self.buffer: list[bytes] = []
        self.stalled = False
        self.closed = False

    def connectionMade(self) -> None:
        if self.proxy.refusing:
            self.proxy.refused += 1
            self.closed = True
            self.transport.abortConnection()
            return
        self.proxy.pairs.add(self)
        self.proxy.accepted += 1
        target = TCP4ClientEndpoint(reactor, self.proxy.host, self.proxy.target_port, timeout=5)
        d = target.connect(_ServerFactory(self))
        d.addCallbacks(self._connected, lambda f: self.abort())

    def _connected(self, server: _Server) -> None:
        if self.closed:
            server.transport.abortConnection()
            return
        self.server = server
        buffered, self.buffer = self.buffer, []
        for data in buffered:
            server.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        if self.stalled:
            return
        if self.server is None:
            self.buffer.append(data)
        else:
            self.server.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.proxy.pairs.discard(self)
        self.closed = True
        if self.server is not None and not self.stalled:
            self.server.transport.loseConnection()

    def serverLost(self) -> None:
        if not self.closed and not self.stalled:
            self.transport.loseConnection()

    def abort(self) -> None:
        """Drop both sides at once."""
        self.closed = True
        self.transport.abortConnection()
        if self.server is not None:
            self.server.transport.abortConnection()


class _ServerFactory(Factory):
    def __init__(self, pair: _Pair) -> None:
        self.pair = pair

    def buildProtocol(self, addr: Any) -> _Server:
        return _Server(self.pair)


class _PairFactory(Factory):
    def __init__(self, proxy: TCPProxy) -> None:
        self.proxy = proxy

    def buildProtocol(self, addr: Any) -> _Pair:
        return _Pair(self.proxy)


class TCPProxy:
    """A loopback TCP proxy to ``host:port``; counts connections ``accepted`` and
    ``refused``."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.target_port = port
        self.port = 0
        self.pairs: set[_Pair] = set()
        self.refusing = False
        self.accepted = 0
        self.refused = 0
        self._listening: Any = None

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` of the proxy."""
        return f"127.0.0.1:{self.port}"

    async def start(self, testcase: Any = None) -> TCPProxy:
        """Listen on a free loopback port; stopped (every connection dropped) on cleanup."""
        self._listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            _PairFactory(self))
        self.port = self._listening.getHost().port
        if testcase is not None:
            testcase.addCleanup(self.stop)
        return self

    def cut(self) -> None:
        """Abort every current connection, both sides (a network drop)."""
        for pair in list(self.pairs):
            pair.abort()

    def stall(self) -> None:
        """Stop forwarding on every current connection; nothing is closed (a black hole)."""
        for pair in self.pairs:
            pair.stalled = True

    def refuse(self, on: bool = True) -> None:
        """Close every new connection at once (True) or forward them again (False)."""
        self.refusing = on

    def retarget(self, host: str, port: int) -> None:
        """Send new connections to ``host:port``."""
        self.host, self.target_port = host, port

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        self.cut()
        if self._listening is not None:
            await self._listening.stopListening()
            self._listening = None
