"""Fast in-memory tests of SessionService / Connection / Session against protocol.md §2-4.

Everything runs on a ``task.Clock`` through ``wsservice.testing.ServiceHarness``: no sockets,
no reactor. Resume/replay, topics and rate limits are covered in depth by their own test
modules; here they are checked as far as the session lifecycle and §2-4 need them.
"""

from __future__ import annotations

import gc
import re
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from wsservice import __version__
from wsservice.config import Settings
from wsservice.demo import DemoApp
from wsservice.errors import ApplicationError, Unauthorized
from wsservice.handler import Handler, call, event
from wsservice.interfaces import IAuthenticator
from wsservice.testing import FakeClient, ServiceHarness

URLSAFE = re.compile(r"^[A-Za-z0-9_-]{22,}$")


# -- helpers ------------------------------------------------------------------------------------


class Extra(Handler):
    """Handlers the demo does not have: async results, unserializable values, failing events."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.cancelled: list[Any] = []
        self.invoked: list[str] = []

    @call("acoro")
    async def acoro(self, session: Any, params: Any) -> Any:
        await deferLater(self.clock, 1, lambda: None)
        return {"coro": params}

    @call("adeferred")
    def adeferred(self, session: Any, params: Any) -> Deferred:
        d: Deferred = Deferred()
        self.clock.callLater(2, d.callback, {"deferred": params})
        return d

    @call("hold")
    def hold(self, session: Any, params: Any) -> Deferred:
        """Never answers by itself; records its cancellation."""
        return Deferred(lambda d: self.cancelled.append(params))

    @call("unserializable")
    def unserializable(self, session: Any, params: Any) -> Any:
        return object()

    @call("huge")
    def huge(self, session: Any, params: Any) -> Any:
        """An integer beyond 64 bits, which orjson cannot write."""
        return {"n": 10 ** 29, "m": [-(2 ** 70)]}

    @call("unserializable_later")
    def unserializable_later(self, session: Any, params: Any) -> Deferred:
        d: Deferred = Deferred()
        self.clock.callLater(1, d.callback, {1, 2, 3})
        return d

    @call("count")
    def count(self, session: Any, params: Any) -> Any:
        self.invoked.append("count")
        return len(self.invoked)

    @event("boom_app")
    def boom_app(self, session: Any, data: Any) -> None:
        raise ApplicationError("extra.bad", "bad event data", {"got": data})

    @event("boom")
    def boom(self, session: Any, data: Any) -> None:
        raise RuntimeError("SECRET-INTERNAL-DETAIL")

    @event("aboom_app")
    async def aboom_app(self, session: Any, data: Any) -> None:
        await deferLater(self.clock, 1, lambda: None)
        raise ApplicationError("extra.async_bad", "bad async event", {"got": data})

    @event("aboom")
    async def aboom(self, session: Any, data: Any) -> None:
        await deferLater(self.clock, 1, lambda: None)
        raise RuntimeError("SECRET-ASYNC-DETAIL")


class Observer(Handler):
    """Records sessionOpened / sessionClosed."""

    def __init__(self, push: bool = False) -> None:
        self.opened: list[Any] = []
        self.closed: list[tuple[Any, str]] = []
        self.push = push

    def sessionOpened(self, session: Any) -> None:
        self.opened.append(session)
        if self.push:
            session.push("opened", len(self.opened))

    def sessionClosed(self, session: Any, reason: str) -> None:
        self.closed.append((session, reason))


@implementer(IAuthenticator)
class RecordingAuthenticator:
    """Records each request; answers with ``answer(request)``."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests: list[Any] = []

    def authenticate(self, request: Any) -> Any:
        self.requests.append(request)
        return self.answer(request)


class ServiceTestCase(SynchronousTestCase):
    """Builds a harness with the demo app (and Extra) on a fresh Clock."""

    # Collect garbage after each test, so that an "Unhandled error in Deferred" is blamed on
    # the test that caused it (set on the classes whose tests may leave one).
    collect = False

    def setUp(self) -> None:
        if self.collect:
            self.addCleanup(gc.collect, 1)

    def harness(self, extra: tuple = (), authenticator: Any = None,
                **settings: Any) -> ServiceHarness:
        self.clock = Clock()
        self.extra = Extra(self.clock)
        handlers = [DemoApp(self.clock), self.extra, *extra]
        self.h = ServiceHarness(handlers, settings=Settings(**settings),
                                authenticator=authenticator, clock=self.clock)
        return self.h

    def client(self, **settings: Any) -> FakeClient:
        """A harness and one registered client."""
        h = self.harness(**settings)
        c = h.connect()
        c.hello()
        return c

    def assertError(self, message: dict, code: str, id: Any = None, has_id: bool | None = None) -> dict:
        """``message`` is an ``error`` with ``code`` (and ``id`` when given / absent when not)."""
        self.assertEqual(message["type"], "error", message)
        self.assertEqual(message["error"]["code"], code, message)
        self.assertIsInstance(message["error"]["message"], str)
        if has_id is None:
            has_id = id is not None
        if has_id:
            self.assertIn("id", message)
            self.assertEqual(message["id"], id)
        else:
            self.assertNotIn("id", message, message)
        return message


# -- §2: hello / welcome -------------------------------------------------------------------------


class HelloTests(ServiceTestCase):

    def test_welcome_members(self) -> None:
        h = self.harness()
        c = h.connect()
        welcome = c.hello()
        self.assertEqual(set(welcome), {"type", "session", "token", "resumed", "heartbeat",
                                        "server"})
        self.assertEqual(welcome["type"], "welcome")
        self.assertIs(welcome["resumed"], False)
        self.assertEqual(welcome["heartbeat"], 25)
        self.assertIsInstance(welcome["heartbeat"], int)
        self.assertEqual(welcome["server"], f"wsservice/{__version__}")
        self.assertEqual(c.received(), [])
        self.assertIsNone(c.closed)

    def test_session_and_token_are_distinct_urlsafe_secrets(self) -> None:
        h = self.harness()
        w1 = h.connect().hello()
        w2 = h.connect().hello()
        for w in (w1, w2):
            self.assertRegex(w["session"], URLSAFE)
            self.assertRegex(w["token"], URLSAFE)
            self.assertNotEqual(w["session"], w["token"])
        self.assertNotEqual(w1["session"], w2["session"])
        self.assertNotEqual(w1["token"], w2["token"])
        self.assertEqual(set(h.service.sessions), {w1["session"], w2["session"]})

    def test_meta_kept_on_session(self) -> None:
        h = self.harness()
        c = h.connect()
        meta = {"app": "tests", "n": 1, "nested": {"a": [1, 2]}}
        welcome = c.hello(meta=meta)
        reply = c.call("whoami", None, id=1)
        self.assertEqual(reply["type"], "result")
        self.assertEqual(reply["result"]["meta"], meta)
        self.assertEqual(reply["result"]["session"], welcome["session"])
        self.assertEqual(reply["result"]["principal"], "anonymous")

    def test_meta_defaults_to_empty_object(self) -> None:
        c = self.client()
        self.assertEqual(c.call("whoami")["result"]["meta"], {})

    def test_resume_of_unknown_session_gives_new_session(self) -> None:
        h = self.harness()
        c = h.connect()
        c.send({"type": "hello",
                 "resume": {"session": "no-such-session", "token": "nope", "last_seq": 3}})
        welcome = c.next()
        self.assertEqual(welcome["type"], "welcome")
        self.assertIs(welcome["resumed"], False)
        self.assertNotEqual(welcome["session"], "no-such-session")
        self.assertIn(welcome["session"], h.service.sessions)
        self.assertIsNone(c.closed)

    def test_unknown_members_of_hello_ignored(self) -> None:
        h = self.harness()
        c = h.connect()
        c.send({"type": "hello", "future": {"x": 1}})
        self.assertEqual(c.next()["type"], "welcome")


