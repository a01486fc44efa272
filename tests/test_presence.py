"""Presence (protocol.md §7) end to end: real sockets and WebSocket clients on one process,
and real ``twistd`` nodes on a real redis-server for the cluster.

The seam-level behaviour (members, joins, leaves, replay, the latest subscribe deciding) is
the contract suite's (tests/contracts.py), run on the in-memory and the Redis seams.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase
from wsservice import Settings, makeService
from wsservice.demo import DemoApp

from . import live
from .clusternodes import Cluster
from .principals import ByName, NoSecrets
from .wsclient import connect


def names(members: list[dict[str, Any]]) -> list[Any]:
    return sorted(str(m["user"]) for m in members)


async def request(client: Any, message: dict[str, Any]) -> dict[str, Any]:
    """Send a request and return the next message (its answer)."""
    client.send(message)
    return await client.next()


class SingleNodeTests(TestCase):
    """One process, a real TCP listener."""

    async def serve(self) -> tuple[Any, str]:
        service = makeService([DemoApp(), NoSecrets()], [live.LOOPBACK], Settings(),
                              authenticator=ByName())
        service.startService()
        self.addCleanup(service.sessions.endAll)
        self.addCleanup(service.stopService)
        port = await service.listeners[0].whenListening
        self.clients = live.Clients(self)
        return service, f"127.0.0.1:{port.getHost().port}"

    async def session(self, address: str, **hello: Any) -> Any:
        client = self.clients.add(await connect(address))
        await client.hello(**hello)
        return client

    async def test_members_name_users_and_public_meta_only(self) -> None:
        service, address = await self.serve()
        ann = await self.session(address, auth="ann", meta={"public": {"colour": "red"},
                                                            "private": "not shown"})
        anon = await self.session(address)
        for client in (ann, anon):
            self.assertEqual(await request(client, {"type": "subscribe", "topic": "room",
                                                    "id": 1}),
                             {"type": "result", "id": 1, "result": None})
        answer = await request(anon, {"type": "presence", "topic": "room", "id": "p"})
        self.assertEqual(set(answer), {"type", "id", "result"})
        members = {m["user"]: m for m in answer["result"]["members"]}
        self.assertEqual(members, {
            "ann": {"client": members["ann"]["client"], "user": "ann",
                    "meta": {"colour": "red"}},
            None: {"client": members[None]["client"], "user": None, "meta": None}})
        self.assertNotEqual(members["ann"]["client"], members[None]["client"])
        for m in members.values():
            self.assertEqual(set(m), {"client", "user", "meta"})
        # the handlers' view is the same
        self.assertEqual(names(await service.sessions.presence("room")), ["None", "ann"])

    async def test_presence_of_a_forbidden_topic(self) -> None:
        _, address = await self.serve()
        client = await self.session(address)
        answer = await request(client, {"type": "presence", "topic": "secret.plans", "id": 3})
        self.assertEqual((answer["type"], answer["id"], answer["error"]["code"]),
                         ("error", 3, "forbidden"))
        answer = await request(client, {"type": "subscribe", "topic": "secret.plans",
                                        "id": 4, "presence": True})
        self.assertEqual(answer["error"]["code"], "forbidden")
        # a malformed request is answered with its id, and the connection stays
        answer = await request(client, {"type": "presence", "topic": "", "id": 5})
        self.assertEqual((answer["type"], answer["id"], answer["error"]["code"]),
                         ("error", 5, "bad_message"))
        answer = await request(client, {"type": "presence", "topic": "room", "id": 6})
        self.assertEqual(answer, {"type": "result", "id": 6, "result": {"members": []}})

    async def test_joins_and_leaves_over_the_wire(self) -> None:
        _, address = await self.serve()
        watcher = await self.session(address, auth="wat")
        await request(watcher, {"type": "subscribe", "topic": "room", "id": 1,
                                "presence": True})
        bob = await self.session(address, auth="bob")
        await request(bob, {"type": "subscribe", "topic": "room", "id": 1})
        join = await watcher.next()
        self.assertEqual(set(join), {"type", "event", "data", "seq"})
        self.assertEqual((join["event"], join["data"]["topic"], join["data"]["member"]["user"],
                          join["seq"]), ("presence.join", "room", "bob", 1))
        bob.send({"type": "bye"})
        leave = await watcher.next()
        self.assertEqual((leave["event"], leave["data"]["member"], leave["seq"]),
                         ("presence.leave", join["data"]["member"], 2))


class ClusterTests(TestCase):
    """Real nodes on a real Redis: presence is cluster-wide."""

    timeout = 90

    async def test_presence_across_nodes_and_a_node_crash(self) -> None:
        c = Cluster(self)
        a, b = await c.start("a", "b", args=("--resume-ttl", "2"))
        watcher, _ = await a.session(meta={"public": {"name": "wat"}})
        watcher.send({"type": "subscribe", "topic": "room", "id": "s", "presence": True})
        self.assertEqual(await c.next(watcher, "subscribe's answer"),
                         {"type": "result", "id": "s", "result": None})
        other, _ = await b.session(meta={"public": {"name": "bob"}})
        await c.subscribe(other, "room")
        join = await c.next(watcher, "bob's join, from node b")
        self.assertEqual((join["event"], join["data"]["member"]["meta"], join["seq"]),
                         ("presence.join", {"name": "bob"}, 1))
        for client, node in ((watcher, "a"), (other, "b")):
            client.send({"type": "presence", "topic": "room", "id": "p"})
            answer = await c.next(client, f"presence on node {node}")
            self.assertEqual(sorted(m["meta"]["name"] for m in answer["result"]["members"]),
                             ["bob", "wat"], node)
        # node b dies: bob has not left while his session may still be resumed
        await b.kill()
        watcher.send({"type": "presence", "topic": "room", "id": "q"})
        answer = await c.next(watcher, "presence right after the crash")
        self.assertEqual(sorted(m["meta"]["name"] for m in answer["result"]["members"]),
                         ["bob", "wat"])
        # a adopts b's sessions once b stops announcing itself, and ends bob's after its
        # resume_ttl: only then does he leave
        leave = await c.next(watcher, "bob's leave, once his session ended", timeout=40)
        self.assertEqual((leave["event"], leave["data"]["member"], leave["seq"]),
                         ("presence.leave", join["data"]["member"], 2))
        self.assertIn("adopted 1 sessions of node b", a.text)
        watcher.send({"type": "presence", "topic": "room", "id": "r"})
        answer = await c.next(watcher, "presence after bob left")
        self.assertEqual([m["meta"]["name"] for m in answer["result"]["members"]], ["wat"])
        c.no_tracebacks()


class CostTests(TestCase):
    """What one client can make the server do with presence is bounded."""

    def test_a_large_answer_costs_its_asker_more_of_its_rate(self) -> None:
        from twisted.internet.task import Clock

        from wsservice.service import PRESENCE_MEMBERS_PER_TOKEN
        from wsservice.testing import ServiceHarness
        h = ServiceHarness([], Settings(rate=10, burst=20), clock=Clock())
        self.addCleanup(h.stop)
        for n in range(PRESENCE_MEMBERS_PER_TOKEN * 30):  # 30 tokens' worth of members
            member = h.connect(peer=f"tcp4:192.0.{n // 200}.{n % 200}:{n}")
            member.send({"type": "hello"})
            member.send({"type": "subscribe", "topic": "big"})
        asker = h.connect()
        asker.send({"type": "hello"})
        asker.next()
        asker.send({"type": "presence", "topic": "big", "id": 1})
        self.assertEqual(len(asker.next()["result"]["members"]), PRESENCE_MEMBERS_PER_TOKEN * 30)
        asker.send({"type": "ping"})  # the bucket is 10 tokens below empty now
        self.assertEqual(asker.next()["error"]["code"], "rate_limited")
        h.clock.advance(1.05)  # still below empty: 10 per second refill
        asker.send({"type": "ping"})
        self.assertEqual(asker.next()["error"]["code"], "rate_limited")
        h.clock.advance(1.0)
        asker.send({"type": "ping", "data": 1})
        self.assertEqual(asker.next(), {"type": "pong", "data": 1})
