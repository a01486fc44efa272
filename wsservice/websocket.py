"""The thin Autobahn adapter: handshake policy, text frames in, frames out. No protocol logic."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from autobahn.websocket.types import ConnectionDeny
from twisted.logger import Logger

from . import errors
from .origin import OriginPolicy

if TYPE_CHECKING:
    from .connection import Connection
    from .service import SessionService

SUBPROTOCOL = "wsservice.v1"


def _accept_deflate(offers: list[Any]) -> PerMessageDeflateOfferAccept | None:
    """Accept permessage-deflate whenever the client offers it."""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


class WebSocketProtocol(WebSocketServerProtocol):
    """One WebSocket connection: checks the handshake, then relays text messages."""

    _log = Logger()
    factory: WebSocketFactory
    _connection: Connection | None = None
    _request: Any = None

    def onConnect(self, request: Any) -> str | None:
        """Refuse a wrong subprotocol (400) or a foreign Origin (403) before any session."""
        factory = self.factory
        if not factory.service.running:
            raise ConnectionDeny(503, "server is shutting down")
        protocols = request.protocols
        if protocols and SUBPROTOCOL not in protocols:
            raise ConnectionDeny(400, f"subprotocol {SUBPROTOCOL} is required")
        headers = request.headers
        if not factory.origins.allows(headers.get("origin"), headers.get("host"),
                                      factory.isSecure):
            raise ConnectionDeny(403, "origin not allowed")
        self._request = request
        return SUBPROTOCOL if protocols else None

    def onOpen(self) -> None:
        """Handshake done: hand the connection to the service."""
        request, self._request = self._request, None
        self._connection = self.factory.service.connect(
            self, dict(request.headers), request.peer, self.factory.listener)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """One complete message from the client."""
        connection = self._connection
        if connection is None:
            return
        try:
            if isBinary:
                connection.binaryReceived()
            else:
                connection.received(payload)
        except Exception:
            self._log.failure("unexpected failure handling a message; closing 1011")
            self.closeWith(errors.CLOSE_INTERNAL_ERROR, "internal error")

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """The connection is gone (cleanly or not)."""
        # Autobahn leaves a pending close-handshake timer behind when the peer vanishes
        # mid-close; drop it so nothing outlives the connection.
        timer, self.closeHandshakeTimeoutCall = self.closeHandshakeTimeoutCall, None
        if timer is not None:
            timer.cancel()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.lost()

    # -- Link, as the service sees this connection -------------------------------------------

    def sendText(self, payload: bytes) -> None:
        """Send one text message."""
        self.sendMessage(payload, False)

    def closeWith(self, code: int, reason: str) -> None:
        """Start the closing handshake with any close code of protocol.md."""
        # sendClose() only takes 1000 and 3000-4999; protocol.md also needs 1001/1003/1011/1013.
        # a close reason is at most 123 bytes and must stay valid UTF-8 when cut
        raw = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
        self.sendCloseFrame(code, raw, isReply=False)


class WebSocketFactory(WebSocketServerFactory):
    """Builds WebSocketProtocol for one listener with the service's limits and policies."""

    protocol = WebSocketProtocol

    def __init__(self, service: SessionService, listener: str = "", secure: bool = False,
                 reactor: Any = None) -> None:
        from .service import SERVER_NAME
        super().__init__("wss://localhost" if secure else "ws://localhost",
                         server=SERVER_NAME, reactor=reactor)
        settings = service.settings
        self.service = service
        self.listener = listener
        self.origins = OriginPolicy(settings.allowed_origins)
        self.setProtocolOptions(
            maxMessagePayloadSize=settings.max_message_size,
            maxFramePayloadSize=settings.max_message_size,
            perMessageCompressionAccept=_accept_deflate,
            openHandshakeTimeout=settings.hello_timeout,
            closeHandshakeTimeout=5,
            # protocol errors (e.g. 1009 too big) are told to the client with a close frame,
            # not by a silent TCP drop
            failByDrop=False,
            # a small server message is sent as one TCP segment, right away
            tcpNoDelay=True,
        )