class FirstMessageTests(ServiceTestCase):

    def assertRefused(self, c: FakeClient, code: str) -> None:
        messages = c.received()
        self.assertEqual(len(messages), 1, messages)
        self.assertError(messages[0], code)
        self.assertEqual(c.closed, 4400)
        self.assertEqual(self.h.service.sessions, {})

    def test_event_first(self) -> None:
        c = self.harness().connect()
        c.send({"type": "event", "event": "echo", "data": 1})
        self.assertRefused(c, "not_registered")

    def test_call_first(self) -> None:
        c = self.harness().connect()
        c.send({"type": "call", "id": 1, "method": "echo", "params": 1})
        self.assertRefused(c, "not_registered")

    def test_invalid_json_first(self) -> None:
        c = self.harness().connect()
        c.sendRaw(b"{not json")
        self.assertRefused(c, "not_registered")

    def test_array_first(self) -> None:
        c = self.harness().connect()
        c.sendRaw(b'[{"type": "hello"}]')
        self.assertRefused(c, "not_registered")

    def test_malformed_hello_meta_not_object(self) -> None:
        c = self.harness().connect()
        c.send({"type": "hello", "meta": "not an object"})
        self.assertRefused(c, "bad_message")

    def test_malformed_hello_resume_ill_typed(self) -> None:
        c = self.harness().connect()
        c.send({"type": "hello", "resume": {"session": 1, "token": "x", "last_seq": 0}})
        self.assertRefused(c, "bad_message")

    def test_nothing_handled_after_refusal(self) -> None:
        c = self.harness().connect()
        c.send({"type": "event", "event": "echo", "data": 1})
        c.received()
        c.send({"type": "hello"})
        self.assertEqual(c.received(), [])
        self.assertEqual(self.h.service.sessions, {})

    def test_hello_timeout(self) -> None:
        h = self.harness(hello_timeout=10)
        c = h.connect()
        h.clock.advance(9.99)
        self.assertIsNone(c.closed)
        h.clock.advance(0.01)
        self.assertEqual(c.closed, 4408)
        self.assertEqual(h.service.sessions, {})

    def test_hello_in_time_stops_timer(self) -> None:
        h = self.harness(hello_timeout=10)
        c = h.connect()
        h.clock.advance(5)
        c.hello()
        h.clock.advance(60)
        self.assertIsNone(c.closed)
        self.assertEqual(len(h.service.sessions), 1)

    def test_second_hello_already_registered(self) -> None:
        c = self.client()
        first = c.call("whoami")["result"]["session"]
        c.send({"type": "hello"})
        self.assertError(c.next(), "already_registered")
        self.assertIsNone(c.closed)
        self.assertEqual(c.call("whoami", id=2)["result"]["session"], first)
        self.assertEqual(len(self.h.service.sessions), 1)


# -- §3: events ---------------------------------------------------------------------------------


class EventTests(ServiceTestCase):

    collect = True

    def test_echo_event_seq_increasing(self) -> None:
        c = self.client()
        for n in range(3):
            c.send({"type": "event", "event": "echo", "data": {"n": n}})
        self.assertEqual(c.received(), [
            {"type": "event", "event": "echo", "data": {"n": 0}, "seq": 1},
            {"type": "event", "event": "echo", "data": {"n": 1}, "seq": 2},
            {"type": "event", "event": "echo", "data": {"n": 2}, "seq": 3},
        ])

    def test_seq_is_per_session(self) -> None:
        h = self.harness()
        a, b = h.connect(), h.connect()
        a.hello()
        b.hello()
        a.send({"type": "event", "event": "echo", "data": "a"})
        a.send({"type": "event", "event": "echo", "data": "a"})
        b.send({"type": "event", "event": "echo", "data": "b"})
        self.assertEqual([m["seq"] for m in a.received()], [1, 2])
        self.assertEqual([m["seq"] for m in b.received()], [1])

    def test_unknown_event(self) -> None:
        c = self.client()
        c.send({"type": "event", "event": "no.such.event", "data": None})
        self.assertError(c.next(), "unknown_event")
        self.assertIsNone(c.closed)

    def test_event_application_error(self) -> None:
        c = self.client()
        c.send({"type": "event", "event": "boom_app", "data": 7})
        self.assertEqual(c.received(), [{"type": "error", "error": {
            "code": "extra.bad", "message": "bad event data", "data": {"got": 7}}}])
        self.assertIsNone(c.closed)

    def test_event_unexpected_exception_internal_logged(self) -> None:
        c = self.client()
        c.send({"type": "event", "event": "boom", "data": None})
        err = self.assertError(c.next(), "internal")
        self.assertNotIn("SECRET-INTERNAL-DETAIL", repr(err))
        self.assertNotIn("Traceback", repr(err))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        # the session carries on
        self.assertIsNone(c.closed)
        self.assertEqual(c.call("echo", "still here", id=5),
                         {"type": "result", "id": 5, "result": "still here"})

    def test_async_event_application_error(self) -> None:
        """protocol.md §3: an ApplicationError from a handler becomes that error (async too)."""
        c = self.client()
        c.send({"type": "event", "event": "aboom_app", "data": 3})
        self.assertEqual(c.received(), [])
        self.clock.advance(1)
        self.assertEqual(c.received(), [{"type": "error", "error": {
            "code": "extra.async_bad", "message": "bad async event", "data": {"got": 3}}}])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_async_event_unexpected_exception_internal(self) -> None:
        c = self.client()
        c.send({"type": "event", "event": "aboom", "data": None})
        self.clock.advance(1)
        messages = c.received()
        self.assertEqual(len(messages), 1, messages)
        self.assertError(messages[0], "internal")
        self.assertNotIn("SECRET-ASYNC-DETAIL", repr(messages[0]))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.flushLoggedErrors(), [])


# -- §3: client calls ---------------------------------------------------------------------------


