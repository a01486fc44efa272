"""End to end, a cluster: real ``twistd wsservice --redis`` nodes on one real redis-server,
real WebSocket clients (protocol.md §2, §3, §5, §6).

Each test has its own redis-server (some kill and restart it) and its own nodes, started
as a user starts them; every wait is bounded and a failure shows what the nodes logged.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from . import live
from .clusternodes import Cluster, pushed

EVENT_MEMBERS = {"type", "event", "data", "seq"}
MESSAGE_MEMBERS = {"type", "topic", "data", "seq"}


class ClusterTests(TestCase):
    timeout = 60

    def make(self, aof: bool = False) -> Cluster:
        """This test's Redis (with its append-only file when ``aof``), nodes and clients."""
        self.cluster = Cluster(self, aof=aof)
        return self.cluster

    def resume(self, welcome: dict[str, Any], last_seq: int) -> dict[str, Any]:
        return {"session": welcome["session"], "token": welcome["token"], "last_seq": last_seq}

    def check_pushed(self, messages: list[dict[str, Any]], first_seq: int,
                     expected: list[tuple[str, Any]], what: str) -> None:
        """``messages`` are exactly ``expected`` (kind, data), numbered from ``first_seq``
        on, one after the other."""
        for m in messages:
            members = EVENT_MEMBERS if m.get("type") == "event" else MESSAGE_MEMBERS
            self.assertEqual(set(m), members, f"{what}: {m}")
        got = pushed(messages)
        want = [(first_seq + i, kind, data) for i, (kind, data) in enumerate(expected)]
        self.assertEqual(got, want, f"{what}: (seq, kind, data) differ\n{self.cluster.logs()}")

    # -- 1. topics ------------------------------------------------------------------------------

    async def test_publication_reaches_every_node_once_in_order(self) -> None:
        """20 publications from a client on A reach subscribers on A, B and C (and the
        publisher, subscribed too) exactly once each, in publish order, each numbered with
        the subscriber's own consecutive seqs."""
        c = self.make()
        a, b, n3 = await c.start("a", "b", "c")
        publisher, _ = await a.session()
        sub_a, _ = await a.session()
        sub_b, _ = await b.session()
        sub_c, _ = await n3.session()
        # sub_b's own seq starts elsewhere: 3 pushes first (seqs 1..3)
        sub_b.send({"type": "call", "id": "p", "method": "push",
                    "params": {"count": 3, "event": "before", "data": "x"}})
        first = await c.receive(sub_b, 4, "3 pushes and the push result")
        self.assertIn({"type": "result", "id": "p", "result": 3}, first)
        self.check_pushed([m for m in first if m["type"] == "event"], 1,
                          [("event:before", "x")] * 3, "sub_b's pushes")
        for client in (publisher, sub_a, sub_b, sub_c):
            await c.subscribe(client, "news")

        for i in range(20):
            publisher.send({"type": "publish", "topic": "news", "data": {"n": i}})
        expected = [("message:news", {"n": i}) for i in range(20)]
        for name, client, first_seq in (("publisher on a", publisher, 1),
                                        ("subscriber on a", sub_a, 1),
                                        ("subscriber on b", sub_b, 4),
                                        ("subscriber on c", sub_c, 1)):
            got = await c.receive(client, 20, f"20 publications at the {name}")
            self.check_pushed(got, first_seq, expected, name)
        for name, client in (("publisher", publisher), ("a", sub_a), ("b", sub_b),
                             ("c", sub_c)):
            await c.caught_up(client, f"the 20 publications at {name}")
        c.no_tracebacks()

    # -- 2. directed delivery -------------------------------------------------------------------

    async def test_tell_reaches_a_session_on_another_node(self) -> None:
        """``tell`` from a client on A to a session on B answers true and B's client gets
        the event; to an unknown id it answers false."""
        c = self.make()
        a, b = await c.start("a", "b")
        teller, _ = await a.session()
        target, target_welcome = await b.session()
        told = await c.call(teller, "tell", {"session": target_welcome["session"],
                                              "event": "note", "data": {"k": [1, "two"]}}, 1)
        self.assertIs(told, True)
        got = await c.next(target, "the told event")
        self.assertEqual(got, {"type": "event", "event": "note", "data": {"k": [1, "two"]},
                               "seq": 1})
        # a session telling itself: the event (its seq going on) and the answer, in
        # either order
        target.send({"type": "call", "id": 2, "method": "tell",
                     "params": {"session": target_welcome["session"], "event": "self",
                                "data": None}})
        got = await c.receive(target, 2, "the event told to itself and the answer")
        self.assertCountEqual(got, [{"type": "result", "id": 2, "result": True},
                                    {"type": "event", "event": "self", "data": None,
                                     "seq": 2}])
        unknown = await c.call(teller, "tell", {"session": "no-such-session-id-0123456789",
                                                "event": "note", "data": 1}, 3)
        self.assertIs(unknown, False)
        await c.caught_up(target, "the told events")
        await c.caught_up(teller, "the tells")
        c.no_tracebacks()

    # -- 3. drain -------------------------------------------------------------------------------

    async def test_drain_then_resume_on_another_node(self) -> None:
        """SIGTERM of node A closes its client 1001; the client resumes on B with its token
        and last_seq: resumed true, and everything pushed and published meanwhile, once each,
        in seq order; its subscription goes on."""
        c = self.make()
        a, b = await c.start("a", "b")
        client, welcome = await a.session()
        await c.subscribe(client, "t3")
        other, _ = await b.session()
        sid = welcome["session"]
        other.send({"type": "publish", "topic": "t3", "data": "before-1"})
        self.assertIs(await c.call(other, "tell", {"session": sid, "event": "ev",
                                                   "data": "before-2"}, "t0"), True)
        live_msgs = await c.receive(client, 2, "the messages before the drain")
        self.check_pushed(live_msgs, 1, [("message:t3", "before-1"), ("event:ev", "before-2")],
                          "before the drain")

        stopping = a.terminate()
        code, reason = await c.closed(client, "the client of the draining node")
        self.assertEqual(code, 1001, reason)
        # while the client is away, a client on B publishes to its topic and tells it
        meanwhile = []
        for i in range(3):
            other.send({"type": "publish", "topic": "t3", "data": f"away-m{i}"})
            meanwhile.append(("message:t3", f"away-m{i}"))
            self.assertIs(await c.call(other, "tell", {"session": sid, "event": "ev",
                                                       "data": f"away-e{i}"}, f"t{i + 1}"),
                          True)
            meanwhile.append(("event:ev", f"away-e{i}"))
        exit_code = await stopping
        self.assertIn(exit_code, (0, "SIGTERM"), a.text)
        self.assertIn("drained; 1 sessions stay resumable on the other nodes", a.text)
        # a drained node leaves the cluster at once: B adopts its session within a heartbeat
        await b.wait_log("adopted 1 sessions of node a", timeout=3)

        again = await b.client()
        resumed = await c.hello(again, resume=self.resume(welcome, 2))
        self.assertEqual((resumed["resumed"], resumed["session"]), (True, sid), resumed)
        replay = await c.receive(again, len(meanwhile), "the replay on node b")
        self.check_pushed(replay, 3, meanwhile, "the replay on node b")
        await c.caught_up(again, "the replay")
        # the subscription survived the move
        other.send({"type": "publish", "topic": "t3", "data": "after"})
        after = await c.receive(again, 1, "a publication after the resume")
        self.check_pushed(after, 3 + len(meanwhile), [("message:t3", "after")], "after")
        await c.caught_up(again, "the publication after the resume")
        c.no_tracebacks()

    # -- 4. node loss ---------------------------------------------------------------------------

    async def test_kill_9_of_a_node_loses_nothing(self) -> None:
        """kill -9 of node A while a client on B keeps publishing to its sessions' topic and
        telling them: one client resumes on B at once, the other after B adopted A's
        sessions; each gets every message after its last_seq exactly once, in order."""
        c = self.make()
        a, b = await c.start("a", "b")
        first, first_welcome = await a.session()
        second, second_welcome = await a.session()
        for client in (first, second):
            await c.subscribe(client, "t4")
        publisher, _ = await b.session()
        sids = [first_welcome["session"], second_welcome["session"]]
        expected: dict[str, list[tuple[str, Any]]] = {sid: [] for sid in sids}
        running = [True]
        told: list[Any] = []

        async def keep_publishing() -> None:
            n = 0
            while running[0]:
                n += 1
                publisher.send({"type": "publish", "topic": "t4", "data": n})
                for sid in sids:
                    expected[sid].append(("message:t4", n))
                for i, sid in enumerate(sids):
                    answer = await c.call(publisher, "tell",
                                          {"session": sid, "event": "tick", "data": n},
                                          f"{n}.{i}")
                    told.append(answer)
                    expected[sid].append(("event:tick", n))
                await live.sleep(0.05)
        publishing = Deferred.fromCoroutine(keep_publishing())
        try:
            await c.until(lambda: len(first.queue.pending) >= 6
                          and len(second.queue.pending) >= 6,
                          "both clients on node a to get some messages live")
            killed_at = time.monotonic()
            await a.kill()
            before: dict[str, list[dict[str, Any]]] = {}
            for sid, client in zip(sids, (first, second)):
                code, reason = await c.closed(client, "a client of the killed node")
                self.assertEqual(code, 1006, reason)
                before[sid] = list(client.queue.pending)
            # publications and tells go on into the sessions' replay buffers
            await live.sleep(0.5)

            # the first resumes at once, before B notices that A is gone
            last = {sid: (before[sid][-1]["seq"] if before[sid] else 0) for sid in sids}
            first_again = await b.client()
            welcome = await c.hello(first_again,
                                    resume=self.resume(first_welcome, last[sids[0]]))
            self.assertEqual((welcome["resumed"], welcome["session"]), (True, sids[0]),
                             welcome)

            # B adopts what is left of A's sessions once A's heartbeat has expired
            await b.wait_log("node a stopped announcing itself: adopting its sessions",
                             timeout=12)
            await b.wait_log("adopted 1 sessions of node a", timeout=5)
            adopted_after = time.monotonic() - killed_at
            self.assertLess(adopted_after, 10.0, "adoption took too long")

            second_again = await b.client()
            welcome = await c.hello(second_again,
                                    resume=self.resume(second_welcome, last[sids[1]]))
            self.assertEqual((welcome["resumed"], welcome["session"]), (True, sids[1]),
                             welcome)
            # a little more, live on B
            count = len(told)
            await c.until(lambda: len(told) >= count + 6, "a few more tells")
        finally:
            running[0] = False
            await publishing
        self.assertTrue(all(answer is True for answer in told), told)

        for sid, client, name in ((sids[0], first_again, "the session resumed at once"),
                                  (sids[1], second_again, "the adopted session")):
            want = expected[sid]
            had = before[sid]
            self.check_pushed(had, 1, want[:len(had)], f"{name}, before the kill")
            rest = await c.receive(client, len(want) - len(had),
                                   f"{name}: every message after seq {len(had)}")
            self.check_pushed(rest, len(had) + 1, want[len(had):], f"{name}, after the kill")
            await c.caught_up(client, f"{name}'s messages")
        c.no_tracebacks()

    # -- 5. Redis loss --------------------------------------------------------------------------

    async def test_redis_loss_and_return(self) -> None:
        """While Redis is down: /healthz 503 with a reason, a new hello is closed 1013, an
        open session goes on (echo, ping, local pushes); once Redis is back (restarted with
        its append-only file) the node takes new sessions again."""
        c = self.make(aof=True)
        (a,) = await c.start("a")
        client, _ = await a.session()
        await c.subscribe(client, "t5")
        c.redis.kill()

        body = await a.wait_health(503, timeout=10)
        self.assertIsInstance(body, dict, body)
        self.assertEqual(body.get("status"), "unavailable", body)
        self.assertIsInstance(body.get("reason"), str, body)
        self.assertTrue(body["reason"], body)

        refused = await a.client()
        refused.send({"type": "hello"})
        code, reason = await c.closed(refused, "a new hello while Redis is down")
        self.assertEqual(code, 1013, reason)

        # the open session stays open
        self.assertEqual(await c.call(client, "echo", {"still": "here"}, "e1"),
                         {"still": "here"})
        client.send({"type": "ping", "data": "p1"})
        self.assertEqual(await c.next(client, "a pong"), {"type": "pong", "data": "p1"})
        # and local delivery goes on: pushes and this node's publications
        client.send({"type": "call", "id": "push", "method": "push",
                     "params": {"count": 2, "event": "local", "data": 7}})
        got = await c.receive(client, 3, "2 pushes and their result while Redis is down")
        self.assertIn({"type": "result", "id": "push", "result": 2}, got)
        self.check_pushed([m for m in got if m["type"] != "result"], 1,
                          [("event:local", 7)] * 2, "pushes while Redis is down")
        client.send({"type": "publish", "topic": "t5", "data": "local"})
        got = await c.receive(client, 1, "a local publication while Redis is down")
        self.check_pushed(got, 3, [("message:t5", "local")], "publication while Redis is down")
        self.assertFalse(client.closed.called)

        c.redis.restart()
        await a.wait_health(200, timeout=10)
        await a.wait_log("node a: back in step with Redis at")
        fresh, welcome = await a.session()
        self.assertFalse(welcome["resumed"])
        self.assertEqual(await c.call(fresh, "echo", 1, "e2"), 1)
        # the session that lived through it is still open and served
        self.assertEqual(await c.call(client, "echo", "after", "e3"), "after")
        await c.caught_up(client, "the echo after Redis came back")
        c.no_tracebacks()

    async def test_redis_loss_never_reports_lost_messages_as_kept(self) -> None:
        """Pushes made while Redis was down were never kept: once Redis is back, a resume
        from after them is exact, a resume from before them answers resumed false."""
        c = self.make(aof=True)
        a, b = await c.start("a", "b")
        client, welcome = await a.session()
        teller, _ = await b.session()
        self.assertIs(await c.call(teller, "tell", {"session": welcome["session"],
                                                    "event": "ev", "data": "kept"}, 1), True)
        self.check_pushed(await c.receive(client, 1, "a tell"), 1, [("event:ev", "kept")],
                          "before Redis went down")
        c.redis.kill()
        await a.wait_health(503)
        client.send({"type": "call", "id": "p", "method": "push",
                     "params": {"count": 2, "event": "local", "data": 0}})
        got = await c.receive(client, 3, "2 pushes while Redis is down")
        self.check_pushed([m for m in got if m["type"] == "event"], 2,
                          [("event:local", 0)] * 2, "pushes while Redis is down")
        c.redis.restart()
        for node in (a, b):
            await node.wait_log(f"node {node.name}: back in step with Redis at", timeout=15)
            await node.wait_health(200)
        self.assertIs(await c.call(teller, "tell", {"session": welcome["session"],
                                                    "event": "ev", "data": "after"}, 2), True)
        self.check_pushed(await c.receive(client, 1, "a tell after Redis came back"), 4,
                          [("event:ev", "after")], "after Redis came back")
        client.dropConnection(abort=True)
        await c.closed(client, "the dropped client")

        # from seq 3 on, Redis kept everything: exact
        again = await b.client()
        answer = await c.hello(again, resume=self.resume(welcome, 3))
        self.assertEqual((answer["resumed"], answer["session"]), (True, welcome["session"]),
                         answer)
        self.check_pushed(await c.receive(again, 1, "the replay after seq 3"), 4,
                          [("event:ev", "after")], "the replay after seq 3")
        await c.caught_up(again, "the replay after seq 3")
        again.dropConnection(abort=True)
        await c.closed(again, "the dropped client")
        # seqs 2 and 3 were never kept: no exact resume from seq 1
        await self.check_not_resumed(c, a, welcome, 1)
        c.no_tracebacks()

    # -- 6. Redis restarted with its append-only file -------------------------------------------

    async def test_redis_restarted_with_aof_keeps_sessions_exact(self) -> None:
        """A detached session with pushed messages outlives kill -9 of Redis and its restart
        from the append-only file: it resumes on the other node, resumed true, exact replay."""
        c = self.make(aof=True)
        a, b = await c.start("a", "b")
        client, welcome = await a.session()
        sid = welcome["session"]
        await c.subscribe(client, "t6")
        teller, _ = await b.session()
        expected: list[tuple[str, Any]] = []
        for i in range(5):
            self.assertIs(await c.call(teller, "tell", {"session": sid, "event": "ev",
                                                        "data": i}, f"a{i}"), True)
            expected.append(("event:ev", i))
        teller.send({"type": "publish", "topic": "t6", "data": "m"})
        expected.append(("message:t6", "m"))
        got = await c.receive(client, 6, "the messages while attached")
        self.check_pushed(got, 1, expected, "while attached")

        client.dropConnection(abort=True)
        await c.closed(client, "the dropped client")
        key = f"wss:s:{sid}"
        await c.until(lambda: c.redis.cli("HGET", key, "det").strip() not in ("", "(nil)"),
                      lambda: f"node a to mark the session detached in Redis: "
                              f"{c.redis.dump('wss:s:*')}")
        for i in range(2):
            self.assertIs(await c.call(teller, "tell", {"session": sid, "event": "ev",
                                                        "data": f"away{i}"}, f"b{i}"), True)
            expected.append(("event:ev", f"away{i}"))
        teller.send({"type": "publish", "topic": "t6", "data": "away-m"})
        expected.append(("message:t6", "away-m"))
        # the publication is in Redis once a call sent after it is answered (one batch order)
        self.assertEqual(await c.call(teller, "tell", {"session": "nobody-0123456789abcdef",
                                                       "event": "x", "data": 0}, "sync"), False)

        c.redis.kill()
        c.redis.restart()
        for node in (a, b):
            await node.wait_log(f"node {node.name}: back in step with Redis at", timeout=15)
            await node.wait_health(200)

        again = await b.client()
        resumed = await c.hello(again, resume=self.resume(welcome, 3))
        self.assertEqual((resumed["resumed"], resumed["session"]), (True, sid), resumed)
        replay = await c.receive(again, len(expected) - 3, "the replay after seq 3")
        self.check_pushed(replay, 4, expected[3:], "the replay after Redis's restart")
        await c.caught_up(again, "the replay")
        teller.send({"type": "publish", "topic": "t6", "data": "after"})
        after = await c.receive(again, 1, "a publication after the resume")
        self.check_pushed(after, len(expected) + 1, [("message:t6", "after")], "after")
        c.no_tracebacks()

    # -- 7. Redis restarted empty ---------------------------------------------------------------

    async def check_not_resumed(self, c: Cluster, node: Any, welcome: dict[str, Any],
                                last_seq: int) -> None:
        again = await node.client()
        answer = await c.hello(again, resume=self.resume(welcome, last_seq))
        self.assertIs(answer["resumed"], False, answer)
        self.assertNotEqual(answer["session"], welcome["session"], answer)
        self.assertNotEqual(answer["token"], welcome["token"], answer)
        # a new session: nothing replayed, its seq starts at 1
        await c.caught_up(again, "the welcome of a session that could not be resumed")
        again.send({"type": "call", "id": "p", "method": "push",
                    "params": {"count": 1, "event": "fresh", "data": None}})
        got = await c.receive(again, 2, "a push to the new session")
        self.assertIn({"type": "event", "event": "fresh", "data": None, "seq": 1}, got)

    async def test_redis_restarted_empty_after_node_killed(self) -> None:
        """A session created on A, A killed, Redis restarted empty: a resume on B answers
        resumed false (a new session), never a replay."""
        c = self.make(aof=True)  # so that only the emptying loses the session
        a, b = await c.start("a", "b")
        client, welcome = await a.session()
        teller, _ = await b.session()
        for i in range(3):
            self.assertIs(await c.call(teller, "tell", {"session": welcome["session"],
                                                        "event": "ev", "data": i}, i), True)
        self.check_pushed(await c.receive(client, 3, "the tells"), 1,
                          [("event:ev", i) for i in range(3)], "before the kill")
        await a.kill()
        await c.closed(client, "the client of the killed node")
        c.redis.restart(empty=True)
        await b.wait_log("node b: back in step with Redis at", timeout=15)
        await b.wait_health(200)
        await self.check_not_resumed(c, b, welcome, 1)
        c.no_tracebacks()

    async def test_redis_restarted_empty_after_node_stopped(self) -> None:
        """A session whose node was stopped (SIGTERM, no other node to adopt it), Redis
        restarted empty: a resume on a node started afterwards answers resumed false."""
        c = self.make(aof=True)  # so that only the emptying loses the session
        (a,) = await c.start("a")
        client, welcome = await a.session()
        client.send({"type": "call", "id": "p", "method": "push",
                     "params": {"count": 3, "event": "ev", "data": 1}})
        await c.receive(client, 4, "3 pushes and their result")
        stopping = a.terminate()
        code, reason = await c.closed(client, "the client of the stopped node")
        self.assertEqual(code, 1001, reason)
        self.assertIn(await stopping, (0, "SIGTERM"), a.text)
        c.redis.restart(empty=True)
        (b,) = await c.start("b")
        await self.check_not_resumed(c, b, welcome, 2)
        c.no_tracebacks()

    # -- unix:// Redis URL ----------------------------------------------------------------------

    async def test_redis_over_unix_socket(self) -> None:
        """``--redis unix:///path/redis.sock?db=0`` makes a working node."""
        c = self.make()
        (a,) = await c.start("u", redis_url=c.redis.unix_url)
        self.assertIn("node u: connected to Redis at", a.text)
        client, welcome = await a.session()
        self.assertFalse(welcome["resumed"])
        self.assertEqual(await c.call(client, "echo", {"over": "unix"}, 1), {"over": "unix"})
        self.assertIn(f"wss:s:{welcome['session']}", c.redis.cli("KEYS", "wss:s:*"))
        c.no_tracebacks()
