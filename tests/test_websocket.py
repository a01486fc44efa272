"""The thin Autobahn adapter (wsservice.websocket), driven in memory: no sockets, no real time.

A real Autobahn client talks to WebSocketFactory's protocol over twisted.test.iosim transports
through autobahn.twisted.testing's memory agent; the service, the factory, the agent and
txaio's timers (Autobahn's handshake timeouts) all run on one MemoryReactorClock, so the
hello timeout is driven by ``advance()`` and nothing is ever left on the real reactor.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
import txaio
from autobahn.twisted.testing import create_memory_agent, create_pumper
from autobahn.twisted.websocket import WebSocketClientProtocol
from autobahn.websocket.compress import (
    PerMessageDeflate,
    PerMessageDeflateOffer,
    PerMessageDeflateResponseAccept,
)
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from wsservice import closecodes, errors, fastpath
from wsservice.config import Settings
from wsservice.demo import DemoApp
from wsservice.interfaces import IAuthenticator
from wsservice.service import SERVER_NAME, SessionService
from wsservice.websocket import SUBPROTOCOL, WebSocketFactory, WebSocketProtocol

URL = "ws://localhost:9000/ws"
V1 = {"protocols": [SUBPROTOCOL]}


class Client(WebSocketClientProtocol):
    """A plain Autobahn client that records what it gets and can offer permessage-deflate."""

    def __init__(self, deflate: bool = False) -> None:
        super().__init__()
        self.deflate = deflate
        self.messages: list[tuple[bytes, bool]] = []
        self._waiting: list[Deferred] = []
        self.opened = False
        self.closed: Deferred = Deferred()

    def connectionMade(self) -> None:
        if self.deflate:
            # the agent only passes a few options through; configure the offer on our factory
            self.factory.setProtocolOptions(
                perMessageCompressionOffers=[PerMessageDeflateOffer()],
                perMessageCompressionAccept=PerMessageDeflateResponseAccept)
        super().connectionMade()

    def onOpen(self) -> None:
        self.opened = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))
        if self._waiting:
            self._waiting.pop(0).callback(None)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.closed.called:
            self.closed.callback((wasClean, code, reason))

    def send(self, message: dict) -> None:
        self.sendMessage(orjson.dumps(message), False)

    async def receive(self) -> Any:
        """The next message from the server, decoded (text messages only)."""
        while not self.messages:
            d: Deferred = Deferred()
            self._waiting.append(d)
            await d
        payload, isBinary = self.messages.pop(0)
        assert not isBinary, payload
        return orjson.loads(payload)


class _AdapterTest(TestCase):
    """Sets up service + factory + memory agent on one fake clock."""

    settings = Settings()

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        # Autobahn arms its open/close handshake timers through txaio's loop: keep them on the
        # fake clock too (restored after the test).
        self.patch(txaio.config, "loop", self.clock)
        self.service = SessionService([DemoApp(self.clock)], self.settings, clock=self.clock)
        self.service.startService()
        self.factory = WebSocketFactory(self.service, "test-listener", reactor=self.clock)
        self.servers: list[WebSocketProtocol] = []
        self.server_closed: list[Deferred] = []
        self.clients: list[Client] = []
        self.pumper = create_pumper()
        self.agent = create_memory_agent(self.clock, self.pumper, self._server)
        self.pumper.start()
        self.addCleanup(self.pumper.stop)  # runs last: the pumps must run until then
        self.addCleanup(lambda: Deferred.fromCoroutine(self._close_all()))

    def _server(self) -> WebSocketProtocol:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9000))
        self.servers.append(proto)
        # observe (not replace) the adapter's onClose: the client may see its close first
        closed: Deferred = Deferred()
        self.server_closed.append(closed)
        on_close = proto.onClose

        def onClose(wasClean: bool, code: int | None, reason: str | None) -> None:
            on_close(wasClean, code, reason)
            closed.callback((wasClean, code, reason))

        proto.onClose = onClose  # type: ignore[method-assign]
        return proto

    def _client(self, cls: type[Client] = Client, **kwargs: Any) -> Client:
        client = cls(**kwargs)
        self.clients.append(client)
        return client

    async def _close_all(self) -> None:
        for client in self.clients:
            if not client.closed.called:
                client.dropConnection(abort=True)
        for closed in [c.closed for c in self.clients] + self.server_closed:
            await closed
        if self.service.running:
            self.service.stopService()
        self.assertEqual(self.service.connections, set())

    async def connect(self, options: dict | None = None, **kwargs: Any) -> Client:
        """Open a WebSocket and wait for the handshake to succeed."""
        proto = await self.agent.open(URL, V1 if options is None else options,
                                      partial(self._client, **kwargs))
        self.assertIsInstance(proto, Client)
        return proto

    async def refused(self, options: dict) -> str:
        """Open a WebSocket that the server refuses; return the client's close reason."""
        opened = self.agent.open(URL, options, partial(self._client))
        client = self.clients[-1]
        wasClean, code, reason = await client.closed
        await self.server_closed[-1]
        self.assertFalse(client.opened)
        self.assertNoResult(opened)  # the agent never reports an open connection
        self.assertFalse(wasClean)
        self.assertEqual(code, 1006)
        self.assertEqual(len(self.servers), 1)
        self.assertEqual(self.service.connections, set())  # the service never saw it
        self.assertEqual(self.service.connections, set())
        return reason

    async def hello(self, client: Client) -> dict:
        client.send({"type": "hello", "meta": {"client": "trial"}})
        welcome = await client.receive()
        self.assertEqual(welcome["type"], "welcome")
        return welcome

    async def resume(self, client: Client, welcome: dict, last_seq: int = 0) -> dict:
        """Say hello with ``resume`` for the session of ``welcome``; return the welcome."""
        client.send({"type": "hello", "resume": {"session": welcome["session"],
                                                 "token": welcome["token"],
                                                 "last_seq": last_seq}})
        reply = await client.receive()
        self.assertEqual(reply["type"], "welcome")
        return reply

    def assertDetached(self, welcome: dict) -> None:
        """The session of ``welcome`` lost its connection but stays resumable."""
        self.assertEqual(list(self.service.sessions), [welcome["session"]])
        session = self.service.sessions[welcome["session"]]
        self.assertFalse(session.attached)
        self.assertFalse(session.closed)
        self.assertEqual(sum(self.service.metrics.sessions_closed.values()), 0)

    async def closed_with(self, client: Client, code: int) -> str:
        """Wait for the connection to close cleanly with ``code``; return the reason."""
        wasClean, got, reason = await client.closed
        self.assertEqual((got, wasClean), (code, True), reason)
        await self.server_closed[self.clients.index(client)]
        return reason


