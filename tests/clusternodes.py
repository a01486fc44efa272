"""Cluster nodes for end-to-end tests: real ``twistd wsservice --redis`` processes sharing a
real redis-server (tests/redisserver.py), their WebSocket clients, and bounded waits that
fail with what each node logged."""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson
from twisted.internet import reactor
from twisted.internet.defer import Deferred, TimeoutError
from twisted.trial.unittest import FailTest

from . import live, processes
from .redisserver import RedisServer
from .wsclient import Client, connect, http

TWISTD = [sys.executable, processes.TWISTD]
LOOPBACK = "tcp:0:interface=127.0.0.1"
LOG_TAIL = 4000  # characters of each node's log in a failure message


class Node:
    """One ``twistd -n --pidfile= wsservice --redis URL --node-id NAME`` process."""

    def __init__(self, cluster: Cluster, name: str, redis_url: str,
                 args: tuple[str, ...] = ()) -> None:
        self.cluster = cluster
        self.name = name
        self.redis_url = redis_url
        self.args = args
        self.child: processes.Child | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def text(self) -> str:
        """Everything the node printed so far."""
        return "" if self.child is None else self.child.text

    @property
    def alive(self) -> bool:
        return self.child is not None and not self.child.ended.called

    async def start(self) -> Node:
        """Spawn it (SIGKILLed on cleanup if still running) and wait until it is a usable
        node: connected to Redis, ``/healthz`` 200."""
        argv = TWISTD + ["-n", "--pidfile=", "wsservice", "--redis", self.redis_url,
                         "--node-id", self.name, "--listen", LOOPBACK, *self.args]
        try:
            self.child = await processes.start(self.cluster.test, argv, self.cluster.cwd,
                                               stop_signal="KILL")
        except Exception as e:
            raise FailTest(f"node {self.name} did not start listening: {e}")
        self.port = self.child.port()
        await self.wait_log(f"node {self.name}: connected to Redis at")
        await self.wait_health(200)
        return self

    async def wait_log(self, text: str, count: int = 1, timeout: float = 15.0) -> None:
        """Wait until the node has logged ``text`` at least ``count`` times."""
        await self.cluster.until(lambda: self.text.count(text) >= count,
                                 f"node {self.name} to log {text!r} ({count}x)", timeout)

    async def health(self) -> tuple[int, Any]:
        """``GET /healthz``: (status, decoded body); (0, error) when it cannot be asked."""
        try:
            code, _, body = await http(self.address, "/healthz")
        except Exception as e:
            return 0, repr(e)
        try:
            return code, orjson.loads(body)
        except orjson.JSONDecodeError:
            return code, body

    async def wait_health(self, status: int, timeout: float = 10.0) -> Any:
        """Poll ``/healthz`` until it answers ``status``; its body."""
        last: list[Any] = []

        async def check() -> bool:
            got = await self.health()
            last[:] = [got]
            return got[0] == status
        await self.cluster.until(check, lambda: f"node {self.name}'s /healthz to answer "
                                 f"{status} (last answer: {last})", timeout, interval=0.05)
        return last[0][1]

    async def kill(self) -> None:
        """kill -9 it and wait for its end."""
        assert self.child is not None
        if not self.child.ended.called:
            self.child.transport.signalProcess("KILL")
        await self.child.ended.addTimeout(10, reactor)

    def terminate(self) -> Deferred:
        """SIGTERM it; a Deferred of its exit code ('SIGTERM' when twistd re-raised it)."""
        assert self.child is not None
        self.child.transport.signalProcess("TERM")
        return self.child.ended.addTimeout(processes.STARTUP_TIMEOUT, reactor)

    async def client(self) -> Client:
        """A WebSocket client of this node, dropped on cleanup."""
        try:
            client = await connect(self.address)
        except Exception as e:
            raise FailTest(f"cannot open a WebSocket to node {self.name}: {e!r}\n"
                           + self.cluster.logs())
        return self.cluster.clients.add(client)

    async def session(self, **hello: Any) -> tuple[Client, dict[str, Any]]:
        """A client of this node that said hello: (client, its welcome)."""
        client = await self.client()
        return client, await self.cluster.hello(client, **hello)


