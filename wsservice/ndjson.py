"""The NDJSON adapter (protocol.md section 8): the session protocol as newline-delimited JSON
on a plain stream (``--listen-ndjson``), for local tools and shells. No protocol logic.

Lines in, each one message, to the transport-independent ``Connection``; the service's
messages out, each followed by ``\\n`` (orjson never writes a raw newline: it escapes control
characters in strings and adds no whitespace); its close reasons out as a final line
``{"type":"close","code":N,"reason":"..."}`` (the codes of ``closecodes``, as on WebSocket),
then the stream is closed. There are no pings: ``welcome`` says ``"heartbeat": 0``, and TCP
keepalive finds a vanished peer on ``tcp:``.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Callable

import orjson
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IListeningPort,
    IPushProducer,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

from . import fastpath, logflood
from .backlog import SendBacklog
from .closecodes import CLOSE_TRY_AGAIN_LATER, code_of
from .connection import Connection
from .listener import ListenerService
from .endpoints import ListenError, unix_path
from .log import logger
from .peers import address_host
from .reasons import Close

if TYPE_CHECKING:
    from .service import SessionService

# A peer that does not read its close line is dropped after this long, as the WebSocket
# adapter drops one that does not finish the closing handshake.
CLOSE_TIMEOUT = 5.0
IDLE_POLL = 0.05  # seconds between checks for answers still due to a half-closed client
# JSON's whitespace but the newline, which ends a line: a line of only these is blank
_BLANK = b" \t\r"


def close_line(code: int, reason: str) -> bytes:
    """The last line the server writes before it closes a stream (protocol.md section 8)."""
    return orjson.dumps({"type": "close", "code": code, "reason": reason}) + b"\n"


def peer_of(address: IAddress) -> str:
    """The peer string the authenticator sees, as for a WebSocket: ``tcp4:HOST:PORT``,
    ``tcp6:HOST:PORT`` or ``unix``."""
    if isinstance(address, IPv4Address):
        return f"tcp4:{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"tcp6:{address.host}:{address.port}"
    name: Any = address.name if isinstance(address, UNIXAddress) else None
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return f"unix:{name}" if name else "unix"


def keep_alive(transport: Any, idle: float) -> bool:
    """Turn TCP keepalive on for a TCP (or TLS over TCP) stream, probing after ``idle``
    seconds of silence and giving up after three unanswered probes ``idle / 3`` apart, so a
    vanished peer is found in about twice ``idle`` (the WebSocket pings' pace); False when
    the stream is not TCP."""
    if isinstance(transport, ProtocolWrapper):  # TLS: the TCP connection below
        transport = transport.transport
    if not isinstance(transport.getHost(), (IPv4Address, IPv6Address)):
        return False
    enable = getattr(transport, "setTcpKeepAlive", None)
    if enable is None:
        return False
    enable(1)
    handle = transport.getHandle()
    if isinstance(handle, socket.socket) and hasattr(socket, "TCP_KEEPIDLE"):
        # Linux's default waits two hours before the first probe
        try:
            handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(idle)))
            handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(idle / 3)))
            handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        except OSError:
            pass  # keepalive stays on with the system's timings
    return True


@implementer(IPushProducer, IHalfCloseableProtocol)
class NDJSONProtocol(SendBacklog, Protocol):
    """One NDJSON stream: its lines to a Connection, the session's messages back as lines.

    It is the Link the service sends through, and the transport's producer: the transport
    says when its write buffer is full (pauseProducing) and drained (resumeProducing), and
    past ``max_send_queue`` bytes written meanwhile the stream is closed 4508.
    """

    _log = logger()
    factory: NDJSONFactory
    # no heartbeat pings on a stream (a shell user may sit idle): the welcome says 0
    heartbeat = 0
    _connection: Connection | None = None
    _counted: str | None = None  # the host PeerLimits counted at accept, until lost
    # the start of a line still arriving: at most max_message_size + 1 bytes (with a '\r')
    _partial: bytearray | None = None
    _closing = False  # the close line is written, or the client sends no more: input ignored
    _lost = False
    # the client sent all it will (half-closed): answers still due are awaited, then close
    _eof = False
    _idle_check: IDelayedCall | None = None
    _close_timer: IDelayedCall | None = None
    _producing = False  # registered as the transport's producer
    # the lines answered while one read is handled, written together after it (one write,
    # not one per line); None outside dataReceived
    _out: list[bytes] | None = None
    _gathered = 0  # bytes in _out
    _direct = False  # a plain TCP/unix socket, written straight to (fastpath.send_now)

    def _transport(self) -> Any:
        """The TCP, unix or TLS transport (set before connectionMade; IConsumer too)."""
        return self.transport

    def connectionMade(self) -> None:
        """Count the peer (refused past a limit), watch the write buffer, hand the stream
        to the service."""
        factory = self.factory
        service = factory.service
        transport = self._transport()
        address = transport.getPeer()
        host = address_host(address)
        if not service.peers.connected(host):
            if service.logs.admit(logflood.CONNECTION_REFUSED):
                self._log.info("refused an NDJSON connection from {host}: over a connection "
                               "limit (close 1013; wsservice_connections_refused_total "
                               "counts them)", host=host)
            self._closeWith(CLOSE_TRY_AGAIN_LATER,
                            "too many connections from your address, try again later")
            return
        self._counted = host
        keep_alive(transport, factory.keepalive)
        self._direct = factory.fast and fastpath.can_send_directly(transport)
        try:
            transport.registerProducer(self, True)
            self._producing = True
        except Exception:
            self._log.failure("cannot watch the transport's buffer: no send-queue limit here")
        self._connection = service.connect(self, {}, peer_of(address), factory.listener)

    # -- lines in --------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Bytes from the client: each complete line is one message; what they are answered
        with at once goes out in one write."""
        if self._closing or self._eof or not data:
            return
        self._out = []
        try:
            self._lines(data)
        finally:
            self._flush()

    def _lines(self, data: bytes) -> None:
        partial = self._partial
        if partial is not None:
            # checked before it grows: a line's start is kept only while it may still be
            # a message
            end = data.find(b"\n")
            if end < 0:
                if self._overlong(len(partial) + len(data), data[-1]):
                    self._tooBig()
                else:
                    partial += data
                return
            self._partial = None
            if self._overlong(len(partial) + end, data[end - 1] if end else partial[-1]):
                self._tooBig()
                return
            partial += memoryview(data)[:end]
            self._line(bytes(partial))
            data = data[end + 1:]
        lines = data.split(b"\n")
        rest = lines.pop()
        for line in lines:
            if self._closing:
                return
            self._line(line)
        if rest and not self._closing:
            if self._overlong(len(rest), rest[-1]):
                self._tooBig()
            else:
                self._partial = bytearray(rest)

    def _overlong(self, size: int, last: int) -> bool:
        """Whether a line still arriving, ``size`` bytes so far ending with byte ``last``,
        is already longer than a message may be (its last byte may be the '\\r' of a
        '\\r\\n'; a complete line is checked without it)."""
        limit = self.factory.max_message_size
        return size > limit + 1 or size == limit + 1 and last != 13

    def _line(self, line: bytes) -> None:
        if line.endswith(b"\r"):  # shells and telnet end lines with \r\n
            line = line[:-1]
        if len(line) > self.factory.max_message_size:
            self._tooBig()
            return
        # a blank line (Enter pressed in a shell) is no message: ignored (a message starts
        # with '{' nearly always, which spares the copy strip() makes)
        if not line.startswith(b"{") and not line.strip(_BLANK):
            return
        connection = self._connection
        if connection is None:
            return
        connection.received(line)  # (a failure of ours there closes 1011: Connection's)

    def _tooBig(self) -> None:
        self._partial = None
        text = f"a line longer than {self.factory.max_message_size} bytes"
        connection = self._connection
        if connection is not None:
            connection.close(Close.TOO_BIG, text)  # its session stays resumable
        else:
            self.close(Close.TOO_BIG, text)

    def readConnectionLost(self) -> None:
        """The client will send no more (it closed its half, e.g. socat at the end of its
        input): a line it left unfinished is dropped unread; the answers still due to what
        it sent (its welcome, its calls) are awaited, at most hello_timeout + call_timeout,
        then the stream closes and the session stays resumable."""
        self._partial = None
        self._eof = True
        if self._closing:  # after our close line: the client has closed its half too
            self._finish(linger=False)
            return
        settings = self.factory.service.settings
        self._finishWhenAnswered(self.factory.reactor.seconds() + settings.hello_timeout
                                 + settings.call_timeout)

    def _finishWhenAnswered(self, deadline: float) -> None:
        self._idle_check = None
        if self._closing or self._lost:
            return
        connection = self._connection
        reactor = self.factory.reactor
        if connection is not None and connection.awaitingAnswers() \
                and reactor.seconds() < deadline:
            # rare (a script's input ended before its answers came): polled, not hooked
            # into every reply
            self._idle_check = reactor.callLater(IDLE_POLL, self._finishWhenAnswered,
                                                 deadline)
            return
        self._closing = True
        self._finish(linger=False)

    def writeConnectionLost(self) -> None:
        """Our half is closed, after the close line: the client's end follows (or the close
        timer's)."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The stream is gone: the session (if any) stays resumable; only bye ends it."""
        self._lost = self._closing = True
        self._partial = None
        for timer in (self._close_timer, self._idle_check):
            if timer is not None and timer.active():
                timer.cancel()
        self._close_timer = self._idle_check = None
        connection, self._connection = self._connection, None
        try:
            if connection is not None:
                connection.lost()
        finally:
            counted, self._counted = self._counted, None
            if counted is not None:
                self.factory.service.peers.disconnected(counted)

    def _slowConsumer(self) -> None:
        """Over max_send_queue: close 4508 (the session stays resumable)."""
        connection = self._connection
        if connection is None or self._closing:
            return
        self.factory.service.metrics.slow_consumers += 1
        if self.factory.service.logs.admit(logflood.SLOW_CONSUMER):
            self._log.info("slow consumer {peer} (NDJSON): over {limit} bytes waiting; "
                           "closing 4508", peer=address_host(self._transport().getPeer()),
                           limit=self.factory.max_send_queue)
        connection.close(Close.SLOW_CONSUMER, "slow consumer")  # session resumable

    # -- Link, as the service sees this stream -------------------------------------------------

    def sendText(self, payload: bytes) -> None:
        """Write one message as a line; dropped once closing (a resumable session keeps its
        pushes for replay)."""
        if self._closing:
            return
        out = self._out
        if out is not None and not self._paused:
            out.append(payload)
            out.append(b"\n")
            self._gathered += len(payload) + 1
            if self._gathered > fastpath.MAX_BATCH:
                self._flush(again=True)  # large bursts go at once, under backpressure
        else:
            self._write(payload + b"\n")

    def _flush(self, again: bool = False) -> None:
        out = self._out
        self._out = [] if again else None
        self._gathered = 0
        if out:
            self._write(b"".join(out))

    def _write(self, data: bytes) -> None:
        # written first, counted after: closing for a slow consumer writes the close line,
        # which must be the last line
        if self._direct and not self._paused:
            fastpath.send_now(self._transport(), data)
        else:
            self._transport().write(data)
        if self._paused:
            self._count_backlog(len(data))

    def close(self, reason: Close | int, text: str) -> None:
        """Write the close line with protocol.md's code for ``reason``, then close."""
        self._closeWith(code_of(reason), text)

    def abort(self) -> None:
        """Drop the stream at once."""
        self._closing = True
        if not self._lost:
            self._transport().abortConnection()

    def _closeWith(self, code: int, text: str) -> None:
        if self._closing:
            return
        self._flush()  # the lines answered before it go first
        self._closing = True
        self._partial = None
        self._transport().write(close_line(code, text))
        self._finish(linger=True)

    def _finish(self, linger: bool) -> None:
        """Close once everything written is sent; drop a peer that does not read it.

        ``linger``: close our half only, and read (and drop) what the client still sends
        until it closes its own: a socket closed with unread bytes in its buffer is reset,
        and a reset can make the client lose the close line before it reads it.
        """
        if self._lost:
            return
        transport = self._transport()
        if self._producing:
            self._producing = False
            transport.unregisterProducer()  # else the transport waits for us to finish
        # (TLS closes with its own close_notify, after the close line: not by half)
        half = None if isinstance(transport, ProtocolWrapper) or not linger \
            else getattr(transport, "loseWriteConnection", None)
        if half is None:
            transport.loseConnection()  # (its connectionLost may come at once)
        else:
            half()
        if self._close_timer is None and not self._lost:
            self._close_timer = self.factory.reactor.callLater(CLOSE_TIMEOUT, self.abort)


class NDJSONFactory(Factory):
    """Builds NDJSONProtocol for one listener with the service's limits."""

    protocol = NDJSONProtocol  # type: ignore[assignment]  # Twisted types it loosely
    noisy = False  # no "Starting factory" lines

    def __init__(self, service: SessionService, listener: str = "",
                 reactor: IReactorTime | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.service = service
        self.listener = listener
        self.reactor: IReactorTime = reactor
        settings = service.settings
        self.max_message_size = settings.max_message_size
        self.max_send_queue = settings.max_send_queue
        self.keepalive = settings.heartbeat
        self.fast = fastpath.choose(settings.fast_path)  # (said once, for both adapters)


def describe(port: IListeningPort, description: str, secure: bool = False) -> str:
    """Where an NDJSON port listens, as a URL, and how to talk to it from a shell."""
    host: Any = port.getHost()
    if isinstance(host, (IPv4Address, IPv6Address)):
        address = f"[{host.host}]" if ":" in host.host else host.host
        if secure:
            return f"tls://{address}:{host.port} (socat - OPENSSL:{address}:{host.port})"
        return f"tcp://{address}:{host.port} (nc {host.host} {host.port})"
    name = getattr(host, "name", None) or unix_path(description) or "?"
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return f"unix:{name} (socat - UNIX-CONNECT:{name})"


class NDJSONListenError(ListenError):
    """An ``--listen-ndjson`` endpoint that cannot listen."""

    option = "listen-ndjson"


class NDJSONListener(ListenerService):
    """Listens with an NDJSONFactory on one endpoint string (unix sockets private, and
    removed at stop, as for WebSocket listeners)."""

    _log = logger()
    kind = "NDJSON"  # the start-up summary's word for what it serves

    def __init__(self, description: str, factory: Factory | Callable[[], Factory],
                 reactor: IReactorTime | None = None,
                 endpoint: IStreamServerEndpoint | None = None) -> None:
        try:
            super().__init__(description, factory, reactor, endpoint=endpoint)
        except ListenError as e:
            raise NDJSONListenError(e.description, e.problem) from e

    def _listen(self) -> None:
        try:
            super()._listen()
        except ListenError as e:
            raise NDJSONListenError(e.description, e.problem) from e

    def where(self, port: IListeningPort) -> str:
        """Where ``port`` listens and how to talk to it from a shell: the start-up summary
        logs ``listening (NDJSON) on DESCRIPTION: WHERE``."""
        return describe(port, self.description, self.secure)


def listener(service: SessionService, description: str,
             reactor: IReactorTime | None = None,
             endpoint: IStreamServerEndpoint | None = None) -> NDJSONListener:
    """An NDJSON listener for ``service`` on ``description`` (its factory is built when it
    starts listening); with ``endpoint`` (a --workers worker's socket) it listens there."""
    return NDJSONListener(description, lambda: NDJSONFactory(service, description, reactor),
                          reactor, endpoint)
