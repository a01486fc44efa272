#!/usr/bin/env python
"""Soak test of a wsservice cluster: the single-node soak's clients and checks (soak.py),
spread over several nodes sharing one Redis, while nodes are killed.

    .venv/bin/python bench/soak_cluster.py [--nodes 3] [--kill-every 20] [soak.py options]

It starts a redis-server (loopback, a free port, no persistence) and ``--nodes`` real
``twistd wsservice --redis ...`` nodes; every (re)connection of a client goes to a node
picked at random among those running, so resumes land on random nodes. Every
``--kill-every`` seconds one node is killed with SIGKILL and started again (on a new port):
its clients see their connections drop and resume elsewhere. The checks are soak.py's:
every session's seqs exactly 1..last, once each and in order across resumes; every call
answered once, rightly; every confirmed publication reaching every subscriber once. Exit
status 0 only when nothing was lost, duplicated or out of order and nothing unexpected
happened. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import soak  # noqa: E402  (the single-node soak: clients, checks, report)
from soak import STATS, ServerProcess, SoakClient, twistd_path  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint  # noqa: E402

REDIS = "/usr/bin/redis-server"


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ClusterClient(SoakClient):
    """A soak client that connects to a random live node and takes a node's death in stride."""

    node: int = -1
    orphan_calls = False

    def numbered(self, msg: dict) -> None:
        if msg.get("type") == "call" and self.orphan_calls:
            data = msg.get("params")
            asked = self.asks.get(data.get("a")) if isinstance(data, dict) else None
            if asked is not None and asked < self.killed_at:
                self.stale_answers += 1
                STATS.c["calls_orphaned_by_a_move"] += 1
        super().numbered(msg)

    def connect(self) -> None:
        before = self.node
        self.node = self.run._last_pick = self.run.pick()
        if before >= 0 and self.node != before:
            # the session moves to another node: a server call its old node made and the
            # client had not received is replayed here, and its answer refused (it belongs
            # to the node that made it, where the move failed it: docs/cluster.md)
            self.orphan_calls = True
            self.killed_at = time.monotonic()
            STATS.c["moves_between_nodes"] += 1
        super().connect()

    def closed(self, conn: Any, wasClean: bool, code: Any, reason: Any) -> None:
        if conn is self.conn and self.expect_close is None and self.node in self.run.killed:
            # its node was killed: a drop like any other, then resume on another node
            STATS.c["node_kill_drops"] += 1
            # server calls in flight there died with it: one replayed on resume is answered
            # to a node that never made it, which refuses the answer (protocol.md section 3)
            self.orphan_calls = True
            self.killed_at = time.monotonic()
            self.conn = None
            self._lose_connection()
            reactor.callLater(self.rng.uniform(0.0, 0.5), self.connect)
            return
        super().closed(conn, wasClean, code, reason)


