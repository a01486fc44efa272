"""The store and broker contract suites, run unchanged against the Redis implementations,
on a real redis-server."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from wsservice import ClusterSession, RedisBroker, RedisSessionStore, Settings
from wsservice.redisengine import RedisEngine
from wsservice.redisurl import parse_redis_url
from wsservice.store import public_id
from wsservice.testing import ServiceHarness

from . import redisserver
from .contracts import BrokerContract, ServiceContract, StoreContract


class _OnRedis:
    """Each test gets a started engine on the shared redis-server, under its own key prefix."""

    addCleanup: Any

    def setUp(self) -> Any:
        self.server = redisserver.shared()
        self.engine = RedisEngine(parse_redis_url(self.server.url),
                                  prefix=redisserver.prefix())
        self.addCleanup(self.engine.stopService)
        return redisserver.up(self.engine)

    async def settled(self) -> None:
        for _ in range(4):
            await self.engine.whenIdle()
            await deferLater(reactor, 0.005, lambda: None)


class RedisStoreContractTests(_OnRedis, StoreContract, TestCase):
    """RedisSessionStore keeps the session store contract."""

    def makeStore(self, clock: Clock, replay_limit: int = 1000,
                  replay_bytes: int = 1 << 20) -> RedisSessionStore:
        return RedisSessionStore(self.engine, clock, replay_limit, replay_bytes)

    def dump(self, store: Any) -> str:
        return self.server.dump(self.engine.prefix + "*")


class RedisBrokerContractTests(_OnRedis, BrokerContract, TestCase):
    """RedisBroker keeps the broker contract."""

    def makeBroker(self) -> RedisBroker:
        return RedisBroker(self.engine)

    async def settle(self, broker: Any) -> None:
        await self.settled()


class RedisServiceContractTests(_OnRedis, ServiceContract, TestCase):
    """SessionService over the Redis seams."""

    def makeSeams(self, clock: Clock, settings: Settings) -> tuple[Any, Any]:
        store = RedisSessionStore(self.engine, clock, settings.replay_limit
                                  if settings.resume_ttl > 0 else 0, settings.replay_bytes,
                                  settings.resume_ttl)
        store.session_class = ClusterSession
        return store, RedisBroker(self.engine)

    async def settle(self, harness: ServiceHarness) -> None:
        await self.settled()


class PresenceMemberAcrossNodesTests(_OnRedis, TestCase):
    """A session's presence entry is made where the session is created, and another node
    that takes the session over (resume, adoption) shows the same: Redis keeps principals as
    JSON, which may lose a principal's publicName."""

    async def test_member_survives_a_move_to_another_node(self) -> None:
        class Named:
            publicName = "ann"

        store = RedisSessionStore(self.engine, Clock())
        record = await store.create("sid-m", "tok-" + "x" * 20, "s1", Named(),
                                    {"public": {"name": "Ann"}})
        other = RedisEngine(parse_redis_url(self.server.url), prefix=self.engine.prefix)
        self.addCleanup(other.stopService)
        await redisserver.up(other)
        claim = await RedisSessionStore(other, Clock()).claim("sid-m", "tok-" + "x" * 20, 0)
        self.assertEqual(claim.record.principal, None)  # not JSON: kept as null
        session = ClusterSession(_Host(), claim.record, None)
        self.assertEqual(session.member, {"client": public_id("sid-m"), "user": "ann",
                                          "meta": {"name": "Ann"}})
        self.assertEqual(claim.record.member, record.member)


class _Host:
    """Just what a ClusterSession reads of its service when made."""

    def __init__(self) -> None:
        from wsservice.logflood import LogFlood
        from wsservice.metrics import Metrics
        self.clock = Clock()
        self.settings = Settings()
        self.metrics = Metrics(lambda: 0)
        self.logs = LogFlood(self.clock)
