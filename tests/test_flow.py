"""End to end, on real sockets: flow control, heartbeats, rate limits, limits, drain, TLS."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor, ssl
from twisted.internet.task import Clock
from twisted.trial.unittest import FailTest, TestCase

from wsservice import Settings

from . import certs, live
from .wsclient import Client, handshake_headers, http

KiB = 1024


def unsent(transport: Any) -> int:
    """Bytes a Twisted socket transport (TCP, unix) holds that the kernel has not taken.

    Twisted has no public measure of it: these are twisted.internet.abstract.FileDescriptor's
    write buffers, which wsservice.websocket reads too. Should Twisted rename them this fails
    rather than measure nothing.
    """
    missing = [name for name in ("dataBuffer", "offset", "_tempDataLen")
               if not hasattr(transport, name)]
    if missing:
        raise FailTest(f"{type(transport).__name__} has no {', '.join(missing)}: cannot "
                       "measure its write buffer")
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class _Server:
    """A real service (tests/live.py) on a loopback TCP port, or a unix socket when ``unix``."""

    unix = False

    async def start(self, settings: Settings, listen: str | None = None,
                    clock: Clock | None = None) -> str:
        self.server = await live.serve(self, settings, unix=self.unix, listen=listen,
                                       clock=clock)
        self.service = self.server.service
        self.address = self.server.address
        return self.address

    async def client(self, **kwargs: Any) -> Client:
        return await self.server.client(**kwargs)


class SlowConsumerTests(_Server, TestCase):
    """A client that stops reading costs at most max_send_queue, then is closed 4508."""

    async def test_non_reading_client_closed_4508_and_bounded(self) -> None:
        limit = 256 * KiB
        await self.start(Settings(max_send_queue=limit, rate=1e6, burst=100000))
        c = await self.client()
        welcome = await c.hello()
        session = self.service.sessions.sessions[welcome["session"]]
        # the server side of this connection, as the service sees it (its only one)
        [connection] = self.service.sessions.connections
        server_link: Any = connection.link
        self.assertTrue(session.isAttachedTo(server_link))
        c.transport.pauseProducing()  # stop reading: the server's writes back up
        payload = "x" * 4000
        calls = 0
        while session.attached:
            # 40 KB of pushes asked for per call, one call a reactor turn, until the kernel's
            # socket buffers are full and the server's own buffer passes the limit
            self.assertLess(calls, 2000, "still attached after 80 MB of pushes asked for")
            c.send({"type": "call", "id": calls, "method": "push",
                    "params": {"count": 10, "event": "e", "data": payload}})
            calls += 1
            await live.sleep(0)
        # what waits in the server's transport buffer went past the limit (that is why it
        # was closed) by at most the transport's own 64 KiB high-water mark (the backlog is
        # counted from there), one turn's batch of frames (at most 64 KiB, sent together),
        # the message that crossed each mark and the close frame
        waiting = unsent(server_link.transport)
        self.assertGreater(waiting, limit)
        self.assertLess(waiting, limit + 2 * 64 * KiB + 2 * 4100 + 200)
        # the session is resumable and kept what it could not deliver
        self.assertIn(welcome["session"], self.service.sessions.sessions)
        self.assertGreater(session.seq, 0)
        c.transport.resumeProducing()  # reads all that, then the close frame
        code, reason = await c.waitClosed()
        self.assertEqual((code, reason), (4508, "slow consumer"))


class HeartbeatTests(_Server, TestCase):
    """The server pings every heartbeat and drops a peer that does not answer."""

    async def test_silent_peer_dropped_and_resumable(self) -> None:
        await self.start(Settings(heartbeat=0.2))
        c = await self.client()
        welcome = await c.hello()
        self.assertEqual(welcome["heartbeat"], 0.2)
        session = self.service.sessions.sessions[welcome["session"]]
        c.transport.pauseProducing()  # cannot answer pings any more
        await live.until(lambda: not session.attached, "the silent peer to be dropped")
        self.assertFalse(session.closed)

    async def test_answering_peer_stays(self) -> None:
        await self.start(Settings(heartbeat=0.2))
        c = await self.client()
        welcome = await c.hello()
        pings: list[bytes] = []
        answer = c.onPing

        def onPing(payload: bytes) -> None:
            pings.append(payload)
            answer(payload)  # Autobahn's client answers with a pong
        c.onPing = onPing  # type: ignore[method-assign]
        # three pings: the first two pongs each came within a heartbeat
        await live.until(lambda: len(pings) >= 3 or c.closed.called, "three pings")
        self.assertFalse(c.closed.called, "the server dropped a peer that answers its pings")
        self.assertTrue(self.service.sessions.sessions[welcome["session"]].attached)
        self.assertEqual((await c.call("echo", 1))["result"], 1)


class RateLimitTests(_Server, TestCase):
    """Past its token bucket a session gets rate_limited, then close 4429."""

    async def test_rate_limited_then_4429(self) -> None:
        # on a Clock that stands still: no token comes back while the ten pings arrive
        await self.start(Settings(rate=1, burst=5, max_bad_messages=3), clock=Clock())
        c = await self.client()
        await c.hello()
        for i in range(10):
            c.send({"type": "ping", "data": i})
        replies = [await c.next() for _ in range(9)]
        self.assertEqual([r["type"] for r in replies[:5]], ["pong"] * 5)
        self.assertEqual({r["error"]["code"] for r in replies[5:]}, {"rate_limited"})
        code, _ = await c.waitClosed()
        self.assertEqual(code, 4429)


class MaxSessionsTests(_Server, TestCase):
    """Past max_sessions new connections are closed 1013; existing sessions may resume."""

    async def test_full_server_refuses_1013(self) -> None:
        await self.start(Settings(max_sessions=1))
        first = await self.client()
        await first.hello()
        second = await self.client()
        second.send({"type": "hello"})
        code, _ = await second.waitClosed()
        self.assertEqual(code, 1013)

    async def test_too_many_connections_refused_503_at_accept(self) -> None:
        """max_connections counts from the TCP accept: past it, HTTP 503 before any
        WebSocket; once a connection goes, the next one gets in."""
        await self.start(Settings(max_connections=1))
        first = await self.client()
        await first.hello()
        code, headers, body = await http(self.address, "/ws", handshake_headers())
        self.assertEqual(code, 503)
        first.transport.abortConnection()
        await first.closed
        await live.until(lambda: self.service.sessions.peers.total == 0, "first counted out")
        second = await self.client()
        await second.hello()


class DrainTests(_Server, TestCase):
    """Graceful shutdown: 503 for newcomers and /healthz while draining, bounded in time."""

    async def test_drain_refuses_newcomers_and_times_out(self) -> None:
        clock = Clock()
        await self.start(Settings(drain_timeout=1.0), clock=clock)
        stuck = await self.client()
        welcome = await stuck.hello()
        stuck.transport.pauseProducing()  # will never read the 1001 close
        stopping = self.service.sessions.stopService()
        code, _, _ = await http(self.address, "/healthz")
        self.assertEqual(code, 503)
        code, _, _ = await http(self.address, "/ws", handshake_headers())
        self.assertEqual(code, 503)
        # the stuck connection holds the drain open until drain_timeout, not a moment more
        # (Autobahn's own close-handshake timeout, 5 s of real time, is far off)
        clock.advance(0.99)
        self.assertFalse(stopping.called)
        clock.advance(0.01)
        self.assertTrue(stopping.called)
        self.assertEqual(self.service.sessions.connections, set())
        self.assertIn(welcome["session"], self.service.sessions.sessions)  # still resumable


class TLSTests(_Server, TestCase):
    """An ssl: listener serves the same protocol (self-signed certificate made here)."""

    def make_certificate(self) -> tuple[str, str]:
        key, cert, _ = certs.self_signed(self)
        return key, cert

    async def test_wss(self) -> None:
        from autobahn.twisted.websocket import WebSocketClientFactory
        from twisted.internet.endpoints import SSL4ClientEndpoint

        key, cert = self.make_certificate()
        await self.start(Settings(), f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
        host, port = self.address.rsplit(":", 1)
        factory = WebSocketClientFactory(f"wss://localhost:{port}/ws", protocols=["wsservice.v1"])
        factory.protocol = Client
        endpoint = SSL4ClientEndpoint(reactor, host, int(port),
                                      ssl.CertificateOptions(verify=False))
        c = self.server.clients.add(await endpoint.connect(factory))
        await c.opened
        welcome = await c.hello()
        self.assertFalse(welcome["resumed"])
        self.assertEqual((await c.call("echo", "over tls"))["result"], "over tls")
        # the origin policy knows the listener is secure: https on the Host's port is same-origin
        self.assertTrue(self.service.listeners[0].secure)


# The same tests through a unix socket listener.
for _tcp in (SlowConsumerTests, HeartbeatTests, RateLimitTests, MaxSessionsTests, DrainTests):
    _name = "UNIX" + _tcp.__name__
    globals()[_name] = type(_name, (_tcp,), {"unix": True, "__doc__": _tcp.__doc__ +
                                                 " (unix socket)"})
del _tcp, _name