class HandshakeTests(_AdapterTest):
    """onConnect: subprotocol, Origin and running checks."""

    async def test_subprotocol_selected(self) -> None:
        """Offering wsservice.v1 opens the connection with it selected on both sides."""
        client = await self.connect()
        self.assertEqual(client.websocket_protocol_in_use, SUBPROTOCOL)
        self.assertEqual(self.servers[0].websocket_protocol_in_use, SUBPROTOCOL)
        self.assertEqual(len(self.service.connections), 1)

    async def test_subprotocol_among_others(self) -> None:
        """wsservice.v1 is picked out of several offered subprotocols."""
        client = await self.connect({"protocols": ["chat", SUBPROTOCOL, "other"]})
        self.assertEqual(client.websocket_protocol_in_use, SUBPROTOCOL)

    async def test_no_subprotocol(self) -> None:
        """A client offering no subprotocol is accepted, and none is selected."""
        client = await self.connect({})
        self.assertIsNone(client.websocket_protocol_in_use)
        self.assertIsNone(self.servers[0].websocket_protocol_in_use)
        self.assertNotIn("sec-websocket-protocol", client.http_headers)  # the response's
        await self.hello(client)

    async def test_wrong_subprotocol(self) -> None:
        """Offering only other subprotocols is refused with HTTP 400."""
        reason = await self.refused({"protocols": ["other.v2"]})
        self.assertIn("upgrade failed [400]", reason)

    async def test_foreign_origin(self) -> None:
        """An Origin that is neither the Host nor allowed is refused with HTTP 403."""
        reason = await self.refused({**V1, "origin": "http://evil.example"})
        self.assertIn("upgrade failed [403]", reason)

    async def test_same_origin(self) -> None:
        """An Origin naming the Host itself is accepted."""
        client = await self.connect({**V1, "origin": "http://localhost:9000"})
        self.assertEqual(client.websocket_protocol_in_use, SUBPROTOCOL)

    async def test_stopped(self) -> None:
        """A service that has stopped refuses new handshakes with HTTP 503."""
        self.service.stopService()
        reason = await self.refused(V1)
        self.assertIn("upgrade failed [503]", reason)

    async def test_request_reaches_authenticator(self) -> None:
        """Handshake headers, peer and listener name are handed to the authenticator."""
        seen = []

        @implementer(IAuthenticator)
        class Recorder:
            def authenticate(self, request: Any) -> str:
                seen.append(request)
                return "ana"

        self.service.authenticator = Recorder()
        client = await self.connect({**V1, "headers": {"X-Token": "t0k"}})
        await self.hello(client)
        [request] = seen
        self.assertEqual(request.headers.get("x-token"), "t0k")
        self.assertEqual(request.headers.get("sec-websocket-protocol"), SUBPROTOCOL)
        self.assertEqual(request.peer, "tcp4:127.0.0.1:31337")
        self.assertEqual(request.listener, "test-listener")

    async def test_permessage_deflate(self) -> None:
        """permessage-deflate offered by the client is accepted and used both ways."""
        client = await self.connect(deflate=True)
        server = self.servers[0]
        for proto in (client, server):
            [extension] = proto.websocket_extensions_in_use
            self.assertIsInstance(extension, PerMessageDeflate)
        params = {"text": "abc" * 300}
        await self.hello(client)
        client.send({"type": "call", "id": 1, "method": "echo", "params": params})
        self.assertEqual(await client.receive(), {"type": "result", "id": 1, "result": params})
        # both directions went compressed: far fewer octets than the text itself
        self.assertLess(server.trafficStats.incomingOctetsWireLevel, 500)
        self.assertLess(server.trafficStats.outgoingOctetsWireLevel, 500)

    async def test_no_deflate_unless_offered(self) -> None:
        """Without an offer, no extension is in use."""
        client = await self.connect()
        self.assertEqual(client.websocket_extensions_in_use, [])
        self.assertEqual(self.servers[0].websocket_extensions_in_use, [])


