"""The Python client against a fake server of the test's own (Autobahn, loopback): what a
real server would never send (malformed JSON, duplicate and out-of-order seqs, answers to
nothing), every close code, and the acks counted as they arrive."""

from __future__ import annotations

from typing import Any

import orjson
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import LogLevel
from twisted.trial.unittest import TestCase

from wsservice.client import ClientError, RemoteError

from . import live, pyclient
from .pyclient import FAST, Logged, Seen, States


class _FakeProtocol(WebSocketServerProtocol):
    fake: FakeServer

    def onConnect(self, request: Any) -> Any:
        return "wsservice.v1" if "wsservice.v1" in request.protocols else None

    def onOpen(self) -> None:
        self.fake.current = self

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = orjson.loads(payload)
        self.fake.received.append(message)
        if message["type"] == "hello":
            self.fake.hellos.append(message)
            resumed = "resume" in message and self.fake.resumable
            self.send({"type": "welcome", "session": "s1", "token": "t1", "resumed": resumed,
                       "heartbeat": 0, "server": "fake"})
            for frame in self.fake.after_welcome:
                self.send(frame)
        elif message["type"] == "ping":
            self.send({"type": "pong", "data": message.get("data")})
        elif message["type"] == "call" and message["method"] == "echo":
            self.send({"type": "result", "id": message["id"], "result": message["params"]})
        elif message["type"] in ("subscribe", "unsubscribe") and "id" in message:
            self.send({"type": "result", "id": message["id"], "result": None})
        elif message["type"] == "presence":
            self.send({"type": "result", "id": message["id"],
                       "result": self.fake.presence_results.pop(0)})

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        timer, self.closeHandshakeTimeoutCall = self.closeHandshakeTimeoutCall, None
        if timer is not None:
            timer.cancel()
        if self.fake.current is self:
            self.fake.current = None

    def send(self, frame: Any) -> None:
        self.sendMessage(frame if isinstance(frame, bytes) else orjson.dumps(frame), False)


class FakeServer:
    """Says welcome (session s1, resumed when ``resumable`` and asked to resume) then sends
    ``after_welcome``; answers ping, call ``echo``, subscribe and unsubscribe, and each
    presence with the next of ``presence_results``; records what it gets."""

    def __init__(self) -> None:
        self.current: _FakeProtocol | None = None
        self.received: list[dict[str, Any]] = []
        self.hellos: list[dict[str, Any]] = []
        self.after_welcome: list[Any] = []
        self.resumable = True
        self.presence_results: list[Any] = []

    async def start(self, testcase: Any) -> FakeServer:
        factory = WebSocketServerFactory("ws://127.0.0.1/ws")
        factory.protocol = type("Fake", (_FakeProtocol,), {"fake": self})
        # Autobahn's timers round down to whole seconds: 1 s could end a close at once
        factory.setProtocolOptions(closeHandshakeTimeout=5)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        testcase.addCleanup(port.stopListening)
        testcase.addCleanup(self.drop)
        self.url = f"ws://127.0.0.1:{port.getHost().port}/ws"
        return self

    def send(self, *frames: Any) -> None:
        assert self.current is not None
        for frame in frames:
            self.current.send(frame)

    def close(self, code: int) -> None:
        assert self.current is not None
        self.current.sendCloseFrame(code, b"fake close", isReply=False)

    def drop(self) -> None:
        if self.current is not None:
            self.current.dropConnection(abort=True)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m["type"] == kind]


def event(seq: Any, data: Any, name: str = "e") -> dict[str, Any]:
    return {"type": "event", "event": name, "data": data, "seq": seq}


class _OnFakeServer:
    """Each test has its own fake server; ``client()`` connects to it."""

    def setUp(self) -> Deferred:
        async def start() -> None:
            self.fake = await FakeServer().start(self)
        return Deferred.fromCoroutine(start())

    async def client(self, **kwargs: Any) -> Any:
        return await pyclient.client(self, self.fake.url, **{**FAST, **kwargs})