class CallTests(ServiceTestCase):

    collect = True

    def test_echo(self) -> None:
        c = self.client()
        self.assertEqual(c.call("echo", {"a": [1, "b", None]}, id="x1"),
                         {"type": "result", "id": "x1", "result": {"a": [1, "b", None]}})

    def test_fail_is_internal_without_traceback(self) -> None:
        c = self.client()
        reply = c.call("fail", None, id=1)
        self.assertError(reply, "internal", 1)
        text = repr(reply)
        for leak in ("Traceback", "RuntimeError", "failed, as asked", 'File "'):
            self.assertNotIn(leak, text)
        self.assertNotIn("data", reply["error"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIsNone(c.closed)

    def test_reject_application_error_with_data(self) -> None:
        c = self.client()
        self.assertEqual(c.call("reject", {"why": "because"}, id=2), {
            "type": "error", "id": 2,
            "error": {"code": "demo.rejected", "message": "rejected, as asked",
                      "data": {"why": "because"}}})

    def test_invalid_params(self) -> None:
        c = self.client()
        self.assertError(c.call("sleep", "not an object", id=3), "invalid_params", 3)

    def test_unknown_method(self) -> None:
        c = self.client()
        self.assertError(c.call("no.such.method", None, id="u"), "unknown_method", "u")
        self.assertIsNone(c.closed)

    def test_coroutine_handler(self) -> None:
        c = self.client()
        self.assertIsNone(c.call("acoro", [1, 2], id=1))
        self.clock.advance(1)
        self.assertEqual(c.received(), [{"type": "result", "id": 1, "result": {"coro": [1, 2]}}])

    def test_deferred_handler(self) -> None:
        c = self.client()
        self.assertIsNone(c.call("adeferred", "p", id=1))
        self.clock.advance(1.9)
        self.assertEqual(c.received(), [])
        self.clock.advance(0.1)
        self.assertEqual(c.received(), [{"type": "result", "id": 1,
                                         "result": {"deferred": "p"}}])

    def test_unserializable_result_is_internal(self) -> None:
        c = self.client()
        self.assertError(c.call("unserializable", None, id=1), "internal", 1)
        self.assertIsNone(c.closed)
        self.assertEqual(c.call("echo", 1, id=2)["result"], 1)

    def test_huge_integer_result_is_exact(self) -> None:
        # the client gets what the handler returned, not internal and not a float
        c = self.client()
        c.call("huge", None, id=1)
        self.assertEqual(c.link.frames[-1], b'{"type":"result","id":1,"result":{"n":'
                         b'100000000000000000000000000000,"m":[-1180591620717411303424]}}')
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_huge_integer_param_is_bad_json_with_the_call_id(self) -> None:
        c = self.client()
        c.sendRaw(b'{"type":"call","id":5,"method":"echo","params":100000000000000000000000000000}')
        self.assertEqual(c.received(), [{"type": "error", "id": 5, "error": {
            "code": "bad_json", "message": "integer out of range"}}])
        self.assertIsNone(c.closed)

    def test_unserializable_deferred_result_is_internal(self) -> None:
        c = self.client()
        c.call("unserializable_later", None, id=1)
        self.clock.advance(1)
        messages = c.received()
        self.assertEqual(len(messages), 1, messages)
        self.assertError(messages[0], "internal", 1)

    def test_duplicate_inflight_id(self) -> None:
        c = self.client()
        self.assertIsNone(c.call("sleep", {"seconds": 5}, id="d"))
        self.assertError(c.call("echo", "again", id="d"), "duplicate_id", "d")
        self.clock.advance(5)
        self.assertEqual(c.received(), [{"type": "result", "id": "d", "result": None}])
        # once answered, the id may be reused
        self.assertEqual(c.call("echo", "again", id="d")["result"], "again")

    def test_int_and_string_ids_are_distinct(self) -> None:
        c = self.client()
        self.assertIsNone(c.call("sleep", {"seconds": 1}, id=1))
        self.assertEqual(c.call("echo", "s", id="1"), {"type": "result", "id": "1", "result": "s"})

    def test_too_many_calls(self) -> None:
        c = self.client(max_inflight_calls=2)
        self.assertIsNone(c.call("sleep", {"seconds": 1}, id=1))
        self.assertIsNone(c.call("sleep", {"seconds": 1}, id=2))
        self.assertError(c.call("sleep", {"seconds": 1}, id=3), "too_many_calls", 3)
        self.clock.advance(1)
        self.assertEqual(sorted(m["id"] for m in c.received()), [1, 2])
        self.assertIsNone(c.call("sleep", {"seconds": 1}, id=3))
        self.assertIsNone(c.closed)

    def test_sleep_completes_after_advance(self) -> None:
        c = self.client()
        self.assertIsNone(c.call("sleep", {"seconds": 3}, id=1))
        self.clock.advance(2.9)
        self.assertEqual(c.received(), [])
        self.clock.advance(0.1)
        self.assertEqual(c.received(), [{"type": "result", "id": 1, "result": None}])

    def test_call_timeout(self) -> None:
        c = self.client(call_timeout=5)
        self.assertIsNone(c.call("sleep", {"seconds": 10}, id=1))
        self.clock.advance(4.9)
        self.assertEqual(c.received(), [])
        self.clock.advance(0.1)
        messages = c.received()
        self.assertEqual(len(messages), 1, messages)
        self.assertError(messages[0], "timeout", 1)
        self.clock.advance(10)
        self.assertEqual(c.received(), [])
        self.assertEqual(self.h.service.sessions[next(iter(self.h.service.sessions))].inflight, {})

    def test_cancel(self) -> None:
        c = self.client()
        self.assertIsNone(c.call("sleep", {"seconds": 10}, id=7))
        c.send({"type": "cancel", "id": 7})
        messages = c.received()
        self.assertEqual(len(messages), 1, messages)
        self.assertError(messages[0], "cancelled", 7)
        self.clock.advance(10)
        self.assertEqual(c.received(), [])

    def test_cancel_reaches_handler_deferred(self) -> None:
        c = self.client()
        c.call("hold", "h1", id=1)
        c.send({"type": "cancel", "id": 1})
        self.assertEqual(self.extra.cancelled, ["h1"])
        self.assertError(c.next(), "cancelled", 1)

    def test_cancel_unknown_id_ignored(self) -> None:
        c = self.client()
        c.send({"type": "cancel", "id": 404})
        c.send({"type": "cancel", "id": "nope"})
        self.assertEqual(c.received(), [])
        self.assertIsNone(c.closed)

    def test_replies_out_of_order(self) -> None:
        c = self.client()
        self.assertIsNone(c.call("sleep", {"seconds": 5}, id="slow"))
        self.assertIsNone(c.call("sleep", {"seconds": 1}, id="fast"))
        # a slow call does not hold up other messages
        self.assertEqual(c.call("echo", 0, id="now")["result"], 0)
        self.clock.advance(1)
        self.assertEqual(c.received(), [{"type": "result", "id": "fast", "result": None}])
        self.clock.advance(4)
        self.assertEqual(c.received(), [{"type": "result", "id": "slow", "result": None}])


# -- §3: server-initiated calls -----------------------------------------------------------------


class ServerCallTests(ServiceTestCase):

    collect = True

    def ask(self, c: FakeClient, **settings: Any) -> dict:
        c.send({"type": "call", "id": "a", "method": "ask",
                "params": {"method": "confirm", "params": {"q": 1}}})
        messages = c.received()
        self.assertEqual(len(messages), 1, messages)
        server_call = messages[0]
        return server_call

    def test_server_call_members(self) -> None:
        c = self.client()
        server_call = self.ask(c)
        self.assertEqual(set(server_call), {"type", "id", "method", "params", "seq"})
        self.assertEqual(server_call["type"], "call")
        self.assertEqual(server_call["method"], "confirm")
        self.assertEqual(server_call["params"], {"q": 1})
        self.assertEqual(server_call["seq"], 1)
        self.assertIsInstance(server_call["id"], (int, str))

    def test_answer_result(self) -> None:
        c = self.client()
        server_call = self.ask(c)
        c.send({"type": "result", "id": server_call["id"], "result": {"yes": True}})
        self.assertEqual(c.received(), [{"type": "result", "id": "a", "result": {"yes": True}}])

    def test_answer_error_passed_on(self) -> None:
        c = self.client()
        server_call = self.ask(c)
        c.send({"type": "error", "id": server_call["id"],
                "error": {"code": "client.no", "message": "I refuse", "data": {"why": 1}}})
        self.assertEqual(c.received(), [{"type": "error", "id": "a", "error": {
            "code": "client.no", "message": "I refuse", "data": {"why": 1}}}])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_no_answer_times_out(self) -> None:
        c = self.client(call_timeout=5)
        self.ask(c)
        self.clock.advance(4.9)
        self.assertEqual(c.received(), [])
        self.clock.advance(0.1)
        messages = c.received()
        self.assertEqual(len(messages), 1, messages)
        self.assertError(messages[0], "timeout", "a")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_late_answer_is_bad_message(self) -> None:
        c = self.client(call_timeout=5)
        server_call = self.ask(c)
        self.clock.advance(5)
        c.received()
        c.send({"type": "result", "id": server_call["id"], "result": 1})
        self.assertError(c.next(), "bad_message", has_id=False)

    def test_result_with_unknown_id(self) -> None:
        c = self.client()
        c.send({"type": "result", "id": 999, "result": 1})
        messages = c.received()
        self.assertEqual(len(messages), 1, messages)
        self.assertError(messages[0], "bad_message", has_id=False)
        self.assertIsNone(c.closed)

    def test_error_with_unknown_id(self) -> None:
        c = self.client()
        c.send({"type": "error", "id": "zzz", "error": {"code": "x", "message": "y"}})
        messages = c.received()
        self.assertEqual(len(messages), 1, messages)
        self.assertError(messages[0], "bad_message", has_id=False)

    def test_push_seq(self) -> None:
        c = self.client()
        c.send({"type": "call", "id": 1, "method": "push",
                "params": {"count": 5, "event": "tick", "data": {"d": 1}}})
        self.assertEqual(c.received(), [
            *({"type": "event", "event": "tick", "data": {"d": 1}, "seq": n} for n in range(1, 6)),
            {"type": "result", "id": 1, "result": 5}])

    def test_push_seq_continues_after_server_call(self) -> None:
        c = self.client()
        server_call = self.ask(c)
        self.assertEqual(server_call["seq"], 1)
        c.send({"type": "event", "event": "echo", "data": None})
        self.assertEqual(c.next()["seq"], 2)


# -- §4: bad-message budget ---------------------------------------------------------------------


class BadMessageTests(ServiceTestCase):

    BAD = [
        b"{oops",                                          # bad_json
        b'{"type": "nonsense"}',                           # bad_message: unknown type
        b'{"type": "hello"}',                              # already_registered
        b'{"type": "call", "id": true, "method": "echo"}', # bad_message: ill-typed id
    ]
    CODES = ["bad_json", "bad_message", "already_registered", "bad_message"]

    def test_budget(self) -> None:
        c = self.client(max_bad_messages=3)
        for n, payload in enumerate(self.BAD):
            c.sendRaw(payload)
            messages = c.received()
            self.assertEqual(len(messages), 1, (n, messages))
            self.assertError(messages[0], self.CODES[n])
            if n < 3:
                self.assertIsNone(c.closed, n)
        self.assertEqual(c.closed, 4400)
        # protocol.md §2: a server-side close does not end the session; it stays resumable
        [session] = self.h.service.sessions.values()
        self.assertFalse(session.attached)
        self.assertFalse(session.closed)
        self.clock.advance(60)
        self.assertTrue(session.closed)
        self.assertEqual(self.h.service.sessions, {})
        self.assertEqual(self.h.service.metrics.sessions_closed["expired"], 1)

    def test_budget_close_keeps_session_resumable(self) -> None:
        h = self.harness(max_bad_messages=0)
        c = h.connect()
        welcome = c.hello()
        c.send({"type": "event", "event": "echo", "data": 1})
        c.received()
        c.sendRaw(b"{oops")
        self.assertError(c.next(), "bad_json")
        self.assertEqual(c.closed, 4400)
        c.drop()
        again = h.connect()
        resumed = again.resume(welcome, 1)
        self.assertIs(resumed["resumed"], True)
        self.assertEqual(resumed["session"], welcome["session"])
        self.assertEqual(again.call("echo", "back")["result"], "back")
        self.assertIsNone(again.closed)

    def test_application_errors_do_not_count(self) -> None:
        c = self.client(max_bad_messages=3)
        for n in range(10):
            self.assertError(c.call("no.such", None, id=n), "unknown_method", n)
            c.send({"type": "event", "event": "no.such", "data": None})
            self.assertError(c.next(), "unknown_event")
            self.assertError(c.call("reject", None, id=f"r{n}"), "demo.rejected", f"r{n}")
        self.assertIsNone(c.closed)
        for payload in self.BAD[:3]:
            c.sendRaw(payload)
        self.assertIsNone(c.closed)
        c.sendRaw(self.BAD[3])
        self.assertEqual(c.closed, 4400)

    def test_bad_call_keeps_id(self) -> None:
        c = self.client()
        c.send({"type": "call", "id": 9, "method": ""})
        self.assertError(c.next(), "bad_message", 9)

    def test_zero_budget(self) -> None:
        c = self.client(max_bad_messages=0)
        c.sendRaw(b"[]")
        self.assertError(c.next(), "bad_json")
        self.assertEqual(c.closed, 4400)

    def test_topics_answered(self) -> None:
        # protocol.md §3: subscribe / unsubscribe / publish with an id get a result (null);
        # without an id, no answer. (Topics are tested in depth elsewhere.)
        c = self.client()
        c.send({"type": "subscribe", "topic": "t", "id": 1})
        self.assertEqual(c.received(), [{"type": "result", "id": 1, "result": None}])
        c.send({"type": "publish", "topic": "t", "data": {"x": 1}, "id": "p"})
        self.assertEqual(c.received(), [
            {"type": "message", "topic": "t", "data": {"x": 1}, "seq": 1},
            {"type": "result", "id": "p", "result": None}])
        c.send({"type": "unsubscribe", "topic": "t", "id": 2})
        self.assertEqual(c.received(), [{"type": "result", "id": 2, "result": None}])
        c.send({"type": "publish", "topic": "t", "data": 2})
        c.send({"type": "subscribe", "topic": "u"})
        self.assertEqual(c.received(), [])
        self.assertIsNone(c.closed)
        self.assertEqual(self.h.service.metrics.errors["bad_message"], 0)

    def test_ack(self) -> None:
        # protocol.md §3: a valid ack gets no answer; one beyond the last seq is bad_message
        c = self.client()
        c.send({"type": "event", "event": "echo", "data": 1})
        self.assertEqual(c.next()["seq"], 1)
        c.send({"type": "ack", "seq": 1})
        c.send({"type": "ack", "seq": 0})
        self.assertEqual(c.received(), [])
        c.send({"type": "ack", "seq": 2})
        self.assertError(c.next(), "bad_message", has_id=False)
        self.assertIsNone(c.closed)


# -- session end, limits, observers --------------------------------------------------------------


class LifecycleTests(ServiceTestCase):

    collect = True

    def test_binary_closes_1003(self) -> None:
        c = self.client()
        c.sendBinary()
        self.assertEqual(c.closed, 1003)
        c.send({"type": "call", "id": 1, "method": "echo", "params": 1})
        self.assertEqual(c.received(), [])

    def test_bye(self) -> None:
        c = self.client()
        c.send({"type": "bye"})
        self.assertEqual(c.closed, 1000)
        self.assertEqual(self.h.service.sessions, {})
        c.drop()  # the transport then goes away: nothing more happens
        self.assertEqual(self.h.service.metrics.sessions_closed["bye"], 1)
        self.assertEqual(self.h.service.metrics.sessions_closed["lost"], 0)

    def test_messages_after_bye_not_dispatched(self) -> None:
        """Autobahn still delivers frames that arrive while closing: they must not reach
        handlers of the ended session."""
        c = self.client()
        c.send({"type": "bye"})
        c.send({"type": "call", "id": 1, "method": "count", "params": None})
        c.send({"type": "call", "id": 2, "method": "push",
                "params": {"count": 1, "event": "x"}})
        self.assertEqual(self.extra.invoked, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_drop_keeps_session_until_resume_ttl(self) -> None:
        """protocol.md §2: a lost connection keeps its session resumable for resume_ttl;
        when that passes the session ends ("expired") and its calls are cancelled."""
        obs = Observer()
        h = self.harness(extra=(obs,), resume_ttl=60, call_timeout=120)
        c = h.connect()
        c.hello()
        c.call("hold", "h", id=1)
        c.call("sleep", {"seconds": 10}, id=2)
        c.call("ask", {"method": "confirm"}, id=3)
        session = next(iter(h.service.sessions.values()))
        c.drop()
        self.assertEqual(list(h.service.sessions.values()), [session])
        self.assertFalse(session.attached)
        self.assertFalse(session.closed)
        self.assertEqual(set(session.inflight), {1, 2, 3})
        self.assertEqual(self.extra.cancelled, [])
        self.assertEqual(obs.closed, [])
        # calls of a detached session run on (sleep ends at 10 s) until it expires
        self.clock.advance(10)
        self.assertEqual(set(session.inflight), {1, 3})
        self.clock.advance(49.9)
        self.assertFalse(session.closed)
        self.assertEqual(obs.closed, [])
        self.clock.advance(0.1)
        self.assertEqual(h.service.sessions, {})
        self.assertTrue(session.closed)
        self.assertEqual(session.inflight, {})
        self.assertEqual(self.extra.cancelled, ["h"])
        self.assertEqual(obs.closed, [(session, "expired")])
        self.clock.advance(60)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_drop_without_resume_ends_session_and_cancels_calls(self) -> None:
        """With resume_ttl=0 a lost connection ends its session at once ("lost")."""
        obs = Observer()
        h = self.harness(extra=(obs,), resume_ttl=0)
        c = h.connect()
        c.hello()
        c.call("hold", "h", id=1)
        c.call("sleep", {"seconds": 10}, id=2)
        c.call("ask", {"method": "confirm"}, id=3)
        session = next(iter(h.service.sessions.values()))
        c.drop()
        self.assertEqual(h.service.sessions, {})
        self.assertTrue(session.closed)
        self.assertEqual(session.inflight, {})
        self.assertEqual(self.extra.cancelled, ["h"])
        self.assertEqual(obs.closed, [(session, "lost")])
        self.clock.advance(60)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_client_close_1000_ends_session(self) -> None:
        """protocol.md §2: a closing handshake the client starts with 1000 ends the session."""
        obs = Observer()
        h = self.harness(extra=(obs,))
        c = h.connect()
        c.hello()
        c.call("hold", "h", id=1)
        session = next(iter(h.service.sessions.values()))
        c.closeNormally()
        self.assertEqual(h.service.sessions, {})
        self.assertTrue(session.closed)
        self.assertEqual(self.extra.cancelled, ["h"])
        self.assertEqual(obs.closed, [(session, "bye")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_observer_reasons(self) -> None:
        obs = Observer(push=True)
        h = self.harness(extra=(obs,))
        a, b = h.connect(), h.connect()
        a.hello()
        b.hello()
        self.assertEqual(len(obs.opened), 2)
        # told just after welcome is sent, so an observer may push at once: the push comes
        # right after the welcome hello() read
        self.assertEqual([a.next(), b.next()],
                         [{"type": "event", "event": "opened", "data": n, "seq": 1}
                          for n in (1, 2)])
        a.send({"type": "bye"})
        b.drop()
        # b's session is detached, not ended: it ends when resume_ttl (60 s) has passed
        self.assertEqual([(s, r) for s, r in obs.closed], [(obs.opened[0], "bye")])
        c, d, e = h.connect(), h.connect(), h.connect()
        for x in (c, d, e):
            x.hello()
        c.closeNormally()
        obs.opened[3].close()
        self.clock.advance(60)
        h.service.endAll()
        self.assertEqual([(s, r) for s, r in obs.closed], [(obs.opened[0], "bye"),
                                                          (obs.opened[2], "bye"),
                                                          (obs.opened[3], "closed"),
                                                          (obs.opened[1], "expired"),
                                                          (obs.opened[4], "shutdown")])
        self.assertEqual(e.closed, 1001)

    def test_observer_reason_lost_without_resume(self) -> None:
        obs = Observer()
        h = self.harness(extra=(obs,), resume_ttl=0)
        c = h.connect()
        c.hello()
        c.drop()
        self.assertEqual([(s, r) for s, r in obs.closed], [(obs.opened[0], "lost")])

    def test_observer_failure_is_contained(self) -> None:
        class Broken(Handler):
            def sessionOpened(self, session: Any) -> None:
                raise RuntimeError("observer broke")

        h = self.harness(extra=(Broken(),))
        c = h.connect()
        c.hello()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(c.call("echo", 1)["result"], 1)

    def test_max_sessions(self) -> None:
        h = self.harness(max_sessions=1)
        a = h.connect()
        a.hello()
        b = h.connect()
        self.assertIsNone(b.closed)
        b.send({"type": "hello"})
        self.assertEqual(b.closed, 1013)
        self.assertEqual(b.received(), [])
        self.assertEqual(len(h.service.sessions), 1)
        a.send({"type": "bye"})
        self.assertEqual(a.closed, 1000)
        a.drop()  # the transport goes once the close handshake is done
        c = h.connect()
        c.hello()
        self.assertIsNone(c.closed)

    def test_connections_awaiting_hello_bounded(self) -> None:
        """Connections that never say hello count against max_connections."""
        h = self.harness(max_connections=2)
        a, b = h.connect(), h.connect()
        self.assertEqual((a.closed, b.closed), (None, None))
        self.assertEqual(h.connect().closed, 1013)
        self.assertEqual(h.service.sessions, {})
        a.drop()
        c = h.connect()
        self.assertIsNone(c.closed)
        c.hello()

    def test_full_server_expires_longest_detached(self) -> None:
        """A hello past max_sessions expires the longest-detached session to make room; its
        client learns resumed:false when it comes back. A resume needs no room."""
        h = self.harness(max_sessions=2)
        a, b = h.connect(), h.connect()
        wa, wb = a.hello(), b.hello()
        b.drop()
        a.drop()  # a detached last: b's session is the longest-detached
        c = h.connect()
        wc = c.hello()
        self.assertEqual(set(h.service.sessions), {wa["session"], wc["session"]})
        self.assertEqual(h.service.metrics.sessions_closed["evicted"], 1)
        self.assertIsNone(h.service.store.get(wb["session"]))
        again = h.connect()
        self.assertIs(again.resume(wa, 0)["resumed"], True)  # full, but a resume needs no room
        lost = h.connect()
        # b's session is gone: a new one, for which a's (now attached) cannot make room
        lost.send({"type": "hello", "resume": {"session": wb["session"],
                                               "token": wb["token"], "last_seq": 0}})
        self.assertEqual(lost.closed, 1013)

    def test_full_server_of_attached_sessions_refuses(self) -> None:
        """Only detached sessions are expired: with every session attached, 1013."""
        h = self.harness(max_sessions=2)
        a, b = h.connect(), h.connect()
        a.hello()
        b.hello()
        c = h.connect()
        c.send({"type": "hello"})
        self.assertEqual(c.closed, 1013)
        self.assertEqual(h.service.metrics.sessions_closed["evicted"], 0)

    def test_expired_to_make_room_resumes_false(self) -> None:
        """The client of an expired-to-make-room session resumes into a new session."""
        h = self.harness(max_sessions=1)
        a = h.connect()
        wa = a.hello()
        a.drop()
        b = h.connect()
        b.hello()
        b.send({"type": "bye"})
        b.drop()
        c = h.connect()
        wc = c.resume(wa, 0)
        self.assertIs(wc["resumed"], False)
        self.assertNotEqual(wc["session"], wa["session"])

    def test_sessions_per_peer(self) -> None:
        """Past max_sessions_per_peer that peer's own longest-detached session is expired;
        with all of its sessions attached it is refused 1013. Other peers are not touched."""
        h = self.harness(max_sessions_per_peer=2)
        other = h.connect(peer="tcp4:10.0.0.2:1")
        wo = other.hello()
        other.drop()  # detached before any of the first peer's: the longest-detached
        a, b = h.connect(peer="tcp4:10.0.0.1:1"), h.connect(peer="tcp4:10.0.0.1:2")
        wa = a.hello()
        b.hello()
        a.drop()
        c = h.connect(peer="tcp4:10.0.0.1:3")
        c.hello()
        self.assertNotIn(wa["session"], h.service.sessions)
        self.assertIn(wo["session"], h.service.sessions)
        d = h.connect(peer="tcp4:10.0.0.1:4")
        d.send({"type": "hello"})
        self.assertEqual(d.closed, 1013)
        # another address still gets in
        e = h.connect(peer="tcp4:10.0.0.3:1")
        e.hello()
        self.assertIsNone(e.closed)

    def test_sessions_per_ipv6_prefix(self) -> None:
        """IPv6 peers are counted per /64: varying the host part does not escape the limit."""
        h = self.harness(max_sessions_per_peer=1)
        h.connect(peer="tcp6:2001:db8::1:1").hello()
        b = h.connect(peer="tcp6:2001:db8::2:2")
        b.send({"type": "hello"})
        self.assertEqual(b.closed, 1013)
        h.connect(peer="tcp6:2001:db8:0:1::1:3").hello()  # another /64

    def test_trusted_proxy_client_is_the_peer(self) -> None:
        """Behind a trusted proxy, the X-Forwarded-For client is the peer limits count;
        without trust the header is ignored."""
        h = self.harness(max_sessions_per_peer=1, max_peer_connections=5,
                         trusted_proxies=("10.9.0.0/16",))
        proxy = "tcp4:10.9.0.1:1"
        h.connect({"x-forwarded-for": "203.0.113.5"}, peer=proxy).hello()
        # another client through the same proxy is another peer
        h.connect({"x-forwarded-for": "203.0.113.6"}, peer=proxy).hello()
        # the same client again: over its limit (a forged earlier entry does not help)
        again = h.connect({"x-forwarded-for": "198.51.100.1, 203.0.113.5"}, peer=proxy)
        again.send({"type": "hello"})
        self.assertEqual(again.closed, 1013)
        # an untrusted peer's header counts for nothing: its own address is the peer
        h.connect({"x-forwarded-for": "203.0.113.7"}, peer="tcp4:192.0.2.1:1").hello()
        spoof = h.connect({"x-forwarded-for": "203.0.113.8"}, peer="tcp4:192.0.2.1:2")
        spoof.send({"type": "hello"})
        self.assertEqual(spoof.closed, 1013)

    def test_trusted_proxy_connections_per_client(self) -> None:
        """A trusted proxy's clients are counted against max_peer_connections at the
        upgrade, and released when their connections go."""
        h = self.harness(max_peer_connections=2, trusted_proxies=("10.9.0.1",))
        headers = {"x-forwarded-for": "203.0.113.5"}
        a = h.connect(headers, peer="tcp4:10.9.0.1:1")
        h.connect(headers, peer="tcp4:10.9.0.1:2")
        self.assertEqual(h.connect(headers, peer="tcp4:10.9.0.1:3").closed, 1013)
        a.drop()
        self.assertIsNone(h.connect(headers, peer="tcp4:10.9.0.1:4").closed)
        self.assertEqual(h.service.peers.connections("203.0.113.5"), 2)

    def test_stop_service_closes_sessions_1001(self) -> None:
        obs = Observer()
        h = self.harness(extra=(obs,))
        clients = [h.connect() for _ in range(3)]
        for c in clients:
            c.hello()
        clients[0].call("sleep", {"seconds": 10}, id=1)
        h.stop()
        self.assertEqual([c.closed for c in clients], [1001, 1001, 1001])
        self.assertEqual(h.service.sessions, {})
        self.assertEqual(h.service.connections, set())
        self.assertEqual([r for _, r in obs.closed], ["shutdown"] * 3)
        # a stopped service refuses new connections ("server shutting down")
        self.assertEqual(h.connect().closed, 1001)
        self.clock.advance(60)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_stop_service_drains_sessions_stay_resumable(self) -> None:
        """protocol.md §5: stopService closes every connection 1001, keeps the sessions
        resumable and fires once every connection is gone."""
        obs = Observer()
        h = self.harness(extra=(obs,))
        a, b = h.connect(), h.connect()
        a.hello()
        b.hello()
        sessions = list(h.service.sessions.values())
        fired: list[Any] = []
        h.service.stopService().addCallback(fired.append)
        self.assertEqual((a.closed, b.closed), (1001, 1001))
        self.assertEqual(fired, [])
        self.assertEqual(list(h.service.sessions.values()), sessions)
        self.assertEqual([s.attached for s in sessions], [False, False])
        self.assertEqual(obs.closed, [])
        a.drop()
        self.assertEqual(fired, [])
        b.drop()
        self.assertEqual(fired, [None])
        self.assertEqual(obs.closed, [])
        h.service.endAll()
        self.assertEqual([r for _, r in obs.closed], ["shutdown"] * 2)

    def test_stop_service_drain_timeout_aborts(self) -> None:
        h = self.harness(drain_timeout=10)
        a = h.connect()
        a.hello()
        a.link.abort = lambda: a.connection.lost()  # type: ignore[method-assign]
        fired: list[Any] = []
        h.service.stopService().addCallback(fired.append)
        self.assertEqual(a.closed, 1001)
        self.clock.advance(9.9)
        self.assertEqual(fired, [])
        self.clock.advance(0.1)
        self.assertEqual(fired, [None])
        self.assertEqual(h.service.connections, set())
        self.assertEqual(len(h.service.sessions), 1)

    def test_stop_service_without_connections_fires_at_once(self) -> None:
        h = self.harness()
        fired: list[Any] = []
        h.service.stopService().addCallback(fired.append)
        self.assertEqual(fired, [None])

    def test_stop_service_closes_connections_awaiting_hello_1001(self) -> None:
        """protocol.md §5: graceful shutdown closes *every connection* with 1001."""
        h = self.harness()
        waiting = h.connect()
        h.stop()
        self.assertEqual(waiting.closed, 1001)


# -- §2: authentication -------------------------------------------------------------------------


class AuthTests(ServiceTestCase):

    collect = True

    def test_unauthorized(self) -> None:
        def refuse(request: Any) -> Any:
            raise Unauthorized("bad credentials")
        h = self.harness(authenticator=RecordingAuthenticator(refuse))
        c = h.connect()
        c.send({"type": "hello", "auth": "wrong"})
        messages = c.received()
        self.assertEqual(len(messages), 1, messages)
        self.assertError(messages[0], "unauthorized")
        self.assertEqual(messages[0]["error"]["message"], "bad credentials")
        self.assertEqual(c.closed, 4401)
        self.assertEqual(h.service.sessions, {})

    def test_plain_exception_is_unauthorized_and_logged(self) -> None:
        def broken(request: Any) -> Any:
            raise RuntimeError("authenticator bug")
        h = self.harness(authenticator=RecordingAuthenticator(broken))
        c = h.connect()
        c.send({"type": "hello"})
        messages = c.received()
        self.assertEqual(len(messages), 1, messages)
        self.assertError(messages[0], "unauthorized")
        self.assertNotIn("authenticator bug", repr(messages[0]))
        self.assertEqual(c.closed, 4401)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_deferred_refusal(self) -> None:
        pending: list[Deferred] = []

        def later(request: Any) -> Deferred:
            d: Deferred = Deferred()
            pending.append(d)
            return d
        h = self.harness(authenticator=RecordingAuthenticator(later))
        c = h.connect()
        c.send({"type": "hello"})
        self.assertEqual(c.received(), [])
        pending[0].errback(Unauthorized("later no"))
        self.assertError(c.next(), "unauthorized")
        self.assertEqual(c.closed, 4401)

    def test_deferred_authenticator_holds_messages_in_order(self) -> None:
        pending: list[Deferred] = []

        def later(request: Any) -> Deferred:
            d: Deferred = Deferred()
            pending.append(d)
            return d
        h = self.harness(authenticator=RecordingAuthenticator(later))
        c = h.connect()
        c.send({"type": "hello"})
        c.send({"type": "call", "id": 1, "method": "echo", "params": "one"})
        c.send({"type": "event", "event": "echo", "data": "two"})
        c.send({"type": "call", "id": 3, "method": "whoami", "params": None})
        self.assertEqual(c.received(), [])
        self.assertEqual(h.service.sessions, {})
        self.clock.advance(5)  # within hello_timeout
        self.assertIsNone(c.closed)
        pending[0].callback("alice")
        messages = c.received()
        self.assertEqual([m["type"] for m in messages], ["welcome", "result", "event", "result"])
        self.assertEqual(messages[1], {"type": "result", "id": 1, "result": "one"})
        self.assertEqual(messages[2], {"type": "event", "event": "echo", "data": "two", "seq": 1})
        self.assertEqual(messages[3]["id"], 3)
        self.assertEqual(messages[3]["result"]["principal"], "alice")
        self.assertEqual(messages[3]["result"]["session"], messages[0]["session"])

    def test_authenticator_that_never_answers_closes_4408(self) -> None:
        pending: list[Deferred] = []

        def never(request: Any) -> Deferred:
            d: Deferred = Deferred()
            pending.append(d)
            return d
        h = self.harness(authenticator=RecordingAuthenticator(never))
        c = h.connect()
        c.send({"type": "hello"})
        self.clock.advance(9.9)
        self.assertIsNone(c.closed)
        self.clock.advance(0.2)
        self.assertEqual(c.closed, 4408)
        pending[0].callback("late")  # too late: no session, no welcome
        self.assertEqual(h.service.sessions, {})
        self.assertEqual(c.received(), [])

    def test_coroutine_authenticator(self) -> None:
        async def principal(request: Any) -> Any:
            return {"user": request.auth}
        h = self.harness(authenticator=RecordingAuthenticator(principal))
        c = h.connect()
        c.hello(auth="bob")
        self.assertEqual(c.call("whoami")["result"]["principal"], {"user": "bob"})

    def test_authenticator_sees_auth_headers_peer(self) -> None:
        auth = RecordingAuthenticator(lambda request: "p")
        h = self.harness(authenticator=auth)
        c = h.connect(headers={"authorization": "Bearer abc", "x-other": "1"},
                      peer="tcp4:10.0.0.1:5555")
        c.hello(auth={"token": "t0k"})
        self.assertEqual(len(auth.requests), 1)
        request = auth.requests[0]
        self.assertEqual(request.auth, {"token": "t0k"})
        self.assertEqual(request.headers["authorization"], "Bearer abc")
        self.assertEqual(request.headers["x-other"], "1")
        self.assertEqual(request.peer, "tcp4:10.0.0.1:5555")
        self.assertEqual(request.listener, "test")

    def test_connection_lost_while_authenticating(self) -> None:
        pending: list[Deferred] = []

        def later(request: Any) -> Deferred:
            d: Deferred = Deferred()
            pending.append(d)
            return d
        obs = Observer()
        h = self.harness(extra=(obs,), authenticator=RecordingAuthenticator(later))
        c = h.connect()
        c.send({"type": "hello"})
        c.drop()
        pending[0].callback("late")
        self.assertEqual(h.service.sessions, {})
        self.assertEqual(obs.opened, [])


# -- metrics and isolation ----------------------------------------------------------------------


class MetricsTests(ServiceTestCase):

    def test_counters(self) -> None:
        c = self.client()
        c.call("echo", 1, id=1)
        c.call("echo", 2, id=2)
        c.call("no.such", None, id=3)
        c.send({"type": "event", "event": "echo", "data": None})
        c.send({"type": "event", "event": "no.such", "data": None})
        c.send({"type": "ping", "data": "p"})
        self.assertEqual(c.received()[-1], {"type": "pong", "data": "p"})
        m = self.h.service.metrics
        self.assertEqual(m.messages_in["hello"], 1)
        self.assertEqual(m.messages_in["call"], 3)
        self.assertEqual(m.messages_in["event"], 2)
        self.assertEqual(m.messages_in["ping"], 1)
        self.assertEqual(m.messages_out["welcome"], 1)
        self.assertEqual(m.messages_out["result"], 2)
        self.assertEqual(m.messages_out["event"], 1)
        self.assertEqual(m.messages_out["error"], 2)
        self.assertEqual(m.messages_out["pong"], 1)
        self.assertEqual(m.errors["unknown_method"], 1)
        self.assertEqual(m.errors["unknown_event"], 1)
        self.assertEqual(m.sessions_opened, 1)

    def test_refusal_counted(self) -> None:
        h = self.harness()
        c = h.connect()
        c.sendRaw(b"nope")
        self.assertEqual(h.service.metrics.errors["not_registered"], 1)
        self.assertEqual(h.service.metrics.messages_out["error"], 1)


class IsolationTests(ServiceTestCase):

    collect = True

    def test_bad_client_does_not_disturb_another(self) -> None:
        h = self.harness(max_bad_messages=2)
        good, bad = h.connect(), h.connect()
        good.hello()
        bad.hello()
        self.assertIsNone(good.call("sleep", {"seconds": 2}, id="g"))
        bad.call("fail", None, id="f")
        bad.call("unserializable", None, id="u")
        bad.send({"type": "event", "event": "boom", "data": None})
        bad.send({"type": "result", "id": 1, "result": None})
        for payload in (b"{", b"[]"):
            bad.sendRaw(payload)
        self.assertEqual(bad.closed, 4400)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual(good.received(), [])
        self.assertEqual(good.call("echo", "ok", id=1),
                         {"type": "result", "id": 1, "result": "ok"})
        self.clock.advance(2)
        self.assertEqual(good.received(), [{"type": "result", "id": "g", "result": None}])
        self.assertIsNone(good.closed)
        # the bad client's session is detached (resumable), the good one still attached
        self.assertEqual(len(h.service.sessions), 2)
        self.assertEqual(sorted(not s.attached for s in h.service.sessions.values()),
                         [False, True])

    def test_bad_client_with_call_in_flight_closed_4400(self) -> None:
        """Ending a session that has a Deferred call in flight must still close it 4400
        (resume off, so the close ends the session at once)."""
        obs = Observer()
        h = self.harness(extra=(obs,), max_bad_messages=0, resume_ttl=0)
        good, bad = h.connect(), h.connect()
        good.hello()
        bad.hello()
        good.call("sleep", {"seconds": 2}, id="g")
        bad.call("sleep", {"seconds": 2}, id="g")
        raised = None
        try:
            bad.sendRaw(b"{")
        except RuntimeError as e:
            raised = e
        self.assertIsNone(raised, "ending the session raised")
        self.assertEqual(bad.closed, 4400)
        self.assertEqual([r for _, r in obs.closed], ["lost"])
        self.clock.advance(2)
        self.assertEqual(good.received(), [{"type": "result", "id": "g", "result": None}])

    def test_bad_client_with_call_in_flight_detached_4400(self) -> None:
        """With resume on, the 4400 close detaches the session; its call runs on until the
        session expires, and the other client is not disturbed."""
        obs = Observer()
        h = self.harness(extra=(obs,), max_bad_messages=0)
        good, bad = h.connect(), h.connect()
        good.hello()
        bad.hello()
        good.call("sleep", {"seconds": 2}, id="g")
        bad.call("hold", "b", id="h")
        bad.sendRaw(b"{")
        self.assertEqual(bad.closed, 4400)
        self.assertEqual(obs.closed, [])
        self.assertEqual(self.extra.cancelled, [])
        self.clock.advance(2)
        self.assertEqual(good.received(), [{"type": "result", "id": "g", "result": None}])
        self.clock.advance(58)
        self.assertEqual([(s, r) for s, r in obs.closed], [(obs.opened[1], "expired")])
        self.assertEqual(self.extra.cancelled, ["b"])
        self.assertIsNone(good.closed)

    def test_server_call_ids_per_session(self) -> None:
        h = self.harness()
        a, b = h.connect(), h.connect()
        a.hello()
        b.hello()
        for x in (a, b):
            x.send({"type": "call", "id": 1, "method": "ask", "params": {"method": "m"}})
        ca, cb = a.next(), b.next()
        # b answering a's call id does not answer a's call
        b.send({"type": "result", "id": cb["id"], "result": "b"})
        self.assertEqual(b.received(), [{"type": "result", "id": 1, "result": "b"}])
        self.assertEqual(a.received(), [])
        a.send({"type": "result", "id": ca["id"], "result": "a"})
        self.assertEqual(a.received(), [{"type": "result", "id": 1, "result": "a"}])


class ObserverPushTests(SynchronousTestCase):
    """An observer may push from sessionOpened: the client still sees welcome first."""

    def test_push_from_session_opened_follows_welcome(self) -> None:
        class Greeter(Handler):
            def sessionOpened(self, session: Any) -> None:
                session.push("greeting", "hi")

        c = ServiceHarness([Greeter()]).connect()
        c.send({"type": "hello"})
        self.assertEqual([m["type"] for m in c.received()], ["welcome", "event"])


class ReservedPathTests(SynchronousTestCase):
    """A handler's HTTP resource may not hide /healthz, /metrics or the WebSocket path
    (checked when the HTTP side is composed: makeService)."""

    def test_reserved_paths_refused(self) -> None:
        from zope.interface import implementer

        from wsservice import ConfigurationError, IResourceProvider

        for path in ("healthz", "metrics", "ws", "ws/x"):
            @implementer(IResourceProvider)
            class Pages:
                resources = {path: object()}
            from wsservice import makeService
            self.assertRaises(ConfigurationError, makeService, [Pages()], [])
