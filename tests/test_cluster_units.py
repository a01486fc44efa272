"""The cluster's parts in one process, on real redis-server processes: URLs and options, the
per-turn batch, writing in seq order, and a node's life while its Redis goes away."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from wsservice import ANONYMOUS, ConfigurationError, Settings, tap
from wsservice.cluster import cluster_seams
from wsservice.redisengine import DOWN, UP
from wsservice.redisstore import decode_principal, encode_principal
from wsservice.redisurl import node_name, parse_redis_url
from wsservice.testing import ServiceHarness

from . import redisserver
from .live import until


class AddressTests(TestCase):
    """--redis URLs and --node-id."""

    def test_urls(self) -> None:
        a = parse_redis_url("redis://ann:s%40cret@example.com:6390/3")
        self.assertEqual((a.scheme, a.host, a.port, a.db, a.username, a.password),
                         ("redis", "example.com", 6390, 3, "ann", "s@cret"))
        self.assertEqual(str(a), "redis://example.com:6390/3")  # no password in logs
        self.assertEqual(str(parse_redis_url("redis://h")), "redis://h:6379/0")
        self.assertEqual(parse_redis_url("rediss://h/1").scheme, "rediss")
        u = parse_redis_url("unix:///run/redis.sock?db=2&password=pw")
        self.assertEqual((u.path, u.db, u.password), ("/run/redis.sock", 2, "pw"))

    def test_bad_urls_say_what_is_expected_without_the_password(self) -> None:
        for bad in ("http://h", "unix://", "redis://h/abc", "redis://:hush@/0", "redis://h/-1"):
            e = self.assertRaises(ConfigurationError, parse_redis_url, bad)
            self.assertIn("expected redis://HOST:PORT/DB", str(e))
            self.assertNotIn("hush", str(e))

    def test_node_ids(self) -> None:
        self.assertEqual(node_name("web-1_a"), "web-1_a")
        self.assertTrue(node_name(None).startswith("n"))
        self.assertNotEqual(node_name(None), node_name(None))
        for bad in ("a b", "a:b", "x" * 65, "é"):
            self.assertRaises(ConfigurationError, node_name, bad)

    def test_options(self) -> None:
        options = tap.Options()
        options.parseOptions(["--redis", "redis://127.0.0.1:1/0", "--node-id", "n1"])
        self.assertEqual((options["redis"], options["node-id"]), ("redis://127.0.0.1:1/0", "n1"))
        e = self.assertRaises(tap.OptionError, tap.Options().parseOptions, ["--node-id", "n1"])
        self.assertIn("give --redis too", str(e))
        e = self.assertRaises(tap.OptionError, tap.Options().parseOptions,
                              ["--redis", "mysql://h"])
        self.assertIn("unknown scheme", str(e))

    def test_principals(self) -> None:
        self.assertIs(decode_principal(encode_principal(ANONYMOUS)), ANONYMOUS)
        self.assertEqual(decode_principal(encode_principal({"user": "ann"})), {"user": "ann"})
        self.assertIsNone(decode_principal(encode_principal(object())))


class _Node:
    """A SessionService on a Clock over a started engine on ``server``."""

    def __init__(self, testcase: TestCase, server: redisserver.RedisServer,
                 url: str | None = None, **settings: Any) -> None:
        self.settings = Settings(**{"resume_ttl": 60.0, **settings})
        self.engine, store, broker = cluster_seams(url or server.url, None, self.settings,
                                                   prefix=redisserver.prefix(), clock=Clock())
        self.h = ServiceHarness([], self.settings, clock=store._clock, store=store,
                                broker=broker)
        testcase.addCleanup(self.engine.stopService)

    async def start(self) -> _Node:
        await redisserver.up(self.engine)
        return self

    async def settle(self) -> None:
        for _ in range(3):
            await self.engine.whenIdle()
            await deferLater(reactor, 0.005, lambda: None)

    async def open(self) -> tuple[Any, dict, Any]:
        client = self.h.connect()
        client.send({"type": "hello"})
        await until(lambda: client.link.frames, "a welcome")
        welcome = client.next()
        return client, welcome, self.h.service.sessions[welcome["session"]]


class OrderTests(TestCase):
    """A node writes a session's messages in seq order, whatever order they come in."""

    async def test_one_batch_per_turn(self) -> None:
        node = await _Node(self, redisserver.shared()).start()
        client, _, session = await node.open()
        before = node.engine.batches
        for n in range(50):
            session.push("e", n)
        await node.settle()
        self.assertEqual(node.engine.batches - before, 1)
        from prometheus_client import generate_latest
        scraped = generate_latest(node.h.service.metrics.registry).decode()
        self.assertIn("wsservice_redis_up 1.0", scraped)
        self.assertIn("wsservice_redis_batches_total", scraped)
        self.assertEqual([(m["seq"], m["data"]) for m in client.received()],
                         [(n + 1, n) for n in range(50)])

    async def test_early_seqs_wait_for_the_ones_before(self) -> None:
        node = await _Node(self, redisserver.shared()).start()
        client, _, session = await node.open()
        prefix = b'{"type":"event","event":"e","data":0,"seq":'
        session.stamped(3, prefix, "event")
        session.stamped(2, prefix, "event")
        self.assertEqual(client.received(), [])
        session.stamped(1, prefix, "event")
        session.stamped(2, prefix, "event")  # again: a duplicate is dropped
        self.assertEqual([m["seq"] for m in client.received()], [1, 2, 3])

    async def test_a_missing_seq_is_read_from_redis(self) -> None:
        node = await _Node(self, redisserver.shared()).start()
        client, _, session = await node.open()
        for n in range(3):
            session.push("e", n)
        await node.settle()
        self.assertEqual(len(client.received()), 3)
        # Redis numbers 4 and 5 but the record of 4 is lost (as with a dropped connection)
        await node.engine.run("batch", node.engine.node, 1000, 1 << 20, b"P", session.id,
                              b"event", b'{"type":"event","event":"e","data":3,"seq":')
        session.stamped(5, b'{"type":"event","event":"e","data":4,"seq":', "event")
        self.assertEqual(client.received(), [])
        await until(lambda: session.written == 5, "the missing seq, fetched", timeout=5)
        self.assertEqual([(m["seq"], m["data"]) for m in client.received()], [(4, 3), (5, 4)])


