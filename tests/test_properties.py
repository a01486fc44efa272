"""Property-based tests of the session server against /work/shared/spec/protocol.md §2-§5.

Everything runs in memory on a ``task.Clock`` through ``wsservice.testing`` (ServiceHarness,
FakeClient) with the built-in DemoApp. Payloads are serialized with the standard library's
``json`` (so arbitrarily large integers can be sent, and the tests do not share the
implementation's serializer); expected frames are built independently of ``wsservice.wire``.

1. Garbage in (random bytes, random JSON, random typed messages), before and after ``hello``:
   nothing raises out of the service, every reply is a well-formed v1 server message, error
   codes are protocol.md's (or the demo's / a client-relayed application code), and no
   traceback leaks.
2. A RuleBasedStateMachine over sessions: hello / resume / takeover / pushes / calls / acks /
   drops / normal closes / bye / time / server pushes / publications, with a model of what
   every client must see; resume must replay exactly what was missed or say resumed:false.
3. The bad-message budget closes 4400 exactly at the (k+1)-th bad message.
4. The rate limiter accepts exactly what a token bucket predicts (4429 past the budget).
"""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wsservice import closecodes, errors, wire
from wsservice.config import Settings
from wsservice.demo import DemoApp
from wsservice.testing import FakeClient, FakeLink, ServiceHarness

# -- protocol.md facts, written down independently of the implementation ----------------------

CLIENT_TYPES = ["hello", "event", "call", "cancel", "result", "error", "subscribe",
                "unsubscribe", "publish", "ack", "ping", "bye"]

# §3: "A v1 server sends exactly the members listed below for each type, no more".
SERVER_MEMBERS = {
    "welcome": {"type", "session", "token", "resumed", "heartbeat", "server"},
    "event": {"type", "event", "data", "seq"},
    "message": {"type", "topic", "data", "seq"},
    "call": {"type", "id", "method", "params", "seq"},
    "result": {"type", "id", "result"},
    "pong": {"type", "data"},
    # "error": {"type", "error"} plus "id" when it answers a request
}

# §4 error codes
SPEC_CODES = {
    "bad_json", "bad_message", "not_registered", "already_registered", "unknown_event",
    "unknown_method", "invalid_params", "duplicate_id", "too_many_calls",
    "too_many_subscriptions", "rate_limited", "unauthorized", "forbidden", "cancelled",
    "timeout", "internal",
}
DEMO_CODES = {"demo.rejected"}
BAD_INPUT = {"bad_json", "bad_message", "already_registered", "rate_limited"}

DEMO_METHODS = ["echo", "sleep", "fail", "reject", "whoami", "ask", "push"]
DEMO_EVENTS = ["echo", "fail"]

PROPERTY = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def enc(obj: Any, ascii: bool = True) -> bytes:
    """Serialize with the standard library (any int size)."""
    return json.dumps(obj, ensure_ascii=ascii).encode("utf-8")


def frames_of(client: FakeClient, start: int = 0) -> list[bytes]:
    return client.link.frames[start:]


class FrameChecker:
    """Checks that every server frame is a well-formed v1 server message."""

    def __init__(self, test: SynchronousTestCase) -> None:
        self.test = test
        self.extra_codes: set[str] = set()

    def allow_relayed(self, payload: bytes) -> None:
        """A client's ``error`` answer to a server ``call`` may be relayed by the demo's
        ``ask`` as an application error with the client's own code: allow that code."""
        try:
            obj = json.loads(payload)
        except Exception:
            return
        if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
            code = obj["error"].get("code")
            if isinstance(code, str):
                self.extra_codes.add(code)

    def check(self, frame: bytes) -> dict:
        t = self.test
        t.assertIsInstance(frame, bytes)
        text = frame.decode("utf-8")  # must be valid UTF-8 (a text frame)
        t.assertNotIn("Traceback (most recent call last)", text)
        t.assertNotIn('File "/', text)
        msg = json.loads(text)
        t.assertIsInstance(msg, dict, frame)
        kind = msg.get("type")
        t.assertIsInstance(kind, str, frame)
        if kind == "error":
            t.assertIn(set(msg), ({"type", "error"}, {"type", "error", "id"}), frame)
            err = msg["error"]
            t.assertIsInstance(err, dict, frame)
            t.assertTrue({"code", "message"} <= set(err) <= {"code", "message", "data"}, frame)
            t.assertIsInstance(err["message"], str, frame)
            t.assertIn(err["code"], SPEC_CODES | DEMO_CODES | self.extra_codes, frame)
            t.assertNotIn("Traceback", err["message"])
        else:
            t.assertIn(kind, SERVER_MEMBERS, frame)
            t.assertEqual(set(msg), SERVER_MEMBERS[kind], frame)
        if "seq" in msg:
            t.assertIs(type(msg["seq"]), int)
            t.assertGreaterEqual(msg["seq"], 1)
        return msg