class MessageTests(_AdapterTest):
    """Text messages in and out, through the service and the demo handlers."""

    async def test_hello_welcome(self) -> None:
        client = await self.connect()
        welcome = await self.hello(client)
        self.assertEqual(set(welcome), {"type", "session", "token", "resumed", "heartbeat",
                                        "server"})
        self.assertEqual((welcome["resumed"], welcome["heartbeat"], welcome["server"]),
                         (False, 25, SERVER_NAME))
        self.assertIn(welcome["session"], self.service.sessions)
        # welcome was one text frame (Client.receive asserts it was not binary)
        self.assertEqual(self.service.metrics.messages_out["welcome"], 1)

    async def test_call_echo(self) -> None:
        client = await self.connect()
        await self.hello(client)
        client.send({"type": "call", "id": "c1", "method": "echo", "params": {"a": [1, 2.5]}})
        self.assertEqual(await client.receive(),
                         {"type": "result", "id": "c1", "result": {"a": [1, 2.5]}})

    async def test_event_echo(self) -> None:
        client = await self.connect()
        await self.hello(client)
        client.send({"type": "event", "event": "echo", "data": "one"})
        client.send({"type": "event", "event": "echo", "data": {"n": 2}})
        self.assertEqual(await client.receive(),
                         {"type": "event", "event": "echo", "data": "one", "seq": 1})
        self.assertEqual(await client.receive(),
                         {"type": "event", "event": "echo", "data": {"n": 2}, "seq": 2})

    async def test_utf8_roundtrip(self) -> None:
        """Non-ASCII text survives the adapter in both directions."""
        client = await self.connect()
        await self.hello(client)
        client.send({"type": "call", "id": 1, "method": "echo", "params": "žluťoučký 🐴"})
        self.assertEqual((await client.receive())["result"], "žluťoučký 🐴")

    async def test_binary(self) -> None:
        """A binary message closes 1003; the session stays resumable."""
        client = await self.connect()
        welcome = await self.hello(client)
        client.sendMessage(b'{"type":"ping"}', isBinary=True)
        await self.closed_with(client, closecodes.CLOSE_UNSUPPORTED_DATA)
        self.assertDetached(welcome)
        self.assertEqual(self.service.connections, set())
        again = await self.connect()
        resumed = await self.resume(again, welcome)
        self.assertEqual((resumed["session"], resumed["resumed"]), (welcome["session"], True))
        self.assertTrue(self.service.sessions[welcome["session"]].isAttachedTo(self.servers[1]))

    async def test_binary_before_hello(self) -> None:
        client = await self.connect()
        client.sendMessage(b"\x00\x01", isBinary=True)
        await self.closed_with(client, closecodes.CLOSE_UNSUPPORTED_DATA)
        self.assertEqual(self.service.connections, set())

    async def test_bye(self) -> None:
        """bye closes 1000 through closeWith."""
        client = await self.connect()
        await self.hello(client)
        client.send({"type": "bye"})
        await self.closed_with(client, closecodes.CLOSE_NORMAL)
        self.assertEqual(self.service.sessions, {})

    async def test_handler_crash_closes_1011(self) -> None:
        """An exception escaping the service closes 1011 and is logged."""
        client = await self.connect()
        await self.hello(client)

        def boom(session: Any, payload: bytes) -> None:
            raise RuntimeError("boom")

        self.patch(self.service, "receive", boom)
        client.send({"type": "ping"})
        await self.closed_with(client, closecodes.CLOSE_INTERNAL_ERROR)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_client_drop_keeps_session_until_resume_ttl(self) -> None:
        """A client vanishing without a close handshake leaves its session resumable;
        it ends as expired once resume_ttl (60 s) has passed."""
        client = await self.connect()
        welcome = await self.hello(client)
        client.dropConnection(abort=True)
        await client.closed
        await self.server_closed[0]
        self.assertDetached(welcome)
        self.assertEqual(self.service.connections, set())
        self.clock.advance(59.9)
        self.assertIn(welcome["session"], self.service.sessions)
        self.clock.advance(0.1)
        self.assertEqual(self.service.sessions, {})
        self.assertEqual(self.service.metrics.sessions_closed["expired"], 1)
        self.assertEqual(self.service.metrics.sessions_closed["lost"], 0)

    async def test_client_close_1000_ends_session(self) -> None:
        """A closing handshake the client starts with 1000 ends its session at once."""
        client = await self.connect()
        await self.hello(client)
        client.sendClose(closecodes.CLOSE_NORMAL)
        await self.closed_with(client, closecodes.CLOSE_NORMAL)
        self.assertEqual(self.service.sessions, {})
        self.assertEqual(self.service.connections, set())
        self.assertEqual(self.service.metrics.sessions_closed["bye"], 1)

    async def test_client_close_other_code_keeps_session(self) -> None:
        """A client closing with any code but 1000 (here 4000) may resume."""
        client = await self.connect()
        welcome = await self.hello(client)
        client.sendClose(4000)
        await client.closed
        wasClean, code, _ = await self.server_closed[0]
        self.assertEqual((wasClean, code), (True, 4000))
        self.assertDetached(welcome)

    async def test_shutdown_closes_1001(self) -> None:
        """Stopping the service closes open connections 1001 through closeWith; the client
        answering that close does not end its session, which stays resumable."""
        client = await self.connect()
        welcome = await self.hello(client)
        drained = self.service.stopService()
        await self.closed_with(client, closecodes.CLOSE_GOING_AWAY)
        self.assertIsNone(self.successResultOf(drained))
        self.assertEqual(self.service.connections, set())
        self.assertDetached(welcome)


