"""Tests of the examples: examples/chat.py, examples/chat.tac and the samples in docs/handlers.md.

Everything runs in memory on a ``task.Clock`` (wsservice.testing.ServiceHarness); the .tac is
loaded but never started, so no port is opened.
"""

from __future__ import annotations

import os
import re
import sys
import unittest
from typing import Any

from twisted.application.service import IServiceCollection, loadApplication
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from examples.chat import ChatApp, TokenAuthenticator, authenticatorFromEnvironment
from wsservice import IAuthenticator, ICallHandler, IEventHandler, ISessionObserver, Settings
from wsservice import WSService, tap
from wsservice.closecodes import CLOSE_UNAUTHORIZED
from wsservice.errors import ConfigurationError
from wsservice.registry import load, load_authenticator
from wsservice.testing import FakeClient, ServiceHarness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAC = os.path.join(ROOT, "examples", "chat.tac")
HANDLERS_MD = os.path.join(ROOT, "docs", "handlers.md")


def exchange(client: FakeClient, message: dict[str, Any]) -> list[dict[str, Any]]:
    """Send one message; return everything received since the last read, in order.

    (FakeClient.call returns only the reply and drops the rest, e.g. the sender's own
    ``said`` event, so these tests read everything.)
    """
    client.send(message)
    return client.received()


class _ChatTestCase(SynchronousTestCase):
    settings: Settings | None = None

    def setUp(self) -> None:
        self.chat = ChatApp(ask_timeout=5)
        self.harness = ServiceHarness([self.chat], settings=self.settings)
        self.addCleanup(self.harness.stop)

    def member(self, name: str) -> FakeClient:
        client = self.harness.connect()
        client.hello()
        reply = client.call("join", {"name": name}, id="join")
        self.assertEqual(reply, {"type": "result", "id": "join", "result": {"name": name}})
        return client

    def assertError(self, reply: dict[str, Any] | None, code: str, id: Any = 1) -> None:
        self.assertIsNotNone(reply)
        assert reply is not None
        self.assertEqual(reply["type"], "error", reply)
        self.assertEqual(reply["error"]["code"], code, reply)
        self.assertEqual(reply.get("id"), id, reply)


