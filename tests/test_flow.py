"""End to end, on real sockets: flow control, heartbeats, rate limits, limits, drain, TLS."""

from __future__ import annotations

import datetime
import os
import tempfile
from typing import Any

from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from wsservice import Settings, makeService
from wsservice.demo import DemoApp

from .wsclient import Client, connect, handshake_headers, http, socket_path


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


class _Server:
    """A real service on a loopback TCP port (or, with ``unix``, a unix socket), stopped and
    forgotten on cleanup."""

    unix = False

    async def start(self, settings: Settings, listen: str | None = None) -> str:
        self.clients: list[Client] = []
        path = socket_path(self) if self.unix else None
        if listen is None:
            listen = f"unix:{path}" if path else "tcp:0:interface=127.0.0.1"
        self.service = makeService([DemoApp()], [listen], settings)
        self.service.startService()
        self.addCleanup(lambda: Deferred.fromCoroutine(self._stop()))
        port = await self.service.listeners[0].whenListening
        self.address = f"unix:{path}" if path else f"127.0.0.1:{port.getHost().port}"
        return self.address

    async def _stop(self) -> None:
        for client in self.clients:
            if not client.closed.called:
                client.transport.resumeProducing()
                client.dropConnection(abort=True)
        for client in self.clients:
            await client.closed
        if self.service.running:
            await self.service.stopService()
        self.service.sessions.endAll()

    async def client(self, **kwargs: Any) -> Client:
        c = await connect(self.address, **kwargs)
        self.clients.append(c)
        return c

    async def until(self, condition: Any, what: str, timeout: float = 10) -> None:
        for _ in range(int(timeout / 0.02)):
            if condition():
                return
            await sleep(0.02)
        self.fail(f"timed out waiting for {what}")


class SlowConsumerTests(_Server, TestCase):
    """A client that stops reading costs at most max_send_queue, then is closed 4508."""

    async def test_non_reading_client_closed_4508_and_bounded(self) -> None:
        limit = 256 * 1024
        await self.start(Settings(max_send_queue=limit, rate=1e6, burst=100000))
        c = await self.client()
        welcome = await c.hello()
        session = self.service.sessions.sessions[welcome["session"]]
        server_link = next(iter(self.service.sessions.connections)).link
        c.transport.pauseProducing()  # stop reading: the server's writes back up
        payload = "x" * 4000
        for i in range(2000):  # up to 80 MB of pushes asked for, in small calls: more than
            # the kernel's socket buffers hold, so the server's own buffer must fill
            if not session.attached:
                break
            c.send({"type": "call", "id": i, "method": "push",
                    "params": {"count": 10, "event": "e", "data": payload}})
            if i % 50 == 0:
                await sleep(0.01)
        await self.until(lambda: not session.attached, "the slow consumer to be detached")
        # what waits in the server's transport buffer is bounded by the limit, plus the
        # transport's own 64 KiB high-water mark, one turn's batch of frames (at most
        # 64 KiB, sent together), the message that crossed each mark and the close frame
        transport = server_link.transport
        waiting = len(getattr(transport, "dataBuffer", b"")) + getattr(transport, "_tempDataLen", 0)
        self.assertLess(waiting, limit + 2 * 64 * 1024 + 2 * 4100 + 200)
        # the session is resumable and kept what it could not deliver
        self.assertIn(welcome["session"], self.service.sessions.sessions)
        self.assertGreater(session.seq, 0)
        c.transport.resumeProducing()
        code, _ = await c.waitClosed()
        self.assertIn(code, (4508, 1006))  # 1006 if the close handshake timed out first


class HeartbeatTests(_Server, TestCase):
    """The server pings every heartbeat and drops a peer that does not answer."""

    async def test_silent_peer_dropped_and_resumable(self) -> None:
        await self.start(Settings(heartbeat=0.2))
        c = await self.client()
        welcome = await c.hello()
        self.assertEqual(welcome["heartbeat"], 0.2)
        session = self.service.sessions.sessions[welcome["session"]]
        c.transport.pauseProducing()  # cannot answer pings any more
        await self.until(lambda: not session.attached, "the silent peer to be dropped")
        self.assertFalse(session.closed)

    async def test_answering_peer_stays(self) -> None:
        await self.start(Settings(heartbeat=0.2))
        c = await self.client()
        await c.hello()
        await sleep(1.0)  # several heartbeats, answered by Autobahn's client
        self.assertEqual((await c.call("echo", 1))["result"], 1)


class RateLimitTests(_Server, TestCase):
    """Past its token bucket a session gets rate_limited, then close 4429."""

    async def test_rate_limited_then_4429(self) -> None:
        await self.start(Settings(rate=1, burst=5, max_bad_messages=3))
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
        code, _ = await second.waitClosed()
        self.assertEqual(code, 1013)


class DrainTests(_Server, TestCase):
    """Graceful shutdown: 503 for newcomers and /healthz while draining, bounded in time."""

    async def test_drain_refuses_newcomers_and_times_out(self) -> None:
        await self.start(Settings(drain_timeout=1.0))
        stuck = await self.client()
        welcome = await stuck.hello()
        stuck.transport.pauseProducing()  # will never read the 1001 close
        stopping = self.service.sessions.stopService()
        code, _, _ = await http(self.address, "/healthz")
        self.assertEqual(code, 503)
        code, _, _ = await http(self.address, "/ws", handshake_headers())
        self.assertEqual(code, 503)
        started = reactor.seconds()
        await stopping
        self.assertLess(reactor.seconds() - started, 3)
        self.assertEqual(self.service.sessions.connections, set())
        self.assertIn(welcome["session"], self.service.sessions.sessions)  # still resumable


class TLSTests(_Server, TestCase):
    """An ssl: listener serves the same protocol (self-signed certificate made here)."""

    def make_certificate(self) -> tuple[str, str]:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .sign(key, hashes.SHA256()))
        folder = tempfile.mkdtemp(prefix="wstls")
        key_path, cert_path = os.path.join(folder, "key.pem"), os.path.join(folder, "cert.pem")
        with open(key_path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        return key_path, cert_path

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
        c = await endpoint.connect(factory)
        self.clients.append(c)
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
