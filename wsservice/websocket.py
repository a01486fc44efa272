"""The thin Autobahn adapter: handshake policy, text frames in, frames out. No protocol logic."""

from __future__ import annotations

from typing import Any

import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from autobahn.websocket.types import ConnectionDeny
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogLevel

from . import fastpath, logflood
from ._version import server_header
from .closecodes import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    code_of,
    peer_may_send,
)
from .backlog import SendBacklog
from .connection import Connection
from .log import logger
from .origin import OriginPolicy
from .reasons import Close
from .service import SessionService

SUBPROTOCOL = "wsservice.v1"
_OPEN = WebSocketServerProtocol.STATE_OPEN

# Autobahn's per-connection lines (autobahn/websocket/protocol.py, autobahn/twisted/
# websocket.py), by their format string, and the kind of client-caused line each is; any
# other of its lines at WARN or above is OTHER_AUTOBAHN, below WARN it passes untouched.
AUTOBAHN_NAMESPACE = "autobahn.twisted.websocket.WebSocketServerProtocol"
_AUTOBAHN_FORMATS = {
    'failing WebSocket connection (code={code}): "{reason}"': logflood.PROTOCOL_VIOLATION,
    "dropping connection to peer {peer} with abort={abort}: {reason}": logflood.UNCLEAN_DROP,
    "failing WebSocket opening handshake ('{reason}')": logflood.BAD_HANDSHAKE,
    "Auto ping/pong: received non-pending pong": logflood.UNSOLICITED_PONG,
}
_WARNINGS = (LogLevel.warn, LogLevel.error, LogLevel.critical)


def _autobahn_kind(event: dict[str, Any]) -> str | None:
    """The kind of client-caused line an Autobahn log event is, or None (not bounded)."""
    kind = _AUTOBAHN_FORMATS.get(event.get("log_format") or "")
    if kind is None and event.get("log_level") in _WARNINGS:
        kind = (logflood.TLS_ERROR if "TLS" in str(event.get("log_format"))
                else logflood.OTHER_AUTOBAHN)
    return kind


def _autobahn_logger(logs: logflood.LogFlood) -> Any:
    """A txaio logger (what Autobahn's ``log`` attribute holds) whose events go through the
    service's LogFlood, under Autobahn's namespace."""
    # txaio binds make_logger once Autobahn picks Twisted: mypy cannot see it
    return txaio.make_logger(  # type: ignore[attr-defined]
        observer=logs.observer(_autobahn_kind, AUTOBAHN_NAMESPACE))


def _accept_deflate(offers: list[Any]) -> PerMessageDeflateOfferAccept | None:
    """Accept permessage-deflate whenever the client offers it."""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


class _Timer:
    """A DelayedCall whose cancel() is safe after it fired (Autobahn cancels freely)."""

    __slots__ = ("_call",)

    def __init__(self, call: Any) -> None:
        self._call = call

    def cancel(self) -> None:
        if self._call.active():
            self._call.cancel()


class _ExactTimers:
    """Autobahn's timer hook, on the factory's own reactor and to the millisecond.

    Autobahn's default batched timer truncates deadlines to whole seconds (a 25 s ping
    timeout fires after 24-25 s; a sub-second one at once) and always uses the global
    reactor; the service's timers must honour their settings and a test's Clock.
    """

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor

    def call_later(self, delay: float, func: Any, *args: Any, **kwargs: Any) -> _Timer:
        return _Timer(self._reactor.callLater(delay, func, *args, **kwargs))