class LimitTests(_AdapterTest):
    """max_message_size and hello_timeout, as the client sees them."""

    settings = Settings(max_message_size=1024, hello_timeout=10.0)

    def call(self, size: int) -> bytes:
        """A call to echo whose JSON text is exactly ``size`` bytes."""
        empty = orjson.dumps({"type": "call", "id": 1, "method": "echo", "params": ""})
        frame = orjson.dumps({"type": "call", "id": 1, "method": "echo",
                              "params": "x" * (size - len(empty))})
        self.assertEqual(len(frame), size)
        return frame

    async def test_at_limit(self) -> None:
        """A message of exactly max_message_size bytes is accepted."""
        client = await self.connect()
        await self.hello(client)
        frame = self.call(1024)
        client.sendMessage(frame, False)
        self.assertEqual((await client.receive())["result"], orjson.loads(frame)["params"])

    async def test_too_big(self) -> None:
        """A message over max_message_size closes 1009 with a close frame, not a drop."""
        client = await self.connect()
        welcome = await self.hello(client)
        client.sendMessage(self.call(1025), False)
        await self.closed_with(client, closecodes.CLOSE_TOO_BIG)
        self.assertEqual(client.messages, [])
        # the session stays resumable (protocol.md §2)
        self.assertDetached(welcome)

    async def test_too_big_in_fragments(self) -> None:
        """The limit is on the whole message, not just each frame."""
        client = await self.connect()
        await self.hello(client)
        client.sendMessage(self.call(1500), False, fragmentSize=500)
        await self.closed_with(client, closecodes.CLOSE_TOO_BIG)

    async def test_too_big_once_inflated(self) -> None:
        """With permessage-deflate the limit applies to the inflated message."""
        client = await self.connect(deflate=True)
        await self.hello(client)
        client.sendMessage(self.call(4096), False)
        await self.closed_with(client, closecodes.CLOSE_TOO_BIG)
        self.assertLess(self.servers[0].trafficStats.incomingOctetsWireLevel, 1024)

    async def test_hello_timeout(self) -> None:
        """No hello within hello_timeout: close 4408."""
        client = await self.connect()
        self.clock.advance(9.9)
        self.assertFalse(client.closed.called)
        self.clock.advance(0.2)
        reason = await self.closed_with(client, closecodes.CLOSE_HELLO_TIMEOUT)
        self.assertEqual(reason, "no hello in time")
        self.assertEqual(self.service.connections, set())

    async def test_hello_in_time(self) -> None:
        """A hello before hello_timeout keeps the connection open past it."""
        client = await self.connect()
        self.clock.advance(9.0)
        await self.hello(client)
        self.clock.advance(5.0)
        client.send({"type": "ping", "data": 1})
        self.assertEqual(await client.receive(), {"type": "pong", "data": 1})
        self.assertFalse(client.closed.called)