# -- strategies ---------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1),
    st.integers(min_value=-(2 ** 200), max_value=2 ** 200),  # huge ints (orjson: float)
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def nested_text(levels: int, kind: str) -> str:
    """JSON text nesting ``levels`` arrays/objects around a scalar (depth ``levels``)."""
    if kind == "list":
        return "[" * levels + "1" + "]" * levels
    return '{"a":' * levels + "1" + "}" * levels


deep_values = st.builds(nested_text, st.integers(0, 1100), st.sampled_from(["list", "dict"]))

ids = st.one_of(st.integers(-(2 ** 70), 2 ** 70), st.integers(0, 5), st.text(max_size=8),
                st.builds(lambda n: "i" * n, st.integers(125, 130)), scalars)
names = st.one_of(st.sampled_from(DEMO_METHODS + DEMO_EVENTS + ["nope", "", "t"]),
                  st.text(max_size=8), scalars,
                  st.builds(lambda n: "n" * n, st.integers(250, 260)))  # around the 256 limit
small_or_any = lambda s: st.one_of(s, json_values)  # noqa: E731
params = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={
        "count": small_or_any(st.integers(-1, 5)),
        "event": small_or_any(st.sampled_from(["e", ""])),
        "seconds": small_or_any(st.floats(-1, 61)),
        "method": small_or_any(st.sampled_from(["m", ""])),
        "timeout": small_or_any(st.floats(-1, 61)),
        "params": json_values,
        "data": json_values,
    }),
)
error_objs = st.one_of(json_values, st.fixed_dictionaries(
    {"code": small_or_any(st.sampled_from(["x.y", "internal"])),
     "message": small_or_any(st.text(max_size=10))},
    optional={"data": json_values}))
resume_objs = st.one_of(json_values, st.fixed_dictionaries(
    {}, optional={"session": small_or_any(st.text(max_size=30)),
                  "token": small_or_any(st.text(max_size=30)),
                  "last_seq": small_or_any(st.integers(-2, 2 ** 65))}))
typed_messages = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(CLIENT_TYPES), scalars)},
    optional={
        "id": ids, "method": names, "params": params, "event": names, "data": json_values,
        "topic": names, "seq": st.one_of(st.integers(-2, 2 ** 70), scalars),
        "result": json_values, "error": error_objs, "resume": resume_objs,
        "meta": json_values, "auth": json_values, "zzz": json_values,
    })


@st.composite
def payloads(draw: Any) -> bytes:
    """One client text message: random bytes, random JSON, deep JSON or a typed message."""
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return draw(st.binary(max_size=64))
    if choice == 1:
        return enc(draw(json_values), draw(st.booleans()))
    if choice == 2:
        deep = draw(deep_values)
        kind = draw(st.sampled_from(["ping", "event", "call", "bare"]))
        if kind == "bare":
            return deep.encode()
        if kind == "ping":
            return b'{"type":"ping","data":' + deep.encode() + b"}"
        if kind == "event":
            return b'{"type":"event","event":"echo","data":' + deep.encode() + b"}"
        return b'{"type":"call","id":1,"method":"echo","params":' + deep.encode() + b"}"
    return enc(draw(typed_messages), draw(st.booleans()))


GARBAGE_SETTINGS = Settings(max_bad_messages=10 ** 6, burst=10 ** 6, rate=1e6,
                            replay_limit=5, replay_bytes=600, resume_ttl=30)


# == 1. garbage never breaks the service ========================================================