# mypy compares every pair of bases once there are two, and finds Autobahn's own bases
# (WebSocketAdapterProtocol, WebSocketProtocol) at odds over two attributes it types loosely
class WebSocketProtocol(WebSocketServerProtocol, SendBacklog):  # type: ignore[misc]
    """One WebSocket connection: checks the handshake, then relays text messages."""

    _log = logger()
    factory: WebSocketFactory
    maxMessagePayloadSize: int  # set by Autobahn from the factory's options
    _connection: Connection | None = None
    _counted: tuple[Any, str] | None = None  # (peers, host) while counted from the accept
    _request: Any = None
    # the fast path's state (fastpath.opened and its sendText): whether frames are written
    # directly, this reactor turn's frames (fastpath.Corker), and whether the socket may be
    # sent to directly; never set without the fast path
    _plain = False
    _small = False  # small frames are read by the fast path (fastpath.receive_small)
    _small_limit = 0
    _batch: list[bytes] | None = None
    _batched = 0
    _direct = False
    # the message being received, kept by the onMessage* hooks below: its kind, its frames so
    # far, its data (None, its only chunk as it came, or once it has several chunks all of
    # them in one bytearray) and, for a text message in several chunks, the UTF-8 check
    _binary = False
    _frames = 0
    _data: bytes | bytearray | None = None
    _utf8: Utf8Validator | None = None

    def onConnect(self, request: Any) -> str | None:
        """Refuse a wrong subprotocol (400) or a foreign Origin (403) before any session."""
        factory = self.factory
        if not factory.service.running:
            raise ConnectionDeny(503, "server is shutting down")
        protocols = request.protocols
        if protocols and SUBPROTOCOL not in protocols:
            raise ConnectionDeny(400, f"subprotocol {SUBPROTOCOL} is required")
        headers = request.headers
        if not factory.origins.allows(headers.get("origin"), headers.get("host")):
            raise ConnectionDeny(403, "origin not allowed")
        self._request = request
        return SUBPROTOCOL if protocols else None

    def onOpen(self) -> None:
        """Handshake done: become the transport's producer, hand the connection to the service."""
        request, self._request = self._request, None
        # The transport tells us when its write buffer fills (pauseProducing) and when it has
        # drained (resumeProducing): that is how max_send_queue is enforced. twisted.web's
        # HTTPChannel, done with this transport since the upgrade, is still registered.
        transport: Any = self.transport  # a tcp/unix/TLS transport: IConsumer too
        try:
            transport.unregisterProducer()
            transport.registerProducer(self, True)
        except Exception:
            self._log.failure("cannot watch the transport's buffer: no send-queue limit here")
        # the handshake's raw request and parsed headers are not needed any more: an idle
        # connection should not carry them for its whole life
        proto: Any = self  # Autobahn types these as never None; they are done with here
        proto.http_request_data = proto.http_headers = proto.http_request_params = None
        proto.http_response_data = proto.http_status_line = None
        if self.factory.fast:
            fastpath.opened(self)
        self._connection = self.factory.service.connect(
            self, dict(request.headers), request.peer, self.factory.listener)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """One complete message from the client."""
        connection = self._connection
        if connection is None:
            return
        # (a failure of ours handling it closes 1011: Connection guards that for every
        # transport)
        if isBinary:
            connection.binaryReceived()
        else:
            connection.received(payload)

    # -- receiving a message, frame by frame -----------------------------------------------------
    #
    # Autobahn's default hooks keep every chunk of every frame as its own bytes object (49x the
    # payload for a message in one-byte fragments) and count nothing per frame. Here a message
    # that comes in one chunk (nearly all: one frame, one read) is kept as it came, at no extra
    # cost; one in several chunks or frames is gathered into one bytearray, a text one is
    # checked for UTF-8 as it comes (a single chunk is checked by orjson when decoded), and
    # each frame past its first counts against max_frames and the rate limit.

    def onMessageBegin(self, isBinary: bool) -> None:
        """A message begins (Autobahn's keeps its size accounting)."""
        super().onMessageBegin(isBinary)
        self._binary = isBinary

    def onMessageFrameBegin(self, length: int) -> None:
        """A frame of the message begins (Autobahn's checks the size limits)."""
        super().onMessageFrameBegin(length)
        frames = self._frames = self._frames + 1
        if frames > 1:
            self._another_frame(frames)

    def onMessageFrameData(self, payload: bytes) -> None:
        """A chunk of the message's current frame."""
        if self.state != _OPEN:
            return  # failed or closing: nothing more is delivered, so nothing is kept
        if self._data is None:
            self._data = payload
        else:
            self._more(payload)

    def onMessageFrameEnd(self) -> None:
        """Nothing to do: the frame's data is in the message already."""

    def onMessageEnd(self) -> None:
        """The message is complete: on to onMessage (and no Autobahn 'message' event, which
        nothing here listens to)."""
        data, self._data = self._data, None
        self._frames = 0
        self._utf8 = None
        if self.state == _OPEN:
            self.onMessage(b"" if data is None else data if type(data) is bytes
                           else bytes(data), self._binary)

    def _another_frame(self, frames: int) -> None:
        if self.state != _OPEN:
            return
        limit = self.factory.max_frames
        if frames > limit:
            self._fail(Close.TOO_BIG, f"a message in more than {limit} frames")
            return
        self._gather()  # a fragmented text message is checked for UTF-8 from now on
        connection = self._connection
        if connection is not None and self.state == _OPEN:
            connection.frame()
            if self.state != _OPEN:
                self._drop()  # closed for its rate while sending frames: see _fail

    def _gather(self) -> bytearray | None:
        """Gather the message into one bytearray from now on (and check a text one for UTF-8
        as it comes); None if it failed the check."""
        data = self._data
        if type(data) is bytearray:
            return data
        gathered = self._data = bytearray(data or b"")
        if not self._binary:
            self._utf8 = Utf8Validator()
            if data and not self._valid(data):
                return None
        return gathered

    def _more(self, payload: bytes) -> None:
        gathered = self._gather()
        if gathered is None or (self._utf8 is not None and not self._valid(payload)):
            return
        gathered += payload

    def _valid(self, chunk: bytes | bytearray) -> bool:
        utf8 = self._utf8
        assert utf8 is not None
        if utf8.validate(chunk)[0]:
            return True
        self._fail(Close.INVALID_PAYLOAD, "text is not valid UTF-8")
        return False

    def _fail(self, reason: Close, text: str) -> None:
        """Fail the connection for ``reason`` (RFC 6455 7.1.7): the close frame goes through
        the connection (its session stays resumable), then the TCP connection is closed."""
        self._data = None
        connection = self._connection
        if connection is not None:
            connection.close(reason, text)
        else:
            self.close(reason, text)
        self._drop()

    def _drop(self) -> None:
        # A peer failed mid-message may have sent many more frames already: Autobahn would
        # go on parsing them (a few microseconds each, taken from every other connection)
        # until the close handshake ends. Closing the TCP connection once the close frame is
        # written stops reading and ends the parse of what is buffered.
        self.dropConnection(abort=False)

    def onCloseFrame(self, code: int | None, reasonRaw: bytes | None) -> bool | None:
        """The client's close frame: one whose code a peer may not send (RFC 6455 7.4) is
        answered 1002, one whose reason is not UTF-8 1007, then the connection closes."""
        if self.state == _OPEN:
            if code is not None and not peer_may_send(code):
                return self._bad_close(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
            if reasonRaw is not None:
                try:
                    reasonRaw.decode("utf-8")
                except UnicodeDecodeError:
                    return self._bad_close(CLOSE_INVALID_PAYLOAD,
                                           "close reason is not valid UTF-8")
            if code is not None and code < 3000 and code not in self.CLOSE_STATUS_CODES_ALLOWED:
                # a registered code this Autobahn does not know (1014): it would answer 1002
                # and reset; answered as Autobahn answers any other valid close instead
                self.sendCloseFrame(CLOSE_NORMAL, isReply=True)
                self.wasClean = True
                self._drop()
                return True
        # Autobahn types both as never None, though a close frame may carry neither
        return super().onCloseFrame(code, reasonRaw)  # type: ignore[arg-type]

    def _bad_close(self, code: int, text: str) -> bool:
        # Autobahn's own check (failByDrop=False) sends this close frame, then takes the
        # client's close frame for the answer to it and aborts the TCP connection: the frame
        # is thrown away unsent and the client sees a reset. The client has closed its side
        # already: send ours, then close the TCP connection once it is written.
        self.closeWith(code, text)
        self.wasClean = True  # both close frames were exchanged
        self._drop()
        return True  # stop processing this close frame

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """The connection is gone (cleanly or not); a client's own close 1000 ends its session."""
        # Autobahn leaves a pending close-handshake timer behind when the peer vanishes
        # mid-close; drop it so nothing outlives the connection.
        timer, self.closeHandshakeTimeoutCall = self.closeHandshakeTimeoutCall, None
        if timer is not None:
            timer.cancel()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.lost(ended=not self.closedByMe
                            and self.remoteCloseCode == CLOSE_NORMAL)

    def countedBy(self, peers: Any, host: str) -> None:
        """The listener counted this connection for ``host`` (channel.Peers): tell
        ``peers.disconnected(host)`` once it is lost."""
        self._counted = (peers, host)

    def connectionLost(self, reason: Any = None) -> None:
        """Autobahn's, then the connection's end told to the peer limits."""
        try:
            super().connectionLost(reason)
        finally:
            counted, self._counted = self._counted, None
            if counted is not None:
                counted[0].disconnected(counted[1])

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """Every byte Autobahn writes (after compression) passes here: bound the backlog."""
        if self._batch is not None:
            fastpath.flush(self)  # frames the fast path gathered this turn go first
        if self._paused:
            self._count_backlog(len(data))
        super().sendData(data, sync, chopsize)

    def _slowConsumer(self) -> None:
        """Over max_send_queue: close 4508 (the session stays resumable)."""
        connection = self._connection
        if connection is not None and self.state == self.STATE_OPEN:
            self.factory.service.metrics.slow_consumers += 1
            if self.factory.service.logs.admit(logflood.SLOW_CONSUMER):
                self._log.info("slow consumer {peer}: over {limit} bytes waiting; closing "
                               "4508", peer=self.peer, limit=self.factory.max_send_queue)
            # Nothing more is queued once closing (Autobahn drops sends when not OPEN), and
            # the close-handshake timeout drops a client that never reads.
            connection.close(Close.SLOW_CONSUMER, "slow consumer")

    # -- Link, as the service sees this connection -------------------------------------------

    def sendText(self, payload: bytes) -> None:
        """Send one text message; dropped once the connection is closing (a resumable
        session keeps its pushes for replay; replies to a closing peer have nowhere to go)."""
        if self.state != self.STATE_OPEN:
            return
        if len(payload) <= self.maxMessagePayloadSize:
            self.sendMessage(payload, False)
        else:
            self._send_large(payload)

    def _send_large(self, payload: bytes) -> None:
        # Autobahn applies maxMessagePayloadSize to sends as well; protocol.md limits only
        # what the server receives.
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            self.sendMessage(payload, False)
        finally:
            self.maxMessagePayloadSize = limit

    def abort(self) -> None:
        """Drop the connection at once."""
        self.dropConnection(abort=True)

    def close(self, reason: Close | int, text: str) -> None:
        """Start the closing handshake with the close code of protocol.md for ``reason``."""
        self.closeWith(code_of(reason), text)

    def closeWith(self, code: int, text: str) -> None:
        """Start the closing handshake with any close code of protocol.md."""
        # sendClose() only takes 1000 and 3000-4999; protocol.md also needs 1001/1003/1011/1013.
        # a close reason is at most 123 bytes and must stay valid UTF-8 when cut
        raw = text.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
        self.sendCloseFrame(code, raw, isReply=False)


class WebSocketFactory(WebSocketServerFactory):
    """Builds WebSocketProtocol for one listener with the service's limits and policies."""

    protocol = WebSocketProtocol  # type: ignore[assignment]  # Autobahn types it loosely

    def __init__(self, service: SessionService, listener: str = "", secure: bool = False,
                 reactor: IReactorTime | None = None) -> None:
        settings = service.settings
        super().__init__("wss://localhost" if secure else "ws://localhost",
                         server=server_header(settings.server_version), reactor=reactor)
        self._batched_timer = _ExactTimers(self.reactor)
        self.corker = fastpath.Corker(self.reactor)
        self.service = service
        self.listener = listener
        self.origins = OriginPolicy(settings.allowed_origins)
        self.max_send_queue = settings.max_send_queue
        self.max_frames = settings.max_frames
        # probed now, at start-up, not per connection; off falls back to Autobahn's paths
        self.fast = fastpath.choose(settings.fast_path)
        # Autobahn copies every setting from the factory onto each new protocol instance
        # unless the class already has it: ~30 entries in every connection's __dict__. A
        # class per factory holding them once keeps idle connections small;
        # setProtocolOptions() below keeps it in step.
        # Its Autobahn logger too: per-connection lines any client can cause go through
        # the service's flood bounds (logflood).
        self.protocol = type(self.protocol.__name__, (self.protocol,),  # type: ignore[assignment]
                             {"log": _autobahn_logger(service.logs)})
        self._own_class = self.protocol
        if self.fast:
            fastpath.install(self.protocol)  # on this factory's own class only
        self.setProtocolOptions(
            maxMessagePayloadSize=settings.max_message_size,
            maxFramePayloadSize=settings.max_message_size,
            perMessageCompressionAccept=_accept_deflate,
            # Autobahn refuses Origin 'null' itself, with 400, unless this is set (its
            # setProtocolOptions defaults it to False on every call); onConnect's
            # OriginPolicy then refuses it with 403, or allows it when a pattern says so
            allowNullOrigin=True,
            openHandshakeTimeout=settings.hello_timeout,
            closeHandshakeTimeout=5,
            # protocol errors (e.g. 1009 too big) are told to the client with a close frame,
            # not by a silent TCP drop
            failByDrop=False,
            # a small server message is sent as one TCP segment, right away
            tcpNoDelay=True,
            # orjson validates UTF-8 while parsing; a text message that fails is checked
            # then and fails the connection with 1007 (wire.decode), so Autobahn's own
            # incremental check of every text frame is redundant work; a message in several
            # chunks or frames is checked as it comes (onMessageFrameData), failing fast
            utf8validateIncoming=False,
            # WebSocket pings every heartbeat; no pong within another heartbeat: dropped
            # (the session stays resumable)
            autoPingInterval=settings.heartbeat,
            autoPingTimeout=settings.heartbeat,
        )

    def setProtocolOptions(self, **options: Any) -> None:  # type: ignore[override]
        """Autobahn's; connections opened from now on use the new options."""
        super().setProtocolOptions(**options)
        self._sync_options()

    def resetProtocolOptions(self) -> None:
        """Autobahn's; connections opened from now on use the defaults."""
        super().resetProtocolOptions()
        self._sync_options()

    def _sync_options(self) -> None:
        cls: Any = getattr(self, "_own_class", None)
        if cls is None:
            return  # Autobahn's __init__ resets the options before the class exists
        if self.protocol is not cls:
            raise TypeError("WebSocketFactory.protocol was replaced: set a subclass of "
                            "WebSocketProtocol as the class attribute instead")
        for name in cls.CONFIG_ATTRS:
            value = getattr(self, name)
            setattr(cls, name, staticmethod(value) if callable(value) else value)


class EchoProtocol(WebSocketProtocol):
    """Echoes every message, text or binary: the Autobahn Testsuite's peer (/echo)."""

    def onOpen(self) -> None:
        """No session: messages are echoed as they come."""

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Echo; a text message that is not UTF-8 fails the connection (1007)."""
        if not isBinary:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                self.closeWith(CLOSE_INVALID_PAYLOAD, "text is not valid UTF-8")
                return
        self.sendMessage(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """Nothing to forget."""


class EchoFactory(WebSocketFactory):
    """The production factory's options and compression, echoing (``--conformance-echo``)."""

    protocol = EchoProtocol
