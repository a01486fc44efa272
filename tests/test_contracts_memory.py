"""The store and broker contract suites, run against the in-memory implementations."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from wsservice import MemoryBroker, MemorySessionStore, Settings

from .contracts import BrokerContract, ServiceContract, StoreContract


class MemoryStoreContractTests(StoreContract, TestCase):
    """MemorySessionStore keeps the session store contract."""

    def makeStore(self, clock: Clock, replay_limit: int = 1000,
                  replay_bytes: int = 1 << 20) -> MemorySessionStore:
        return MemorySessionStore(clock, replay_limit, replay_bytes)

    def dump(self, store: Any) -> str:
        parts = []
        for session_id in store:
            record = store.get(session_id)
            parts.append(repr([getattr(record, name) for name in type(record).__slots__]))
        return "\n".join(parts)


class MemoryBrokerContractTests(BrokerContract, TestCase):
    """MemoryBroker keeps the broker contract."""

    def makeBroker(self) -> MemoryBroker:
        return MemoryBroker()


class MemoryServiceContractTests(ServiceContract, TestCase):
    """SessionService over the in-memory seams."""

    def makeSeams(self, clock: Clock, settings: Settings) -> tuple[Any, Any]:
        return (MemorySessionStore(clock, settings.replay_limit, settings.replay_bytes),
                MemoryBroker())
