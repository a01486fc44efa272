"""Contract suites for the session store and the broker, written once for every implementation.

A test module subclasses each suite with ``trial.unittest.TestCase`` and says how to make
the implementation (see ``test_contracts_memory.py``); the Redis implementations of the
cluster run the same suites unchanged. Everything is awaited, so an implementation whose
Deferreds fire later (over a network) is tested exactly like one whose fire at once.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from wsservice import IBroker, IDeliverable, ISessionRecord, ISessionStore, Settings
from wsservice.testing import ServiceHarness

TOKEN = "tok-" + "s3cret" * 4


class StoreContract:
    """What every ISessionStore does (protocol.md sections 2 and 5)."""

    # -- provided by the implementation's test module ----------------------------------------

    def makeStore(self, clock: Clock, replay_limit: int = 1000,
                  replay_bytes: int = 1 << 20) -> Any:
        """A fresh, empty store whose timers run on ``clock``."""
        raise NotImplementedError

    def dump(self, store: Any) -> str:
        """Everything the store holds, as text (to show no token is kept in the clear)."""
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------------

    assertEqual: Any
    assertIsNone: Any
    assertIsNotNone: Any
    assertIn: Any
    assertNotIn: Any
    assertTrue: Any

    async def new(self, store: Any, session_id: str = "sid-1", frames: int = 0,
                  meta: dict | None = None) -> Any:
        record = await store.create(session_id, TOKEN, "s1", {"user": "ann"}, meta or {})
        for seq in range(1, frames + 1):
            await self.append(record, seq)
        return record

    async def detached(self, frames: int = 0) -> tuple[Clock, Any, Any, list[int]]:
        """A store whose one session is detached for 30 s, and the list its expiry appends
        1 to."""
        clock = Clock()
        store = self.makeStore(clock)
        record = await self.new(store, frames=frames)
        expired: list[int] = []
        store.detach(record, 30, lambda: expired.append(1))
        return clock, store, record, expired

    async def append(self, record: Any, seq: int, size: int = 0) -> None:
        frame = b'{"seq":%d,"pad":"%s"}' % (seq, b"x" * size)
        durable = record.append(seq, frame)
        if durable is not None:
            await durable

    async def seqs(self, store: Any, last_seq: int, session_id: str = "sid-1") -> list[int] | None:
        """Claim the session after ``last_seq``; the seqs it would replay, or None (a gap)."""
        claim = await store.claim(session_id, TOKEN, last_seq)
        self.assertIsNotNone(claim)
        if claim.replay is None:
            return None
        return [int(frame.split(b",")[0].split(b":")[1]) for frame in claim.replay]

    # -- the contract ---------------------------------------------------------------------------

    async def test_provides_the_interfaces(self) -> None:
        store = self.makeStore(Clock())
        self.assertTrue(verifyObject(ISessionStore, store))
        self.assertTrue(verifyObject(ISessionRecord, await self.new(store)))

    async def test_create_keeps_identity_principal_and_meta(self) -> None:
        store = self.makeStore(Clock())
        record = await self.new(store, meta={"room": "a"})
        self.assertEqual((record.id, record.label, record.principal, record.meta, record.seq,
                          set(record.subscriptions)),
                         ("sid-1", "s1", {"user": "ann"}, {"room": "a"}, 0, set()))
        claim = await store.claim("sid-1", TOKEN, 0)
        self.assertEqual((claim.record.id, claim.record.principal, claim.record.meta,
                          claim.replay), ("sid-1", {"user": "ann"}, {"room": "a"}, []))

    async def test_claim_needs_the_token(self) -> None:
        store = self.makeStore(Clock())
        await self.new(store)
        self.assertIsNone(await store.claim("sid-1", TOKEN + "x", 0))
        self.assertIsNone(await store.claim("sid-1", "", 0))
        self.assertIsNone(await store.claim("sid-2", TOKEN, 0))
        self.assertIsNotNone(await store.claim("sid-1", TOKEN, 0))

    async def test_token_kept_only_as_a_hash(self) -> None:
        store = self.makeStore(Clock())
        await self.new(store, frames=2)
        self.assertNotIn(TOKEN, self.dump(store))
        self.assertIn("sid-1", self.dump(store))  # the dump does show what is kept

    async def test_replay_in_order_after_last_seq(self) -> None:
        store = self.makeStore(Clock())
        record = await self.new(store, frames=5)
        self.assertEqual(record.seq, 5)
        self.assertEqual(await self.seqs(store, 2), [3, 4, 5])
        claim = await store.claim("sid-1", TOKEN, 5)
        self.assertEqual((claim.record.seq, claim.record.label), (5, "s1"))

    async def test_nothing_missed(self) -> None:
        store = self.makeStore(Clock())
        await self.new(store, frames=3)
        self.assertEqual(await self.seqs(store, 3), [])

    async def test_client_ahead_of_the_server_is_a_gap(self) -> None:
        store = self.makeStore(Clock())
        await self.new(store, frames=3)
        self.assertIsNone(await self.seqs(store, 4))

    async def test_ack_trims_and_makes_earlier_resume_a_gap(self) -> None:
        store = self.makeStore(Clock())
        record = await self.new(store, frames=5)
        record.ack(3)
        self.assertEqual(await self.seqs(store, 3), [4, 5])
        self.assertIsNone(await self.seqs(store, 2))

    async def test_claim_acknowledges_last_seq(self) -> None:
        store = self.makeStore(Clock())
        await self.new(store, frames=4)
        self.assertEqual(await self.seqs(store, 2), [3, 4])
        self.assertIsNone(await self.seqs(store, 1))

    async def test_replay_limit_drops_oldest(self) -> None:
        store = self.makeStore(Clock(), replay_limit=3)
        await self.new(store, frames=5)
        self.assertIsNone(await self.seqs(store, 1))
        self.assertEqual(await self.seqs(store, 2), [3, 4, 5])

    async def test_replay_bytes_drops_oldest(self) -> None:
        store = self.makeStore(Clock(), replay_bytes=250)
        record = await self.new(store)
        for seq in range(1, 6):
            await self.append(record, seq, size=100)  # about 120 bytes each: two fit
        self.assertIsNone(await self.seqs(store, 2))
        self.assertEqual(await self.seqs(store, 3), [4, 5])

    async def test_subscriptions_kept(self) -> None:
        store = self.makeStore(Clock())
        record = await self.new(store)
        record.subscribe("a")
        record.subscribe("b")
        record.subscribe("a")
        record.unsubscribe("b")
        record.unsubscribe("never")
        self.assertEqual(set(record.subscriptions), {"a"})
        claim = await store.claim("sid-1", TOKEN, 0)
        self.assertEqual(set(claim.record.subscriptions), {"a"})

    async def test_detached_session_expires_after_ttl(self) -> None:
        clock = Clock()
        store = self.makeStore(clock)
        record = await self.new(store)
        expired: list[str] = []
        store.detach(record, 30, lambda: expired.append(record.id))
        clock.advance(29.9)
        self.assertEqual(expired, [])
        clock.advance(0.1)
        self.assertEqual(expired, ["sid-1"])

    async def test_second_detach_keeps_the_first_deadline(self) -> None:
        clock, store, record, expired = await self.detached()
        clock.advance(20)
        store.detach(record, 30, lambda: expired.append(2))
        clock.advance(10)
        self.assertEqual(expired, [1])
        clock.advance(60)
        self.assertEqual(expired, [1])

    async def test_wrong_token_leaves_expiry_running(self) -> None:
        clock, store, record, expired = await self.detached()
        self.assertIsNone(await store.claim("sid-1", "guess", 0))
        clock.advance(30)
        self.assertEqual(expired, [1])

    async def test_claim_cancels_expiry(self) -> None:
        clock, store, record, expired = await self.detached()
        clock.advance(10)
        self.assertIsNotNone(await store.claim("sid-1", TOKEN, 0))
        clock.advance(60)
        self.assertEqual(expired, [])
        store.detach(record, 30, lambda: expired.append(2))  # detached again: a new deadline
        clock.advance(30)
        self.assertEqual(expired, [2])

    async def test_end_forgets_everything(self) -> None:
        clock, store, record, expired = await self.detached(frames=3)
        await store.end(record)
        self.assertIsNone(await store.claim("sid-1", TOKEN, 0))
        clock.advance(60)
        self.assertEqual(expired, [])
        self.assertNotIn("sid-1", self.dump(store))
        await store.end(record)  # ending twice is harmless

    async def test_takeover_claims_again(self) -> None:
        store = self.makeStore(Clock())
        record = await self.new(store, frames=2)
        self.assertEqual(await self.seqs(store, 1), [2])
        await self.append(record, 3)
        # the same client, on yet another connection, takes the session over
        self.assertEqual(await self.seqs(store, 2), [3])

    async def test_sessions_are_separate(self) -> None:
        store = self.makeStore(Clock())
        await self.new(store, "sid-1", frames=2)
        await self.new(store, "sid-2", frames=4)
        self.assertEqual(await self.seqs(store, 0, "sid-1"), [1, 2])
        self.assertEqual(await self.seqs(store, 0, "sid-2"), [1, 2, 3, 4])


@implementer(IDeliverable)
class Subscriber:
    """A deliverable that stamps its own seq, as a session does."""

    def __init__(self, name: str, on_deliver: Any = None) -> None:
        self.name = name
        self.seq = 0
        self.got: list[tuple[int, bytes, str]] = []
        self.on_deliver = on_deliver

    def deliver(self, prefix: bytes, kind: str) -> int:
        self.seq += 1
        self.got.append((self.seq, prefix, kind))
        if self.on_deliver is not None:
            self.on_deliver(self)
        return self.seq


class BrokerContract:
    """What every IBroker does for the sessions of one node (protocol.md section 5)."""

    def makeBroker(self) -> Any:
        """A fresh broker."""
        raise NotImplementedError

    async def settle(self, broker: Any) -> None:
        """Wait until what was published has been delivered (a networked broker is later)."""

    assertEqual: Any
    assertTrue: Any
    assertIsNone: Any

    def bound(self, *subscribers: Subscriber) -> Any:
        broker = self.makeBroker()
        by_name = {s.name: s for s in subscribers}
        broker.bind(by_name.get)
        return broker

    async def test_provides_the_interface(self) -> None:
        self.assertTrue(verifyObject(IBroker, self.makeBroker()))

    async def test_fan_out_exactly_once_with_each_subscribers_seq(self) -> None:
        a, b, c = Subscriber("a"), Subscriber("b"), Subscriber("c")
        broker = self.bound(a, b, c)
        b.seq = 40  # b has had other messages: its own seq goes on from there
        for s in (a, b):
            broker.subscribe(s, "t")
        broker.subscribe(a, "t")  # twice: still once
        self.assertIsNone(await broker.publish("t", b"m1"))
        await self.settle(broker)
        self.assertEqual((a.got, b.got, c.got),
                         ([(1, b"m1", "message")], [(41, b"m1", "message")], []))

    async def test_publisher_order_kept(self) -> None:
        a = Subscriber("a")
        broker = self.bound(a)
        broker.subscribe(a, "t")
        for n in range(100):
            broker.publish("t", b"%d" % n)
        await self.settle(broker)
        self.assertEqual([p for _, p, _ in a.got], [b"%d" % n for n in range(100)])

    async def test_topics_are_separate(self) -> None:
        a, b = Subscriber("a"), Subscriber("b")
        broker = self.bound(a, b)
        broker.subscribe(a, "t1")
        broker.subscribe(b, "t2")
        await broker.publish("t1", b"x")
        await broker.publish("nobody", b"y")
        await self.settle(broker)
        self.assertEqual(([p for _, p, _ in a.got], b.got), ([b"x"], []))

    async def test_unsubscribe_stops_delivery(self) -> None:
        a = Subscriber("a")
        broker = self.bound(a)
        broker.subscribe(a, "t")
        await broker.publish("t", b"1")
        await self.settle(broker)
        broker.unsubscribe(a, "t")
        broker.unsubscribe(a, "t")
        broker.unsubscribe(a, "never")
        await broker.publish("t", b"2")
        await self.settle(broker)
        self.assertEqual([p for _, p, _ in a.got], [b"1"])

    async def test_subscriber_leaving_during_delivery(self) -> None:
        # delivering may close a connection, which unsubscribes sessions mid-publication: a
        # publication goes to those subscribed when it was published, the next one to nobody
        broker = self.makeBroker()
        others: list[Subscriber] = []

        def leave(me: Subscriber) -> None:
            for s in others:
                broker.unsubscribe(s, "t")
        others.extend(Subscriber(n, leave) for n in "abc")
        broker.bind({s.name: s for s in others}.get)
        for s in others:
            broker.subscribe(s, "t")
        await broker.publish("t", b"m")
        await self.settle(broker)
        self.assertEqual([[p for _, p, _ in s.got] for s in others], [[b"m"]] * 3)
        await broker.publish("t", b"again")
        await self.settle(broker)
        self.assertEqual([len(s.got) for s in others], [1, 1, 1])

    async def test_directed_delivery(self) -> None:
        a = Subscriber("a")
        broker = self.bound(a)
        self.assertEqual(await broker.send("a", b"p", "event"), True)
        self.assertEqual(await broker.send("nobody", b"p", "event"), False)
        await self.settle(broker)
        self.assertEqual(a.got, [(1, b"p", "event")])


class ServiceContract:
    """The service's resume and topic behaviour over a given store and broker."""

    def makeSeams(self, clock: Clock, settings: Settings) -> tuple[Any, Any]:
        """A (store, broker) pair for a SessionService on ``clock`` with ``settings``."""
        raise NotImplementedError

    async def settle(self, harness: ServiceHarness) -> None:
        """Wait until the seams have answered (a networked one is later)."""

    assertEqual: Any
    assertTrue: Any
    assertFalse: Any
    addCleanup: Any

    def harness(self, **settings: Any) -> ServiceHarness:
        clock = Clock()
        s = Settings(**{"resume_ttl": 60.0, **settings})
        store, broker = self.makeSeams(clock, s)
        h = ServiceHarness([], s, clock=clock, store=store, broker=broker)
        self.addCleanup(h.stop)
        return h

    async def opened(self, h: ServiceHarness, meta: Any = None) -> tuple[Any, dict, Any]:
        client = h.connect()
        client.send({"type": "hello"} if meta is None else {"type": "hello", "meta": meta})
        await self.settle(h)
        welcome = client.next()
        return client, welcome, h.service.sessions[welcome["session"]]

    async def resume(self, h: ServiceHarness, welcome: dict, last_seq: int) -> tuple[Any, dict]:
        client = h.connect()
        client.send({"type": "hello", "resume": {"session": welcome["session"],
                                                 "token": welcome["token"],
                                                 "last_seq": last_seq}})
        await self.settle(h)
        return client, client.next()

    async def test_resume_replays_in_order(self) -> None:
        h = self.harness()
        client, welcome, session = await self.opened(h)
        client.drop()
        for n in range(5):
            session.push("e", n)
        await self.settle(h)
        again, w2 = await self.resume(h, welcome, 2)
        self.assertEqual((w2["type"], w2["resumed"]), ("welcome", True))
        self.assertEqual([(m["seq"], m["data"]) for m in again.received()],
                         [(3, 2), (4, 3), (5, 4)])

    async def test_gap_means_a_new_session(self) -> None:
        h = self.harness(replay_limit=2)
        client, welcome, session = await self.opened(h)
        client.drop()
        for n in range(5):
            session.push("e", n)
        await self.settle(h)
        again, w2 = await self.resume(h, welcome, 1)
        self.assertEqual((w2["type"], w2["resumed"]), ("welcome", False))
        self.assertTrue(w2["session"] != welcome["session"])
        self.assertTrue(session.closed)

    async def test_ack_trims(self) -> None:
        h = self.harness()
        client, welcome, session = await self.opened(h)
        for n in range(4):
            session.push("e", n)
        await self.settle(h)
        client.send({"type": "ack", "seq": 3})
        client.drop()
        _, w2 = await self.resume(h, welcome, 2)
        self.assertEqual(w2["resumed"], False)  # 3 was acknowledged, so it is gone

    async def test_ttl_expiry(self) -> None:
        h = self.harness(resume_ttl=30)
        client, welcome, session = await self.opened(h)
        client.drop()
        h.clock.advance(30)
        await self.settle(h)
        self.assertTrue(session.closed)
        _, w2 = await self.resume(h, welcome, 0)
        self.assertEqual(w2["resumed"], False)

    async def test_takeover_closes_the_old_connection(self) -> None:
        h = self.harness()
        client, welcome, session = await self.opened(h)
        session.push("e", 1)
        await self.settle(h)
        new, w2 = await self.resume(h, welcome, 1)
        self.assertEqual((w2["resumed"], client.closed), (True, 4409))
        session.push("e", 2)
        await self.settle(h)
        self.assertEqual([m["seq"] for m in new.received()], [2])

    async def test_fan_out_with_each_subscribers_seq(self) -> None:
        h = self.harness()
        a, _, sa = await self.opened(h)
        b, _, sb = await self.opened(h)
        sb.push("before", 1)
        for session in (sa, sb):
            session.subscribe("room")
        await h.service.publish("room", {"hi": 1})
        await self.settle(h)
        self.assertEqual([(m["type"], m["seq"]) for m in a.received()], [("message", 1)])
        self.assertEqual([(m["type"], m["seq"]) for m in b.received()],
                         [("event", 1), ("message", 2)])

    async def test_subscriptions_survive_resume(self) -> None:
        h = self.harness()
        client, welcome, session = await self.opened(h)
        client.send({"type": "subscribe", "topic": "room", "id": 1})
        await self.settle(h)
        self.assertEqual(client.next(), {"type": "result", "id": 1, "result": None})
        client.drop()
        await h.service.publish("room", "while away")
        await self.settle(h)
        again, w2 = await self.resume(h, welcome, 0)
        await h.service.publish("room", "after")
        await self.settle(h)
        self.assertEqual([(m["seq"], m["data"]) for m in again.received()],
                         [(1, "while away"), (2, "after")])

    async def test_takeover_without_resume(self) -> None:
        # resume_ttl=0 keeps nothing for a lost connection, but a live session can still be
        # taken over by its own client from another connection
        h = self.harness(resume_ttl=0)
        client, welcome, session = await self.opened(h)
        session.push("e", 1)
        session.push("e", 2)
        await self.settle(h)
        new, w2 = await self.resume(h, welcome, 2)
        self.assertEqual((w2["session"], w2["resumed"], client.closed),
                         (welcome["session"], True, 4409))

    async def test_directed_push(self) -> None:
        h = self.harness()
        a, welcome, _ = await self.opened(h)
        self.assertEqual(await h.service.push(welcome["session"], "hey", 1), True)
        self.assertEqual(await h.service.push("nobody", "hey", 1), False)
        await self.settle(h)
        self.assertEqual(a.received(), [{"type": "event", "event": "hey", "data": 1, "seq": 1}])

    # -- presence (protocol.md section 7) -------------------------------------------------------

    async def subscribed(self, h: ServiceHarness, name: str, topic: str = "room",
                         presence: bool = False) -> tuple[Any, dict, Any]:
        """A session whose meta.public names it, subscribed to ``topic``."""
        client, welcome, session = await self.opened(h, {"public": {"name": name}})
        client.send({"type": "subscribe", "topic": topic, "id": "s", "presence": presence})
        await self.settle(h)
        self.assertEqual(client.next(), {"type": "result", "id": "s", "result": None})
        return client, welcome, session

    async def members(self, h: ServiceHarness, client: Any, topic: str = "room") -> list:
        client.send({"type": "presence", "topic": topic, "id": "p"})
        await self.settle(h)
        answer = client.next()
        self.assertEqual((answer["type"], answer["id"]), ("result", "p"))
        return sorted((m["meta"] or {}).get("name", "?") for m in answer["result"]["members"])

    def presenceEvents(self, client: Any) -> list[tuple[str, str, str]]:
        return [(m["event"], m["data"]["topic"], m["data"]["member"]["meta"]["name"])
                for m in client.received()
                if m["type"] == "event" and m["event"].startswith("presence.")]

    async def test_presence_lists_every_member(self) -> None:
        h = self.harness()
        a, wa, sa = await self.subscribed(h, "ann")
        b, wb, sb = await self.subscribed(h, "bob")
        c, _, _ = await self.opened(h)  # not subscribed: may still ask
        self.assertEqual(await self.members(h, c), ["ann", "bob"])
        self.assertEqual(await self.members(h, c, "empty"), [])
        members = await h.service.presence("room")
        ids = {m["client"] for m in members}
        self.assertEqual(len(ids), 2)
        self.assertEqual(ids, {sa.member["client"], sb.member["client"]})
        for m in members:  # the public id gives neither the session id nor its token
            self.assertEqual(m["user"], None)  # the default principal has no public name
            self.assertFalse(m["client"] in (wa["session"], wa["token"], wb["session"],
                                             wb["token"]))
            self.assertFalse(m["client"][:8] in wa["session"] + wb["session"])

    async def test_presence_pushes_joins_and_leaves(self) -> None:
        h = self.harness()
        watcher, _, _ = await self.subscribed(h, "wat", presence=True)
        a, _, _ = await self.subscribed(h, "ann")
        b, wb, sb = await self.subscribed(h, "bob")
        a.send({"type": "unsubscribe", "topic": "room"})
        await self.settle(h)
        b.send({"type": "bye"})
        await self.settle(h)
        events = watcher.received()
        self.assertEqual([(m["event"], m["data"]["member"]["meta"]["name"], m["seq"])
                          for m in events],
                         [("presence.join", "ann", 1), ("presence.join", "bob", 2),
                          ("presence.leave", "ann", 3), ("presence.leave", "bob", 4)])
        self.assertEqual(events[1]["data"], {"topic": "room", "member": sb.member})
        # nobody is told of their own join, and a subscriber without presence hears nothing
        self.assertEqual(self.presenceEvents(a), [])

    async def test_detached_member_has_not_left(self) -> None:
        h = self.harness(resume_ttl=30)
        watcher, _, _ = await self.subscribed(h, "wat", presence=True)
        asker, _, _ = await self.opened(h)
        a, wa, _ = await self.subscribed(h, "ann")
        a.drop()
        await self.settle(h)
        self.assertEqual(await self.members(h, asker), ["ann", "wat"])
        again, w2 = await self.resume(h, wa, 0)
        self.assertEqual(w2["resumed"], True)
        again.drop()
        await self.settle(h)
        h.clock.advance(30)  # now it ends: it leaves
        await self.settle(h)
        self.assertEqual(self.presenceEvents(watcher),
                         [("presence.join", "room", "ann"), ("presence.leave", "room", "ann")])
        self.assertEqual(await self.members(h, asker), ["wat"])

    async def test_latest_subscribe_decides_presence(self) -> None:
        h = self.harness()
        watcher, _, _ = await self.subscribed(h, "wat", presence=True)
        watcher.send({"type": "subscribe", "topic": "room"})  # again, without presence
        await self.settle(h)
        await self.subscribed(h, "ann")
        watcher.send({"type": "subscribe", "topic": "room", "presence": True})
        await self.settle(h)
        await self.subscribed(h, "bob")
        watcher.send({"type": "unsubscribe", "topic": "room"})
        await self.settle(h)
        await self.subscribed(h, "cat")
        watcher.send({"type": "subscribe", "topic": "room"})
        await self.settle(h)
        await self.subscribed(h, "dan")
        self.assertEqual(self.presenceEvents(watcher), [("presence.join", "room", "bob")])

    async def test_presence_pushes_are_replayed(self) -> None:
        h = self.harness()
        watcher, ww, _ = await self.subscribed(h, "wat", presence=True)
        watcher.drop()
        await self.settle(h)
        await self.subscribed(h, "ann")
        again, w2 = await self.resume(h, ww, 0)
        self.assertEqual(w2["resumed"], True)
        self.assertEqual(self.presenceEvents(again), [("presence.join", "room", "ann")])
        # and it still watches after the resume
        await self.subscribed(h, "bob")
        self.assertEqual(self.presenceEvents(again), [("presence.join", "room", "bob")])
