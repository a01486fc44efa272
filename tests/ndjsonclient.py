"""A real NDJSON client for end-to-end tests, with the interface of tests/wsclient.py's Client
(``send``, ``sendRaw``, ``next``, ``hello``, ``call``, ``closed``, ``waitClosed``,
``dropConnection``), over a TCP or unix endpoint; and how to add an NDJSON listener to a
running LiveServer."""

from __future__ import annotations

import os
from typing import Any

import orjson
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import FailTest

from . import live
from .wsclient import TIMEOUT, Conversation, _endpoint, socket_path

# what ``closed`` fires with when the stream ended without a close line (a drop)
NO_CLOSE_LINE = None


class NDJSONClient(Conversation, Protocol):
    """Collects every line (decoded) in a queue, but the server's close line: ``closed``
    fires with that line's (code, reason) once the stream ends, or (None, why) when it
    ended without one. Anything after a close line, or a line that is not a JSON object,
    fails ``closed``: the server must never send such a thing."""

    def __init__(self) -> None:
        self.queue: DeferredQueue = DeferredQueue()
        self.closed: Deferred = Deferred()
        self.raw: list[bytes] = []  # every line received, without its "\n"
        self.close_line: dict[str, Any] | None = None
        self.problems: list[str] = []
        self._partial = b""

    def dataReceived(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self.raw.append(line)
            if self.close_line is not None:
                self.problems.append(f"a line after the close line: {line!r}")
                continue
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                self.problems.append(f"not JSON: {line!r}")
                continue
            if type(message) is not dict:
                self.problems.append(f"not an object: {line!r}")
            elif message.get("type") == "close":
                self.close_line = message
            else:
                self.queue.put(message)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._partial:
            self.problems.append(f"an unfinished last line: {self._partial!r}")
        if self.problems:
            self.closed.errback(FailTest("; ".join(self.problems)))
            return
        line = self.close_line
        if line is None:
            self.closed.callback((NO_CLOSE_LINE, reason.getErrorMessage()))
        else:
            if set(line) != {"type", "code", "reason"}:
                self.closed.errback(FailTest(f"close line with other members: {line}"))
                return
            self.closed.callback((line["code"], line["reason"]))

    # -- the interface of tests/wsclient.py's Client --------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Send one message as a line."""
        self.sendRaw(orjson.dumps(message))

    def sendRaw(self, payload: bytes, binary: bool = False) -> None:
        """Send ``payload`` as one line (a stream has no binary messages)."""
        if binary:
            raise FailTest("an NDJSON stream has no binary messages")
        self.write(payload + b"\n")

    def write(self, data: bytes) -> None:
        """Send raw bytes, newlines and all."""
        transport: Any = self.transport
        transport.write(data)

    def waitClosed(self, timeout: float = TIMEOUT) -> Deferred:
        """(code, reason) of the close line once the stream has ended."""
        return self.closed.addTimeout(timeout, reactor)

    def dropConnection(self, abort: bool = False) -> None:
        """End the stream from this side (``abort``: at once, a reset)."""
        transport: Any = self.transport
        if abort:
            transport.abortConnection()
        else:
            transport.loseConnection()


async def connect(address: str) -> NDJSONClient:
    """Open a stream to ``host:port`` or ``unix:/path``."""
    proto: NDJSONClient = await _endpoint(address).connect(Factory.forProtocol(NDJSONClient))
    return proto


async def listen(server: live.LiveServer, unix: bool = False) -> str:
    """Add an NDJSON listener (loopback TCP, or a fresh unix socket) to a started LiveServer;
    its address, for ``connect``."""
    path = None
    if unix and server.path:
        # beside the server's own socket: its directory is removed after the server stops
        path = os.path.join(os.path.dirname(server.path), "ndjson.sock")
    elif unix:
        path = socket_path(server.testcase)
    listener = server.service.listenNDJSON(f"unix:{path}" if path else live.LOOPBACK)
    if unix and not server.path:
        # stops before its directory is removed (cleanups run last-added first)
        server.testcase.addCleanup(listener.stopService)
    port: Any = await listener.whenListening
    return f"unix:{path}" if path else f"127.0.0.1:{port.getHost().port}"


async def admitted(server: live.LiveServer, address: str) -> NDJSONClient:
    """A client connected to ``address`` once the service has taken its connection in
    (its hello timer runs), dropped on cleanup: what a WebSocket client is once its
    handshake is done."""
    connections = server.sessions.connections
    before = set(connections)
    client = server.clients.add(await connect(address))  # type: ignore[arg-type]
    await live.until(lambda: connections - before or client.closed.called,
                     "the server to take the connection in")
    return client
