"""The Redis engine of a cluster node: its connections, the per-turn batch, heartbeat, adoption.

One command connection carries every script (pipelined: one EVALSHA per reactor turn holds
all the pushes, publications, acks and subscriptions of that turn), one subscriber
connection receives the records other nodes address to this node. The store and broker
(redisstore.py) give the engine's records their meaning.
"""

from __future__ import annotations

from typing import Any, Callable

import txredisapi  # type: ignore[import-untyped]
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from . import fastpath
from .log import logger
from .metrics import REDIS_BUCKETS, ClusterStats, Histogram
from .redislua import ADOPTED_FIELDS, SCRIPTS, Script
from .redisurl import RedisAddress, node_name

# what a node waits for when it starts, is down, or has come back and catches up
CONNECTING, UP, DOWN, SYNCING = "connecting", "up", "down", "syncing"
MAX_BATCH_ARGS = 20000  # one script call's arguments; past it the batch goes at once
MAX_QUEUED_ARGS = 1_000_000  # held while the node catches up with Redis; past it, not kept


class RedisUnavailable(Exception):
    """Redis cannot be reached now: nothing was made durable."""


class _Observed:
    """An endpoint that tells the engine why connecting failed (the factory retries)."""

    def __init__(self, endpoint: Any, failed: Callable[[Failure], None]) -> None:
        self._endpoint = endpoint
        self._failed = failed

    def connect(self, factory: Any) -> Deferred:
        d = self._endpoint.connect(factory)

        def failed(failure: Failure) -> Failure:
            self._failed(failure)
            return failure
        return d.addErrback(failed)


class _Subscriber(txredisapi.SubscriberProtocol):
    """The connection other nodes' records arrive on."""

    engine: RedisEngine

    def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
        self.engine.received(message)


class _Factory(txredisapi.RedisFactory):
    """One reconnecting connection that tells the engine when it is ready and when it is lost."""

    initialDelay = 0.2  # a restarted Redis is found again within about two seconds
    maxDelay = 2.0

    def __init__(self, engine: RedisEngine, kind: str, address: RedisAddress) -> None:
        super().__init__(kind, address.db, 1, isLazy=True, charset=None,
                         password=address.password, replyTimeout=engine.reply_timeout,
                         convertNumbers=False, username=address.username)
        self.engine = engine
        self.kind = kind
        self.protocol: type
        if kind == "subscriber":
            self.protocol = _Subscriber
        elif engine.fast:  # (charset=None above: what fastpath.build_command encodes for)
            self.protocol = fastpath.redis_protocol(self.protocol)

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.engine = self.engine
        protocol.whenConnected().addCallback(self.engine._ready, self.kind)
        protocol.whenDisconnected().addCallback(self.engine._lost, self.kind)
        return protocol


