#!/usr/bin/env python
"""Soak test of wsservice: many resuming clients, verified seq by seq.

    .venv/bin/python bench/soak.py [--clients 200] [--seconds 60] [--server URL|none]

Unless ``--server ws://127.0.0.1:PORT/ws`` is given, it starts the real server
(``.venv/bin/twistd -n --pidfile= wsservice --listen tcp:0:interface=127.0.0.1 ...``),
reads its port from the ``listening on ...`` log line and stops it with SIGTERM at the end.

Every client (Autobahn, all in this process's Twisted reactor) says hello, subscribes to
topic "soak" and then, paced (one action every 50-100 ms), makes echo calls (result
checked), demo ``push`` calls (1..20 events, all of which must precede the reply),
``ask`` calls (a server-initiated ``call`` it answers), publishes on "soak" and acks
the highest seq it holds. Now and then it aborts its TCP connection
(``transport.abortConnection()``) and reconnects with
``hello.resume {session, token, last_seq}``.

Checked, for every client: the seqs of its session are exactly 1..last, once each and in
order, across resumes (a replay continues at last_seq + 1), unless the server said
``resumed: false`` (counted as 'told', not 'lost'); every call gets exactly one reply with
its id and the right result; every publish the server confirmed after a subscriber's
subscription reaches that subscriber exactly once; every message has exactly the members
protocol.md lists. Exit status 0 only when nothing was lost and nothing unexpected happened.
Traffic goes to 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import bisect
import os
import random
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import orjson
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.logger import ILogObserver, LogLevel, globalLogBeginner, formatEvent
from twisted.python.failure import Failure
from zope.interface import provider

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPIC = "soak"
PUSH_EVENT = "soak.ev"
ASK_METHOD = "soak.q"
ASK_TIMEOUT = 5            # seconds the server waits for our answer to its call
MAX_INFLIGHT = 8           # calls one client keeps in flight at most (pacing, not a limit test)
CONNECT_TIMEOUT = 10
MAX_RECONNECTS = 10_000    # per client, a bound whatever happens
EXAMPLES = 12              # error examples printed

# protocol.md §1: a v1 server sends exactly these members
SHAPES = {
    "welcome": ({"type", "session", "token", "resumed", "heartbeat", "server"}, set()),
    "event": ({"type", "event", "data", "seq"}, set()),
    "message": ({"type", "topic", "data", "seq"}, set()),
    "call": ({"type", "id", "method", "params", "seq"}, set()),
    "result": ({"type", "id", "result"}, set()),
    "error": ({"type", "error"}, {"id"}),
    "pong": ({"type", "data"}, set()),
}
LISTENING = re.compile(r"listening on \S+: ws://127\.0\.0\.1:(\d+)(/\S*)")
SERVER_TROUBLE = re.compile(r"#(error|critical)\]|Traceback|Unhandled|unexpected failure")

IDLE, CONNECTING, HELLO_SENT, OPEN, DOWN, DONE = range(6)


class Stats:
    def __init__(self) -> None:
        self.c: Counter = Counter()
        self.errors: Counter = Counter()
        self.examples: list[str] = []
        self.rtt: list[float] = []        # seconds from a call to its reply
        self.phases: dict[str, list[float]] = {"tcp": [], "ws": [], "welcome": []}
        self.lag: list[float] = []        # how late this process's reactor ran a timer
        self.reconnect: list[float] = []  # seconds from a drop to the resumed welcome

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(f"{kind}: {detail}"[:300])


STATS = Stats()


# -- the server subprocess -------------------------------------------------------------------

class ServerProcess(protocol.ProcessProtocol):
    """twistd wsservice as a child: its output goes to a log file, scanned for the port and
    for error lines."""

    def __init__(self, log_path: str) -> None:
        self.log = open(log_path, "wb")
        self.log_path = log_path
        self.ready: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()
        self.url: str | None = None
        self.trouble: list[str] = []
        self._partial = b""
        self.exit: Any = None
        self.shut_down = False

    def _data(self, data: bytes) -> None:
        self.log.write(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if self.url is None:
                m = LISTENING.search(line)
                if m:
                    self.url = f"ws://127.0.0.1:{m.group(1)}{m.group(2)}"
                    self.ready.callback(self.url)
            if "Server Shut Down." in line:
                self.shut_down = True
            if SERVER_TROUBLE.search(line):
                self.trouble.append(line)

    outReceived = errReceived = _data

    def processEnded(self, reason: Failure) -> None:
        self.log.close()
        self.exit = reason.value
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"server exited before listening: {reason.value}"))
        self.ended.callback(reason.value)

    def cpu_seconds(self) -> float | None:
        try:
            with open(f"/proc/{self.transport.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except Exception:
            return None


def twistd_path() -> str:
    candidate = os.path.join(ROOT, ".venv", "bin", "twistd")
    if os.path.exists(candidate):
        return candidate
    return os.path.join(os.path.dirname(sys.executable), "twistd")


# -- the client ------------------------------------------------------------------------------

class Conn(WebSocketClientProtocol):
    """One WebSocket connection; everything goes to its owner, the logical SoakClient."""

    owner: "SoakClient | None" = None

    def onOpen(self) -> None:
        if self.owner is not None:
            self.owner.opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.owner is not None:
            self.owner.received(self, payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        timer, self.closeHandshakeTimeoutCall = self.closeHandshakeTimeoutCall, None
        if timer is not None:
            timer.cancel()
        if self.owner is not None:
            self.owner.closed(self, wasClean, code, reason)


class Attach(protocol.Factory):
    """Builds a Conn from a shared Autobahn factory and ties it to one SoakClient."""

    noisy = False  # no "Starting factory" log line per connection

    def __init__(self, ws_factory: WebSocketClientFactory, owner: "SoakClient") -> None:
        self.ws_factory = ws_factory
        self.owner = owner

    def buildProtocol(self, addr: Any) -> Conn:
        conn = self.ws_factory.buildProtocol(addr)
        conn.owner = self.owner
        self.owner.conn = conn
        STATS.phases["tcp"].append(time.monotonic() - self.owner.t_connect)
        return conn


class SessionRecord:
    """What one client saw of one server session (a told resume starts a new record)."""

    __slots__ = ("id", "sub_time", "received", "pushes", "topic_dups")

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.sub_time: float | None = None       # when the subscribe was confirmed
        self.received: set[tuple[int, int]] = set()  # (publisher, n) of topic messages
        self.pushes: dict[int, list] = {}         # push call id -> [count, events received, replied]
        self.topic_dups = 0


class SoakClient:
    def __init__(self, run: "Soak", index: int) -> None:
        self.run = run
        self.i = index
        self.rng = random.Random(run.args.seed * 1_000_003 + index)
        self.factory = run.deflate_factory if self.rng.random() < run.args.deflate \
            else run.plain_factory
        self.state = IDLE
        self.conn: Conn | None = None
        self.session: str | None = None
        self.token: str | None = None
        self.resuming = False
        self.last = 0            # highest seq held, in order, of the current session
        self.acked = 0
        self.record: SessionRecord | None = None
        self.records: list[SessionRecord] = []
        self.next_id = 0
        self.pending: dict[int, tuple] = {}    # id -> (kind, expected, sent at)
        self.abandoned: dict[int, tuple] = {}  # calls whose connection was dropped
        self.pubs: dict[int, list] = {}        # publish n -> [sent at, confirmed]
        self.pub_n = 0
        self.reconnects = 0
        self.stopping = False
        self.expect_close: int | None = None
        self.close_code: Any = "none"
        self.closed_d: defer.Deferred | None = None
        self._act_call: Any = None
        self._drop_call: Any = None
        self.last_ack_time = 0.0
        self.dropped_at: float | None = None
        self.asks: dict[int, float] = {}  # ask call id -> sent at
        # answers to server calls that had surely timed out on the server already (the call
        # came late, by a replay): each may be answered 'bad_message' without id (protocol.md
        # §3), on the connection it was sent on
        self.stale_answers = 0

    # -- connection lifecycle ----------------------------------------------------------------

    def connect(self) -> None:
        if self.state == DONE:
            return
        self.reconnects += 1
        if self.reconnects > MAX_RECONNECTS:
            STATS.error("too_many_reconnects", f"client {self.i}")
            self.state = DONE
            return
        self.state = CONNECTING
        self.conn = None
        self.t_connect = time.monotonic()
        d = self.run.endpoint.connect(Attach(self.factory, self))
        d.addErrback(self._connect_failed)

    def _connect_failed(self, failure: Failure) -> None:
        STATS.error("connect_failed", f"client {self.i}: {failure.value!r}")
        if self.state == CONNECTING:
            self.state = DOWN
            reactor.callLater(1.0, self.connect)

    def opened(self, conn: Conn) -> None:
        if conn is not self.conn:
            return
        hello: dict[str, Any] = {"type": "hello", "meta": {"soak": self.i}}
        if self.session is not None:
            hello["resume"] = {"session": self.session, "token": self.token,
                               "last_seq": self.last}
            self.resuming = True
        else:
            self.resuming = False
        self.state = HELLO_SENT
        self.t_hello = time.monotonic()
        STATS.phases["ws"].append(self.t_hello - self.t_connect)
        self.send(hello)

    def closed(self, conn: Conn, wasClean: bool, code: Any, reason: Any) -> None:
        if conn is not self.conn:
            return  # a connection we dropped ourselves
        self.conn = None
        if self.expect_close is not None:
            self.close_code = code
            self.state = DONE
            if self.closed_d is not None and not self.closed_d.called:
                self.closed_d.callback(code)
            return
        if self.state == CONNECTING:
            STATS.error("handshake_failed", f"client {self.i}: {code} {reason}")
        else:
            STATS.error(f"unexpected_close_{code}", f"client {self.i}: {reason}")
        self._lose_connection()
        reactor.callLater(0.5, self.connect)

    def drop(self) -> None:
        """Abort the TCP connection, then reconnect and resume."""
        conn = self.conn
        if conn is None or conn.transport is None:
            return
        STATS.c["drops"] += 1
        if self.dropped_at is None:
            self.dropped_at = time.monotonic()
        self.conn = None
        self._lose_connection()
        conn.transport.abortConnection()
        delay = 0.0 if self.rng.random() < 0.3 else self.rng.uniform(0.0, 0.4)
        reactor.callLater(delay, self.connect)

    def _lose_connection(self) -> None:
        self.state = DOWN
        self.stale_answers = 0
        self.abandoned.update(self.pending)
        STATS.c["calls_abandoned"] += len(self.pending)
        self.pending.clear()

    def send(self, message: dict) -> None:
        conn = self.conn
        if conn is not None and conn.state == conn.STATE_OPEN:
            conn.sendMessage(orjson.dumps(message), False)
            STATS.c["sent"] += 1

    # -- the paced loop ------------------------------------------------------------------------

    def schedule(self) -> None:
        args = self.run.args
        self._act_call = reactor.callLater(
            self.rng.uniform(args.min_interval, args.max_interval), self.act)

    def schedule_drop(self) -> None:
        args = self.run.args
        self._drop_call = reactor.callLater(
            self.rng.uniform(0.5, 1.5) * args.drop_every, self.maybe_drop)

    def maybe_drop(self) -> None:
        self._drop_call = None
        if self.stopping:
            return
        if self.rng.random() < self.run.args.drop_prob and self.state in (OPEN, HELLO_SENT):
            self.drop()
        self.schedule_drop()

    def act(self) -> None:
        self._act_call = None
        if self.stopping:
            return
        self.schedule()
        if self.state != OPEN:
            STATS.c["actions_skipped_down"] += 1
            return
        now = time.monotonic()
        if self.last > self.acked and now - self.last_ack_time > self.run.args.ack_every:
            self.ack()
            return
        if len(self.pending) >= MAX_INFLIGHT:
            STATS.c["actions_skipped_inflight"] += 1
            return
        r = self.rng.random()
        if r < self.run.p_publish:
            self.publish()
            return
        r = self.rng.random()
        if r < 0.60:
            self.echo()
        elif r < 0.88:
            self.push()
        else:
            self.ask()

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def call(self, kind: str, method: str, params: Any, expected: Any) -> int:
        call_id = self.new_id()
        self.pending[call_id] = (kind, expected, time.monotonic())
        STATS.c[f"calls_{kind}"] += 1
        self.send({"type": "call", "id": call_id, "method": method, "params": params})
        return call_id

    def echo(self, tag: str = "echo") -> None:
        rng = self.rng
        params = {"c": self.i, "r": rng.random(), "k": rng.randrange(-2**53, 2**53),
                  "s": "".join(rng.choice("aé€𝄞 \"\\/\n") for _ in range(rng.randrange(12))),
                  "l": [None, True, False, rng.randrange(100)], "t": tag}
        self.call("echo", "echo", params, params)

    def push(self) -> None:
        count = self.rng.randint(1, 20)
        call_id = self.next_id + 1
        self.record.pushes[call_id] = [count, 0, False]
        self.call("push", "push", {"count": count, "event": PUSH_EVENT,
                                   "data": {"p": call_id}}, count)

    def ask(self) -> None:
        params = {"a": self.next_id + 1, "c": self.i}
        self.asks[self.next_id + 1] = time.monotonic()
        self.call("ask", "ask", {"method": ASK_METHOD, "params": params,
                                 "timeout": ASK_TIMEOUT}, params)

    def publish(self) -> None:
        self.pub_n += 1
        n = self.pub_n
        call_id = self.new_id()
        now = time.monotonic()
        self.pubs[n] = [now, False]
        self.pending[call_id] = ("publish", n, now)
        STATS.c["publishes"] += 1
        self.send({"type": "publish", "topic": TOPIC, "data": {"f": self.i, "n": n},
                   "id": call_id})

    def subscribe(self) -> None:
        call_id = self.new_id()
        self.pending[call_id] = ("subscribe", self.record, time.monotonic())
        self.send({"type": "subscribe", "topic": TOPIC, "id": call_id})

    def ack(self) -> None:
        self.acked = self.last
        self.last_ack_time = time.monotonic()
        STATS.c["acks"] += 1
        self.send({"type": "ack", "seq": self.last})

    # -- what arrives ---------------------------------------------------------------------------

    def received(self, conn: Conn, payload: bytes, isBinary: bool) -> None:
        if conn is not self.conn:
            STATS.c["stale_messages"] += 1
            return
        STATS.c["received"] += 1
        if isBinary:
            STATS.error("binary_message", f"client {self.i}")
            return
        try:
            msg = orjson.loads(payload)
            kind = msg["type"]
            required, optional = SHAPES[kind]
        except Exception:
            STATS.error("bad_frame", repr(payload[:200]))
            return
        keys = msg.keys()
        if not (required <= keys and keys - required <= optional):
            STATS.error("wrong_members", f"{kind}: {sorted(keys)}")
        if "seq" in msg:
            if self.state != OPEN:
                STATS.error("seq_before_welcome", repr(payload[:200]))
                return
            self.numbered(msg)
        elif kind in ("result", "error"):
            if self.state != OPEN:
                STATS.error("reply_before_welcome", repr(payload[:200]))
                return
            self.reply(msg)
        elif kind == "welcome":
            self.welcome(msg)
        else:
            STATS.error("unexpected_message", repr(payload[:200]))

    def welcome(self, msg: dict) -> None:
        if self.state != HELLO_SENT:
            STATS.error("unexpected_welcome", f"client {self.i}: {msg}")
            return
        if msg["heartbeat"] != 25 or not str(msg["server"]).startswith("wsservice/"):
            STATS.error("welcome_members", str(msg))
        resumed = msg["resumed"]
        if self.resuming and resumed is True:
            if msg["session"] != self.session or msg["token"] != self.token:
                STATS.error("resumed_other_session", f"client {self.i}")
            STATS.c["resumed_true"] += 1
        else:
            if resumed is not False:
                STATS.error("bad_resumed", f"client {self.i}: {msg}")
            if self.resuming:
                STATS.c["resumed_false"] += 1
                if msg["session"] == self.session:
                    STATS.error("resumed_false_same_session", f"client {self.i}")
            self.session, self.token = msg["session"], msg["token"]
            self.last = self.acked = 0
            self.record = SessionRecord(self.session)
            self.records.append(self.record)
            STATS.c["sessions"] += 1
        self.state = OPEN
        STATS.phases["welcome"].append(time.monotonic() - self.t_hello)
        if self.dropped_at is not None:
            STATS.reconnect.append(time.monotonic() - self.dropped_at)
            self.dropped_at = None
        if self.record.sub_time is None and not any(
                p[0] == "subscribe" for p in self.pending.values()):
            self.subscribe()

    def numbered(self, msg: dict) -> None:
        seq = msg["seq"]
        if type(seq) is not int:
            STATS.error("bad_seq", str(msg))
            return
        if seq != self.last + 1:
            if seq <= self.last:
                STATS.c["lost"] += 1
                STATS.c["duplicates"] += 1
                STATS.error("duplicate_seq", f"client {self.i} session {self.record.id[:6]}: "
                            f"seq {seq} after {self.last}")
                return
            STATS.c["lost"] += seq - self.last - 1
            STATS.c["gaps"] += 1
            STATS.error("seq_gap", f"client {self.i} session {self.record.id[:6]}: "
                        f"seq {seq} after {self.last}")
        self.last = seq
        kind = msg["type"]
        data = msg["data"] if kind != "call" else msg["params"]
        if kind == "event":
            STATS.c["push_events"] += 1
            push = self.record.pushes.get(data.get("p")) if isinstance(data, dict) else None
            if msg["event"] != PUSH_EVENT or push is None:
                STATS.error("unknown_event", str(msg)[:200])
                return
            push[1] += 1
            if push[1] > push[0]:
                STATS.error("too_many_push_events", str(msg)[:200])
        elif kind == "message":
            STATS.c["topic_deliveries"] += 1
            if msg["topic"] != TOPIC or not isinstance(data, dict):
                STATS.error("unknown_message", str(msg)[:200])
                return
            key = (data.get("f"), data.get("n"))
            if key in self.record.received:
                self.record.topic_dups += 1
                STATS.error("duplicate_topic_message", f"client {self.i}: {key}")
            self.record.received.add(key)
        else:  # a server-initiated call: answer with its params
            STATS.c["server_calls"] += 1
            asked = self.asks.pop(data.get("a"), None) if isinstance(data, dict) else None
            if msg["method"] != ASK_METHOD or asked is None:
                STATS.error("unknown_server_call", str(msg)[:200])
            elif time.monotonic() - asked > ASK_TIMEOUT - 0.5:
                self.stale_answers += 1
                STATS.c["stale_server_calls"] += 1
            self.send({"type": "result", "id": msg["id"], "result": msg["params"]})

    def reply(self, msg: dict) -> None:
        call_id = msg.get("id")
        if call_id is None:
            err = msg["error"] if msg["type"] == "error" else None
            if self.stale_answers and isinstance(err, dict) and err.get("code") == "bad_message" \
                    and "no server call" in str(err.get("message")):
                self.stale_answers -= 1
                STATS.c["stale_answers_refused"] += 1
                return
            STATS.error("error_without_id", f"client {self.i}: {msg}")
            return
        entry = self.pending.pop(call_id, None)
        late = False
        if entry is None:
            entry = self.abandoned.pop(call_id, None)
            if entry is None:
                STATS.error("reply_to_unknown_id", f"client {self.i}: {msg}")
                return
            late = True
            STATS.c["late_replies"] += 1
        kind, expected, sent = entry
        STATS.c["replies"] += 1
        if not late:
            STATS.rtt.append(time.monotonic() - sent)
        if msg["type"] == "error":
            code = msg["error"].get("code") if isinstance(msg["error"], dict) else None
            if late and kind == "ask" and code == "timeout":
                STATS.c["ask_timeouts_after_drop"] += 1
                return
            STATS.error(f"error_reply_{kind}_{code}", f"client {self.i}: {msg}")
            return
        result = msg["result"]
        if kind == "publish":
            if result is not None:
                STATS.error("publish_result", str(msg))
            if not late:
                self.pubs[expected][1] = True
        elif kind == "subscribe":
            if result is not None:
                STATS.error("subscribe_result", str(msg))
            if expected is self.record and not late:
                expected.sub_time = time.monotonic()
            elif expected is self.record:
                STATS.error("late_subscribe_reply", f"client {self.i}")
        elif result != expected:
            STATS.error(f"wrong_result_{kind}", f"client {self.i}: {result!r} != {expected!r}")
        elif kind == "push":
            push = self.record.pushes.get(call_id)
            if push is not None:
                push[2] = True
                if not late and push[1] != push[0]:
                    STATS.error("push_events_missing_before_reply",
                                f"client {self.i}: {push[1]} of {push[0]}")

    # -- the end --------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping = True
        for c in (self._act_call, self._drop_call):
            if c is not None and c.active():
                c.cancel()

    def say_bye(self) -> defer.Deferred:
        self.expect_close = 1000
        self.closed_d = defer.Deferred()
        self.send({"type": "bye"})
        return self.closed_d

    def await_shutdown(self) -> defer.Deferred:
        self.expect_close = 1001
        self.closed_d = defer.Deferred()
        return self.closed_d


# -- the run --------------------------------------------------------------------------------

class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.server: ServerProcess | None = None
        self.clients: list[SoakClient] = []
        actions_per_s = args.clients * 2 / (args.min_interval + args.max_interval)
        self.p_publish = min(0.5, args.publish_rate / actions_per_s)
        self.exit_code = 1
        self.plain_factory: Any = None
        self.deflate_factory: Any = None
        self.endpoint: Any = None

    def factories(self, url: str) -> None:
        def make(deflate: bool) -> WebSocketClientFactory:
            f = WebSocketClientFactory(url, protocols=["wsservice.v1"])
            f.protocol = Conn
            f.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0,
                                 openHandshakeTimeout=CONNECT_TIMEOUT, closeHandshakeTimeout=5,
                                 tcpNoDelay=True)
            if deflate:
                f.setProtocolOptions(
                    perMessageCompressionOffers=[PerMessageDeflateOffer()],
                    perMessageCompressionAccept=lambda response: (
                        PerMessageDeflateResponseAccept(response)
                        if isinstance(response, PerMessageDeflateResponse) else None))
            return f
        self.plain_factory, self.deflate_factory = make(False), make(True)
        parts = urlsplit(url)
        self.endpoint = TCP4ClientEndpoint(reactor, parts.hostname, parts.port,
                                           timeout=CONNECT_TIMEOUT)

    async def start_server(self) -> str:
        fd, log_path = tempfile.mkstemp(prefix="wsservice-soak-", suffix=".log")
        os.close(fd)
        self.server = ServerProcess(log_path)
        argv = [twistd_path(), "-n", "--pidfile=", "wsservice",
                "--listen", "tcp:0:interface=127.0.0.1", "--rate", "100000",
                "--burst", "100000", "--max-sessions", "20000"]
        print("starting:", " ".join(argv), flush=True)
        reactor.spawnProcess(self.server, argv[0], argv, env=dict(os.environ), path=ROOT)
        server = self.server

        def stop_server() -> None:  # e.g. on Ctrl-C: never leave the child behind
            if server.exit is None:
                try:
                    server.transport.signalProcess("TERM")
                except Exception:
                    pass
        reactor.addSystemEventTrigger("before", "shutdown", stop_server)
        url = await self.server.ready.addTimeout(30, reactor)
        print(f"server pid {self.server.transport.pid} on {url} (log {log_path})", flush=True)
        return url

    async def wait(self, predicate: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            await task.deferLater(reactor, 0.05)
        return True

    async def main(self) -> None:
        args = self.args
        url = args.server if args.server and args.server != "none" else await self.start_server()
        self.factories(url)
        cpu0 = os.times()
        lag_at = [time.monotonic()]

        def lag() -> None:
            now = time.monotonic()
            STATS.lag.append(max(0.0, now - lag_at[0] - 0.1))
            lag_at[0] = now
        lag_loop = task.LoopingCall(lag)
        lag_loop.start(0.1, now=False)
        # ramp up: everyone connects within ~2 s
        for i in range(args.clients):
            self.clients.append(SoakClient(self, i))
        for c in self.clients:
            reactor.callLater(c.rng.uniform(0, min(2.0, args.seconds / 4)), c.connect)
        if not await self.wait(lambda: all(c.state == OPEN and c.record.sub_time is not None
                                           for c in self.clients), 60):
            STATS.error("startup", f"{sum(c.state == OPEN for c in self.clients)} of "
                        f"{args.clients} clients ready after 60 s")
        before = Counter(STATS.c)
        t0 = time.monotonic()
        for c in self.clients:
            c.schedule()
            c.schedule_drop()
        tick = 10.0
        while True:
            left = args.seconds - (time.monotonic() - t0)
            if left <= 0:
                break
            await task.deferLater(reactor, min(tick, left))
            if time.monotonic() - t0 < args.seconds - 0.5:
                s = STATS.c
                print(f"  t={time.monotonic() - t0:5.1f}s sent={s['sent']} recv={s['received']} "
                      f"drops={s['drops']} resumes={s['resumed_true']} told="
                      f"{s['resumed_false']} lost={s['lost']} errors="
                      f"{sum(STATS.errors.values())}", flush=True)
        elapsed = time.monotonic() - t0
        lag_loop.stop()
        during = Counter(STATS.c)
        during.subtract(before)

        # -- drain: no more actions or drops; everyone back, every call answered ---------------
        for c in self.clients:
            c.stop()
        if not await self.wait(lambda: all(c.state == OPEN and not c.pending
                                           and c.record.sub_time is not None
                                           for c in self.clients), 30):
            bad = [c for c in self.clients if c.state != OPEN or c.pending]
            STATS.error("drain", f"{len(bad)} clients not settled after 30 s, e.g. client "
                        f"{bad[0].i} state {bad[0].state} pending {list(bad[0].pending.values())[:3]}")
        # a final call on each connection: its reply follows everything sent to it before
        for c in self.clients:
            if c.state == OPEN:
                c.echo("final")
        if not await self.wait(lambda: all(not c.pending for c in self.clients), 20):
            STATS.error("final_call", "unanswered final calls after 20 s")
        for c in self.clients:
            if c.state == OPEN and c.last > c.acked:
                c.ack()
        self.verify()

        # -- the end: half say bye (close 1000), the rest see the server's shutdown (1001) --
        own = self.server is not None
        byes, stays = [], []
        for c in self.clients:
            if c.state != OPEN:
                continue
            if own and c.i % 2:
                stays.append(c.await_shutdown())
            else:
                byes.append(c.say_bye())
        await self.gather(byes, 10, "bye")
        server_cpu = self.server.cpu_seconds() if own else None
        if own:
            self.server.transport.signalProcess("TERM")
            await self.gather(stays, 20, "shutdown close")
            try:
                await self.server.ended.addTimeout(25, reactor)
            except defer.TimeoutError:
                STATS.error("server_exit", "no exit 25 s after SIGTERM; killing it")
                self.server.transport.signalProcess("KILL")
                await self.server.ended
            exit_value = self.server.exit
            # twistd stops cleanly on SIGTERM, then kills itself with that signal so that
            # its exit status tells why it stopped (Twisted's _exitWithSignal)
            clean = getattr(exit_value, "exitCode", None) == 0 or (
                getattr(exit_value, "signal", None) == 15 and self.server.shut_down)
            if not clean:
                STATS.error("server_exit", f"server ended with {exit_value!r}")
            for line in self.server.trouble[:EXAMPLES]:
                STATS.error("server_log", line)
            for line in self.server.trouble[EXAMPLES:]:
                STATS.errors["server_log"] += 1
        for c in self.clients:
            if c.expect_close is not None and c.close_code != c.expect_close:
                STATS.error(f"close_code_{c.close_code}",
                            f"client {c.i} expected {c.expect_close}")
        cpu1 = os.times()
        self.report(elapsed, during, (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
                    server_cpu)

    async def gather(self, ds: list, timeout: float, what: str) -> None:
        if not ds:
            return
        dl = defer.DeferredList(ds, consumeErrors=True)
        try:
            await dl.addTimeout(timeout, reactor)
        except defer.TimeoutError:
            n = sum(1 for d in ds if not d.called)
            STATS.error(f"{what}_timeout", f"{n} connections not closed after {timeout} s")

    def verify(self) -> None:
        """Pushes complete, and every confirmed publication reached every live subscriber."""
        c_ = STATS.c
        for c in self.clients:
            for rec in c.records:
                for call_id, (count, got, replied) in rec.pushes.items():
                    if rec is c.record and got not in (0, count):
                        STATS.error("push_incomplete", f"client {c.i} push {call_id}: "
                                    f"{got} of {count} events")
                    if rec is c.record and replied and got != count:
                        STATS.error("push_replied_incomplete", f"client {c.i} push {call_id}")
        # topics: a publication confirmed to its publisher and sent after a subscriber's
        # subscribe was confirmed must have reached that subscriber's (live) session
        pubs = [(c.i, n, sent) for c in self.clients for n, (sent, ok) in c.pubs.items() if ok]
        pubs.sort(key=lambda p: p[2])
        sent_times = [p[2] for p in pubs]
        expected = missing = 0
        per_sub = []
        for c in self.clients:
            rec = c.record
            if rec is None or rec.sub_time is None:
                continue
            start = bisect.bisect_right(sent_times, rec.sub_time)
            for f, n, _ in pubs[start:]:
                expected += 1
                if (f, n) not in rec.received:
                    missing += 1
                    if missing <= 3:
                        STATS.error("topic_message_missing",
                                    f"client {c.i} lacks publication {n} of client {f}")
            per_sub.append(len(rec.received))
            for f, n in rec.received:
                if not (isinstance(f, int) and 0 <= f < len(self.clients)
                        and n in self.clients[f].pubs):
                    STATS.error("topic_message_unknown", f"client {c.i}: {(f, n)}")
        if missing > 3:
            STATS.errors["topic_message_missing"] += missing - 3
        c_["topic_expected"] = expected
        c_["topic_missing"] = missing
        c_["topic_confirmed"] = len(pubs)
        self.per_sub = per_sub
        c_["calls_unanswered_after_drop"] = sum(len(c.abandoned) for c in self.clients)

    def report(self, elapsed: float, during: Counter, cpu: float, server_cpu: Any) -> None:
        s = STATS.c
        errors = sum(STATS.errors.values())
        calls = sum(s[k] for k in ("calls_echo", "calls_push", "calls_ask"))
        per = getattr(self, "per_sub", []) or [0]
        lines = [
            "",
            "== wsservice soak ==",
            f"clients            {self.args.clients}",
            f"seconds            {elapsed:.1f} (plus ramp-up and drain)",
            f"messages/s         sent {during['sent'] / elapsed:.0f}, received "
            f"{during['received'] / elapsed:.0f}   (total sent {s['sent']}, received "
            f"{s['received']})",
            f"calls              {calls} (echo {s['calls_echo']}, push {s['calls_push']}, ask "
            f"{s['calls_ask']}); replies {s['replies']}, late replies after resume "
            f"{s['late_replies']}, lost with a dropped connection "
            f"{s['calls_unanswered_after_drop']}, ask timeouts after drop "
            f"{s['ask_timeouts_after_drop']}",
            f"pushes             {s['calls_push']} push calls, {s['push_events']} events; "
            f"{s['server_calls']} server calls answered ({s['stale_server_calls']} after the "
            f"server's {ASK_TIMEOUT} s timeout, refused bad_message: "
            f"{s['stale_answers_refused']})",
            f"topic deliveries   {s['topic_deliveries']} received for {s['publishes']} "
            f"publishes ({s['topic_confirmed']} confirmed); per live subscriber "
            f"min {min(per)} / max {max(per)}; expected {s['topic_expected']}, missing "
            f"{s['topic_missing']}",
            f"acks               {s['acks']}",
            f"latency            call reply {pct(STATS.rtt)}; drop to resumed welcome "
            f"{pct(STATS.reconnect)}",
            f"connect phases     tcp {pct(STATS.phases['tcp'])}; +ws handshake "
            f"{pct(STATS.phases['ws'])}; hello to welcome {pct(STATS.phases['welcome'])}",
            f"client loop lag    {pct(STATS.lag)}",
            f"actions            skipped while reconnecting {s['actions_skipped_down']}, "
            f"with {MAX_INFLIGHT} calls in flight {s['actions_skipped_inflight']}",
            f"drops              {s['drops']}",
            f"resumes (true)     {s['resumed_true']}",
            f"resumed:false      {s['resumed_false']} (told)",
            f"lost               {s['lost']} (gaps {s['gaps']}, duplicates {s['duplicates']})",
            f"errors             {errors}",
            f"cpu                soak client {cpu:.1f} s"
            + (f", server {server_cpu:.1f} s" if server_cpu is not None else ""),
        ]
        if STATS.errors:
            lines.append("error kinds        " + ", ".join(
                f"{k}={v}" for k, v in STATS.errors.most_common()))
            lines.extend("  " + e for e in STATS.examples)
        ok = s["lost"] == 0 and errors == 0
        lines.append("RESULT             " + ("PASS" if ok else "FAIL"))
        print("\n".join(lines), flush=True)
        self.exit_code = 0 if ok else 1


def pct(values: list[float]) -> str:
    if not values:
        return "-"
    v = sorted(values)
    at = lambda q: v[min(len(v) - 1, int(q * len(v)))] * 1000  # noqa: E731
    return f"p50 {at(0.5):.0f} ms, p99 {at(0.99):.0f} ms, max {v[-1] * 1000:.0f} ms"


@provider(ILogObserver)
def _log_observer(event: dict) -> None:
    """Client-side Twisted/Autobahn errors (e.g. unhandled Deferred failures) count."""
    level = event.get("log_level")
    if level in (LogLevel.error, LogLevel.critical):
        text = formatEvent(event)
        f = event.get("log_failure")
        if f is not None:
            text += " " + repr(f.value)
        STATS.error("client_log", text)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--server", default=None,
                   help="ws://127.0.0.1:PORT/ws of a running server, or none (default: "
                        "start one)")
    p.add_argument("--min-interval", type=float, default=0.05,
                   help="seconds between a client's actions, at least (default 0.05)")
    p.add_argument("--max-interval", type=float, default=0.10,
                   help="seconds between a client's actions, at most (default 0.10)")
    p.add_argument("--publish-rate", type=float, default=20.0,
                   help="publishes per second, all clients together (each reaches every "
                        "client; default 20)")
    p.add_argument("--drop-every", type=float, default=3.0,
                   help="mean seconds between a client's drop draws (default 3)")
    p.add_argument("--drop-prob", type=float, default=0.25,
                   help="chance that a draw aborts the connection (default 0.25)")
    p.add_argument("--ack-every", type=float, default=1.0,
                   help="seconds between a client's acks (default 1)")
    p.add_argument("--deflate", type=float, default=0.2,
                   help="fraction of clients offering permessage-deflate (default 0.2)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if not 1 <= args.clients <= 5000:
        p.error("--clients must be 1..5000")
    if not 1 <= args.seconds <= 3600:
        p.error("--seconds must be 1..3600")
    if not 0 < args.min_interval <= args.max_interval:
        p.error("need 0 < --min-interval <= --max-interval")
    if args.server and args.server != "none":
        parts = urlsplit(args.server)
        if parts.scheme != "ws" or parts.hostname not in ("127.0.0.1", "localhost") \
                or not parts.port:
            p.error("--server must be ws://127.0.0.1:PORT/PATH (loopback only)")
        args.server = f"ws://127.0.0.1:{parts.port}{parts.path or '/ws'}"
    return args


def main(argv: list[str]) -> int:
    return run(parse(argv))


def run(args: argparse.Namespace) -> int:
    """Run the soak with parsed ``args``; the exit status."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.clients * 2 + 100
    if soft < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
        except (ValueError, OSError):
            pass
    globalLogBeginner.beginLoggingTo([_log_observer], redirectStandardIO=False)
    soak = Soak(args)
    budget = args.seconds + 240  # ramp-up 60 + drain 50 + shutdown 60, and margin

    def watchdog() -> None:
        STATS.error("watchdog", f"run exceeded {budget:.0f} s")
        soak.report(args.seconds, Counter(STATS.c), 0.0, None)
        soak.exit_code = 1
        if soak.server is not None and soak.server.exit is None:
            soak.server.transport.signalProcess("KILL")
        reactor.stop()
    dog = reactor.callLater(budget, watchdog)

    def finished(result: Any) -> None:
        if isinstance(result, Failure):
            print("soak failed:", result.getTraceback(), file=sys.stderr)
            soak.exit_code = 1
            if soak.server is not None and soak.server.exit is None:
                soak.server.transport.signalProcess("TERM")
        if dog.active():
            dog.cancel()
        reactor.callLater(0.2 if soak.server is None or soak.server.exit else 2.0,
                          reactor.stop)

    reactor.callWhenRunning(
        lambda: defer.Deferred.fromCoroutine(soak.main()).addBoth(finished))
    reactor.run()
    return soak.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