class CloseTests(_AdapterTest):
    """closeWith, onClose and Autobahn's own closes as configured by the factory."""

    settings = Settings(max_sessions=1, hello_timeout=10.0)

    async def test_invalid_utf8_text(self) -> None:
        """A text message that is not UTF-8 closes 1007 with a close frame; the session
        stays resumable."""
        client = await self.connect()
        welcome = await self.hello(client)
        client.sendMessage(b'{"type":"ping","data":"\xff"}', False)
        await self.closed_with(client, 1007)
        self.assertDetached(welcome)
        again = await self.connect()
        resumed = await self.resume(again, welcome)
        self.assertEqual((resumed["session"], resumed["resumed"]), (welcome["session"], True))
        again.send({"type": "ping", "data": 1})
        self.assertEqual(await again.receive(), {"type": "pong", "data": 1})

    async def test_full(self) -> None:
        """With max_sessions reached by an attached session, a new hello is closed 1013."""
        first = await self.connect()
        await self.hello(first)
        second = await self.connect()
        second.send({"type": "hello"})
        await self.closed_with(second, closecodes.CLOSE_TRY_AGAIN_LATER)
        self.assertEqual(second.messages, [])
        self.assertFalse(first.closed.called)

    async def test_full_evicts_detached(self) -> None:
        """With max_sessions reached by a detached session, a new hello expires it and is
        welcomed; the old session's client then learns resumed:false."""
        first = await self.connect()
        welcome = await self.hello(first)
        first.dropConnection(abort=True)
        await first.closed
        self.assertDetached(welcome)
        second = await self.connect()
        fresh = await self.hello(second)
        self.assertEqual(list(self.service.sessions), [fresh["session"]])
        self.assertEqual(self.service.metrics.sessions_closed["evicted"], 1)


class FullConnectionsTests(_AdapterTest):
    """max_connections bounds connections from before their hello."""

    settings = Settings(max_connections=1, hello_timeout=10.0)

    async def test_full_before_hello(self) -> None:
        """Connections that have not said hello count too: a second one is closed 1013."""
        first = await self.connect()
        second = await self.connect()
        await self.closed_with(second, closecodes.CLOSE_TRY_AGAIN_LATER)
        self.assertFalse(first.closed.called)
        await self.hello(first)