class GarbageTests(SynchronousTestCase):
    """Property 1: random input never raises; every reply is a well-formed v1 message."""

    def _harness(self) -> ServiceHarness:
        clock = Clock()
        return ServiceHarness([DemoApp(clock)], GARBAGE_SETTINGS, clock=clock)

    @PROPERTY
    @given(st.lists(payloads(), min_size=1, max_size=8))
    def test_registered_client_survives_garbage(self, inputs: list[bytes]) -> None:
        harness = self._harness()
        checker = FrameChecker(self)
        client = harness.connect()
        client.hello()
        seen = 1
        for payload in inputs:
            if client.closed is not None:  # a bye or 1007: carry on with a fresh session
                for frame in frames_of(client, seen):
                    checker.check(frame)
                client.connection.lost()
                client = harness.connect()
                client.hello()
                seen = 1
            checker.allow_relayed(payload)
            client.sendRaw(payload)  # must not raise
            for frame in frames_of(client, seen):
                checker.check(frame)
            seen = len(client.link.frames)
            if not is_utf8(payload):
                # RFC 6455: a text message that is not UTF-8 fails the connection
                self.assertEqual(client.closed, 1007, payload)
            elif client.closed is not None:
                self.assertEqual(client.closed, closecodes.CLOSE_NORMAL)  # only bye closes here
        harness.clock.advance(61)  # sleeps, call and server-call timeouts fire
        for frame in frames_of(client, seen):
            checker.check(frame)
        harness.stop()
        # the only logged failures are the demo's deliberate RuntimeErrors
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(self.flushLoggedErrors(), [])

    @PROPERTY
    @given(payloads())
    def test_garbage_before_hello(self, payload: bytes) -> None:
        """The first message: a welcome (for a well-formed hello), else exactly one error
        (not_registered, or bad_message for a malformed hello) and close 4400."""
        harness = self._harness()
        checker = FrameChecker(self)
        client = harness.connect()
        client.sendRaw(payload)
        msgs = [checker.check(f) for f in client.link.frames]
        if not is_utf8(payload):
            self.assertEqual((msgs, client.closed), ([], 1007), payload)
            client.connection.lost()
            harness.stop()
            return
        self.assertTrue(msgs, payload)
        try:
            obj = json.loads(payload)
        except Exception:
            obj = None
        is_hello = isinstance(obj, dict) and obj.get("type") == "hello"
        if msgs[0]["type"] == "welcome":
            self.assertTrue(is_hello, payload)
            self.assertIsNone(client.closed)
            self.assertIs(msgs[0]["resumed"], False)  # random resume never names a session
            self.assertEqual(len(msgs), 1)
        else:
            self.assertEqual(len(msgs), 1, msgs)
            self.assertEqual(msgs[0]["type"], "error")
            code = msgs[0]["error"]["code"]
            if is_hello:
                self.assertIn(code, {"bad_message", "not_registered"})
            else:
                self.assertEqual(code, "not_registered")
            self.assertEqual(client.closed, closecodes.CLOSE_PROTOCOL_VIOLATION)
            self.assertEqual(harness.service.sessions, {})
        client.connection.lost()
        self.assertEqual(len(harness.service.connections), 0)
        harness.stop()

    @PROPERTY
    @given(st.integers(0, 1100), st.sampled_from(["list", "dict"]), st.integers(1, 40))
    @example(levels=31, kind="list", max_depth=32)
    @example(levels=32, kind="dict", max_depth=32)
    @example(levels=1030, kind="list", max_depth=32)
    def test_depth_limit(self, levels: int, kind: str, max_depth: int) -> None:
        """§4: deeper than max_depth (top-level object = depth 1) is bad_json, else accepted."""
        clock = Clock()
        harness = ServiceHarness([DemoApp(clock)], Settings(max_depth=max_depth), clock=clock)
        client = harness.connect()
        client.hello()
        client.sendRaw(b'{"type":"ping","data":' + nested_text(levels, kind).encode() + b"}")
        reply = client.next()
        if levels + 1 <= max_depth:
            self.assertEqual(reply["type"], "pong")
            self.assertEqual(reply["data"], json.loads(nested_text(levels, kind)))
        else:
            self.assertEqual(reply["type"], "error")
            self.assertEqual(reply["error"]["code"], "bad_json")
        self.assertIsNone(client.closed)
        harness.stop()


# == 2. the session state machine ===============================================================

TTL = 30.0
MAX_BAD = 2
REPLAY_LIMIT = 5
REPLAY_BYTES = 600
MACHINE_SETTINGS = Settings(replay_limit=REPLAY_LIMIT, replay_bytes=REPLAY_BYTES,
                            resume_ttl=TTL, burst=10 ** 6, rate=1e6, max_bad_messages=MAX_BAD)
TOPIC = "t"
N_CLIENTS = 3

small_data = st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=3),
                       # some frames fill replay_bytes (cheap to draw: no long random text)
                       st.builds(lambda n, c: c * n, st.integers(100, 320),
                                 st.sampled_from(["x", "\u00e9", "\n"])))


