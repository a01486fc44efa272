"""Topics in memory: subscribe/unsubscribe/publish, authorizers, limits, fan-out seqs."""

from __future__ import annotations

from typing import Any

import orjson
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from wsservice import Handler, ITopicAuthorizer, Settings, call
from wsservice.testing import FakeClient, ServiceHarness


@implementer(ITopicAuthorizer)
class OnlyPublic(Handler):
    """Subscribing needs a 'public.' topic; publishing needs meta role=writer."""

    def allowSubscribe(self, session: Any, topic: str) -> bool:
        return topic.startswith("public.")

    def allowPublish(self, session: Any, topic: str) -> bool:
        return session.meta.get("role") == "writer"

    @call("announce")
    def announce(self, session: Any, params: Any) -> int:
        return session.publish("public.news", params)


class TopicTests(SynchronousTestCase):
    """The client side of topics."""

    def setUp(self) -> None:
        self.harness = ServiceHarness([OnlyPublic()], Settings(max_subscriptions=3))

    def client(self, **meta: Any) -> FakeClient:
        c = self.harness.connect()
        c.hello(meta=meta)
        return c

    def subscribe(self, c: FakeClient, topic: str, id: Any = "s") -> dict:
        c.send({"type": "subscribe", "topic": topic, "id": id})
        return c.next()

    def test_fan_out_with_each_subscribers_own_seq(self) -> None:
        writer = self.client(role="writer")
        readers = [self.client() for _ in range(3)]
        for r in readers:
            self.assertEqual(self.subscribe(r, "public.a"), {"type": "result", "id": "s",
                                                              "result": None})
        # reader 0 had two pushes already: its copy is stamped with its own next seq
        first = self.harness.service.sessions[readers[0].connection.session.id]
        first.push("before", 1)
        first.push("before", 2)
        readers[0].received()
        writer.send({"type": "publish", "topic": "public.a", "data": {"n": 1}, "id": 7})
        self.assertEqual(writer.next(), {"type": "result", "id": 7, "result": None})
        for r, seq in zip(readers, (3, 1, 1)):
            self.assertEqual(r.next(), {"type": "message", "topic": "public.a",
                                        "data": {"n": 1}, "seq": seq})
        # the writer is not subscribed: nothing for it
        self.assertEqual(writer.received(), [])

    def test_sender_gets_its_own_publication_when_subscribed(self) -> None:
        w = self.client(role="writer")
        self.assertEqual(self.subscribe(w, "public.a")["type"], "result")
        w.send({"type": "publish", "topic": "public.a", "data": 1})
        self.assertEqual(w.next(), {"type": "message", "topic": "public.a", "data": 1,
                                    "seq": 1})

    def test_unsubscribe_stops_delivery(self) -> None:
        w, r = self.client(role="writer"), self.client()
        self.subscribe(r, "public.a")
        r.send({"type": "unsubscribe", "topic": "public.a", "id": "u"})
        self.assertEqual(r.next(), {"type": "result", "id": "u", "result": None})
        w.send({"type": "publish", "topic": "public.a", "data": 1})
        self.assertEqual(r.received(), [])
        self.assertNotIn("public.a", self.harness.service.broker.topics)

    def test_authorizer_refuses_subscribe_and_publish(self) -> None:
        c = self.client()
        reply = self.subscribe(c, "private.x", 3)
        self.assertEqual((reply["error"]["code"], reply["id"]), ("forbidden", 3))
        c.send({"type": "publish", "topic": "public.a", "data": 1, "id": 4})
        reply = c.next()
        self.assertEqual((reply["error"]["code"], reply["id"]), ("forbidden", 4))
        # refusals are application errors: they do not spend the bad-message budget
        self.assertEqual(self.harness.service.sessions[
            next(iter(self.harness.service.sessions))].bad_messages, 0)

    def test_too_many_subscriptions(self) -> None:
        c = self.client()
        for i in range(3):
            self.assertEqual(self.subscribe(c, f"public.{i}")["type"], "result")
        self.assertEqual(self.subscribe(c, "public.0")["type"], "result")  # again: no-op
        reply = self.subscribe(c, "public.9", "over")
        self.assertEqual((reply["error"]["code"], reply["id"]), ("too_many_subscriptions",
                                                                 "over"))

    def test_topic_names_validated(self) -> None:
        c = self.client()
        for topic in ("", 5, None, "t" * 257):
            c.send({"type": "subscribe", "topic": topic, "id": 1})
            self.assertEqual(c.next()["error"]["code"], "bad_message")

    def test_without_id_no_answer(self) -> None:
        c = self.client()
        c.send({"type": "subscribe", "topic": "public.a"})
        c.send({"type": "subscribe", "topic": "private.a"})  # refused, but answered: error
        self.assertEqual([m["type"] for m in c.received()], ["error"])

    def test_handler_and_service_publish(self) -> None:
        r = self.client()
        self.subscribe(r, "public.news")
        # the handler answers with publish()'s Deferred: it fires (with None) once the
        # publication is accepted, here at once
        self.assertEqual(r.call("announce", "hello", id=1)["result"], None)
        self.assertEqual(r.next()["data"], "hello")
        self.assertIsNone(self.successResultOf(self.harness.service.publish("public.news", [1])))
        self.assertIsNone(self.successResultOf(self.harness.service.publish("nobody.listens",
                                                                            [1])))
        self.assertEqual(r.next(), {"type": "message", "topic": "public.news", "data": [1],
                                    "seq": 2})

    def test_publication_encoded_once(self) -> None:
        readers = [self.client() for _ in range(50)]
        for r in readers:
            self.subscribe(r, "public.a")
        calls = []
        original = orjson.dumps

        def counting(*args: Any, **kwargs: Any) -> bytes:
            calls.append(args)
            return original(*args, **kwargs)

        from wsservice import wire
        self.patch(wire, "_dumps", counting)
        self.harness.service.publish("public.a", {"big": list(range(100))})
        # topic and data, once each, for 50 subscribers
        self.assertEqual(len(calls), 2)
        frames = {r.link.frames[-1] for r in readers}
        self.assertEqual(len(frames), 1)  # all at seq 1 here: the same bytes

    def test_subscriptions_end_with_the_session(self) -> None:
        c = self.client()
        self.subscribe(c, "public.a")
        c.send({"type": "bye"})
        self.assertEqual(self.harness.service.broker.topics, {})