class RedisEngine(Service):
    """A node's link to the cluster's Redis (see docs/cluster.md)."""

    _log = logger()
    name: str | None = "wsservice-redis"  # type: ignore[assignment]

    def __init__(self, address: RedisAddress, node: str | None = None, prefix: str = "wss:",
                 reactor: Any = None, heartbeat: float = 1.0, node_ttl: float = 5.0,
                 reply_timeout: float = 5.0, fast: bool = False) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.address = address
        self.node = node_name(node)
        self.prefix = prefix
        self.reactor = reactor
        self.heartbeat = heartbeat
        self.node_ttl = node_ttl
        self.reply_timeout = reply_timeout
        self.fast = fast  # commands encoded by the fenced fast path (fastpath.build_command)
        self.channel = f"{prefix}c:{self.node}".encode()
        self.state = CONNECTING
        self.reason = f"connecting to Redis at {address}"
        self._command: Any = None
        self._subscriber: Any = None
        self._factories: list[_Factory] = []
        # the batch of this reactor turn: script arguments, and per operation its handler
        self._args: list[Any] = []
        self._handlers: list[tuple[Callable[..., Any] | None, Any]] = []
        self._flushing = False
        self.inflight = 0  # batches sent, not yet answered
        self.limits = (1000, 1 << 20)  # replay_limit, replay_bytes: the store sets them
        # set by the store and the broker
        self.records: Callable[[bytes], None] = lambda data: None
        self.resync: Callable[[], Any] = lambda: succeed(None)
        self.wentDown: Callable[[], None] = lambda: None
        self.adopted: Callable[[list[Any]], None] = lambda entries: None
        self.adoptTTL: Callable[[], tuple[int, int]] = lambda: (60000, 60000)
        self._beat = LoopingCall(self._heartbeat)
        self._beat.clock = reactor
        self._adopting: set[str] = set()
        self._waiting: list[Deferred] = []
        self._idle: list[Deferred] = []
        self.batches = 0  # batches sent since start (for metrics and tests)
        self.outages = 0
        self.adoptions = 0  # sessions adopted from dead nodes
        # every script's round trip, and the scripts that failed by cause (for /metrics)
        self.round_trips = Histogram(REDIS_BUCKETS)
        self.errors: dict[str, int] = {"connection": 0, "timeout": 0, "reply": 0}

    # -- connections ----------------------------------------------------------------------------

    def startService(self) -> None:
        """Connect (and keep reconnecting, with backoff)."""
        super().startService()
        self._log.info("node {node}: Redis at {address}", node=self.node, address=self.address)
        for kind in ("command", "subscriber"):
            factory = _Factory(self, kind, self.address)
            self._factories.append(factory)
            factory.startConnecting(_Observed(self.address.endpoint(self.reactor),
                                              self._unreachable))

    def stopService(self) -> Deferred:
        """Send what is queued, leave the cluster (others adopt this node's sessions at once),
        and disconnect."""
        super().stopService()
        if self._beat.running:
            self._beat.stop()
        d: Deferred = self.whenIdle() if self.state == UP else succeed(None)

        def leave(_: Any) -> Any:
            if self.state == UP:
                return self.run("leave", self.node).addErrback(lambda f: None)
            return None

        def disconnect(_: Any) -> Any:
            factories, self._factories = self._factories, []
            self.state = DOWN
            return Deferred.fromCoroutine(self._disconnect(factories))
        return d.addCallback(leave).addBoth(disconnect)

    async def _disconnect(self, factories: list[_Factory]) -> None:
        for factory in factories:
            try:
                await factory.disconnect()
            except Exception:
                pass

    def stats(self) -> ClusterStats:
        """In step with Redis (1/0), batches sent, outages, sessions adopted, round trips
        and failed scripts, for /metrics."""
        return ClusterStats(int(self.state == UP), self.batches, self.outages, self.adoptions,
                            self.round_trips, self.errors)

    def whenUp(self) -> Deferred:
        """A Deferred firing once the node is connected and in step with Redis."""
        if self.state == UP:
            return succeed(self)
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d

    def whenIdle(self) -> Deferred:
        """A Deferred firing once nothing is queued or waiting for Redis's answer."""
        if not self._args and not self.inflight:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle.append(d)
        return d

    def _unreachable(self, failure: Failure) -> None:
        reason = f"Redis at {self.address} unreachable: {failure.getErrorMessage()}"
        if reason == self.reason:
            return  # said once per outage (it retries every two seconds at most)
        if self.state in (UP, SYNCING):
            self._down(reason)
        else:
            self.reason = reason
            self._log.warn("{reason} (retrying)", reason=reason)

    def _ready(self, protocol: Any, kind: str) -> None:
        if not self.running:
            protocol.transport.loseConnection()
            return
        if kind == "command":
            self._command = protocol
        else:
            self._subscriber = protocol
            protocol.subscribe([self.channel]).addErrback(
                lambda f: self._log.warn("subscribing to this node's channel failed: {e}",
                                         e=f.getErrorMessage()))
        if self._command is not None and self._subscriber is not None:
            self.reactor.callLater(0, self._sync)

    def _lost(self, protocol: Any, kind: str) -> None:
        if kind == "command" and protocol is self._command:
            self._command = None
        elif kind == "subscriber" and protocol is self._subscriber:
            self._subscriber = None
        else:
            return
        if self.running and self.state != DOWN:
            self._down(f"lost the connection to Redis at {self.address} ({kind})")

    def _down(self, reason: str) -> None:
        was = self.state
        self.state = DOWN
        self.reason = reason
        if self._beat.running:
            self._beat.stop()
        if was in (UP, SYNCING):
            self.outages += 1
            self._log.error("node {node}: {reason}; sessions stay open on this node, new "
                            "ones are refused until Redis is back", node=self.node,
                            reason=reason)
            self._failBatch(RedisUnavailable(reason))
            self.wentDown()

    async def _loadScripts(self) -> None:
        for script in SCRIPTS.values():
            await self._command.execute_command("SCRIPT", "LOAD", script.source)

    def _sync(self) -> None:
        if self.state == UP or self._command is None or self._subscriber is None:
            return
        first = self.state == CONNECTING
        self.state = SYNCING

        async def sync() -> None:
            await self._loadScripts()
            info = await self._command.execute_command("INFO", "server")
            version = _redis_version(info)
            if version < (6, 2):
                self._log.error("Redis {v} is too old: wsservice needs 6.2 or newer",
                                v=".".join(map(str, version)))
            await self._heartbeatOnce()
            if not first:
                await self.resync()

        def synced(_: Any) -> None:
            if self.state != SYNCING:
                return
            self.state = UP
            self.reason = ""
            self._log.info("node {node}: {what} Redis at {address}", node=self.node,
                           what="connected to" if first else "back in step with",
                           address=self.address)
            if not self._beat.running:
                self._beat.start(self.heartbeat, now=False)
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(self)
            if self._args:
                self._schedule()

        def failed(failure: Failure) -> None:
            if self.state == SYNCING:
                self._log.failure("node {node}: catching up with Redis failed", failure,
                                  node=self.node)
                self._down(f"catching up with Redis failed: {failure.getErrorMessage()}")
                if self._command is not None:
                    self._command.transport.loseConnection()
        Deferred.fromCoroutine(sync()).addCallbacks(synced, failed)

    # -- scripts ---------------------------------------------------------------------------------

    def run(self, name: str, *args: Any) -> Deferred:
        """Run script ``name`` with ARGV (prefix first, then ``args``); a Deferred of its
        answer, failing with RedisUnavailable when there is no connection."""
        command = self._command
        if command is None or self.state == DOWN:
            return fail(RedisUnavailable(self.reason or "Redis unavailable"))
        if self._args and self.state == UP:
            # what was queued before this script goes first: one connection, one order
            self._flush()
        self.inflight += 1
        return self._eval(command, SCRIPTS[name], (self.prefix, *args)).addBoth(self._done)

    def _done(self, result: Any) -> Any:
        self.inflight -= 1
        if not self.inflight and not self._args and self._idle:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)
        return result

    def _eval(self, command: Any, script: Script, argv: tuple) -> Deferred:
        sent = self.reactor.seconds()
        try:
            d = command.execute_command("EVALSHA", script.sha, 0, *argv)
        except Exception as e:
            self.errors["connection"] += 1
            return fail(RedisUnavailable(str(e)))
        d.addBoth(self._roundTrip, sent)

        def noscript(failure: Failure) -> Any:
            if failure.check(txredisapi.ResponseError) and \
                    str(failure.value).startswith("NOSCRIPT"):
                # the scripts were flushed under us (SCRIPT FLUSH): send the whole script
                return command.execute_command("EVAL", script.source, 0, *argv)
            if failure.check(txredisapi.ConnectionError):
                raise RedisUnavailable(failure.getErrorMessage())
            return failure
        return d.addErrback(noscript)

    def _roundTrip(self, result: Any, sent: float) -> Any:
        """Time a script's answer (an error reply is an answer too); count its failure."""
        if isinstance(result, Failure):
            if result.check(txredisapi.ResponseError) and \
                    str(result.value).startswith("NOSCRIPT"):
                return result  # not a failure: _eval sends the whole script
            cause = ("timeout" if result.check(txredisapi.TimeoutError) else
                     "connection" if result.check(txredisapi.ConnectionError) else "reply")
            self.errors[cause] += 1
            if cause != "reply":
                return result  # no answer came: nothing to time
        self.round_trips.observe(self.reactor.seconds() - sent)
        return result

    # -- the batch of a reactor turn ---------------------------------------------------------------

    def op(self, handler: Callable[..., Any] | None, context: Any, *args: Any) -> bool:
        """Queue one operation for this turn's batch; ``handler(context, result)`` is called
        with its result (a Failure when Redis failed). False when the node cannot reach
        Redis now (nothing was queued)."""
        state = self.state
        if state != UP and (state != SYNCING or len(self._args) > MAX_QUEUED_ARGS):
            return False
        self._args.extend(args)
        self._handlers.append((handler, context))
        if len(self._args) > MAX_BATCH_ARGS:
            self._flush()
        elif not self._flushing:
            self._schedule()
        return True

    def _schedule(self) -> None:
        if not self._flushing and self.state == UP:
            self._flushing = True
            self.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flushing = False
        if not self._args or self.state != UP:
            return
        args, self._args = self._args, []
        handlers, self._handlers = self._handlers, []
        limit, size = self.limits
        self.inflight += 1
        self.batches += 1
        d = self._eval(self._command, SCRIPTS["batch"],
                       (self.prefix, self.node, limit, size, *args))
        d.addBoth(self._answered, handlers)

    def _answered(self, result: Any, handlers: list) -> None:
        if isinstance(result, Failure):
            if not result.check(RedisUnavailable):
                self._log.failure("node {node}: a batch failed in Redis", result, node=self.node)
            for handler, context in handlers:
                if handler is not None:
                    handler(context, result)
        else:
            mine = result[0]
            # results first (a push's seq), then records: a record for a session whose own
            # push is answered here comes in seq order either way (the session reorders)
            for (handler, context), value in zip(handlers, result[1:]):
                if handler is not None:
                    handler(context, value)
            if mine:
                self.records(mine)
        self._done(None)

    def _failBatch(self, error: Exception) -> None:
        self._args = []
        handlers, self._handlers = self._handlers, []
        failure = Failure(error)
        for handler, context in handlers:
            if handler is not None:
                handler(context, failure)
        if self._idle and not self.inflight:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def received(self, message: bytes) -> None:
        """Records published to this node."""
        try:
            self.records(message)
        except Exception:
            self._log.failure("node {node}: a record from Redis could not be handled",
                              node=self.node)

    # -- heartbeat and adoption -------------------------------------------------------------------

    def _heartbeat(self) -> Deferred:
        return self._heartbeatOnce().addErrback(
            lambda f: self._log.warn("heartbeat failed: {e}", e=f.getErrorMessage()))

    def _heartbeatOnce(self) -> Deferred:
        d = self.run("heartbeat", self.node, int(self.node_ttl * 1000))
        return d.addCallback(self._dead)

    def _dead(self, nodes: list[bytes]) -> None:
        for raw in nodes or ():
            node = raw.decode()
            if node not in self._adopting:
                self._adopting.add(node)
                self._log.warn("node {node} stopped announcing itself: adopting its "
                               "sessions", node=node)
                Deferred.fromCoroutine(self._adopt(node)).addBoth(self._adoptedAll, node)

    def _adoptedAll(self, result: Any, node: str) -> None:
        self._adopting.discard(node)
        if isinstance(result, Failure):
            self._log.warn("adopting the sessions of node {node} failed: {e}", node=node,
                           e=result.getErrorMessage())

    async def _adopt(self, dead: str) -> None:
        ttl_ms, grace_ms = self.adoptTTL()
        total = 0
        while self.running and self.state == UP:
            answer = await self.run("adopt", dead, self.node, 200, ttl_ms, grace_ms)
            left = int(answer[0])
            if left < 0:
                return  # it is alive after all
            entries = answer[1:]
            total += len(entries) // ADOPTED_FIELDS
            self.adoptions += len(entries) // ADOPTED_FIELDS
            if entries:
                self.adopted(entries)
            if left == 0:
                break
        self._log.info("adopted {count} sessions of node {node}", count=total, node=dead)


def _redis_version(info: Any) -> tuple[int, ...]:
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("redis_version:"):
            try:
                return tuple(int(x) for x in line.split(":", 1)[1].strip().split(".")[:2])
            except ValueError:
                break
    return (0, 0)