class FakeServerTests(_OnFakeServer, TestCase):

    async def test_bad_input_survived(self) -> None:
        """Malformed JSON, a non-object, unknown types, duplicate and out-of-order seqs, a
        bad seq, answers to unknown ids: each dropped and logged at WARN; the application
        sees each seq once; the client still works."""
        logged = Logged(self)
        client = await self.client()
        seen = Seen()
        client.on("e", seen)
        client.handle("ask", lambda params: params)
        self.fake.send(
            b"{not json", b"[1, 2]", b'"text"', b'{"type": 5}', b'{"type": "bogus"}',
            event(1, "a"), event(1, "a again"), event(3, "c"), event(2, "b late"),
            event(0, "zero"), event("4", "string seq"), event(True, "bool seq"),
            {"type": "message", "topic": "nobody", "data": 1, "seq": 4},
            {"type": "result", "id": 999, "result": 1},
            {"type": "error", "id": "x", "error": {"code": "c", "message": "m"}},
            {"type": "error", "error": {"code": "bad_message", "message": "you erred"}},
            {"type": "welcome", "session": "s2", "token": "t2", "resumed": False},
            {"type": "call", "id": 7, "method": "ask", "params": "p", "seq": 5},
            {"type": "call", "id": 8, "method": "nope", "seq": 6},
            {"type": "call", "id": 9, "method": "ask", "seq": 6},
            event(7, "end"))
        await live.until(lambda: "end" in seen.data, "the last event")
        self.assertEqual(seen.calls, [("a", 1), ("c", 3), ("end", 7)])
        self.assertEqual(client.last_seq, 7)
        self.assertEqual(client.session, "s1")
        self.assertEqual(client.state, "open")
        for text, count in (
                ("malformed JSON", 1), ("not an object with a string 'type'", 3),
                ("unknown type 'bogus'", 1), ("duplicate event seq 1", 1),
                ("duplicate event seq 2", 1), ("bad seq 0", 1), ("bad seq '4'", 1),
                ("bad seq True", 1), ("seq jumped from 1 to 3", 1),
                ("unknown request id 999", 1), ("unknown request id 'x'", 1),
                ("the server reported bad_message: you erred", 1), ("second welcome", 1),
                ("duplicate call seq 6", 1)):
            self.assertEqual(logged.count(text, LogLevel.warn), count,
                             f"{text!r} in {logged.lines}")
        def answers() -> list[dict]:
            return [m for m in self.fake.received if m["type"] in ("result", "error")]
        # the client sent them before it saw "end"; the fake server may read them later
        await live.until(lambda: len(answers()) >= 2, lambda: f"two answers, got {answers()}")
        self.assertEqual(answers(), [
            {"type": "result", "id": 7, "result": "p"},
            {"type": "error", "id": 8, "error": {"code": "unknown_method",
                                                 "message": "no handler for method 'nope'"}}])
        self.assertEqual(await client.call("echo", "still here"), "still here")
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_replay_duplicates_dropped_on_resume(self) -> None:
        """A resume says last_seq; what the server replays at or below it is dropped."""
        client = await self.client()
        seen, states = Seen(), States(client)
        client.on("e", seen)
        self.fake.send(event(1, "a"), event(2, "b"))
        await live.until(lambda: len(seen.calls) == 2, "two events")
        self.fake.after_welcome = [event(1, "a"), event(2, "b"), event(3, "c")]
        self.fake.drop()
        info = await states.reach("open")
        self.assertEqual(self.fake.hellos[-1]["resume"],
                         {"session": "s1", "token": "t1", "last_seq": 2})
        self.assertEqual(info, {"session": "s1", "resumed": True, "replayed": 1})
        self.assertEqual(seen.calls, [("a", 1), ("b", 2), ("c", 3)])

    async def test_close_codes(self) -> None:
        """1001, 1011, 1013, 4408, 4429, 4508 and a drop: reconnect and resume; 1000, 4400,
        4401, 4409: closed for good, with the code."""
        for code in (1001, 1011, 1013, 4408, 4429, 4508, None):
            client = await self.client()
            states, hellos = States(client), len(self.fake.hellos)
            if code is None:
                self.fake.drop()
            else:
                self.fake.close(code)
            await states.reach("open")
            self.assertEqual(states.last("reconnecting")["code"], code or 1006)
            self.assertEqual(len(self.fake.hellos), hellos + 1)
            self.assertEqual(self.fake.hellos[-1]["resume"]["session"], "s1")
            await client.close()
        for code in (1000, 4400, 4401, 4409):
            client = await self.client()
            states, hellos = States(client), len(self.fake.hellos)
            self.fake.close(code)
            info = await states.reach("closed")
            self.assertEqual(info["code"], code)
            await live.sleep(0.3)  # more than backoff_max: no reconnect may come
            self.assertEqual(len(self.fake.hellos), hellos)
            self.assertEqual(states.states, ["closed"])

    async def test_lost_resets_seq(self) -> None:
        """resumed:false: seq starts over at 1 for the new session; onLost is told."""
        client = await self.client()
        seen, lost, states = Seen(), Seen(), States(client)
        client.on("e", seen)
        client.onLost(lost)
        self.fake.send(event(1, "a"), event(2, "b"))
        await live.until(lambda: len(seen.calls) == 2, "two events")
        self.fake.resumable = False
        self.fake.drop()
        info = await states.reach("open")
        self.assertEqual(info, {"session": "s1", "resumed": False, "lost": True})
        self.assertEqual(lost.calls, [(info,)])
        self.assertEqual(client.last_seq, 0)
        self.fake.send(event(1, "new a"))
        await live.until(lambda: len(seen.calls) == 3, "the new session's first event")
        self.assertEqual(seen.calls[-1], ("new a", 1))

    async def test_acks_counted(self) -> None:
        """250 events: acks for 100 and 200 at once, 250 within a second; never more."""
        client = await self.client()
        seen = Seen()
        client.on("e", seen)
        self.fake.send(*[event(n, n) for n in range(1, 251)])
        await live.until(lambda: len(seen.calls) == 250, "250 events")
        await live.until(lambda: [m["seq"] for m in self.fake.of_type("ack")] == [100, 200],
                         lambda: f"acks 100, 200, got {self.fake.of_type('ack')}", timeout=0.9)
        await live.until(lambda: len(self.fake.of_type("ack")) == 3, "the last ack",
                         timeout=2)
        self.assertEqual(self.fake.of_type("ack")[-1], {"type": "ack", "seq": 250})
        self.assertEqual(await client.call("echo", 1), 1)
        self.assertEqual(len(self.fake.of_type("ack")), 3)

    async def test_malformed_error_body(self) -> None:
        """An error reply without a proper body still fails the call (code internal)."""
        client = await self.client()
        d = client.call("other")
        await live.until(lambda: self.fake.of_type("call"), "the call")
        self.fake.send({"type": "error", "id": self.fake.of_type("call")[0]["id"],
                        "error": "oops"})
        e = await self.assertFailure(d, RemoteError)
        self.assertEqual(e.code, "internal")