class ChatAppTests(_ChatTestCase):
    """join, say, members, typing and the session observer."""

    def test_provides_contracts(self) -> None:
        for contract in (ICallHandler, IEventHandler, ISessionObserver):
            self.assertTrue(verifyObject(contract, self.chat))
        self.assertEqual(set(self.chat.calls), {"join", "say", "members", "ask_all"})
        self.assertEqual(set(self.chat.events), {"typing"})

    def test_join_stores_name_in_meta(self) -> None:
        self.member("ana")
        [session] = self.harness.service.sessions.values()
        self.assertEqual(session.meta, {"name": "ana"})
        self.assertEqual(self.chat.sessions, {session})

    def test_join_strips_and_renames(self) -> None:
        ana = self.member("ana")
        reply = ana.call("join", {"name": "  Ana B  "})
        self.assertEqual(reply, {"type": "result", "id": 1, "result": {"name": "Ana B"}})
        self.assertEqual(ana.call("members", id=2)["result"], ["Ana B"])  # type: ignore

    def test_join_name_taken(self) -> None:
        self.member("ana")
        bob = self.harness.connect()
        bob.hello()
        reply = bob.call("join", {"name": "ana"})
        self.assertError(reply, "chat.name_taken")
        assert reply is not None
        self.assertEqual(reply["error"]["data"], {"name": "ana"})

    def test_hello_meta_cannot_fake_a_join(self) -> None:
        mallory = self.harness.connect()
        mallory.hello(meta={"name": "mallory", "client": "x"})
        [session] = self.harness.service.sessions.values()
        self.assertEqual(session.meta, {"client": "x"})
        self.assertEqual(mallory.call("members")["result"], [])  # type: ignore[index]
        self.assertError(mallory.call("say", {"text": "hi"}, id=2), "chat.not_joined", 2)

    def test_say_fans_out_with_seq(self) -> None:
        ana, bob = self.member("ana"), self.member("bob")
        carol = self.harness.connect()  # connected, never joined: hears nothing
        carol.hello()

        self.assertEqual(exchange(ana, {"type": "call", "id": 1, "method": "say",
                                        "params": {"text": "hi"}}), [
            {"type": "event", "event": "said", "data": {"name": "ana", "text": "hi"}, "seq": 1},
            {"type": "result", "id": 1, "result": {"delivered": 2}},
        ])
        self.assertEqual(bob.received(), [
            {"type": "event", "event": "said", "data": {"name": "ana", "text": "hi"}, "seq": 1},
        ])

        self.assertEqual(exchange(bob, {"type": "call", "id": "b", "method": "say",
                                        "params": {"text": "yo"}}), [
            {"type": "event", "event": "said", "data": {"name": "bob", "text": "yo"}, "seq": 2},
            {"type": "result", "id": "b", "result": {"delivered": 2}},
        ])
        self.assertEqual(ana.received(), [
            {"type": "event", "event": "said", "data": {"name": "bob", "text": "yo"}, "seq": 2},
        ])
        self.assertEqual(carol.received(), [])

    def test_say_before_join(self) -> None:
        client = self.harness.connect()
        client.hello()
        self.assertError(client.call("say", {"text": "hi"}), "chat.not_joined")

    def test_members(self) -> None:
        observer = self.harness.connect()
        observer.hello()
        self.assertEqual(observer.call("members"), {"type": "result", "id": 1, "result": []})
        for name in ("carol", "ana", "bob"):
            self.member(name)
        self.assertEqual(observer.call("members", id=2),
                         {"type": "result", "id": 2, "result": ["ana", "bob", "carol"]})

    def test_invalid_params(self) -> None:
        client = self.member("ana")
        bad = [
            ("join", None), ("join", ["ana"]), ("join", {}), ("join", {"name": ""}),
            ("join", {"name": "   "}), ("join", {"name": 5}), ("join", {"name": "x" * 33}),
            ("say", None), ("say", "hi"), ("say", {"text": None}), ("say", {"text": "x" * 2001}),
            ("members", {"all": True}),
            ("ask_all", None), ("ask_all", {"question": 1}),
        ]
        for n, (method, params) in enumerate(bad):
            self.assertError(client.call(method, params, id=n), "invalid_params", n)
        # application errors do not spend the bad-input budget: the session carries on
        self.assertIsNone(client.closed)
        self.assertEqual(client.call("members", id="m")["result"], ["ana"])  # type: ignore

    def test_left_pushed_when_a_member_goes(self) -> None:
        ana, bob = self.member("ana"), self.member("bob")
        bob.send({"type": "bye"})
        self.assertEqual(bob.closed, 1000)
        self.assertEqual(ana.received(), [
            {"type": "event", "event": "left", "data": {"name": "bob"}, "seq": 1}])
        self.assertEqual(ana.call("members")["result"], ["ana"])  # type: ignore[index]
        self.assertEqual(len(self.chat.sessions), 1)

    def test_dropped_connection_is_forgotten_at_expiry(self) -> None:
        """A lost connection leaves a resumable session: bob stays a member until it
        expires (resume_ttl, 60 s by default), then he has left."""
        ana, bob = self.member("ana"), self.member("bob")
        bob.drop()
        self.assertEqual(ana.received(), [])
        self.assertEqual(len(self.chat.sessions), 2)
        self.assertEqual(ana.call("members")["result"], ["ana", "bob"])  # type: ignore
        self.harness.clock.advance(60)
        self.assertEqual(ana.received(), [
            {"type": "event", "event": "left", "data": {"name": "bob"}, "seq": 1}])
        self.assertEqual(len(self.chat.sessions), 1)
        self.assertEqual(ana.call("members", id=2)["result"], ["ana"])  # type: ignore

    def test_dropped_member_resumes(self) -> None:
        """A member who resumes in time never left, and gets what was said meanwhile."""
        ana = self.member("ana")
        bob_client = self.harness.connect()
        welcome = bob_client.hello()
        bob_client.call("join", {"name": "bob"}, id="join")
        bob_client.drop()
        ana.send({"type": "call", "id": 2, "method": "say", "params": {"text": "hi"}})
        said = {"type": "event", "event": "said", "data": {"name": "ana", "text": "hi"},
                "seq": 1}
        self.assertEqual(ana.received(),
                         [said, {"type": "result", "id": 2, "result": {"delivered": 2}}])
        self.harness.clock.advance(59)
        bob = self.harness.connect()
        resumed = bob.resume(welcome, 0)
        self.assertIs(resumed["resumed"], True)
        self.assertEqual(bob.received(), [said])
        self.harness.clock.advance(60)
        self.assertEqual(ana.received(), [])
        self.assertEqual(len(self.chat.sessions), 2)
        self.assertEqual(bob.call("members")["result"], ["ana", "bob"])  # type: ignore

    def test_closed_normally_leaves_at_once(self) -> None:
        ana, bob = self.member("ana"), self.member("bob")
        bob.closeNormally()
        self.assertEqual(ana.received(), [
            {"type": "event", "event": "left", "data": {"name": "bob"}, "seq": 1}])
        self.assertEqual(len(self.chat.sessions), 1)

    def test_no_left_at_shutdown(self) -> None:
        ana, bob = self.member("ana"), self.member("bob")
        self.harness.stop()
        self.assertEqual((ana.closed, bob.closed), (1001, 1001))
        self.assertEqual(ana.received() + bob.received(), [])
        self.assertEqual(self.chat.sessions, set())

    def test_typing_event(self) -> None:
        ana, bob = self.member("ana"), self.member("bob")
        ana.send({"type": "event", "event": "typing"})
        self.assertEqual(ana.received(), [])
        self.assertEqual(bob.received(), [
            {"type": "event", "event": "typing", "data": {"name": "ana"}, "seq": 1}])