class Cluster:
    """A test's Redis, nodes and clients; everything is killed or dropped on cleanup."""

    def __init__(self, test: Any, aof: bool = False) -> None:
        self.test = test
        self.cwd = processes.scratch(test, "wsc")
        self.redis = RedisServer(aof=aof).start()
        test.addCleanup(self.redis.stop)
        self.nodes: dict[str, Node] = {}
        # cleanups run last first: the nodes are killed, then the clients dropped, then Redis
        self.clients = live.Clients(test)

    async def start(self, *names: str, redis_url: str | None = None,
                    args: tuple[str, ...] = ()) -> list[Node]:
        """Start nodes ``names`` (with more wsservice ``args``) at once and wait until each
        is usable."""
        nodes = [Node(self, name, redis_url or self.redis.url, args) for name in names]
        for node in nodes:
            self.nodes[node.name] = node
        started = [Deferred.fromCoroutine(node.start()) for node in nodes]
        for d in started:
            await d
        return nodes

    def logs(self) -> str:
        """The tail of every node's log, for a failure message."""
        parts = []
        for node in self.nodes.values():
            text = node.text
            cut = text[-LOG_TAIL:]
            parts.append(f"----- node {node.name} ({'running' if node.alive else 'ended'}) "
                         f"log{' (tail)' if len(cut) < len(text) else ''}:\n{cut}")
        return "\n".join(parts)

    async def until(self, condition: Any, what: Any, timeout: float = 10.0,
                    interval: float = 0.02) -> Any:
        """live.until, failing with the nodes' logs."""
        try:
            return await live.until(condition, what, timeout, interval)
        except FailTest as e:
            raise FailTest(f"{e}\n{self.logs()}")

    async def hello(self, client: Client, **members: Any) -> dict[str, Any]:
        """Say hello; the welcome (fail if anything else comes first or nothing comes)."""
        client.send({"type": "hello", **members})
        welcome = await self.next(client, "a welcome")
        if welcome.get("type") != "welcome":
            raise FailTest(f"expected a welcome, got {welcome}\n{self.logs()}")
        return welcome

    async def next(self, client: Client, what: str, timeout: float = 10.0) -> dict[str, Any]:
        """The client's next message."""
        try:
            return await client.next(timeout)
        except TimeoutError:
            closed = client.closed.result if client.closed.called else None
            raise FailTest(f"timed out after {timeout:g} s waiting for {what} "
                           f"(connection closed: {closed})\n{self.logs()}")

    async def receive(self, client: Client, count: int, what: str,
                      timeout: float = 15.0) -> list[dict[str, Any]]:
        """The client's next ``count`` messages (all within ``timeout``)."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError()
                got.append(await client.next(left))
            except TimeoutError:
                closed = client.closed.result if client.closed.called else None
                raise FailTest(f"timed out after {timeout:g} s waiting for {what}: got "
                               f"{len(got)} of {count} messages (connection closed: "
                               f"{closed}): {got}\n{self.logs()}")
        return got

    async def call(self, client: Client, method: str, params: Any, id: Any) -> Any:
        """A call whose reply must be the client's next message; its result."""
        client.send({"type": "call", "id": id, "method": method, "params": params})
        reply = await self.next(client, f"the reply to {method} #{id}")
        if reply != {"type": "result", "id": id, "result": reply.get("result")}:
            raise FailTest(f"expected the result of {method} #{id}, got {reply}\n"
                           + self.logs())
        return reply["result"]

    async def subscribe(self, client: Client, topic: str) -> None:
        client.send({"type": "subscribe", "topic": topic, "id": f"sub-{topic}"})
        reply = await self.next(client, f"the answer to subscribe {topic}")
        if reply != {"type": "result", "id": f"sub-{topic}", "result": None}:
            raise FailTest(f"subscribe {topic} answered {reply}\n{self.logs()}")

    async def caught_up(self, client: Client, what: str) -> None:
        """Fail unless a ping's pong is the next message (nothing more was waiting)."""
        marker = {"caught_up": id(client)}
        client.send({"type": "ping", "data": marker})
        got = await self.next(client, f"the pong after {what}")
        if got != {"type": "pong", "data": marker}:
            raise FailTest(f"{what}: expected nothing more before the pong, got {got}\n"
                           + self.logs())

    async def closed(self, client: Client, what: str, timeout: float = 10.0) -> tuple:
        """(code, reason) once the client's connection is closed."""
        try:
            return await client.closed.addTimeout(timeout, reactor)
        except TimeoutError:
            raise FailTest(f"timed out after {timeout:g} s waiting for {what} to be closed\n"
                           + self.logs())

    def no_tracebacks(self) -> None:
        for node in self.nodes.values():
            if "Traceback" in node.text:
                raise FailTest(f"node {node.name} logged a traceback\n{self.logs()}")


def pushed(messages: list[dict[str, Any]]) -> list[tuple[int, str, Any]]:
    """(seq, kind, data) of seq-numbered messages: kind is 'message:TOPIC' or 'event:NAME'."""
    out = []
    for m in messages:
        if m.get("type") == "message":
            out.append((m.get("seq"), f"message:{m.get('topic')}", m.get("data")))
        elif m.get("type") == "event":
            out.append((m.get("seq"), f"event:{m.get('event')}", m.get("data")))
        else:
            out.append((m.get("seq"), f"unexpected:{m.get('type')}", m))
    return out