class NoResumeTests(_AdapterTest):
    """With resume_ttl=0 a lost connection ends its session at once."""

    settings = Settings(resume_ttl=0)

    async def test_client_drop_ends_session(self) -> None:
        """A client vanishing without a close handshake ends its session as lost."""
        client = await self.connect()
        await self.hello(client)
        client.dropConnection(abort=True)
        await client.closed
        await self.server_closed[0]
        self.assertEqual(self.service.sessions, {})
        self.assertEqual(self.service.connections, set())
        self.assertEqual(self.service.metrics.sessions_closed["lost"], 1)

    async def test_binary(self) -> None:
        """A binary message closes 1003, ending the session."""
        client = await self.connect()
        await self.hello(client)
        client.sendMessage(b'{"type":"ping"}', isBinary=True)
        await self.closed_with(client, closecodes.CLOSE_UNSUPPORTED_DATA)
        self.assertEqual(self.service.sessions, {})
        self.assertEqual(self.service.metrics.sessions_closed["lost"], 1)

    async def test_long_close_reason(self) -> None:
        """A close reason is cut to fit the close frame (123 bytes) as valid UTF-8.

        Here the reason is an authenticator's (non-ASCII) refusal, closed 4401.
        """
        reason = "zamítnuto: " + "ž" * 100  # byte 123 falls inside a "ž"
        self.assertRaises(UnicodeDecodeError, reason.encode("utf-8")[:123].decode, "utf-8")

        @implementer(IAuthenticator)
        class Refuse:
            def authenticate(self, request: Any) -> Any:
                raise errors.ApplicationError(errors.UNAUTHORIZED, reason)

        self.service.authenticator = Refuse()
        client = await self.connect()
        client.send({"type": "hello"})
        error = await client.receive()
        self.assertEqual(error["error"]["message"], reason)
        got = await self.closed_with(client, closecodes.CLOSE_UNAUTHORIZED)
        self.assertTrue(reason.startswith(got))
        self.assertLessEqual(len(got.encode("utf-8")), 123)
        self.assertGreater(len(got.encode("utf-8")), 123 - 4)

    async def test_open_handshake_timeout(self) -> None:
        """A client that never sends its HTTP upgrade is dropped after hello_timeout."""

        class Silent(Client):
            def startHandshake(self) -> None:
                pass

        self.agent.open(URL, V1, partial(self._client, cls=Silent))
        client = self.clients[-1]
        self.clock.advance(9.0)
        self.assertFalse(client.closed.called)
        self.clock.advance(1.5)
        wasClean, code, _ = await client.closed
        await self.server_closed[0]
        self.assertEqual((wasClean, code), (False, 1006))
        self.assertEqual(self.service.connections, set())

    async def test_peer_vanishes_mid_close(self) -> None:
        """The server closes, the client drops TCP without answering: no timer remains."""
        client = await self.connect()
        self.clock.advance(10.5)  # hello timeout: the server sends close 4408 ...
        server = self.servers[0]
        self.assertEqual(server.state, WebSocketProtocol.STATE_CLOSING)
        self.assertIsNotNone(server.closeHandshakeTimeoutCall)
        client.dropConnection(abort=True)  # ... and the client goes before reading it
        wasClean, code, _ = await self.server_closed[0]
        self.assertEqual((wasClean, code), (False, 1006))
        self.assertIsNone(server.closeHandshakeTimeoutCall)
        self.assertEqual([c for c in self.clock.getDelayedCalls() if c.active()], [])
        self.assertEqual(self.service.connections, set())

    async def test_close_handshake_timeout(self) -> None:
        """A client that never answers the server's close is dropped after about 5 s."""

        class Mute(Client):
            def onCloseFrame(self, code: Any, reasonRaw: Any) -> None:
                pass  # never answers, never drops

        client = await self.agent.open(URL, V1, partial(self._client, cls=Mute))
        server = self.servers[0]
        self.clock.advance(10.5)  # hello timeout: close 4408 sent
        self.assertEqual(server.state, WebSocketProtocol.STATE_CLOSING)
        # (Autobahn's batched timers round down to whole seconds: it fires at t=15)
        self.clock.advance(4.0)
        self.assertEqual(server.state, WebSocketProtocol.STATE_CLOSING)
        self.clock.advance(1.0)
        self.assertEqual(server.state, WebSocketProtocol.STATE_CLOSED)
        wasClean, code, _ = await self.server_closed[0]
        self.assertFalse(wasClean)
        await client.closed
        self.assertEqual(self.service.connections, set())


class OriginPatternTests(_AdapterTest):
    """allowed_origins reach the adapter's Origin check."""

    settings = Settings(allowed_origins=("https://*.example.org",))

    async def test_pattern_allowed(self) -> None:
        client = await self.connect({**V1, "origin": "https://app.example.org"})
        await self.hello(client)

    async def test_pattern_other_scheme(self) -> None:
        reason = await self.refused({**V1, "origin": "http://app.example.org"})
        self.assertIn("upgrade failed [403]", reason)


