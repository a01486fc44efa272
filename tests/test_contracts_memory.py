"""The store and broker contract suites, run against the in-memory implementations."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from wsservice import ISessionStore, MemoryBroker, MemorySessionStore, Settings
from wsservice.testing import ServiceHarness

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


class MemoryRecordLayoutTests(TestCase):
    """The memory record keeps frames without their seqs: the seqs are derived."""

    def record(self, seqs: list[int]) -> Any:
        store = MemorySessionStore(Clock())
        store.create("sid", "token", "s1", None, {})
        record = store.get("sid")
        for seq in seqs:
            record.append(seq, b"f%d" % seq)
        return store, record

    def test_seqs_derived(self) -> None:
        store, record = self.record([1, 2, 3, 4])
        record.ack(2)
        self.assertEqual(record.kept(), [(3, b"f3"), (4, b"f4")])
        self.assertEqual(store.kept_bytes, 4)
        record.ack(9)  # past the last: everything is forgotten, nothing more
        self.assertEqual((record.kept(), store.kept_bytes), ([], 0))

    def test_gap_forgets_what_came_before_it(self) -> None:
        """A seq that is not the next one (no Session makes that) starts the buffer anew: the
        frames before it could not be replayed exactly across the gap."""
        store, record = self.record([1, 2, 5, 6])
        self.assertEqual(record.kept(), [(5, b"f5"), (6, b"f6")])
        self.assertEqual(store.kept_bytes, 4)
        self.assertIsNone(self.successResultOf(store.claim("sid", "token", 2)).replay)
        claim = self.successResultOf(store.claim("sid", "token", 4))
        self.assertEqual(claim.replay, [b"f5", b"f6"])


class MemoryBrokerContractTests(BrokerContract, TestCase):
    """MemoryBroker keeps the broker contract."""

    def makeBroker(self) -> MemoryBroker:
        return MemoryBroker()


class MemoryServiceContractTests(ServiceContract, TestCase):
    """SessionService over the in-memory seams."""

    def makeSeams(self, clock: Clock, settings: Settings) -> tuple[Any, Any]:
        return (MemorySessionStore(clock, settings.replay_limit, settings.replay_bytes),
                MemoryBroker())


@implementer(ISessionStore)
class LateStore:
    """The memory store, answering each call one reactor turn later (as a networked store
    does): the service's asynchronous paths, driven by a Clock."""

    def __init__(self, clock: Clock, inner: MemorySessionStore) -> None:
        self.clock = clock
        self.inner = inner
        self.hold = False  # True: answers wait until released
        self.held: list[Any] = []

    def _later(self, d: Deferred) -> Deferred:
        late: Deferred = Deferred()
        d.addCallback(lambda result: self.held.append((late, result)) if self.hold
                      else self.clock.callLater(0, late.callback, result))
        return late

    def release(self) -> None:
        held, self.held = self.held, []
        for late, result in held:
            late.callback(result)

    def create(self, *args: Any) -> Deferred:
        return self._later(self.inner.create(*args))

    def claim(self, *args: Any) -> Deferred:
        return self._later(self.inner.claim(*args))

    def detach(self, *args: Any) -> None:
        self.inner.detach(*args)

    def end(self, record: Any) -> Deferred:
        return self._later(self.inner.end(record))


class LateServiceContractTests(ServiceContract, TestCase):
    """SessionService over a store whose answers come a turn later."""

    def makeSeams(self, clock: Clock, settings: Settings) -> tuple[Any, Any]:
        return (LateStore(clock, MemorySessionStore(clock, settings.replay_limit,
                                                    settings.replay_bytes)), MemoryBroker())

    async def settle(self, harness: ServiceHarness) -> None:
        for _ in range(3):
            harness.clock.advance(0)


class LateStoreTests(TestCase):
    """What the connection does when the store answers after the connection has changed."""

    def setUp(self) -> None:
        self.clock = Clock()
        settings = Settings(hello_timeout=5, resume_ttl=60)
        self.inner = MemorySessionStore(self.clock)
        self.store = LateStore(self.clock, self.inner)
        self.h = ServiceHarness([], settings, clock=self.clock, store=self.store,
                                broker=MemoryBroker())

    def test_store_that_never_answers_meets_the_hello_timeout(self) -> None:
        self.store.hold = True
        client = self.h.connect()
        client.send({"type": "hello"})
        self.clock.advance(5)
        self.assertEqual((client.closed, client.link.close_reason),
                         (4408, "authentication took too long"))
        self.store.release()  # the record made meanwhile is undone: nobody has its token
        self.clock.advance(0)
        self.assertEqual((len(self.inner), self.h.service.sessions), (0, {}))

    def test_connection_lost_while_claiming(self) -> None:
        first = self.h.connect()
        first.send({"type": "hello"})
        self.clock.advance(0)
        welcome = first.next()
        first.drop()  # detached: expires at t=60
        self.clock.advance(10)
        self.store.hold = True
        second = self.h.connect()
        second.send({"type": "hello", "resume": {"session": welcome["session"],
                                                 "token": welcome["token"], "last_seq": 0}})
        second.drop()  # gone before the store answered
        self.store.release()
        session = self.h.service.sessions[welcome["session"]]
        self.assertFalse(session.attached)
        self.assertEqual(second.link.frames, [])  # no welcome to the dead connection
        # the claim stopped the expiry; releasing it armed it again, from now
        self.assertEqual(self.inner.expiresAt(welcome["session"]), 70.0)
        self.clock.advance(70)
        self.assertTrue(session.closed)

    def test_claim_while_another_connection_holds_it_is_undone_if_lost(self) -> None:
        first = self.h.connect()
        first.send({"type": "hello"})
        self.clock.advance(0)
        welcome = first.next()
        self.store.hold = True
        second = self.h.connect()
        second.send({"type": "hello", "resume": {"session": welcome["session"],
                                                 "token": welcome["token"],
                                                 "last_seq": 0}})
        second.drop()
        self.store.release()
        self.assertIsNone(first.closed)  # the live connection was not taken over
        self.assertTrue(self.h.service.sessions[welcome["session"]].attached)