def frame_bytes(msg: dict) -> int:
    """The size of a pushed frame as protocol.md lays it out (members in listed order)."""
    return len(json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


class ModelSession:
    def __init__(self, sid: str, token: str, owner: "ModelClient | None") -> None:
        self.id = sid
        self.token = token
        self.owner = owner          # the client attached to it, or None while detached
        self.seq = 0
        self.alive = True
        self.detached_at: float | None = None
        self.subscribed = False
        self.bad = 0               # bad messages so far (the budget is per session)
        self.server_calls = 0      # ids of server-initiated calls: 1, 2, ...
        self.pushed: dict[int, dict] = {}   # seq -> the message as the client must see it
        self.buffer: list[tuple[int, int]] = []  # (seq, frame size) kept for replay
        self.buffer_bytes = 0

    def push(self, msg: dict) -> dict:
        self.seq += 1
        msg = dict(msg, seq=self.seq)
        self.pushed[self.seq] = msg
        self.buffer.append((self.seq, frame_bytes(msg)))
        self.buffer_bytes += self.buffer[-1][1]
        while len(self.buffer) > REPLAY_LIMIT or self.buffer_bytes > REPLAY_BYTES:
            self.buffer_bytes -= self.buffer.pop(0)[1]
        return msg

    def ack(self, seq: int) -> None:
        while self.buffer and self.buffer[0][0] <= seq:
            self.buffer_bytes -= self.buffer.pop(0)[1]

    def holds_after(self, last_seq: int) -> bool:
        """Whether every message after last_seq is still kept (protocol.md §2 Resume)."""
        if last_seq > self.seq:
            return False
        needed = set(range(last_seq + 1, self.seq + 1))
        return needed <= {s for s, _ in self.buffer}


class ModelClient:
    def __init__(self, name: int) -> None:
        self.name = name
        self.conn: FakeClient | None = None
        self.session: ModelSession | None = None  # the last session it knew
        self.last_seq = 0          # highest seq seen (or declared on resume) in that session
        self.expected: list[dict] = []  # what the live connection must receive next
        self.next_id = 0
        self.seqs: dict[str, list[int | None]] = {}  # every seq observed, per session


class SessionMachine(RuleBasedStateMachine):
    """Sessions, resume and replay against a model of what each client must see."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.harness = ServiceHarness([DemoApp(self.clock)], MACHINE_SETTINGS, clock=self.clock)
        self.service = self.harness.service
        self.clients = [ModelClient(i) for i in range(N_CLIENTS)]
        self.sessions: dict[str, ModelSession] = {}
        self.resumes = 0

    # -- helpers --------------------------------------------------------------------------------

    def _expect(self, session: ModelSession, msg: dict) -> None:
        if session.owner is not None:
            session.owner.expected.append(msg)

    def _settle(self) -> None:
        """Compare every live connection's inbox with the model; follow seqs."""
        for c in self.clients:
            if c.conn is None:
                continue
            got = c.conn.received()
            assert got == c.expected, (c.name, got, c.expected)
            for msg in got:
                if "seq" in msg:
                    assert c.session is not None
                    assert msg["seq"] == c.last_seq + 1, (msg, c.last_seq)
                    c.last_seq = msg["seq"]
                    c.seqs.setdefault(c.session.id, []).append(msg["seq"])
            c.expected = []

    def _server_closed(self, c: ModelClient, code: int) -> None:
        """The server closed c's connection with ``code``: the transport then goes away."""
        assert c.conn is not None
        assert c.conn.closed == code, (c.conn.closed, code)
        c.conn.connection.lost()  # a server-started close: the session is not ended by it
        c.conn = None
        c.expected = []

    def _pick(self, data: Any, pool: list) -> Any:
        return data.draw(st.sampled_from(pool))

    def _connected(self) -> list[ModelClient]:
        return [c for c in self.clients if c.conn is not None]

    # -- rules ----------------------------------------------------------------------------------

    @precondition(lambda self: any(c.conn is None for c in self.clients))
    @rule(data=st.data())
    def hello(self, data: Any) -> None:
        c = self._pick(data, [c for c in self.clients if c.conn is None])
        c.conn = self.harness.connect()
        welcome = c.conn.hello()
        assert welcome["resumed"] is False
        assert welcome["session"] not in self.sessions
        s = self.sessions[welcome["session"]] = ModelSession(welcome["session"],
                                                             welcome["token"], c)
        c.session, c.last_seq, c.expected = s, 0, []

    @precondition(lambda self: any(c.session is not None for c in self.clients))
    @rule(data=st.data(), mode=st.sampled_from(["last", "last", "last", "older", "beyond"]))
    def resume(self, data: Any, mode: str) -> None:
        c = self._pick(data, [c for c in self.clients if c.session is not None])
        if mode == "last":
            last_seq = c.last_seq
        elif mode == "older":
            last_seq = data.draw(st.integers(0, c.last_seq))
        else:
            last_seq = c.last_seq + data.draw(st.integers(1, 3))
        self._resume(c, last_seq, mode)

    def _resume(self, c: ModelClient, last_seq: int, mode: str) -> None:
        old = c.session
        assert old is not None
        takeover = c.conn  # resuming while still attached elsewhere: that connection 4409
        conn = self.harness.connect()
        conn.send({"type": "hello", "resume": {"session": old.id, "token": old.token,
                                               "last_seq": last_seq}})
        got = conn.received()
        assert got and got[0]["type"] == "welcome", got
        welcome = got[0]
        real = self.service.sessions.get(welcome["session"])
        # the key property: resumed:true with exactly (last_seq, session.seq], or resumed:false
        if welcome["resumed"]:
            assert welcome["session"] == old.id
            assert real is not None
            replayed = [m["seq"] for m in got[1:]]
            assert replayed == list(range(last_seq + 1, real.seq + 1)), (last_seq, replayed,
                                                                       real.seq)
        else:
            assert welcome["session"] != old.id
            assert len(got) == 1, got
        # and the model says which of the two it must be
        should_resume = old.alive and old.holds_after(last_seq)
        assert welcome["resumed"] is should_resume, (mode, last_seq, old.seq, old.alive,
                                                     old.buffer)
        if takeover is not None:
            assert old.owner is c
            self._server_closed(c, closecodes.CLOSE_SESSION_TAKEN)
        elif old.alive and old.owner is not None:
            raise AssertionError("model: a session attached to a client without connection")
        c.conn = conn
        if should_resume:
            self.resumes += 1
            assert got[1:] == [old.pushed[s] for s in range(last_seq + 1, old.seq + 1)]
            old.ack(last_seq)
            old.owner, old.detached_at = c, None
            c.last_seq = old.seq
            seen = c.seqs.setdefault(old.id, [])
            if mode != "last":  # the client declared another position than what it saw
                seen.append(None)
            seen.extend(range(last_seq + 1, old.seq + 1))
        else:
            if old.alive:  # the server could not resume it: it ended it
                old.alive = False
                old.owner = None
            s = self.sessions[welcome["session"]] = ModelSession(welcome["session"],
                                                                 welcome["token"], c)
            c.session, c.last_seq = s, 0
        c.expected = []

    @precondition(lambda self: any(c.conn is not None for c in self.clients))
    @rule(data=st.data(), payload=small_data)
    def event_echo(self, data: Any, payload: Any) -> None:
        c = self._pick(data, self._connected())
        c.conn.send({"type": "event", "event": "echo", "data": payload})
        self._expect(c.session, c.session.push({"type": "event", "event": "echo",
                                                "data": payload}))
        self._settle()

    @precondition(lambda self: any(c.conn is not None for c in self.clients))
    @rule(data=st.data(), count=st.integers(0, 4), payload=small_data)
    def call_push(self, data: Any, count: int, payload: Any) -> None:
        c = self._pick(data, self._connected())
        c.next_id += 1
        c.conn.send({"type": "call", "id": c.next_id, "method": "push",
                     "params": {"count": count, "event": "p", "data": payload}})
        for _ in range(count):
            self._expect(c.session, c.session.push({"type": "event", "event": "p",
                                                    "data": payload}))
        c.expected.append({"type": "result", "id": c.next_id, "result": count})
        self._settle()

    @precondition(lambda self: any(c.conn is not None for c in self.clients))
    @rule(data=st.data(), payload=small_data)
    def call_echo(self, data: Any, payload: Any) -> None:
        c = self._pick(data, self._connected())
        c.next_id += 1
        c.conn.send({"type": "call", "id": c.next_id, "method": "echo", "params": payload})
        c.expected.append({"type": "result", "id": c.next_id, "result": payload})
        self._settle()

    @precondition(lambda self: any(c.conn is not None for c in self.clients))
    @rule(data=st.data(), params=small_data, answer=small_data)
    def call_ask(self, data: Any, params: Any, answer: Any) -> None:
        """A client call whose handler calls the client back (a pushed ``call`` with seq)."""
        c = self._pick(data, self._connected())
        s = c.session
        c.next_id += 1
        c.conn.send({"type": "call", "id": c.next_id, "method": "ask",
                     "params": {"method": "m", "params": params}})
        s.server_calls += 1
        self._expect(s, s.push({"type": "call", "id": s.server_calls, "method": "m",
                                "params": params}))
        self._settle()
        c.conn.send({"type": "result", "id": s.server_calls, "result": answer})
        c.expected.append({"type": "result", "id": c.next_id, "result": answer})
        self._settle()

    @precondition(lambda self: any(c.conn is not None for c in self.clients))
    @rule(data=st.data(), payload=st.sampled_from([b"nope", b"[]", b'{"type":"x"}',
                                                   b'{"type":"hello"}']))
    def bad_message(self, data: Any, payload: bytes) -> None:
        """Bad input is answered; past max_bad_messages of the session the connection is
        closed 4400, and the session stays resumable."""
        c = self._pick(data, self._connected())
        s = c.session
        c.conn.sendRaw(payload)
        got = c.conn.received()
        assert len(got) == 1 and got[0]["type"] == "error", got
        assert got[0]["error"]["code"] in BAD_INPUT, got
        s.bad += 1
        if s.bad > MAX_BAD:
            self._server_closed(c, closecodes.CLOSE_PROTOCOL_VIOLATION)
            s.owner, s.detached_at = None, self.clock.seconds()
        else:
            assert c.conn.closed is None

    @precondition(lambda self: any(c.conn is not None for c in self.clients))
    @rule(data=st.data())
    def subscribe(self, data: Any) -> None:
        c = self._pick(data, self._connected())
        c.conn.send({"type": "subscribe", "topic": TOPIC, "id": "sub"})
        c.session.subscribed = True
        c.expected.append({"type": "result", "id": "sub", "result": None})
        self._settle()

    @precondition(lambda self: any(c.conn is not None for c in self.clients))
    @rule(data=st.data())
    def ack(self, data: Any) -> None:
        c = self._pick(data, self._connected())
        c.conn.send({"type": "ack", "seq": c.last_seq})
        c.session.ack(c.last_seq)
        self._settle()

    @precondition(lambda self: any(c.conn is not None for c in self.clients))
    @rule(data=st.data())
    def drop(self, data: Any) -> None:
        self._drop(self._pick(data, self._connected()))

    def _drop(self, c: ModelClient) -> None:
        c.conn.drop()
        c.conn, c.expected = None, []
        c.session.owner = None
        c.session.detached_at = self.clock.seconds()

    @precondition(lambda self: any(c.conn is not None for c in self.clients))
    @rule(data=st.data())
    def close_normally(self, data: Any) -> None:
        c = self._pick(data, self._connected())
        c.conn.closeNormally()
        c.conn, c.expected = None, []
        c.session.alive, c.session.owner = False, None

    @precondition(lambda self: any(c.conn is not None for c in self.clients))
    @rule(data=st.data())
    def bye(self, data: Any) -> None:
        c = self._pick(data, self._connected())
        c.conn.send({"type": "bye"})
        self._settle()
        c.session.alive, c.session.owner = False, None
        self._server_closed(c, closecodes.CLOSE_NORMAL)

    @rule(seconds=st.one_of(st.floats(0, 120), st.sampled_from([TTL, TTL / 2, 0.0])))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        now = self.clock.seconds()
        for s in self.sessions.values():
            # Clock.callLater(ttl) at t fires once seconds() >= t + ttl
            if s.alive and s.owner is None and s.detached_at is not None \
                    and s.detached_at + TTL <= now:
                s.alive = False
        self._settle()

    @precondition(lambda self: any(s.alive for s in self.sessions.values()))
    @rule(data=st.data(), payload=small_data)
    def server_push(self, data: Any, payload: Any) -> None:
        # creation order (not the random ids): the same draws pick the same session
        self._server_push(self._pick(data, [s for s in self.sessions.values() if s.alive]),
                          payload)

    def _server_push(self, s: ModelSession, payload: Any) -> None:
        seq = self.service.sessions[s.id].push("srv", payload)
        msg = s.push({"type": "event", "event": "srv", "data": payload})
        assert seq == msg["seq"]
        self._expect(s, msg)
        self._settle()

    @precondition(lambda self: any(c.conn is not None for c in self.clients))
    @rule(data=st.data(), pushes=st.lists(small_data, max_size=7),
          seconds=st.sampled_from([0.0, 10.0, TTL - 0.5, TTL]))
    def lose_and_come_back(self, data: Any, pushes: list, seconds: float) -> None:
        """The common story, in one step: the network drops, the server pushes while the
        session is detached, time passes, the client resumes from what it last saw."""
        c = self._pick(data, self._connected())
        self._drop(c)
        for payload in pushes:
            self._server_push(c.session, payload)
        self.advance(seconds)
        self._resume(c, c.last_seq, "last")

    @rule(payload=small_data)
    def publish(self, payload: Any) -> None:
        subscribers = [s for s in self.sessions.values() if s.alive and s.subscribed]
        published: list[Any] = []
        self.service.publish(TOPIC, payload).addCallback(published.append)
        assert published == [None]  # accepted at once: one process, in memory
        for s in subscribers:
            self._expect(s, s.push({"type": "message", "topic": TOPIC, "data": payload}))
        self._settle()

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def sessions_match_model(self) -> None:
        alive = {sid for sid, s in self.sessions.items() if s.alive}
        assert set(self.service.sessions) == alive, (set(self.service.sessions), alive)
        for sid, session in self.service.sessions.items():
            assert session.id == sid
            assert not session.closed
            assert session.seq == self.sessions[sid].seq
        subscribed = {self.service.sessions[s.id] for s in self.sessions.values()
                      if s.alive and s.subscribed}
        assert self.service.broker.topics.get(TOPIC, set()) == subscribed

    @invariant()
    def attached_or_expiring(self) -> None:
        live_links = {c.conn.link: c for c in self.clients if c.conn is not None}
        store = self.service.store
        for sid, session in self.service.sessions.items():
            model = self.sessions[sid]
            expires = store.expiresAt(sid)
            if session.attached:
                owners = [c for link, c in live_links.items() if session.isAttachedTo(link)]
                assert len(owners) == 1, owners
                assert owners[0].conn.link.close_code is None
                assert model.owner is owners[0]
                assert expires is None
            else:
                assert model.owner is None
                assert expires is not None, sid
                assert abs(expires - (model.detached_at + TTL)) < 1e-9

    @invariant()
    def replay_buffers(self) -> None:
        for sid, session in self.service.sessions.items():
            record = self.service.store.get(sid)
            kept = record.kept()
            seqs = [seq for seq, _ in kept]
            if seqs:
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
                assert seqs[-1] == session.seq
            assert record.kept_bytes == sum(len(f) for _, f in kept)
            assert len(kept) <= REPLAY_LIMIT
            assert record.kept_bytes <= REPLAY_BYTES
            model = self.sessions[sid]
            assert seqs == [s for s, _ in model.buffer], (seqs, model.buffer)
            for seq, frame in kept:
                assert orjson.loads(frame) == model.pushed[seq]

    @invariant()
    def connections_counted(self) -> None:
        assert len(self.service.connections) == len(self._connected())

    @invariant()
    def seqs_step_by_one(self) -> None:
        for c in self.clients:
            for sid, seqs in c.seqs.items():
                # per session, seqs go 1, 2, 3, ... by one; only a resume from a position
                # other than the last seen seq (marked None) starts a new run
                runs: list[list[int]] = [[]]
                for seq in seqs:
                    if seq is None:
                        runs.append([])
                    else:
                        runs[-1].append(seq)
                assert not runs[0] or runs[0][0] == 1, (sid, seqs)
                for run in runs:
                    assert run == list(range(run[0], run[0] + len(run))) if run else True, \
                        (sid, seqs)

    def teardown(self) -> None:
        self.harness.stop()


class SessionMachineTests(SynchronousTestCase):
    """Property 2: the session state machine."""

    def test_session_machine(self) -> None:
        run_state_machine_as_test(
            SessionMachine,
            settings=settings(max_examples=100, stateful_step_count=40, deadline=None,
                              database=None, suppress_health_check=list(HealthCheck)))
        self.assertEqual(self.flushLoggedErrors(), [])


# == 1b. every call is answered exactly once ======================================================

call_ids = st.one_of(st.integers(0, 3), st.sampled_from(["a", "b"]))
client_actions = st.one_of(
    st.tuples(st.just("call"), call_ids, st.sampled_from(DEMO_METHODS + ["nope", ""]), params),
    st.tuples(st.just("cancel"), call_ids),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.5, 1.0, 5.0, 31.0])),
    st.tuples(st.just("answer"), st.booleans(), json_values),  # answer the oldest server call
)