class AskAllTests(_ChatTestCase):
    """ask_all: server-initiated calls to every other member, answered or not."""

    def confirm_call(self, client: FakeClient, seq: int) -> int:
        """Read the ``confirm`` call ana's question caused; return its id."""
        [message] = client.received()
        self.assertEqual(message["type"], "call")
        self.assertEqual(message["method"], "confirm")
        self.assertEqual(message["params"], {"from": "ana", "question": "lunch?"})
        self.assertEqual(message["seq"], seq)
        self.assertIsInstance(message["id"], int)
        return message["id"]

    def test_result_error_and_timeout(self) -> None:
        ana, bob, carol, dave = (self.member(n) for n in ("ana", "bob", "carol", "dave"))
        self.assertIsNone(ana.call("ask_all", {"question": "lunch?"}, id="q"))
        bob_id, carol_id, dave_id = (self.confirm_call(c, 1) for c in (bob, carol, dave))

        bob.send({"type": "result", "id": bob_id, "result": {"yes": True}})
        carol.send({"type": "error", "id": carol_id,
                    "error": {"code": "busy", "message": "in a meeting"}})
        # dave never answers: ask_all waits for him, up to ask_timeout (5 s)
        self.harness.clock.advance(4.9)
        self.assertEqual(ana.received(), [])
        self.harness.clock.advance(0.1)
        [reply] = ana.received()
        self.assertEqual(reply["type"], "result")
        self.assertEqual(reply["id"], "q")
        answers = reply["result"]["answers"]
        self.assertEqual(answers[:2], [
            {"name": "bob", "result": {"yes": True}},
            {"name": "carol", "error": {"code": "busy", "message": "in a meeting"}},
        ])
        self.assertEqual(answers[2]["name"], "dave")
        self.assertEqual(answers[2]["error"]["code"], "timeout")

        # dave's late answer matches no call in flight any more
        dave.send({"type": "result", "id": dave_id, "result": True})
        self.assertError(dave.next(), "bad_message", None)

    def test_alone(self) -> None:
        ana = self.member("ana")
        self.assertEqual(ana.call("ask_all", {"question": "anyone?"}),
                         {"type": "result", "id": 1, "result": {"answers": []}})

    def test_not_joined(self) -> None:
        self.member("bob")
        client = self.harness.connect()
        client.hello()
        self.assertError(client.call("ask_all", {"question": "lunch?"}), "chat.not_joined")

    def test_member_leaves_while_asked(self) -> None:
        ana, bob = self.member("ana"), self.member("bob")
        ana.call("ask_all", {"question": "lunch?"})
        self.confirm_call(bob, 1)
        bob.closeNormally()
        # the service fails bob's pending calls before telling observers he is gone
        self.assertEqual(ana.received(), [
            {"type": "result", "id": 1, "result": {"answers": [
                {"name": "bob", "error": {"code": "chat.left", "message": "bob left"}}]}},
            {"type": "event", "event": "left", "data": {"name": "bob"}, "seq": 1},
        ])

    def test_member_drops_while_asked_and_resumes(self) -> None:
        """A member whose connection is lost gets the question replayed on resume and
        may still answer it within ask_timeout."""
        ana = self.member("ana")
        bob = self.harness.connect()
        welcome = bob.hello()
        bob.call("join", {"name": "bob"}, id="join")
        ana.call("ask_all", {"question": "lunch?"})
        self.confirm_call(bob, 1)
        bob.drop()
        self.harness.clock.advance(2)
        self.assertEqual(ana.received(), [])
        bob = self.harness.connect()
        bob.resume(welcome, 0)
        bob_id = self.confirm_call(bob, 1)  # replayed with its original seq
        bob.send({"type": "result", "id": bob_id, "result": "yes"})
        self.assertEqual(ana.received(), [
            {"type": "result", "id": 1,
             "result": {"answers": [{"name": "bob", "result": "yes"}]}}])

    def test_member_drops_while_asked_times_out(self) -> None:
        ana, bob = self.member("ana"), self.member("bob")
        ana.call("ask_all", {"question": "lunch?"})
        self.confirm_call(bob, 1)
        bob.drop()
        self.harness.clock.advance(5)  # ask_timeout: bob is away, not gone
        [reply] = ana.received()
        self.assertEqual(reply["result"]["answers"][0]["name"], "bob")
        self.assertEqual(reply["result"]["answers"][0]["error"]["code"], "timeout")

    def test_cancel_cancels_the_questions(self) -> None:
        ana, bob = self.member("ana"), self.member("bob")
        ana.call("ask_all", {"question": "lunch?"}, id=7)
        bob_id = self.confirm_call(bob, 1)
        self.assertEqual(exchange(ana, {"type": "cancel", "id": 7}), [
            {"type": "error", "id": 7,
             "error": {"code": "cancelled", "message": "the call was cancelled"}}])
        # the server stopped waiting for bob: his answer is now unexpected
        bob.send({"type": "result", "id": bob_id, "result": True})
        self.assertError(bob.next(), "bad_message", None)
        self.assertEqual(self.harness.clock.getDelayedCalls(), [])

    def test_asker_leaves(self) -> None:
        ana, bob = self.member("ana"), self.member("bob")
        ana.call("ask_all", {"question": "lunch?"})
        self.confirm_call(bob, 1)
        ana.closeNormally()
        self.assertEqual(self.harness.clock.getDelayedCalls(), [])
        self.assertEqual(bob.received(), [
            {"type": "event", "event": "left", "data": {"name": "ana"}, "seq": 2}])

    def test_asker_drops(self) -> None:
        """The asker's call runs on while she is away; she leaves when her session
        expires, and nothing is left waiting."""
        ana, bob = self.member("ana"), self.member("bob")
        ana.call("ask_all", {"question": "lunch?"})
        self.confirm_call(bob, 1)
        ana.drop()
        self.assertEqual(bob.received(), [])
        self.harness.clock.advance(60)
        self.assertEqual(self.harness.clock.getDelayedCalls(), [])
        self.assertEqual(bob.received(), [
            {"type": "event", "event": "left", "data": {"name": "ana"}, "seq": 2}])


