"""Limits no client can break out of: peers (PeerLimits), the process-wide replay budget,
and the lockout attack (detached sessions filling max_sessions) against a real listener."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests import live
from tests.wsclient import TIMEOUT, connect, handshake_headers, http
from wsservice import Settings
from wsservice.memorystore import MemorySessionStore
from wsservice.peers import PeerLimits, parse_networks, peer_host, peer_key
from wsservice.testing import ServiceHarness


class PeerKeyTests(TestCase):
    """Which limits a connection counts against."""

    def test_ipv4_is_itself(self) -> None:
        self.assertEqual(peer_key("192.0.2.7"), "192.0.2.7")

    def test_ipv6_is_its_64(self) -> None:
        self.assertEqual(peer_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64")
        self.assertEqual(peer_key("2001:db8:1:2::9"), peer_key("[2001:db8:1:2:ffff::1]"))

    def test_ipv4_mapped_ipv6_is_the_ipv4(self) -> None:
        self.assertEqual(peer_key("::ffff:192.0.2.7"), "192.0.2.7")

    def test_anything_else_is_unix(self) -> None:
        self.assertEqual(peer_key("unix"), "unix")
        self.assertEqual(peer_key("/run/ws.sock"), "unix")

    def test_peer_host(self) -> None:
        self.assertEqual(peer_host("tcp4:192.0.2.7:5678"), "192.0.2.7")
        self.assertEqual(peer_host("tcp6:::1:5678"), "::1")
        self.assertEqual(peer_host("unix:/run/ws.sock"), "unix")
        self.assertEqual(peer_host("test"), "unix")

    def test_parse_networks(self) -> None:
        self.assertEqual([str(n) for n in parse_networks(["10.0.0.1", "10.1.0.0/16"])],
                         ["10.0.0.1/32", "10.1.0.0/16"])
        with self.assertRaisesRegex(ValueError, "'nope'"):
            parse_networks(["nope"])


class PeerLimitsTests(TestCase):
    """Connections per peer and overall, and each peer's connection rate."""

    def limits(self, **kwargs: Any) -> PeerLimits:
        self.clock = Clock()
        return PeerLimits(self.clock, **kwargs)

    def test_per_peer(self) -> None:
        p = self.limits(per_peer=2)
        self.assertTrue(p.connected("192.0.2.1"))
        self.assertTrue(p.connected("192.0.2.1"))
        self.assertFalse(p.connected("192.0.2.1"))
        self.assertTrue(p.connected("192.0.2.2"))
        p.disconnected("192.0.2.1")
        self.assertTrue(p.connected("192.0.2.1"))
        self.assertEqual(p.refused["peer_connections"], 1)
        self.assertEqual((p.connections("192.0.2.1"), p.total), (2, 3))

    def test_total(self) -> None:
        p = self.limits(max_connections=2)
        self.assertTrue(p.connected("192.0.2.1"))
        self.assertTrue(p.connected("192.0.2.2"))
        self.assertFalse(p.connected("192.0.2.3"))
        self.assertEqual(p.refused["connections"], 1)

    def test_rate(self) -> None:
        """A burst, then one connection per 1/rate seconds; closing does not give tokens."""
        p = self.limits(rate=2.0, burst=3)
        for _ in range(3):
            self.assertTrue(p.connected("192.0.2.1"))
            p.disconnected("192.0.2.1")
        self.assertFalse(p.connected("192.0.2.1"))
        self.assertTrue(p.connected("192.0.2.2"))  # another peer has its own bucket
        self.clock.advance(0.5)
        self.assertTrue(p.connected("192.0.2.1"))
        self.assertFalse(p.connected("192.0.2.1"))
        self.assertEqual(p.refused["rate"], 2)

    def test_buckets_bounded(self) -> None:
        """Idle peers' buckets are forgotten: the map does not grow with every address."""
        p = self.limits(rate=1000.0, burst=10)
        for i in range(20000):
            host = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            p.connected(host)
            p.disconnected(host)
            self.clock.advance(0.001)
        self.assertLess(len(p._buckets), 8192)
        self.assertEqual((p.total, p._open), (0, {}))

    def test_trusted_proxy(self) -> None:
        """A trusted proxy is counted in the total only; its client by forwarded()."""
        p = self.limits(per_peer=1, trusted=parse_networks(["10.9.0.0/16"]))
        self.assertTrue(p.connected("10.9.0.1"))
        self.assertTrue(p.connected("10.9.0.1"))
        self.assertEqual(p.client("10.9.0.1", {"x-forwarded-for": "203.0.113.1, 10.9.0.7"}),
                         "203.0.113.1")
        self.assertEqual(p.client("192.0.2.1", {"x-forwarded-for": "203.0.113.1"}),
                         "192.0.2.1")
        self.assertEqual(p.client("10.9.0.1", {}), "10.9.0.1")
        self.assertEqual(p.client("10.9.0.1", {"x-forwarded-for": "nonsense"}), "10.9.0.1")
        self.assertEqual(p.client("10.9.0.1", {"x-forwarded-for": "2001:DB8::1"}),
                         "2001:db8::1")
        self.assertTrue(p.forwarded("203.0.113.1"))
        self.assertFalse(p.forwarded("203.0.113.1"))
        p.unforwarded("203.0.113.1")
        self.assertTrue(p.forwarded("203.0.113.1"))
        p.disconnected("10.9.0.1")
        self.assertEqual(p.total, 1)