class OneReplyPerCallTests(SynchronousTestCase):
    """§3: a call gets exactly one result or error with the same id (duplicates included:
    the duplicate gets duplicate_id, the original its own answer), never a second one."""

    @PROPERTY
    @given(st.lists(client_actions, min_size=1, max_size=12))
    def test_exactly_one_reply_per_call(self, actions: list) -> None:
        clock = Clock()
        harness = ServiceHarness([DemoApp(clock)], GARBAGE_SETTINGS, clock=clock)
        checker = FrameChecker(self)
        client = harness.connect()
        client.hello()
        calls: dict[Any, int] = {}
        replies: dict[Any, int] = {}
        server_calls: list[int] = []
        seen = 1
        answered = late = 0  # our answers to server calls; those refused as not in flight

        def read() -> None:
            nonlocal seen, late
            for frame in client.link.frames[seen:]:
                msg = checker.check(frame)
                if msg["type"] == "error" and "id" not in msg:
                    # an answer to a server call that had timed out meanwhile (§3)
                    self.assertEqual(msg["error"]["code"], "bad_message", msg)
                    late += 1
                    self.assertLessEqual(late, answered, msg)
                elif msg["type"] in ("result", "error"):
                    replies[msg["id"]] = replies.get(msg["id"], 0) + 1
                    self.assertLessEqual(replies[msg["id"]], calls.get(msg["id"], 0), msg)
                elif msg["type"] == "call":
                    server_calls.append(msg["id"])
            seen = len(client.link.frames)

        for action in actions:
            if action[0] == "call":
                _, call_id, method, p = action
                calls[call_id] = calls.get(call_id, 0) + 1
                client.sendRaw(enc({"type": "call", "id": call_id, "method": method,
                                    "params": p}))
            elif action[0] == "cancel":
                client.sendRaw(enc({"type": "cancel", "id": action[1]}))
            elif action[0] == "advance":
                clock.advance(action[1])
            elif server_calls:
                server_id = server_calls.pop(0)
                answered += 1
                if action[1]:
                    client.sendRaw(enc({"type": "result", "id": server_id, "result": action[2]}))
                else:
                    client.sendRaw(enc({"type": "error", "id": server_id,
                                        "error": {"code": "client.no", "message": "no"}}))
                    checker.extra_codes.add("client.no")
            read()
        clock.advance(61)  # every sleep, call timeout and server-call timeout is over
        read()
        self.assertEqual(replies, calls)
        self.assertEqual(client.connection.session.inflight, {})
        harness.stop()
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(self.flushLoggedErrors(), [])