class RedisAwayTests(TestCase):
    """Redis goes away and comes back (protocol.md section 6, Redis loss)."""

    def setUp(self) -> None:
        self.server = redisserver.RedisServer(aof=True).start()
        self.addCleanup(self.server.stop)

    async def test_open_sessions_carry_on_and_resync(self) -> None:
        node = await _Node(self, self.server).start()
        client, welcome, session = await node.open()
        session.push("e", 1)
        await node.settle()
        self.server.kill()
        await until(lambda: node.engine.state == DOWN, "the node to see Redis gone")
        reason = node.h.service.unavailable()
        self.assertIn("Redis", reason)
        # new sessions are refused 1013; the open one is served, its pushes written
        other = node.h.connect()
        other.send({"type": "hello"})
        await until(lambda: other.closed is not None, "the refusal")
        self.assertEqual(other.closed, 1013)
        client.send({"type": "ping", "data": 7})
        session.push("e", 2)
        self.assertEqual([(m["type"], m.get("seq")) for m in client.received()],
                         [("event", 1), ("pong", None), ("event", 2)])
        self.server.start()
        await until(lambda: node.engine.state == UP, "the node back in step", timeout=15)
        self.assertIsNone(node.h.service.unavailable())
        session.push("e", 3)
        await node.settle()
        self.assertEqual([m["seq"] for m in client.received()], [3])
        # what Redis never kept cannot be replayed: a resume from before it is refused...
        client.drop()
        await node.settle()
        _, w = await self.resume(node, welcome, 1)
        self.assertEqual(w["resumed"], False)

    async def test_resume_at_the_current_seq_after_resync(self) -> None:
        node = await _Node(self, self.server).start()
        client, welcome, session = await node.open()
        self.server.kill()
        await until(lambda: node.engine.state == DOWN, "the node to see Redis gone")
        session.push("e", 1)  # not kept
        self.server.restart(empty=True)  # and Redis forgot everything
        await until(lambda: node.engine.state == UP, "the node back in step", timeout=15)
        client.drop()
        await node.settle()
        again, w = await self.resume(node, welcome, 1)
        self.assertEqual((w["resumed"], again.received()), (True, []))

    async def test_presence_put_back_after_redis_forgot_everything(self) -> None:
        """Subscriptions and presence watches are put back from the node's copy; a member
        that left while Redis was away is announced leaving, one that joined, joining."""
        node = await _Node(self, self.server).start()
        watcher, _, _ = await node.open()
        stays, _, stays_session = await node.open()
        goes, _, _ = await node.open()
        watcher.send({"type": "subscribe", "topic": "room", "presence": True})
        stays.send({"type": "subscribe", "topic": "room"})
        goes.send({"type": "subscribe", "topic": "room"})
        seen: list[dict] = []

        async def presence_events(count: int, what: str) -> list[tuple[str, Any]]:
            def arrived() -> bool:
                seen.extend(watcher.received())
                return len(seen) >= count
            await until(arrived, what)
            events = [(m["event"], m["data"]["member"]) for m in seen]
            seen.clear()
            return events

        await node.settle()
        await presence_events(2, "two joins")
        # Redis is lost and comes back with nothing: the node puts it all back
        self.server.kill()
        await until(lambda: node.engine.state == DOWN, "the node to see Redis gone")
        self.server.restart(empty=True)
        await until(lambda: node.engine.state == UP, "the node back in step", timeout=15)
        members = await node.h.service.presence("room")
        self.assertEqual(len(members), 3)
        newcomer, _, _ = await node.open()
        newcomer.send({"type": "subscribe", "topic": "room"})
        goes.send({"type": "unsubscribe", "topic": "room"})
        await node.settle()
        events = await presence_events(2, "presence after the resync")
        self.assertEqual([e for e, _ in events], ["presence.join", "presence.leave"])
        # while Redis is away again, a member leaves: announced once Redis is back
        self.server.kill()
        await until(lambda: node.engine.state == DOWN, "the node to see Redis gone")
        stays.send({"type": "unsubscribe", "topic": "room"})
        self.server.start()  # with its append-only file: it remembers stays as a member
        await until(lambda: node.engine.state == UP, "the node back in step", timeout=15)
        await node.settle()
        events = await presence_events(1, "the leave after the resync")
        self.assertEqual(events, [("presence.leave", stays_session.member)])
        self.assertEqual(len(await node.h.service.presence("room")), 2)

    async def resume(self, node: _Node, welcome: dict, last_seq: int) -> tuple[Any, dict]:
        client = node.h.connect()
        client.send({"type": "hello", "resume": {"session": welcome["session"],
                                                 "token": welcome["token"],
                                                 "last_seq": last_seq}})
        await until(lambda: client.link.frames, "a welcome")
        return client, client.next()

    async def test_unix_socket_url(self) -> None:
        node = await _Node(self, self.server, url=self.server.unix_url).start()
        client, _, session = await node.open()
        session.push("e", 1)
        await node.settle()
        self.assertEqual([m["seq"] for m in client.received()], [1])


class RepliesBehindPushesTests(TestCase):
    """A cluster session's replies come after the pushes made before them; welcome never waits."""

    async def test_reply_waits_for_the_push_before_it(self) -> None:
        node = await _Node(self, redisserver.shared()).start()
        client, _, session = await node.open()
        session.push("e", 1)
        session.reply(7, "answer")
        self.assertEqual(client.received(), [])  # the push is not kept yet: neither goes
        await node.settle()
        self.assertEqual([m["type"] for m in client.received()], ["event", "result"])

    async def test_resume_welcome_comes_first_while_pushes_are_pending(self) -> None:
        node = await _Node(self, redisserver.shared()).start()
        client, welcome, session = await node.open()
        session.push("e", 1)
        await node.settle()
        again = node.h.connect()
        again.send({"type": "hello", "resume": {"session": welcome["session"],
                                                "token": welcome["token"], "last_seq": 0}})
        session.push("e", 2)  # on its way to Redis behind the claim, when the welcome goes
        await node.settle()
        got = again.received()
        self.assertEqual(got[0]["type"], "welcome")
        self.assertEqual([m["seq"] for m in got[1:]], [1, 2])