def _store(max_memory: int, clock: Clock | None = None) -> MemorySessionStore:
    return MemorySessionStore(clock or Clock(), replay_limit=1000, replay_bytes=1 << 20,
                              max_memory=max_memory)


def _record(store: MemorySessionStore, name: str) -> Any:
    made: list[Any] = []
    store.create(name, "t-" + name, name, None, {}).addCallback(made.append)
    return made[0]


class ReplayBudgetTests(TestCase):
    """max_replay_memory: the whole process's replay buffers, trimmed in a known order."""

    FRAME = b"x" * 1000

    def fill(self, record: Any, n: int) -> None:
        for _ in range(n):
            record.append(record.seq + 1, self.FRAME)

    def test_total_is_counted(self) -> None:
        store = _store(1 << 30)
        a, b = _record(store, "a"), _record(store, "b")
        self.fill(a, 3)
        self.fill(b, 2)
        self.assertEqual(store.kept_bytes, 5000)
        a.ack(2)
        self.assertEqual(store.kept_bytes, 3000)
        store.end(b)
        self.assertEqual(store.kept_bytes, 1000)

    def test_per_session_limits_counted_too(self) -> None:
        store = MemorySessionStore(Clock(), replay_limit=2, replay_bytes=1 << 20)
        a = _record(store, "a")
        self.fill(a, 5)
        self.assertEqual((store.kept_bytes, a.kept_bytes), (2000, 2000))

    def test_detached_trimmed_first_longest_detached_first(self) -> None:
        store = _store(20_000)
        attached, old, new = (_record(store, n) for n in ("attached", "old", "new"))
        for r in (attached, old, new):
            self.fill(r, 6)
        store.detach(old, 60, lambda: None)
        store.detach(new, 60, lambda: None)
        self.fill(attached, 3)  # 21 frames: over 20 kB; trimmed down to 7/8 of it
        # 21 kB: 3.5 kB must go, all from the longest-detached, oldest frames first
        self.assertEqual((old.kept_bytes, new.kept_bytes, attached.kept_bytes),
                         (2000, 6000, 9000))
        self.assertEqual([seq for seq, _ in old.kept()], [5, 6])
        self.assertEqual((store.trimmed_messages, store.trimmed_bytes), (4, 4000))
        self.assertEqual(store.replayStats(),
                         (store.kept_bytes, store.trimmed_messages, store.trimmed_bytes))

    def test_then_largest_attached(self) -> None:
        store = _store(20_000)
        big, mid, small = (_record(store, n) for n in ("big", "mid", "small"))
        self.fill(small, 2)
        self.fill(mid, 6)
        self.fill(big, 12)
        self.fill(big, 1)  # 21 kB
        self.assertLessEqual(store.kept_bytes, 17_500)
        self.assertEqual(small.kept_bytes, 2000)  # the smallest untouched
        self.assertLess(big.kept_bytes, 13000)
        self.assertGreaterEqual(big.kept_bytes, mid.kept_bytes)

    def test_trimmed_resume_is_a_gap(self) -> None:
        """A resume that needs a trimmed frame answers a gap (the client gets a new
        session); one that needs only kept frames still replays exactly."""
        store = _store(10_000)
        gone, kept = _record(store, "gone"), _record(store, "kept")
        self.fill(gone, 5)
        store.detach(gone, 60, lambda: None)
        self.fill(kept, 6)  # 11 kB: gone's buffer is trimmed
        claims: list[Any] = []
        store.claim("gone", "t-gone", 0).addCallback(claims.append)
        self.assertIsNone(claims[0].replay)
        store.claim("kept", "t-kept", 0).addCallback(claims.append)
        self.assertEqual(len(claims[1].replay), 6)

    def test_claimed_record_is_no_longer_detached(self) -> None:
        store = _store(10_000)
        a, b = _record(store, "a"), _record(store, "b")
        self.fill(a, 5)
        store.detach(a, 60, lambda: None)
        store.claim("a", "t-a", 5)
        self.fill(a, 9)
        self.fill(b, 2)  # over: a is attached again, so the largest attached (a) pays
        self.assertEqual(b.kept_bytes, 2000)
        self.assertEqual(a.kept_bytes, 6000)

    def test_service_metrics(self) -> None:
        """The budget and what it trimmed are in /metrics."""
        from wsservice.demo import DemoApp
        h = ServiceHarness([DemoApp()], settings=Settings(max_replay_memory=10_000),
                           clock=Clock())
        c = h.connect()
        c.hello()
        c.call("push", {"count": 20, "event": "e", "data": "y" * 1000})
        from prometheus_client import generate_latest
        text = generate_latest(h.service.metrics.registry).decode()
        stats = h.service.store.replayStats()  # type: ignore[attr-defined]
        self.assertGreater(stats[1], 0)
        self.assertIn(f"wsservice_replay_trimmed_messages_total {float(stats[1])}", text)
        self.assertIn(f"wsservice_replay_bytes {float(stats[0])}", text)
        self.assertIn('wsservice_connections_refused_total{limit="rate"} 0.0', text)