class ChatWithoutResumeTests(_ChatTestCase):
    """With resume_ttl=0 a lost connection ends its session at once."""

    settings = Settings(resume_ttl=0)

    def test_dropped_connection_is_forgotten_at_once(self) -> None:
        ana, bob = self.member("ana"), self.member("bob")
        bob.drop()
        self.assertEqual(ana.received(), [
            {"type": "event", "event": "left", "data": {"name": "bob"}, "seq": 1}])
        self.assertEqual(len(self.chat.sessions), 1)

    def test_asker_drops(self) -> None:
        ana, bob = self.member("ana"), self.member("bob")
        ana.call("ask_all", {"question": "lunch?"})
        [confirm] = bob.received()
        self.assertEqual(confirm["method"], "confirm")
        ana.drop()
        self.assertEqual(self.harness.clock.getDelayedCalls(), [])
        self.assertEqual(bob.received(), [
            {"type": "event", "event": "left", "data": {"name": "ana"}, "seq": 2}])


class AskAllOuterTimeoutTests(_ChatTestCase):
    """When call_timeout is shorter than ask_timeout, ask_all itself times out."""

    settings = Settings(call_timeout=2)

    def test_outer_timeout(self) -> None:
        ana, bob = self.member("ana"), self.member("bob")
        ana.call("ask_all", {"question": "lunch?"})
        self.harness.clock.advance(2)
        self.assertError(ana.next(), "timeout")
        self.assertEqual(self.harness.clock.getDelayedCalls(), [])


class TokenAuthenticatorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.auth = TokenAuthenticator({"t-alice": "alice", "t-bob": {"user": "bob"}})
        self.harness = ServiceHarness([ChatApp()], authenticator=self.auth)
        self.addCleanup(self.harness.stop)

    def test_provides_IAuthenticator(self) -> None:
        self.assertTrue(verifyObject(IAuthenticator, self.auth))

    def test_accepts_known_tokens(self) -> None:
        for token, principal in (("t-alice", "alice"), ("t-bob", {"user": "bob"})):
            client = self.harness.connect()
            welcome = client.hello(auth={"token": token})
            session = self.harness.service.sessions[welcome["session"]]
            self.assertEqual(session.principal, principal)
            self.assertIsNone(client.closed)

    def test_refuses(self) -> None:
        for auth in ({"token": "t-mallory"}, {"token": 1}, {"tok": "t-alice"}, "t-alice", None):
            client = self.harness.connect()
            message: dict[str, Any] = {"type": "hello"}
            if auth is not None:
                message["auth"] = auth
            client.send(message)
            [error] = client.received()
            self.assertEqual(error["type"], "error")
            self.assertEqual(error["error"]["code"], "unauthorized")
            self.assertEqual(client.closed, CLOSE_UNAUTHORIZED)
        self.assertEqual(self.harness.service.sessions, {})

    def test_from_environment(self) -> None:
        auth = authenticatorFromEnvironment({"CHAT_TOKENS": "a=alice, b=bob,junk"})
        self.assertEqual(auth.tokens, {"a": "alice", "b": "bob"})
        self.assertRaises(ValueError, authenticatorFromEnvironment, {})


