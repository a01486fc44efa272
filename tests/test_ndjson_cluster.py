"""NDJSON streams in a cluster: real ``twistd wsservice --redis --listen-ndjson`` nodes on a
real redis-server (tests/clusternodes.py), NDJSON and WebSocket clients on different nodes."""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import TestCase

from . import ndjsonclient
from .clusternodes import Cluster, Node


class NDJSONClusterTests(TestCase):
    timeout = 90

    async def node(self, cluster: Cluster, name: str) -> tuple[Node, str]:
        """Node ``name`` with an NDJSON listener on a unix socket; (node, its address)."""
        sock = os.path.join(cluster.cwd, f"{name}.sock")
        [node] = await cluster.start(name, args=("--listen-ndjson", f"unix:{sock}"))
        await node.wait_log("listening (NDJSON) on")
        return node, f"unix:{sock}"

    async def stream(self, cluster: Cluster, address: str) -> Any:
        return cluster.clients.add(await ndjsonclient.connect(address))  # type: ignore

    async def test_topics_tell_drain_and_resume_on_another_node(self) -> None:
        """An NDJSON session on node A hears publications and tells from node B; A's drain
        closes its stream with the close line 1001; it resumes over NDJSON on B with what
        it missed."""
        c = Cluster(self)
        a, on_a = await self.node(c, "a")
        b, on_b = await self.node(c, "b")
        line = await self.stream(c, on_a)
        welcome = await c.hello(line)
        self.assertEqual(welcome["heartbeat"], 0)
        sid = welcome["session"]
        await c.subscribe(line, "t")
        ws, _ = await b.session()
        await c.subscribe(ws, "t")
        ws.send({"type": "publish", "topic": "t", "data": "from b"})
        for client in (line, ws):
            self.assertEqual(await c.next(client, "the publication from b"),
                             {"type": "message", "topic": "t", "data": "from b", "seq": 1})
        self.assertIs(await c.call(ws, "tell", {"session": sid, "event": "ev", "data": 1}, 1),
                      True)
        self.assertEqual(await c.next(line, "the told event"),
                         {"type": "event", "event": "ev", "data": 1, "seq": 2})

        stopping = a.terminate()
        self.assertEqual(await c.closed(line, "the stream of the draining node"),
                         (1001, "server shutting down"))
        ws.send({"type": "publish", "topic": "t", "data": "while away"})
        self.assertIn(await stopping, (0, "SIGTERM"), a.text)
        await b.wait_log("adopted 1 sessions of node a", timeout=3)

        again = await self.stream(c, on_b)
        resumed = await c.hello(again, resume={"session": sid, "token": welcome["token"],
                                               "last_seq": 2})
        self.assertEqual((resumed["resumed"], resumed["session"], resumed["heartbeat"]),
                         (True, sid, 0))
        self.assertEqual(await c.next(again, "the replay on node b"),
                         {"type": "message", "topic": "t", "data": "while away", "seq": 3})
        await c.caught_up(again, "the replay")
        again.send({"type": "bye"})
        self.assertEqual(await c.closed(again, "the stream after bye"), (1000, "bye"))
        c.no_tracebacks()
