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
