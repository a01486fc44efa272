"""The Autobahn side of the client: one WebSocket connection, and WebSocket pings on it.

No session logic here: the protocol hands what happens to its ``Client`` (``_opened``,
``_received``, ``_closed``) and sends the text it is given.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from autobahn.exception import Disconnected
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ..log import logger

if TYPE_CHECKING:
    from .client import Client

SUBPROTOCOL = "wsservice.v1"
CLOSE_ABNORMAL = 1006
CLOSE_NO_STATUS = 1005


class ClientProtocol(WebSocketClientProtocol):
    """One connection of a Client; ``refusal`` is the ``error`` the server sent before a
    welcome (e.g. ``unauthorized`` before closing 4401)."""

    _log = logger()
    factory: ClientFactory

    def __init__(self) -> None:
        super().__init__()
        self.refusal: Any = None
        self._clock: IReactorTime | None = None
        self._interval = 0.0
        self._timer: IDelayedCall | None = None
        self._pending: bytes | None = None

    @property
    def client(self) -> Client:
        """The Client this connection belongs to."""
        return self.factory.client

    # -- Autobahn's callbacks -----------------------------------------------------------------

    def onOpen(self) -> None:
        self.client._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self._log.warn("wsservice client: ignored a binary message from the server "
                           "({size} bytes)", size=len(payload))
            return
        self.client._received(self, payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.stopHeartbeat()
        # Autobahn leaves its close-handshake timer behind once the connection is gone
        timer, self.closeHandshakeTimeoutCall = self.closeHandshakeTimeoutCall, None
        if timer is not None:
            timer.cancel()
        # a close frame the server sent counts even when the TCP end was not clean after it
        remote = self.remoteCloseCode
        if remote is not None:
            code, reason = remote, self.remoteCloseReason or reason
        elif wasClean and code is None:
            code = CLOSE_NO_STATUS
        self.client._closed(self, code or CLOSE_ABNORMAL, reason or "")

    def onPong(self, payload: bytes) -> None:
        if self._pending is not None and payload == self._pending:
            self._pending = None
            self._schedule(self._ping)

    # -- sending ----------------------------------------------------------------------------

    @property
    def isOpen(self) -> bool:
        """True while messages can be sent."""
        return self.state == WebSocketClientProtocol.STATE_OPEN

    def sendText(self, payload: bytes) -> bool:
        """Send one text message; False when the connection is no longer open."""
        if not self.isOpen:
            return False
        try:
            self.sendMessage(payload, False)
        except Disconnected:
            return False
        return True

    def abort(self) -> None:
        """Drop the connection at once (a stalled peer never answers a closing handshake)."""
        self.dropConnection(abort=True)

    # -- heartbeat: a WebSocket ping every ``interval`` after the last pong; none back
    #    within ``interval`` drops the connection (a stall is seen within 2 x interval) ----

    def startHeartbeat(self, clock: IReactorTime, interval: float) -> None:
        """Ping the server every ``interval`` seconds (0: never)."""
        self.stopHeartbeat()
        self._clock, self._interval = clock, interval
        if interval > 0:
            self._schedule(self._ping)

    def stopHeartbeat(self) -> None:
        """Cancel the heartbeat's timer."""
        timer, self._timer, self._pending = self._timer, None, None
        if timer is not None and timer.active():
            timer.cancel()

    def _schedule(self, what: Any) -> None:
        assert self._clock is not None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._clock.callLater(self._interval, what)

    def _ping(self) -> None:
        self._timer = None
        self._pending = os.urandom(8)
        self.sendPing(self._pending)
        self._schedule(self._noPong)

    def _noPong(self) -> None:
        self._timer = None
        self._log.info("wsservice client: no pong from the server within {seconds:g} s; "
                       "dropping the connection", seconds=self._interval)
        self.abort()


class ClientFactory(WebSocketClientFactory):
    """Makes the connections of one Client (offering ``wsservice.v1``)."""

    protocol = ClientProtocol  # type: ignore[assignment]  # Autobahn types it loosely

    def __init__(self, client: Client, url: str, reactor: Any, headers: dict[str, str],
                 origin: str | None, timeout: float, deflate: bool) -> None:
        super().__init__(url, protocols=[SUBPROTOCOL], origin=origin, headers=headers,
                         reactor=reactor)
        self.client = client
        self.noisy = False  # no "Starting factory" line per reconnect
        # Autobahn's timers round down to whole seconds (a 0.5 s one fires at once): the
        # handshake gets ``timeout`` to ``timeout`` + 1 s, the server 1 to 2 s to answer our
        # close and to drop the TCP connection after it
        self.setProtocolOptions(openHandshakeTimeout=timeout + 1, closeHandshakeTimeout=2,
                                serverConnectionDropTimeout=2, maxFramePayloadSize=0,
                                maxMessagePayloadSize=0)
        if deflate:
            self.setProtocolOptions(
                perMessageCompressionOffers=[PerMessageDeflateOffer()],
                perMessageCompressionAccept=_accept_deflate)

    def buildProtocol(self, addr: Any) -> Any:
        proto: Any = super().buildProtocol(addr)
        self.client._built(proto)
        return proto


def _accept_deflate(response: Any) -> Any:
    if isinstance(response, PerMessageDeflateResponse):
        return PerMessageDeflateResponseAccept(response)
    return None