def twistd_service(*args: str) -> Any:
    """What ``twistd wsservice ARGS`` would run (handlers may load while parsing or building)."""
    options = tap.Options()
    options.parseOptions(list(args))
    return tap.makeService(options)


class LoadingTests(SynchronousTestCase):
    """The specs docs/handlers.md gives for twistd work."""

    def test_load_class_as_factory(self) -> None:
        self.assertIsInstance(load("examples.chat:ChatApp"), ChatApp)

    def test_load_authenticator_factory(self) -> None:
        self.patch(os, "environ", {"CHAT_TOKENS": "s3cret=alice"})
        auth = load_authenticator("examples.chat:authenticatorFromEnvironment")
        self.assertIsInstance(auth, TokenAuthenticator)
        self.assertEqual(auth.tokens, {"s3cret": "alice"})

    def test_twistd_options(self) -> None:
        service = twistd_service("--handler", "examples.chat:ChatApp",
                                 "--handler", "wsservice.demo:DemoApp",
                                 "--listen", "tcp:0:interface=127.0.0.1")
        self.assertIsInstance(service, WSService)
        assert isinstance(service, WSService)
        self.assertFalse(service.running)
        calls = service.sessions.registry.calls
        self.assertTrue({"join", "say", "members", "ask_all", "echo", "whoami"} <= set(calls))

    def test_twistd_duplicate_names_rejected(self) -> None:
        e = self.assertRaises(usage.UsageError, twistd_service,
                              "--handler", "examples.chat:ChatApp",
                              "--handler", "examples.chat:ChatApp")
        self.assertIn("call 'join' is already served by", str(e))

    def test_makeService_duplicate_names_rejected(self) -> None:
        from wsservice import makeService
        self.assertRaises(ConfigurationError, makeService, [ChatApp(), ChatApp()], listen=[])


class TacTests(SynchronousTestCase):
    """examples/chat.tac loads into an application (it is never started here)."""

    def setUp(self) -> None:
        self.patch(sys, "path", list(sys.path))  # the .tac may add the project root

    def test_loads(self) -> None:
        application = loadApplication(TAC, "python")
        children = list(IServiceCollection(application))
        [ws] = [child for child in children if isinstance(child, WSService)]
        self.assertFalse(ws.running)
        self.assertEqual([listener.description for listener in ws.listeners],
                         ["tcp:8081:interface=127.0.0.1", "unix:/tmp/wsservice-chat.sock"])
        self.assertEqual(ws.sessions.settings.call_timeout, 10)
        registry = ws.sessions.registry
        self.assertTrue({"join", "say", "members", "ask_all", "echo", "whoami"}
                        <= set(registry.calls))
        self.assertIn("", registry.resources)  # the demo page
        self.assertEqual(sum(isinstance(o, ChatApp) for o in registry.observers), 1)

    def test_project_root_on_path(self) -> None:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != ROOT]
        loadApplication(TAC, "python")
        self.assertIn(ROOT, sys.path)


# -- docs/handlers.md ---------------------------------------------------------------------------


def python_samples() -> list[str]:
    """The ```python blocks of docs/handlers.md, in order."""
    with open(HANDLERS_MD, encoding="utf-8") as f:
        return re.findall(r"^```python\n(.*?)^```$", f.read(), re.S | re.M)


def run_sample(source: str) -> dict[str, Any]:
    """Execute one sample as a module would run (a .tac sample sees __file__ of chat.tac)."""
    namespace: dict[str, Any] = {"__name__": "handlers_md_sample", "__file__": TAC}
    exec(compile(source, HANDLERS_MD, "exec"), namespace)
    return namespace


def sample_defining(name: str) -> dict[str, Any]:
    """Run the sample that defines ``name`` and return its namespace."""
    for source in python_samples():
        if re.search(rf"^(class|def) {name}\b|^{name} = ", source, re.M):
            return run_sample(source)
    raise AssertionError(f"no sample in docs/handlers.md defines {name}")