# == 3. the bad-message budget ==================================================================

GOOD = [
    b'{"type":"ping","data":[1,2]}',
    b'{"type":"event","event":"echo","data":"x"}',
    b'{"type":"call","id":1,"method":"echo","params":{"a":1}}',
    b'{"type":"call","id":2,"method":"nope","params":null}',       # unknown_method: not bad
    b'{"type":"call","id":3,"method":"reject","params":null}',     # demo.rejected: not bad
    b'{"type":"call","id":4,"method":"push","params":{"count":-1,"event":"e"}}',  # invalid_params
    b'{"type":"event","event":"nope","data":1}',                   # unknown_event: not bad
    b'{"type":"subscribe","topic":"t","id":"s"}',
    b'{"type":"unsubscribe","topic":"t"}',
    b'{"type":"publish","topic":"t","data":1,"id":7}',
    b'{"type":"cancel","id":99}',                                  # ignored
    b'{"type":"ack","seq":0}',
    b'{"type":"ping","zzz":1}',                                    # unknown member: ignored
]
BAD = [
    b"not json",
    "\u00fe not json, but UTF-8".encode(),
    b"[1,2,3]",
    b'"just a string"',
    b"{}",
    b'{"type":"nope"}',
    b'{"type":7}',
    b'{"type":"hello"}',                                           # already_registered
    b'{"type":"ack","seq":1000000}',                               # a seq not sent yet
    b'{"type":"result","id":12345,"result":1}',                    # no such server call
    b'{"type":"error","id":12345,"error":{"code":"x","message":"y"}}',
    b'{"type":"call","id":true,"method":"echo"}',
    b'{"type":"call","id":1,"method":""}',
    b'{"type":"event","event":""}',
    b'{"type":"subscribe","topic":5}',
    b'{"type":"ack","seq":-1}',
    b'{"type":"ping","data":' + nested_text(40, "list").encode() + b"}",
]