def joined(topic: Any, member: Any, seq: int, name: str = "presence.join") -> dict[str, Any]:
    return event(seq, {"topic": topic, "member": member}, name)


class FakePresenceTests(_OnFakeServer, TestCase):
    """Presence answers and events that a real server would never send."""

    async def test_malformed_presence_answers(self) -> None:
        """An answer without a members list fails ClientError ``bad_result``; malformed
        members are left out (logged at WARN); missing user and meta become None; members
        of a newer server are kept."""
        logged = Logged(self)
        client = await self.client()
        for result in (None, [], "x", {}, {"members": None}, {"members": {"a": 1}}):
            self.fake.presence_results.append(result)
            e = await self.assertFailure(client.presence("room"), ClientError)
            self.assertEqual((e.code, e.data), ("bad_result", result))
            self.assertIn("no members list", e.message)
        good = {"client": "c1", "user": "ann", "meta": {"name": "Ann"}}
        self.fake.presence_results.append({"members": [
            good, None, 5, "c2", {"user": "no client"}, {"client": ""}, {"client": 7},
            {"client": "c3", "user": 5}, {"client": "c4"},
            {"client": "c5", "user": None, "meta": [1], "since": 12}]})
        self.assertEqual(await client.presence("room"), [
            good, {"client": "c4", "user": None, "meta": None},
            {"client": "c5", "user": None, "meta": [1], "since": 12}])
        self.assertEqual(logged.count("dropped a malformed member of 'room'", LogLevel.warn),
                         7, logged.lines)
        self.assertEqual([m["topic"] for m in self.fake.of_type("presence")], ["room"] * 7)
        self.assertEqual(await client.call("echo", "still here"), "still here")

    async def test_presence_events_routed_and_checked(self) -> None:
        """subscribe(presence=) sends "presence": true; join and leave events of the topic
        reach its presence listener as (kind, member); malformed ones are dropped with a
        warning (on() listeners still get them: they are plain events), other topics' go
        nowhere; a subscribe without presence= turns the listener off."""
        logged = Logged(self)
        client = await self.client()
        heard, plain = Seen(), Seen()
        client.on("presence.join", plain)
        await client.subscribe("room", Seen(), presence=heard)
        await client.subscribe("other", Seen())
        subscribes = self.fake.of_type("subscribe")
        self.assertEqual([(m["topic"], m.get("presence")) for m in subscribes],
                         [("room", True), ("other", None)])
        ann = {"client": "c1", "user": None, "meta": {"name": "Ann"}}
        self.fake.send(
            joined("room", ann, 1),
            joined("room", {"client": "c2"}, 2),
            joined("room", {"client": 2}, 3),  # malformed member
            joined(None, ann, 4),  # no topic
            event(5, "not an object", "presence.join"),
            event(6, {"topic": "room"}, "presence.leave"),  # no member
            joined("other", ann, 7),  # not subscribed with presence
            joined("nowhere", ann, 8),  # not subscribed at all
            joined("room", ann, 9, "presence.leave"),
            joined("room", ann, 10, "presence.moved"))  # an event of another name
        await live.until(lambda: client.last_seq == 10, "the ten events")
        self.assertEqual(heard.calls, [("join", ann),
                                       ("join", {"client": "c2", "user": None, "meta": None}),
                                       ("leave", ann)])
        self.assertEqual(plain.seqs, [1, 2, 3, 4, 5, 7, 8])
        for text in ("malformed presence.join event seq 3", "malformed presence.join event "
                     "seq 4", "malformed presence.join event seq 5",
                     "malformed presence.leave event seq 6"):
            self.assertEqual(logged.count(text, LogLevel.warn), 1, (text, logged.lines))
        await client.subscribe("room", Seen())
        self.assertNotIn("presence", self.fake.of_type("subscribe")[-1])
        self.fake.send(joined("room", ann, 11))
        await live.until(lambda: client.last_seq == 11, "the event after presence off")
        self.assertEqual(len(heard.calls), 3)
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_failing_presence_listener(self) -> None:
        """A presence listener that raises is logged; the next events still arrive."""
        client = await self.client()
        await client.subscribe("room", Seen(), presence=lambda kind, member: 1 / 0)
        seen = Seen()
        client.on("e", seen)
        self.fake.send(joined("room", {"client": "c1"}, 1), event(2, "after"))
        await live.until(lambda: seen.calls, "the event after the failing listener")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    async def test_lost_session_subscribes_again_with_presence(self) -> None:
        """After a lost session each topic is subscribed again, with "presence": true where
        a presence listener was given, and events go on reaching it."""
        client = await self.client()
        heard, states = Seen(), States(client)
        await client.subscribe("room", Seen(), presence=heard)
        await client.subscribe("plain", Seen())
        self.fake.resumable = False
        self.fake.drop()
        await states.reach("open")
        await live.until(lambda: len(self.fake.of_type("subscribe")) == 4,
                         "the topics subscribed again")
        again = sorted((m["topic"], m.get("presence"))
                       for m in self.fake.of_type("subscribe")[2:])
        self.assertEqual(again, [("plain", None), ("room", True)])
        self.fake.send(joined("room", {"client": "c9"}, 1))
        await live.until(lambda: heard.calls, "the join on the new session")
        self.assertEqual(heard.calls, [("join", {"client": "c9", "user": None, "meta": None})])
