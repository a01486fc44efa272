"""The HTTP side of a listener, on real sockets (issue 9): the request deadline from accept,
the ``Site.peers`` hook, the answers before a WebSocket handshake (403 for Origin null, 400
for HTTP/1.0, 426 without Upgrade), unversioned Server headers, the Host check."""

from __future__ import annotations

from typing import Any

import autobahn
import twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsservice import Settings, __version__

from . import live
from .wsclient import TIMEOUT, handshake_headers, http

VERSIONS = (__version__, twisted.__version__, autobahn.__version__)


class Raw(Protocol):
    """A byte-level client: what it received, and when its connection ended."""

    def __init__(self) -> None:
        self.data = b""
        self.lost: Deferred[bytes] = Deferred()
        self.lost_at: float | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost_at = reactor.seconds()
        self.lost.callback(self.data)

    def head(self) -> tuple[str, dict[str, list[str]]] | None:
        """(status line, headers) once a whole response head arrived, else None."""
        end = self.data.find(b"\r\n\r\n")
        if end < 0:
            return None
        status, *lines = self.data[:end].decode("latin-1").split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        return status, headers


async def raw(testcase: TestCase, address: str, data: bytes = b"") -> Raw:
    """A Raw client connected to ``address`` (dropped on cleanup), having sent ``data``."""
    if address.startswith("unix:"):
        endpoint: Any = UNIXClientEndpoint(reactor, address[5:], timeout=TIMEOUT)
    else:
        host, port = address.rsplit(":", 1)
        endpoint = TCP4ClientEndpoint(reactor, host, int(port), timeout=TIMEOUT)
    client = await endpoint.connect(Factory.forProtocol(Raw))

    async def drop() -> None:
        if not client.lost.called:
            client.transport.abortConnection()
            await client.lost

    testcase.addCleanup(lambda: Deferred.fromCoroutine(drop()))
    if data:
        client.transport.write(data)
    return client