class DocsSamplesTests(SynchronousTestCase):
    """Every Python sample of docs/handlers.md runs and does what the text says."""

    def setUp(self) -> None:
        self.patch(sys, "path", list(sys.path))

    def test_all_samples_run(self) -> None:
        samples = python_samples()
        self.assertGreaterEqual(len(samples), 9)
        for source in samples:
            run_sample(source)

    def test_tac_sample_is_chat_tac(self) -> None:
        with open(TAC, encoding="utf-8") as f:
            self.assertIn(f.read(), python_samples())

    def test_trial_sample_passes(self) -> None:
        from twisted.trial import reporter, runner
        namespace = sample_defining("ChatTests")
        cases = [v for v in namespace.values()
                 if isinstance(v, type) and issubclass(v, unittest.TestCase)
                 and v is not SynchronousTestCase]
        self.assertEqual({c.__name__ for c in cases}, {"ChatTests", "AuthTests"})
        loader = runner.TestLoader()
        for case in cases:
            result = reporter.TestResult()
            loader.loadClass(case).run(result)
            self.assertTrue(result.wasSuccessful(), result.errors + result.failures)
            self.assertGreater(result.testsRun, 0)

    def harness(self, *handlers: Any, **kwargs: Any) -> ServiceHarness:
        harness = ServiceHarness(handlers, **kwargs)
        self.addCleanup(harness.stop)
        return harness

    def test_maths(self) -> None:
        harness = self.harness(sample_defining("Maths")["Maths"]())
        client = harness.connect()
        client.hello()
        self.assertEqual(client.call("math.add", [2, 3]), {"type": "result", "id": 1,
                                                           "result": 5})
        self.assertEqual(client.call("ping", id=2)["result"], "pong")  # type: ignore[index]
        self.assertEqual(client.call("math.add", "x", id=3)["error"]["code"],  # type: ignore
                         "invalid_params")
        client.send({"type": "event", "event": "math.tick", "data": {"n": 1}})
        self.assertEqual(client.received(), [
            {"type": "event", "event": "math.tock", "data": {"n": 1}, "seq": 1}])

    def test_slow(self) -> None:
        from twisted.internet.task import Clock
        clock = Clock()
        harness = self.harness(sample_defining("Slow")["Slow"](clock), clock=clock)
        client = harness.connect()
        client.hello()
        self.assertIsNone(client.call("slow.double", 4))
        self.assertEqual(client.call("slow.double", "x", id=2)["error"]["code"],  # type: ignore
                         "invalid_params")
        clock.advance(1)
        self.assertEqual(client.next(), {"type": "result", "id": 1, "result": 8})
        self.assertIsNone(client.call("slow.confirmed_double", 3, id=3))
        confirm = client.next()
        self.assertEqual(confirm["method"], "ui.confirm")
        client.send({"type": "result", "id": confirm["id"], "result": True})
        clock.advance(1)
        self.assertEqual(client.next(), {"type": "result", "id": 3, "result": 6})
        client.call("slow.confirmed_double", 3, id=4)
        confirm = client.next()
        client.send({"type": "error", "id": confirm["id"],
                     "error": {"code": "nope", "message": "no"}})
        reply = client.next()
        self.assertEqual((reply["id"], reply["error"]["code"]), (4, "nope"))

    def test_admin(self) -> None:
        from zope.interface import implementer

        @implementer(IAuthenticator)
        class ByAuth:
            def authenticate(self, request: Any) -> Any:
                return request.auth

        harness = self.harness(sample_defining("Admin")["Admin"](), authenticator=ByAuth())
        admin, user = harness.connect(), harness.connect()
        admin.hello(auth="admin")
        user.hello(auth="user")
        self.assertEqual(user.call("admin.list")["result"], ["s1", "s2"])  # type: ignore
        self.assertEqual(user.call("admin.kick", "s1", id=2)["error"]["code"],  # type: ignore
                         "forbidden")
        self.assertEqual(admin.call("admin.kick", "nobody")["error"]["code"],  # type: ignore
                         "invalid_params")
        self.assertEqual(admin.call("admin.kick", "s2", id=2),
                         {"type": "result", "id": 2, "result": None})
        self.assertEqual(user.received(), [
            {"type": "event", "event": "admin.kicked", "data": {"by": "s1"}, "seq": 1}])
        self.assertEqual(user.closed, 4000)
        self.assertEqual(admin.call("admin.list", id=3)["result"], ["s1"])  # type: ignore

    def test_plain_objects(self) -> None:
        namespace = sample_defining("Calculator")
        counter = namespace["Counter"]()
        # an instance provides its contract, so twistd's --handler would use it as is
        self.assertTrue(ICallHandler.providedBy(namespace["calculator"]))
        self.assertTrue(verifyObject(ICallHandler, namespace["calculator"]))
        self.assertTrue(verifyObject(IEventHandler, counter))
        self.assertTrue(verifyObject(ISessionObserver, counter))
        harness = self.harness(namespace["calculator"], counter)
        client = harness.connect()
        client.hello()
        self.assertEqual(client.call("calc.add", [1, 2.5])["result"], 3.5)  # type: ignore
        self.assertEqual(client.call("calc.max", [1, 7], id=2)["result"], 7)  # type: ignore
        self.assertEqual(client.call("calc.max", [], id=3)["error"]["code"],  # type: ignore
                         "invalid_params")
        client.send({"type": "event", "event": "count.hit"})
        self.assertEqual((counter.hits, counter.open), (1, 1))
        client.drop()
        self.assertEqual(counter.open, 1)  # resumable for resume_ttl (60 s)
        harness.clock.advance(60)
        self.assertEqual(counter.open, 0)

    def test_lobby_resources(self) -> None:
        from wsservice.web import makeSite
        lobby = sample_defining("Lobby")["Lobby"]()
        harness = self.harness(lobby)
        harness.connect().hello()
        site = makeSite(harness.service)
        self.assertIs(site.resource.children[b""], lobby.resources[""])
        status = site.resource.children[b"lobby"].children[b"status"]
        from twisted.web.test.requesthelper import DummyRequest
        request = DummyRequest([b""])
        self.assertEqual(status.render_GET(request), b'{"online": 1}')

    def test_bearer_authenticator(self) -> None:
        from twisted.internet.task import Clock
        clock = Clock()
        auth = sample_defining("BearerAuthenticator")["BearerAuthenticator"]({"t": "ann"}, clock)
        self.assertTrue(verifyObject(IAuthenticator, auth))
        harness = self.harness(authenticator=auth, clock=clock)
        good = harness.connect(headers={"authorization": "Bearer t"}, peer="tcp4:1.2.3.4:5")
        good.send({"type": "hello"})
        clock.advance(0)
        self.assertEqual(good.next()["type"], "welcome")
        [session] = harness.service.sessions.values()
        self.assertEqual(session.principal, {"user": "ann", "peer": "tcp4:1.2.3.4:5"})
        for headers in ({"authorization": "Bearer nope"}, {"authorization": "Basic t"}, {}):
            bad = harness.connect(headers=headers)
            bad.send({"type": "hello"})
            clock.advance(0)
            self.assertEqual(bad.next()["error"]["code"], "unauthorized")
            self.assertEqual(bad.closed, CLOSE_UNAUTHORIZED)

    def test_clock_tac(self) -> None:
        namespace = sample_defining("tick")
        chat = namespace["chat"]
        self.assertEqual([listener.description for listener in chat.listeners],
                         ["tcp:8082:interface=127.0.0.1", "unix:/tmp/chat-with-clock.sock"])
        self.assertIsInstance(chat.sessions.authenticator, TokenAuthenticator)
        self.assertEqual(len(list(IServiceCollection(namespace["application"]))), 2)