class HeartbeatTests(_AdapterTest):
    """WebSocket pings every heartbeat on the service's clock; a silent peer is dropped."""

    settings = Settings(heartbeat=5.0)

    def watch(self, proto: Any, method: str) -> list[Deferred]:
        """Deferreds fired, in turn, each time ``proto.method`` is called (after it runs)."""
        waiting: list[Deferred] = []
        original = getattr(proto, method)

        def called(*args: Any) -> None:
            original(*args)
            if waiting:
                waiting.pop(0).callback(None)
        setattr(proto, method, called)
        return waiting

    async def after(self, waiting: list[Deferred], advance: float) -> None:
        """Advance the clock, then wait until the watched method has been called."""
        d: Deferred = Deferred()
        waiting.append(d)
        self.clock.advance(advance)
        await d

    async def test_answering_peer_stays(self) -> None:
        client = await self.connect()
        await self.hello(client)
        server = self.servers[0]
        pongs = self.watch(server, "onPong")  # the server got the client's answer
        for _ in range(3):
            await self.after(pongs, 5.0)  # the server pings; the client answers
        self.assertEqual(server.state, WebSocketProtocol.STATE_OPEN)
        self.clock.advance(5.0)  # a whole heartbeat after the last pong: a ping, no drop
        self.assertEqual(server.state, WebSocketProtocol.STATE_OPEN)
        self.assertEqual(len(self.service.connections), 1)
        client.send({"type": "call", "id": 1, "method": "echo", "params": 1})
        self.assertEqual((await client.receive())["result"], 1)

    async def test_silent_peer_dropped_session_resumable(self) -> None:
        client = await self.connect()
        welcome = await self.hello(client)
        client.sendPong = lambda payload=None: None  # type: ignore[method-assign]
        pings = self.watch(client, "onPing")
        await self.after(pings, 5.0)  # the server pings, and the ping arrived
        server = self.servers[0]
        self.clock.advance(4.9)  # no pong, but not a heartbeat yet: the server waits
        self.assertEqual(server.state, WebSocketProtocol.STATE_OPEN)
        self.assertFalse(self.server_closed[0].called)
        self.clock.advance(0.2)  # no pong within the heartbeat: dropped
        await self.server_closed[0]
        self.assertDetached(welcome)


class FrameWritingTests(_AdapterTest):
    """Text frames the adapter writes itself are well formed at every length boundary."""

    async def test_lengths_around_header_boundaries(self) -> None:
        client = await self.connect()
        await self.hello(client)
        for size in (0, 1, 80, 125 - 48, 126 - 48, 127 - 48, 65535 - 48, 65536 - 48, 70000):
            data = "d" * size
            client.send({"type": "call", "id": size, "method": "echo", "params": data})
            reply = await client.receive()
            self.assertEqual((reply["id"], reply["result"]), (size, data))

    async def test_with_permessage_deflate_autobahn_writes(self) -> None:
        client = await self.connect(deflate=True)
        self.assertFalse(self.servers[0]._plain)
        await self.hello(client)
        client.send({"type": "call", "id": 1, "method": "echo", "params": "z" * 3000})
        self.assertEqual((await client.receive())["result"], "z" * 3000)