def upgrade_request(host: str, origin: str | None = None, version: str = "HTTP/1.1",
                    path: str = "/ws") -> bytes:
    """The bytes of a WebSocket handshake request."""
    headers = handshake_headers(origin=origin, host=host)
    return (f"GET {path} {version}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode("latin-1")


async def response_head(client: Raw) -> tuple[str, dict[str, list[str]]]:
    """The status line and headers ``client`` received."""
    return await live.until(client.head, "a response head")


async def status_of(testcase: TestCase, address: str, data: bytes) -> str:
    """The status line a new connection to ``address`` gets for the request ``data``."""
    status, _ = await response_head(await raw(testcase, address, data))
    return status


class FakePeers:
    """Site.peers for tests: admits ``limit`` connections at once, records every call."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}
        self.calls: list[tuple[str, str, bool | None]] = []

    def connected(self, host: str) -> bool:
        admitted = sum(self.open.values()) < self.limit
        self.calls.append(("connected", host, admitted))
        if admitted:
            self.open[host] = self.open.get(host, 0) + 1
        return admitted

    def disconnected(self, host: str) -> None:
        self.calls.append(("disconnected", host, None))
        assert self.open.get(host, 0) > 0, f"disconnected({host!r}) without connected()"
        self.open[host] -= 1

    def count(self, kind: str, admitted: bool | None = None) -> int:
        return sum(1 for call in self.calls if call[0] == kind
                   and (admitted is None or call[2] is admitted))


def site_of(server: live.LiveServer, index: int = 0) -> Any:
    """The channel.Site a LiveServer's listener serves."""
    from wsservice.channel import Site
    site = server.service.listeners[index].factory
    assert isinstance(site, Site), site
    return site


class DeadlineTests(TestCase):
    """The whole HTTP request must arrive within hello_timeout of the accept."""

    timeout = 30

    async def test_slow_request_dropped_at_the_deadline(self) -> None:
        server = await live.serve(self, Settings(hello_timeout=0.5))
        started = reactor.seconds()
        slow = await raw(self, server.address)
        request = f"GET /healthz HTTP/1.1\r\nHost: {server.address}\r\n\r\n".encode()

        async def trickle() -> None:
            for byte in request[:-2]:  # never the end of the headers
                if slow.lost.called:
                    return
                slow.transport.write(bytes([byte]))
                await live.sleep(0.05)

        trickling = Deferred.fromCoroutine(trickle())
        # a normal client on the same listener meanwhile is served
        code, _, _ = await http(server.address, "/healthz")
        self.assertEqual(code, 200)
        # twisted.web alone would hold it for 60 s: any bound well below proves the deadline
        await live.until(lambda: slow.lost.called, "the slow request to be dropped", timeout=5)
        await trickling
        assert slow.lost_at is not None
        self.assertGreaterEqual(slow.lost_at - started, 0.45)
        self.assertLess(slow.lost_at - started, 4)
        self.assertEqual(slow.data, b"")  # dropped, not answered

    async def test_keep_alive_gets_the_deadline_again(self) -> None:
        """After a response, the next request on the same connection has hello_timeout."""
        server = await live.serve(self, Settings(hello_timeout=0.5))
        client = await raw(self, server.address,
                           f"GET /healthz HTTP/1.1\r\nHost: {server.address}\r\n\r\n".encode())
        status, _ = await response_head(client)
        self.assertIn(" 200 ", status)
        answered = reactor.seconds()
        await live.until(lambda: client.lost.called, "the idle keep-alive connection to go",
                         timeout=5)
        assert client.lost_at is not None
        self.assertGreaterEqual(client.lost_at - answered, 0.4)

    async def test_request_in_time_is_served(self) -> None:
        """A request sent in pieces, complete before the deadline, is answered."""
        server = await live.serve(self, Settings(hello_timeout=1.0))
        client = await raw(self, server.address, b"GET /healthz HTTP/1.1\r\n")
        await live.sleep(0.3)
        client.transport.write(f"Host: {server.address}\r\n\r\n".encode())
        status, _ = await response_head(client)
        self.assertIn(" 200 ", status)

    async def test_upgraded_connection_outlives_the_http_deadline(self) -> None:
        """Once upgraded, the HTTP deadline is off: a session lives past it."""
        server = await live.serve(self, Settings(hello_timeout=0.5))
        client, _ = await server.session()
        await live.sleep(0.8)
        await live.caught_up(client)
        self.assertFalse(client.closed.called)


class PeersTests(TestCase):
    """Site.peers: connected() per accepted connection, 503 when it says no, disconnected()
    once for each admitted one, after an upgrade to WebSocket too."""

    timeout = 30

    async def test_refused_past_the_limit_with_503(self) -> None:
        server = await live.serve(self)
        peers = site_of(server).peers = FakePeers(limit=3)
        partial = f"GET /healthz HTTP/1.1\r\nHost: {server.address}\r\n".encode()
        held = [await raw(self, server.address, partial) for _ in range(3)]
        await live.until(lambda: peers.count("connected") == 3, "3 connections announced")
        refused = [await raw(self, server.address, partial) for _ in range(2)]
        for client in refused:
            await client.lost.addTimeout(TIMEOUT, reactor)
            status, headers = await response_head(client)
            self.assertEqual(status, "HTTP/1.1 503 Service Unavailable")
            self.assertEqual(headers["connection"], ["close"])
            self.assertEqual(headers["retry-after"], ["5"])
            body = client.data.split(b"\r\n\r\n", 1)[1]
            self.assertTrue(body)
            self.assertEqual(int(headers["content-length"][0]), len(body))
        self.assertEqual(peers.calls, [("connected", "127.0.0.1", True)] * 3
                         + [("connected", "127.0.0.1", False)] * 2)
        for client in held:
            self.assertFalse(client.lost.called)
            self.assertEqual(client.data, b"")
        # one of the held goes: its disconnected() frees a place
        held[0].transport.loseConnection()
        await live.until(lambda: peers.count("disconnected") == 1, "disconnected()")
        self.assertEqual(peers.open, {"127.0.0.1": 2})
        self.assertIn(" 200 ", await status_of(
            self, server.address,
            f"GET /healthz HTTP/1.1\r\nHost: {server.address}\r\n\r\n".encode()))

    async def test_disconnected_once_after_an_upgrade(self) -> None:
        server = await live.serve(self)
        peers = site_of(server).peers = FakePeers(limit=10)
        client, _ = await server.session()
        self.assertEqual(peers.calls, [("connected", "127.0.0.1", True)])
        client.dropConnection(abort=True)
        await client.closed.addTimeout(TIMEOUT, reactor)
        await live.until(lambda: peers.count("disconnected") == 1, "disconnected()")
        await live.sleep(0.1)
        self.assertEqual(peers.calls, [("connected", "127.0.0.1", True),
                                       ("disconnected", "127.0.0.1", None)])

    async def test_disconnected_once_after_a_refused_handshake_and_plain_requests(self) -> None:
        server = await live.serve(self)
        peers = site_of(server).peers = FakePeers(limit=10)
        refused = await raw(self, server.address,
                            upgrade_request(server.address, origin="http://evil.example"))
        status, _ = await response_head(refused)
        self.assertIn(" 403 ", status)
        code, _, _ = await http(server.address, "/healthz")
        self.assertEqual(code, 200)
        await refused.lost.addTimeout(TIMEOUT, reactor)
        await live.until(lambda: peers.count("disconnected") == peers.count("connected") == 2
                         and not any(peers.open.values()), lambda: f"balance: {peers.calls}")

    async def test_disconnected_once_after_an_upgrade_over_tls(self) -> None:
        """Over ssl: the transport is a TLS wrapper: the upgraded protocol is inside it."""
        from autobahn.twisted.websocket import WebSocketClientFactory
        from twisted.internet import ssl
        from twisted.internet.endpoints import SSL4ClientEndpoint

        from .test_flow import TLSTests
        from .wsclient import Client

        key, cert = TLSTests.make_certificate(self)  # type: ignore[arg-type]
        server = await live.serve(
            self, listen=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
        peers = site_of(server).peers = FakePeers(limit=10)
        host, port = server.address.rsplit(":", 1)
        factory = WebSocketClientFactory(f"wss://localhost:{port}/ws",
                                         protocols=["wsservice.v1"])
        factory.protocol = Client
        endpoint = SSL4ClientEndpoint(reactor, host, int(port),
                                      ssl.CertificateOptions(verify=False))
        client = server.clients.add(await endpoint.connect(factory))
        await client.opened
        await client.hello()
        self.assertEqual(peers.calls, [("connected", "127.0.0.1", True)])
        client.dropConnection(abort=True)
        await live.until(lambda: peers.count("disconnected") == 1, "disconnected()")
        await live.sleep(0.1)
        self.assertEqual(peers.count("disconnected"), 1)

    async def test_unix_peers_are_unix(self) -> None:
        server = await live.serve(self, unix=True)
        peers = site_of(server).peers = FakePeers(limit=10)
        client, _ = await server.session()
        client.dropConnection(abort=True)
        await live.until(lambda: peers.count("disconnected") == 1, "disconnected()")
        self.assertEqual(peers.calls, [("connected", "unix", True),
                                       ("disconnected", "unix", None)])


class HandshakeAnswersTests(TestCase):
    """What /ws answers before any WebSocket exists."""

    timeout = 30

    async def test_origin_null_refused_with_403(self) -> None:
        server = await live.serve(self)
        code, _, _ = await http(server.address, "/ws",
                                handshake_headers(origin="null", host=server.address))
        self.assertEqual(code, 403)

    async def test_origin_null_allowed_by_pattern(self) -> None:
        for patterns in (("null",), ("*",)):
            server = await live.serve(self, Settings(allowed_origins=patterns))
            client = await server.client(origin="null")
            await client.hello()

    async def test_http_1_0_upgrade_refused_with_400(self) -> None:
        server = await live.serve(self)
        client = await raw(self, server.address,
                           upgrade_request(server.address, version="HTTP/1.0"))
        status, _ = await response_head(client)
        self.assertIn(" 400 ", status)
        self.assertNotIn(b"101", client.data)

    async def test_plain_get_of_the_websocket_path_is_426(self) -> None:
        server = await live.serve(self)
        # by bytes: twisted.web's client keeps Upgrade and Connection to itself
        client = await raw(self, server.address,
                           f"GET /ws HTTP/1.1\r\nHost: {server.address}\r\n\r\n".encode())
        status, headers = await response_head(client)
        self.assertEqual(status, "HTTP/1.1 426 Upgrade Required")
        self.assertEqual(headers["upgrade"], ["websocket"])
        length = int(headers["content-length"][0])
        body = await live.until(lambda: len(client.data.split(b"\r\n\r\n", 1)[1]) == length
                                and client.data.split(b"\r\n\r\n", 1)[1], "the body")
        text = client.data.decode("latin-1")
        for version in VERSIONS:
            self.assertNotIn(version, text)
        self.assertNotIn("autobahn", text.lower())


class ServerHeaderTests(TestCase):
    """No version in any Server header unless --server-version."""

    timeout = 30

    async def heads(self, settings: Settings) -> tuple[list[str], list[str]]:
        server = await live.serve(self, settings)
        _, headers, _ = await http(server.address, "/healthz")
        client = await raw(self, server.address, upgrade_request(server.address))
        status, upgrade = await response_head(client)
        self.assertIn(" 101 ", status)
        return headers.get("server", []), upgrade.get("server", [])

    async def test_no_version_by_default(self) -> None:
        health, upgrade = await self.heads(Settings())
        self.assertEqual(health, ["wsservice"])
        self.assertEqual(upgrade, ["wsservice"])

    async def test_version_with_the_switch(self) -> None:
        health, upgrade = await self.heads(Settings(server_version=True))
        self.assertEqual(health, [f"wsservice/{__version__}"])
        self.assertEqual(upgrade, [f"wsservice/{__version__}"])


class HostCheckTests(TestCase):
    """A loopback-only listener serves only loopback Host names unless --allowed-host."""

    timeout = 30

    async def test_rebinding_refused_on_loopback(self) -> None:
        server = await live.serve(self)
        code, headers, body = await http(server.address, "/healthz", {"Host": "evil.example"})
        self.assertEqual(code, 403)
        self.assertTrue(body)
        self.assertEqual(headers["server"], ["wsservice"])
        self.assertIn(" 403 ", await status_of(
            self, server.address, upgrade_request("evil.example", origin="http://evil.example")))
        code, _, _ = await http(server.address, "/metrics", {"Host": "evil.example:8080"})
        self.assertEqual(code, 403)

    async def test_loopback_names_pass(self) -> None:
        server = await live.serve(self)
        port = server.address.rsplit(":", 1)[1]
        for host in (server.address, "localhost", f"localhost:{port}", "app.localhost",
                     "127.0.0.2:1", "[::1]", f"[::1]:{port}", "LOCALHOST."):
            code, _, _ = await http(server.address, "/healthz", {"Host": host})
            self.assertEqual(code, 200, host)
        self.assertIn(" 101 ", await status_of(
            self, server.address,
            upgrade_request(server.address, origin=f"http://{server.address}")))

    async def test_allowed_host_lets_it_through(self) -> None:
        server = await live.serve(self, Settings(allowed_hosts=("evil.example",)))
        code, _, _ = await http(server.address, "/healthz", {"Host": "evil.example"})
        self.assertEqual(code, 200)
        self.assertIn(" 101 ", await status_of(
            self, server.address, upgrade_request("evil.example", origin="http://evil.example")))
        code, _, _ = await http(server.address, "/healthz", {"Host": "other.example"})
        self.assertEqual(code, 403)

    async def test_star_allows_all(self) -> None:
        server = await live.serve(self, Settings(allowed_hosts=("*",)))
        code, _, _ = await http(server.address, "/healthz", {"Host": "evil.example"})
        self.assertEqual(code, 200)

    async def test_unix_listener_unaffected(self) -> None:
        server = await live.serve(self, unix=True)
        code, _, _ = await http(server.address, "/healthz", {"Host": "evil.example"})
        self.assertEqual(code, 200)

    async def test_non_loopback_listener_unchecked_unless_told(self) -> None:
        """Bound to every interface: no check by default, even for a loopback client."""
        server = await live.serve(self, listen="tcp:0:interface=0.0.0.0")
        code, _, _ = await http(server.address, "/healthz", {"Host": "chat.example.com"})
        self.assertEqual(code, 200)
        told = await live.serve(self, Settings(allowed_hosts=("*.example.com",)),
                                listen="tcp:0:interface=0.0.0.0")
        code, _, _ = await http(told.address, "/healthz", {"Host": "chat.example.com"})
        self.assertEqual(code, 200)
        code, _, _ = await http(told.address, "/healthz", {"Host": "evil.example"})
        self.assertEqual(code, 403)

    async def test_missing_or_doubled_host_refused_on_loopback(self) -> None:
        server = await live.serve(self)
        for request in (b"GET /healthz HTTP/1.0\r\n\r\n",
                        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n"):
            self.assertIn(" 403 ", await status_of(self, server.address, request))


class ChannelUnitTests(SynchronousTestCase):
    """channel.HTTPChannel in memory, on a Clock: the deadline and the peers contract."""

    def channel(self, peers: FakePeers | None = None) -> tuple[Any, StringTransport, Clock]:
        from twisted.web.resource import Resource

        from wsservice.channel import Site
        from wsservice.hosts import HostPolicy
        clock = Clock()
        site = Site(Resource(), HostPolicy(), "wsservice", deadline=0.5, reactor=clock)
        site.peers = peers
        channel = site.buildProtocol(IPv4Address("TCP", "192.0.2.9", 4000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.9", 4000))
        channel.makeConnection(transport)
        return channel, transport, clock

    def test_bytes_do_not_move_the_deadline(self) -> None:
        channel, transport, clock = self.channel()
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\n":
            channel.dataReceived(bytes([byte]))
            clock.advance(0.05)
        self.assertTrue(transport.disconnecting)

    def test_a_body_is_kept_only_up_to_max_body(self) -> None:
        """twisted.web would buffer any body; the channel keeps max_body bytes of it, for a
        Content-Length body and a chunked one alike."""
        from twisted.web.resource import Resource

        seen: list[bytes] = []

        class Sink(Resource):
            isLeaf = True

            def render_POST(self, request: Any) -> bytes:
                request.content.seek(0)
                seen.append(request.content.read())
                return b"ok"

        for body, framing in (
                (b"x" * 50_000, b"Content-Length: 50000\r\n\r\n" + b"x" * 50_000),
                (b"y" * 30_000, b"Transfer-Encoding: chunked\r\n\r\n"
                 + b"".join(b"%x\r\n%s\r\n" % (1000, b"y" * 1000) for _ in range(30))
                 + b"0\r\n\r\n")):
            channel, transport, _ = self.channel()
            channel.site.resource = Sink()
            channel.site.max_body = 1001
            request = b"POST /sink HTTP/1.1\r\nHost: localhost\r\n" + framing
            for start in range(0, len(request), 4096):
                channel.dataReceived(request[start:start + 4096])
            self.assertEqual(seen.pop(), body[:1001])
            self.assertIn(b"200 OK", transport.value())

    def test_upgrade_to_nothing_known_releases_at_once(self) -> None:
        peers = FakePeers(limit=1)
        channel, transport, _ = self.channel(peers)
        channel.upgraded(None)
        self.assertEqual(peers.calls, [("connected", "192.0.2.9", True),
                                       ("disconnected", "192.0.2.9", None)])
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(peers.count("disconnected"), 1)

    def test_upgrade_to_a_foreign_protocol_releases_when_it_is_lost(self) -> None:
        """A protocol without countedBy (not wsservice's) is released from its own
        connectionLost, once."""
        from twisted.internet.protocol import Protocol

        lost: list[Any] = []

        class Foreign(Protocol):
            def connectionLost(self, reason: Any = None) -> None:
                lost.append(reason)

        peers = FakePeers(limit=1)
        channel, transport, _ = self.channel(peers)
        foreign = Foreign()
        channel.upgraded(foreign)
        channel.connectionLost(Failure(ConnectionDone()))  # the channel no longer releases
        self.assertEqual(peers.count("disconnected"), 0)
        foreign.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((peers.count("disconnected"), len(lost)), (1, 1))

    def test_upgrade_to_wsservice_protocol_hands_the_count_over(self) -> None:
        """wsservice's WebSocket protocol is handed (peers, host), with no closure."""
        from wsservice.websocket import WebSocketProtocol

        peers = FakePeers(limit=1)
        channel, transport, _ = self.channel(peers)
        protocol = WebSocketProtocol()
        channel.upgraded(protocol)
        self.assertEqual(protocol._counted, (peers, "192.0.2.9"))
        self.assertNotIn("connectionLost", vars(protocol))  # no per-connection closure
        channel.connectionLost(Failure(ConnectionDone()))
        # released by the protocol's connectionLost (PeersTests show it on real sockets)
        self.assertEqual(peers.count("disconnected"), 0)

    def test_refused_connection_is_never_released_and_ignores_its_bytes(self) -> None:
        peers = FakePeers(limit=0)
        channel, transport, _ = self.channel(peers)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 Service Unavailable\r\n"))
        self.assertTrue(transport.disconnecting)
        written = transport.value()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(transport.value(), written)
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(peers.calls, [("connected", "192.0.2.9", False)])
