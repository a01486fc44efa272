"""A real WebSocket client for end-to-end tests: Autobahn's, over a TCP or unix endpoint."""

from __future__ import annotations

import os
from typing import Any

import orjson
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.web.client import Agent, PartialDownloadError, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

TIMEOUT = 10


class Conversation:
    """What a test client of any transport offers: the next message, hello, call. A client
    has ``queue`` (a DeferredQueue of decoded messages) and ``send(message)``."""

    queue: DeferredQueue

    def send(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def next(self, timeout: float = TIMEOUT) -> Deferred:
        """The next message, or a TimeoutError after ``timeout`` seconds."""
        return self.queue.get().addTimeout(timeout, reactor)

    async def hello(self, **members: Any) -> dict[str, Any]:
        self.send({"type": "hello", **members})
        welcome = await self.next()
        assert welcome["type"] == "welcome", welcome
        return welcome

    async def call(self, method: str, params: Any = None, id: Any = 1) -> dict[str, Any]:
        self.send({"type": "call", "id": id, "method": method, "params": params})
        return await self.next()


class Client(Conversation, WebSocketClientProtocol):
    """Collects every message (decoded) in a queue; ``closed`` fires with (code, reason)."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: DeferredQueue = DeferredQueue()
        self.closed: Deferred = Deferred()
        self.opened: Deferred = Deferred()
        self.raw: list[bytes] = []

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.raw.append(payload)
        self.queue.put(orjson.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        timer, self.closeHandshakeTimeoutCall = self.closeHandshakeTimeoutCall, None
        if timer is not None:
            timer.cancel()
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"handshake failed: {reason}"))
        if not self.closed.called:
            self.closed.callback((code, reason))

    # -- conveniences -----------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        self.sendMessage(orjson.dumps(message), False)

    def sendRaw(self, payload: bytes, binary: bool = False) -> None:
        self.sendMessage(payload, binary)

    def waitClosed(self, timeout: float = TIMEOUT) -> Deferred:
        return self.closed.addTimeout(timeout, reactor)


def _endpoint(address: str) -> Any:
    if address.startswith("unix:"):
        return UNIXClientEndpoint(reactor, address[5:], timeout=TIMEOUT)
    host, port = address.rsplit(":", 1)
    return TCP4ClientEndpoint(reactor, host, int(port), timeout=TIMEOUT)


async def connect(address: str, path: str = "/ws", protocols: list[str] | None = None,
                  origin: str | None = None, deflate: bool = False,
                  headers: dict[str, str] | None = None) -> Client:
    """Open a WebSocket to ``host:port`` or ``unix:/path`` and wait for the handshake."""
    factory = WebSocketClientFactory(
        f"ws://localhost{path}",
        protocols=["wsservice.v1"] if protocols is None else protocols,
        origin=origin, headers=headers or {})
    factory.protocol = Client
    factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
    if deflate:
        factory.setProtocolOptions(
            perMessageCompressionOffers=[PerMessageDeflateOffer()],
            perMessageCompressionAccept=lambda response: (
                PerMessageDeflateResponseAccept(response)
                if isinstance(response, PerMessageDeflateResponse) else None))
    proto = await _endpoint(address).connect(factory)
    await proto.opened.addTimeout(TIMEOUT, reactor)
    return proto


@implementer(IAgentEndpointFactory)
class _Endpoints:
    def __init__(self, address: str) -> None:
        self.address = address

    def endpointForURI(self, uri: Any) -> Any:
        return _endpoint(self.address)


async def http(address: str, path: str, headers: dict[str, str] | None = None,
               method: bytes = b"GET") -> tuple[int, dict[str, list[str]], bytes]:
    """One plain HTTP request over TCP or unix; (status, headers, body)."""
    agent = Agent.usingEndpointFactory(reactor, _Endpoints(address))
    h = Headers({k: [v] for k, v in (headers or {}).items()})
    response = await agent.request(method, f"http://localhost{path}".encode(), h)
    try:
        body = await readBody(response)
    except PartialDownloadError as e:  # a refused handshake ends by closing, no length
        body = e.response
    got = {k.decode().lower(): [v.decode() for v in vs]
           for k, vs in response.headers.getAllRawHeaders()}
    return response.code, got, body


def handshake_headers(protocol: str | None = "wsservice.v1", origin: str | None = None,
                      host: str = "localhost") -> dict[str, str]:
    """Headers of a WebSocket upgrade request, to test refusals with a plain HTTP client."""
    h = {"Upgrade": "websocket", "Connection": "Upgrade",
         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13",
         "Host": host}
    if protocol is not None:
        h["Sec-WebSocket-Protocol"] = protocol
    if origin is not None:
        h["Origin"] = origin
    return h


def socket_path(testcase: Any) -> str:
    """A short unix socket path (sun_path is limited to ~100 bytes)."""
    import tempfile
    d = tempfile.mkdtemp(prefix="wss")
    testcase.addCleanup(lambda: os.path.isdir(d) and __import__("shutil").rmtree(d, True))
    return os.path.join(d, "s.sock")