def is_utf8(payload: bytes) -> bool:
    """Whether a text message's bytes are UTF-8 (else the connection fails with 1007)."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class BudgetTests(SynchronousTestCase):
    """Property 3: max_bad_messages=k closes 4400 exactly at the (k+1)-th bad message."""

    @PROPERTY
    @given(st.integers(0, 6),
           st.lists(st.one_of(st.sampled_from(GOOD).map(lambda p: (False, p)),
                              st.sampled_from(BAD).map(lambda p: (True, p))),
                    min_size=1, max_size=20))
    def test_bad_message_budget(self, k: int, messages: list[tuple[bool, bytes]]) -> None:
        clock = Clock()
        harness = ServiceHarness([DemoApp(clock)],
                                 Settings(max_bad_messages=k, burst=10 ** 6, rate=1e6),
                                 clock=clock)
        checker = FrameChecker(self)
        client = harness.connect()
        client.hello()
        bad = 0
        seen = len(client.link.frames)
        for is_bad, payload in messages:
            client.sendRaw(payload)
            replies = [checker.check(f) for f in client.link.frames[seen:]]
            seen = len(client.link.frames)
            bad_codes = [m["error"]["code"] for m in replies
                         if m["type"] == "error" and m["error"]["code"] in BAD_INPUT]
            if is_bad:
                bad += 1
                self.assertEqual(len(bad_codes), 1, (payload, replies))
            else:
                self.assertEqual(bad_codes, [], (payload, replies))
            if bad <= k:
                self.assertIsNone(client.closed, (bad, k, payload))
            else:
                self.assertEqual(client.closed, closecodes.CLOSE_PROTOCOL_VIOLATION)
                break
        harness.stop()


# == 4. the rate limiter is a token bucket ======================================================

class RateLimitTests(SynchronousTestCase):
    """§4 rate_limited: with rate r and burst b the accepted messages are exactly a token
    bucket's (a full bucket of b at welcome, r tokens/s, capped at b, 1 per message)."""

    @PROPERTY
    @given(st.integers(1, 40), st.integers(1, 12), st.integers(0, 64),
           st.lists(st.tuples(st.integers(0, 48), st.integers(0, 8)), min_size=1, max_size=12))
    def test_token_bucket(self, rate: int, burst: int, start: int,
                          schedule: list[tuple[int, int]]) -> None:
        # times are multiples of 1/16 s and rates integers: float arithmetic is exact here
        clock = Clock()
        clock.advance(start / 16)
        harness = ServiceHarness([DemoApp(clock)],
                                 Settings(rate=rate, burst=burst, max_bad_messages=10 ** 6),
                                 clock=clock)
        client = harness.connect()
        client.hello()
        tokens = Fraction(burst)
        filled = Fraction(start, 16)
        now = filled
        predicted, actual = [], []
        n = 0
        for sixteenths, count in schedule:
            clock.advance(sixteenths / 16)
            now += Fraction(sixteenths, 16)
            for _ in range(count):
                n += 1
                tokens = min(Fraction(burst), tokens + (now - filled) * rate)
                filled = now
                if tokens < 1:
                    predicted.append(False)
                else:
                    tokens -= 1
                    predicted.append(True)
                client.send({"type": "ping", "data": n})
                reply = client.next()
                if reply == {"type": "pong", "data": n}:
                    actual.append(True)
                else:
                    self.assertEqual(reply["type"], "error")
                    self.assertEqual(reply["error"]["code"], "rate_limited")
                    actual.append(False)
        self.assertEqual(actual, predicted)
        self.assertIsNone(client.closed)
        harness.stop()

    @PROPERTY
    @given(st.integers(1, 10), st.integers(0, 5))
    def test_rate_limited_past_budget_closes_4429(self, burst: int, k: int) -> None:
        clock = Clock()
        harness = ServiceHarness([DemoApp(clock)],
                                 Settings(rate=1, burst=burst, max_bad_messages=k), clock=clock)
        client = harness.connect()
        client.hello()
        for _ in range(burst):
            client.send({"type": "ping"})
            self.assertEqual(client.next()["type"], "pong")
        for i in range(k + 1):
            self.assertIsNone(client.closed)
            client.send({"type": "ping"})
            self.assertEqual(client.next()["error"]["code"], "rate_limited")
        self.assertEqual(client.closed, closecodes.CLOSE_RATE_LIMITED)
        harness.stop()