class ClusterSoak(soak.Soak):
    """soak.Soak over a cluster: Redis, nodes, and the killer."""

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.redis: subprocess.Popen | None = None
        self.redis_port = free_port()
        self.nodes: list[ServerProcess | None] = [None] * args.nodes
        self.ports: list[int] = [0] * args.nodes
        self.killed: set[int] = set()  # indexes of nodes killed whose clients may still drop
        self.kills = 0
        self._last_pick = 0

    def pick(self) -> int:
        live = [i for i, n in enumerate(self.nodes) if n is not None and n.exit is None
                and self.ports[i] and i not in self.killed]
        return random.choice(live) if live else 0

    @property  # type: ignore[override]
    def endpoint(self) -> Any:
        return TCP4ClientEndpoint(reactor, "127.0.0.1", self.ports[self._picked()], timeout=10)

    @endpoint.setter
    def endpoint(self, value: Any) -> None:
        pass  # soak.Soak sets one endpoint; here each connection picks its node

    def _picked(self) -> int:
        # the client that is connecting picked its node just before (ClusterClient.connect)
        return self._last_pick

    async def start_node(self, i: int) -> None:
        fd, log_path = tempfile.mkstemp(prefix=f"wsservice-soak-node{i}-", suffix=".log")
        os.close(fd)
        node = ServerProcess(log_path)
        argv = [twistd_path(), "-n", "--pidfile=", "wsservice", "--listen",
                "tcp:0:interface=127.0.0.1", "--redis", f"redis://127.0.0.1:{self.redis_port}/0",
                "--node-id", f"soak{i}", "--rate", "100000", "--burst", "100000",
                "--max-sessions", "20000"]
        reactor.spawnProcess(node, argv[0], argv, env=dict(os.environ), path=soak.ROOT)
        self.nodes[i] = node  # known from now on, so that stop_all reaches it on any failure
        url = await node.ready.addTimeout(30, reactor)
        # serving once Redis is in step too
        deadline = time.monotonic() + 30
        while node.log.flush() or b"connected to Redis" not in open(log_path, "rb").read():
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {i} did not reach Redis: see {log_path}")
            await task.deferLater(reactor, 0.05)
        self.ports[i] = int(url.split(":")[2].split("/")[0])
        print(f"node soak{i} pid {node.transport.pid} on {url} (log {log_path})", flush=True)

    async def start_server(self) -> str:
        self.redis = subprocess.Popen(
            [REDIS, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--loglevel", "warning"], stdout=subprocess.DEVNULL)
        reactor.addSystemEventTrigger("before", "shutdown", self.stop_all)
        await task.deferLater(reactor, 0.3)
        print(f"redis-server pid {self.redis.pid} on 127.0.0.1:{self.redis_port}", flush=True)
        await defer.gatherResults([defer.Deferred.fromCoroutine(self.start_node(i))
                                   for i in range(self.args.nodes)])
        self.killer = task.LoopingCall(lambda: defer.Deferred.fromCoroutine(self.kill_one()))
        self.killer.start(self.args.kill_every, now=False)
        return f"ws://127.0.0.1:{self.ports[0]}/ws"

    async def kill_one(self) -> None:
        if any(c.stopping for c in self.clients):
            return  # the run is ending: the drain must find every node up
        i = random.randrange(self.args.nodes)
        node = self.nodes[i]
        if node is None or node.exit is not None:
            return
        self.killed.add(i)
        self.kills += 1
        print(f"  kill -9 node soak{i} (pid {node.transport.pid})", flush=True)
        node.transport.signalProcess("KILL")
        await node.ended
        self.ports[i] = 0
        await task.deferLater(reactor, 1.0)
        await self.start_node(i)
        # its clients have all seen their drop by now
        await task.deferLater(reactor, 2.0)
        self.killed.discard(i)

    def stop_all(self) -> None:
        for node in self.nodes:
            if node is not None and node.exit is None:
                try:
                    node.transport.signalProcess("TERM")
                except Exception:
                    pass
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()

    async def main(self) -> None:
        self.server = None  # soak.Soak's own server handling is for one node
        url = await self.start_server()
        self.args.server = url
        await super().main()
        if self.killer.running:
            self.killer.stop()
        print(f"nodes killed -9 and restarted: {self.kills}; connections lost with them: "
              f"{STATS.c['node_kill_drops']}; resumes on another node than the last: "
              f"{STATS.c['moves_between_nodes']}, server calls replayed there after the move "
              f"(their answers refused, as docs/cluster.md says): "
              f"{STATS.c['calls_orphaned_by_a_move']}", flush=True)
        for node in self.nodes:
            if node is not None:
                for line in node.trouble[:soak.EXAMPLES]:
                    STATS.error("server_log", line)
        if self.kills == 0:
            STATS.error("no_kills", "no node was killed: the run was too short")
        if STATS.errors:
            self.exit_code = 1
        self.stop_all()


def main(argv: list[str]) -> int:
    nodes, kill_every, rest = 3, 20.0, []
    it = iter(argv)
    for a in it:
        if a == "--nodes":
            nodes = int(next(it))
        elif a == "--kill-every":
            kill_every = float(next(it))
        else:
            rest.append(a)
    args = soak.parse(rest)
    args.nodes, args.kill_every = nodes, kill_every
    soak.SoakClient = ClusterClient  # type: ignore[misc]
    original = soak.Soak
    soak.Soak = ClusterSoak  # type: ignore[misc]
    try:
        return soak.run(args)
    finally:
        soak.Soak = original  # type: ignore[misc]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