class LockoutTests(TestCase):
    """The lockout attack: handshake, hello, TCP reset, in a loop, 50 at once."""

    timeout = 120

    async def attack(self, address: str, rounds: int) -> None:
        todo = list(range(rounds))

        async def worker() -> None:
            while todo:
                todo.pop()
                client = await connect(address)
                await client.hello()
                client.transport.abortConnection()
                await client.closed.addTimeout(TIMEOUT, reactor)

        await gatherResults([Deferred.fromCoroutine(worker()) for _ in range(50)])

    async def test_detached_sessions_do_not_lock_others_out(self) -> None:
        """With max_sessions filled three times over by abandoned sessions, a fresh client
        is welcomed at once (the longest-detached session makes room)."""
        server = await live.serve(self, Settings(max_sessions=200))
        await self.attack(server.address, 600)
        service = server.sessions
        await live.until(lambda: not service.connections, "the attack's connections gone")
        self.assertEqual(len(service.sessions), 200)
        self.assertTrue(all(not s.attached for s in service.sessions.values()))
        client, welcome = await server.session()
        self.assertIs(welcome["resumed"], False)
        self.assertEqual(service.metrics.sessions_closed["evicted"], 401)
        self.assertEqual(await client.call("echo", 1), {"type": "result", "id": 1, "result": 1})


class AcceptLimitsTests(TestCase):
    """Per-peer connection limits on a real listener: counted from the TCP accept."""

    timeout = 60

    async def test_connection_rate_per_peer(self) -> None:
        """Past the burst, a peer's new connections get 503 (HTTP ones too), until tokens
        come back; a refused connection costs no token and no place."""
        server = await live.serve(self, Settings(peer_connect_rate=0.5, peer_connect_burst=4))
        codes = [(await http(server.address, "/healthz"))[0] for _ in range(6)]
        self.assertEqual(codes, [200, 200, 200, 200, 503, 503])
        code, headers, _ = await http(server.address, "/ws", handshake_headers())
        self.assertEqual(code, 503)
        self.assertEqual(server.sessions.peers.refused["rate"], 3)
        await live.until(lambda: server.sessions.peers.total == 0, "all counted out")

    async def test_connections_per_peer(self) -> None:
        """max_peer_connections open WebSockets from one address: the next gets 503; when
        one closes, a new one gets in."""
        server = await live.serve(self, Settings(max_peer_connections=3))
        clients = [await server.client() for _ in range(3)]
        code, _, _ = await http(server.address, "/ws", handshake_headers())
        self.assertEqual(code, 503)
        clients[0].transport.abortConnection()
        await clients[0].closed
        await live.until(lambda: server.sessions.peers.total == 2, "one counted out")
        await server.session()
        self.assertEqual(server.sessions.peers.refused["peer_connections"], 1)

    async def test_unix_clients_are_one_peer(self) -> None:
        """Every unix-socket client is the peer 'unix', limited like any other."""
        server = await live.serve(self, Settings(max_peer_connections=2), unix=True)
        await server.client()
        await server.client()
        code, _, _ = await http(server.address, "/healthz")
        self.assertEqual(code, 503)
        self.assertEqual(server.sessions.peers.connections("unix"), 2)