def masked_frame(payload: bytes, opcode: int = 1, fin: bool = True, mask: bytes = b"\x9a\x3c\x07\xe1",
                 extended: int | None = None) -> bytes:
    """A client frame as RFC 6455 writes it (``extended``: force a 16-bit length field)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if extended is None and n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))


def call_frame(call_id: int, params: Any) -> bytes:
    return masked_frame(orjson.dumps({"type": "call", "id": call_id, "method": "echo",
                                      "params": params}))


class FrameReadingTests(_AdapterTest):
    """Whatever way the client's frames are cut into reads, the same messages arrive: small
    text frames (read by the fast path when it is on) mixed with what only Autobahn's parser
    reads (pings, fragments, large frames, 16-bit lengths)."""

    STREAM = (call_frame(1, "a")
              + masked_frame(b"", opcode=9)  # a ping between two calls
              + call_frame(2, "b" * 200)  # a 16-bit length
              + call_frame(3, "c" * 5000)  # over the fast path's SMALL
              + masked_frame(b'{"type":"call","id":4,', fin=False)  # a fragmented message
              + masked_frame(b'"method":"echo","params":"d"}', opcode=0)
              + call_frame(5, "")
              + masked_frame(b'{"type":"call","id":6,"method":"echo","params":6}',
                             mask=b"\0\0\0\0")
              + call_frame(7, {"x": [1, "ž"]}))
    EXPECTED = [(1, "a"), (2, "b" * 200), (3, "c" * 5000), (4, "d"), (5, ""), (6, 6),
                (7, {"x": [1, "ž"]})]

    async def replies(self, client: Client, count: int) -> list[tuple[Any, Any]]:
        got = []
        for _ in range(count):
            reply = await client.receive()
            got.append((reply["id"], reply["result"]))
        return got

    async def test_cut_anywhere(self) -> None:
        for size in (1, 2, 3, 5, 7, 64, 127, 1000, len(self.STREAM)):
            client = await self.connect()
            await self.hello(client)
            for i in range(0, len(self.STREAM), size):
                client.transport.write(self.STREAM[i:i + size])
            self.assertEqual(await self.replies(client, len(self.EXPECTED)), self.EXPECTED,
                             f"in reads of {size} bytes")
            client.dropConnection(abort=True)

    async def test_who_reads_small_frames(self) -> None:
        """With the fast path on, small frames are read by it, else by Autobahn."""
        seen: list[bytes] = []
        real = fastpath.receive_small

        def receive_small(proto: Any, data: bytes) -> bytes:
            seen.append(data)
            return real(proto, data)
        self.patch(fastpath, "receive_small", receive_small)
        client = await self.connect()
        await self.hello(client)
        client.transport.write(call_frame(1, "x"))
        self.assertEqual(await self.replies(client, 1), [(1, "x")])
        self.assertEqual(bool(seen), self.factory.fast)

    async def bad_frame(self, frame: bytes, code: int) -> None:
        """A frame the fast path must not read is failed by Autobahn's own checks."""
        client = await self.connect()
        await self.hello(client)
        client.transport.write(call_frame(1, "before") + frame + call_frame(2, "after"))
        self.assertEqual(await self.replies(client, 1), [(1, "before")])
        await self.closed_with_code(client, code)

    async def test_not_minimal_length(self) -> None:
        await self.bad_frame(masked_frame(b'{"type":"ping"}', extended=126),
                             closecodes.CLOSE_PROTOCOL_ERROR)

    async def test_unmasked(self) -> None:
        await self.bad_frame(b"\x81\x0f" + b'{"type":"ping"}', closecodes.CLOSE_PROTOCOL_ERROR)

    async def test_reserved_bit(self) -> None:
        await self.bad_frame(b"\xc1" + masked_frame(b"{}")[1:], closecodes.CLOSE_PROTOCOL_ERROR)

    async def test_too_big(self) -> None:
        await self.bad_frame(masked_frame(b"x" * 9000), closecodes.CLOSE_TOO_BIG)

    async def closed_with_code(self, client: Client, code: int) -> None:
        """Closed with ``code``, and nothing after the bad frame was answered."""
        wasClean, got, reason = await client.closed
        self.assertEqual(got, code, reason)
        self.assertEqual(client.messages, [])

    settings = Settings(max_message_size=1024 * 8)


class AutobahnPathFrameReadingTests(FrameReadingTests):
    """The same reads with the fast path off: Autobahn's parser reads every frame."""

    settings = Settings(max_message_size=1024 * 8, fast_path=False)

    def test_fast_path_off(self) -> None:
        self.assertFalse(self.factory.fast)


class AutobahnPathMessageTests(MessageTests):
    """The message tests again with the fast path off: Autobahn's public paths only."""

    settings = Settings(fast_path=False)

    async def test_autobahn_writes_every_frame(self) -> None:
        client = await self.connect()
        await self.hello(client)
        self.assertFalse(self.factory.fast)
        self.assertFalse(self.servers[0]._plain)


class AutobahnPathLimitTests(LimitTests):
    """The limit tests again with the fast path off."""

    settings = Settings(max_message_size=1024, hello_timeout=10.0, fast_path=False)


class AutobahnPathFrameTests(FrameWritingTests):
    """Frames at every length boundary again, written by Autobahn."""

    settings = Settings(fast_path=False)
