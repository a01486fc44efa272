"""Tests for wsservice.handler (@call/@event, Handler) and wsservice.registry."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests import fixtures
from wsservice.errors import ConfigurationError
from wsservice.handler import Handler, call, event
from wsservice.interfaces import (
    IAuthenticator,
    ICallHandler,
    IEventHandler,
    IResourceProvider,
    ISessionObserver,
)
from wsservice.registry import Registry, load, load_authenticator, resolve, verify


class Sample(Handler):
    @call("add")
    def adder(self, session: Any, params: Any) -> Any:
        return sum(params)

    @call
    def echo(self, session: Any, params: Any) -> Any:
        return params

    @event("joined")
    def on_join(self, session: Any, data: Any) -> None:
        pass

    @event
    def left(self, session: Any, data: Any) -> None:
        pass

    def helper(self) -> None:
        """Not marked: served under no name."""


class DecoratorTests(SynchronousTestCase):
    """@call and @event record the served name on the function."""

    def test_callWithName(self) -> None:
        def f(session: Any, params: Any) -> None:
            pass
        self.assertIs(call("named")(f), f)
        self.assertEqual(f._wsservice_call, "named")  # type: ignore[attr-defined]

    def test_bareCallUsesFunctionName(self) -> None:
        def some_method(session: Any, params: Any) -> None:
            pass
        self.assertIs(call(some_method), some_method)
        self.assertEqual(some_method._wsservice_call, "some_method")  # type: ignore

    def test_eventWithName(self) -> None:
        def f(session: Any, data: Any) -> None:
            pass
        self.assertIs(event("happened")(f), f)
        self.assertEqual(f._wsservice_event, "happened")  # type: ignore[attr-defined]

    def test_bareEventUsesFunctionName(self) -> None:
        def happened(session: Any, data: Any) -> None:
            pass
        self.assertIs(event(happened), happened)
        self.assertEqual(happened._wsservice_event, "happened")  # type: ignore

    def test_emptyCallName(self) -> None:
        self.assertRaises(TypeError, call, "")

    def test_emptyEventName(self) -> None:
        self.assertRaises(TypeError, event, "")

    def test_nonStringName(self) -> None:
        self.assertRaises(TypeError, call, 5)
        self.assertRaises(TypeError, event, None)

    def test_decoratorNames(self) -> None:
        self.assertEqual(call.__name__, "call")
        self.assertEqual(event.__name__, "event")


class HandlerTests(SynchronousTestCase):
    """Handler subclasses map served names to bound methods."""

    def test_calls(self) -> None:
        h = Sample()
        self.assertEqual(set(h.calls), {"add", "echo"})
        self.assertEqual(h.calls["add"], h.adder)
        self.assertEqual(h.calls["echo"], h.echo)
        self.assertIs(h.calls["add"].__self__, h)
        self.assertEqual(h.calls["add"](None, [1, 2, 3]), 6)

    def test_events(self) -> None:
        h = Sample()
        self.assertEqual(set(h.events), {"joined", "left"})
        self.assertEqual(h.events["joined"], h.on_join)
        self.assertEqual(h.events["left"], h.left)
        self.assertIs(h.events["left"].__self__, h)

    def test_sameNameCallAndEvent(self) -> None:
        """A call and an event may share a name: they are different namespaces."""
        class Both(Handler):
            @call("ping")
            def c(self, session: Any, params: Any) -> str:
                return "call"

            @event("ping")
            def e(self, session: Any, data: Any) -> None:
                pass

        h = Both()
        self.assertEqual(h.calls["ping"], h.c)
        self.assertEqual(h.events["ping"], h.e)

    def test_baseHandlerServesNothing(self) -> None:
        h = Handler()
        self.assertEqual(h.calls, {})
        self.assertEqual(h.events, {})

    def test_inherited(self) -> None:
        class Sub(Sample):
            @call
            def extra(self, session: Any, params: Any) -> str:
                return "extra"

        h = Sub()
        self.assertEqual(set(h.calls), {"add", "echo", "extra"})
        self.assertEqual(set(h.events), {"joined", "left"})
        # The base is not changed by its subclass.
        self.assertEqual(set(Sample().calls), {"add", "echo"})

    def test_subclassOverridesNameWithOtherMethod(self) -> None:
        """A subclass method marked with a base's name serves it instead of the base's."""
        class Sub(Sample):
            @call("add")
            def multiply(self, session: Any, params: Any) -> Any:
                return params[0] * params[1]

            @event("joined")
            def on_join2(self, session: Any, data: Any) -> None:
                pass

        h = Sub()
        self.assertEqual(h.calls["add"], h.multiply)
        self.assertEqual(h.calls["add"](None, [3, 4]), 12)
        self.assertEqual(h.events["joined"], h.on_join2)
        self.assertEqual(set(h.calls), {"add", "echo"})

    def test_subclassOverridesSameMethod(self) -> None:
        """Overriding a marked method (re-marked) serves the subclass's version."""
        class Sub(Sample):
            @call("add")
            def adder(self, session: Any, params: Any) -> Any:
                return "overridden"

        h = Sub()
        self.assertEqual(h.calls["add"](None, [1]), "overridden")

    def test_unmarkedOverrideStillServed(self) -> None:
        """Overriding a marked method without re-marking it: the override is what runs."""
        class Sub(Sample):
            def adder(self, session: Any, params: Any) -> Any:
                return "unmarked override"

        h = Sub()
        self.assertEqual(h.calls["add"](None, [1]), "unmarked override")

    def test_multipleInheritanceFollowsMRO(self) -> None:
        class A(Handler):
            @call("x")
            def a(self, session: Any, params: Any) -> str:
                return "a"

        class B(Handler):
            @call("x")
            def b(self, session: Any, params: Any) -> str:
                return "b"

        class C(A, B):
            pass

        self.assertEqual(C().calls["x"](None, None), "a")

    def test_twoMethodsOneCallName(self) -> None:
        def define() -> type:
            class Bad(Handler):
                @call("same")
                def one(self, session: Any, params: Any) -> None:
                    pass

                @call("same")
                def two(self, session: Any, params: Any) -> None:
                    pass
            return Bad

        e = self.assertRaises(TypeError, define)
        self.assertIn("one", str(e))
        self.assertIn("two", str(e))
        self.assertIn("same", str(e))

    def test_twoMethodsOneEventName(self) -> None:
        def define() -> type:
            class Bad(Handler):
                @event
                def same(self, session: Any, data: Any) -> None:
                    pass

                @event("same")
                def other(self, session: Any, data: Any) -> None:
                    pass
            return Bad

        self.assertRaises(TypeError, define)

    def test_verifyObject(self) -> None:
        h = Sample()
        self.assertTrue(verifyObject(ICallHandler, h))
        self.assertTrue(verifyObject(IEventHandler, h))
        self.assertTrue(verifyObject(ISessionObserver, h))
        self.assertTrue(verifyObject(ICallHandler, Handler()))

    def test_sessionHooksDoNothing(self) -> None:
        h = Sample()
        self.assertIsNone(h.sessionOpened(object()))
        self.assertIsNone(h.sessionClosed(object(), "bye"))


def _route(session: Any, params: Any) -> None:
    pass


class RegistryTests(SynchronousTestCase):
    """Registry merges handlers and refuses broken or clashing ones."""

    def test_empty(self) -> None:
        r = Registry()
        self.assertEqual((r.calls, r.events, r.observers, r.resources), ({}, {}, [], {}))

    def test_mergesTwoHandlers(self) -> None:
        s, g = Sample(), fixtures.Greeter()
        r = Registry([s, g])
        self.assertEqual(set(r.calls), {"add", "echo", "greet"})
        self.assertEqual(set(r.events), {"joined", "left", "wave"})
        self.assertEqual(r.calls["add"], s.adder)
        self.assertEqual(r.calls["greet"], g.greet)
        self.assertEqual(r.events["wave"], g.wave)
        self.assertEqual(r.observers, [s, g])

    def test_duplicateCall(self) -> None:
        g, o = fixtures.Greeter(), fixtures.OtherGreeter()
        r = Registry()
        r.add(g, "first-handler")
        e = self.assertRaises(ConfigurationError, r.add, o, "second-handler")
        self.assertIn("first-handler", str(e))
        self.assertIn("second-handler", str(e))
        self.assertIn("'greet'", str(e))
        self.assertIn("call", str(e))

    def test_duplicateEvent(self) -> None:
        g, o = fixtures.Greeter(), fixtures.OtherWaver()
        r = Registry()
        r.add(g, "first-handler")
        e = self.assertRaises(ConfigurationError, r.add, o, "second-handler")
        self.assertIn("first-handler", str(e))
        self.assertIn("second-handler", str(e))
        self.assertIn("'wave'", str(e))
        self.assertIn("event", str(e))

    def test_duplicateDefaultNamesAreReprs(self) -> None:
        """Without explicit names the message names both handlers by repr."""
        e = self.assertRaises(
            ConfigurationError, Registry, [fixtures.Greeter(), fixtures.OtherGreeter()])
        self.assertIn("Greeter", str(e))
        self.assertIn("OtherGreeter", str(e))

    def test_providesNothing(self) -> None:
        e = self.assertRaises(ConfigurationError, Registry().add, object(), "the-object")
        self.assertIn("the-object", str(e))
        self.assertIn("ICallHandler", str(e))

    def test_declaresButNoCallsAttribute(self) -> None:
        e = self.assertRaises(
            ConfigurationError, Registry().add, fixtures.NoCallsAttribute(), "no-calls")
        self.assertIn("no-calls", str(e))
        self.assertIn("ICallHandler", str(e))

    def test_nonCallableRoute(self) -> None:
        @implementer(ICallHandler)
        class P:
            calls = {"x": 42}

        e = self.assertRaises(ConfigurationError, Registry().add, P(), "p")
        self.assertIn("'x'", str(e))
        self.assertIn("not callable", str(e))

    def test_nonCallableEventRoute(self) -> None:
        @implementer(IEventHandler)
        class P:
            events = {"x": "not a function"}

        self.assertRaises(ConfigurationError, Registry().add, P(), "p")

    def test_nonMappingCalls(self) -> None:
        @implementer(ICallHandler)
        class P:
            calls = ["x"]

        e = self.assertRaises(ConfigurationError, Registry().add, P(), "p")
        self.assertIn("mapping", str(e))

    def test_noneCalls(self) -> None:
        @implementer(ICallHandler)
        class P:
            calls = None

        self.assertRaises(ConfigurationError, Registry().add, P(), "p")

    def test_badRouteNames(self) -> None:
        for bad in ("", 1, None):
            @implementer(ICallHandler)
            class P:
                calls = {bad: _route}

            self.assertRaises(ConfigurationError, Registry().add, P(), "p")

    def test_plainObjects(self) -> None:
        plain, events = fixtures.PlainCalls(), fixtures.PlainEvents()
        r = Registry([plain, events])
        self.assertEqual(r.calls, {"plain": plain.plain})
        self.assertEqual(r.events, {"plain-event": fixtures._ignore})
        # Neither declares ISessionObserver, so neither is an observer.
        self.assertEqual(r.observers, [])

    def test_plainObserverVerified(self) -> None:
        """An object claiming ISessionObserver must have its methods."""
        @implementer(ISessionObserver)
        class P:
            pass

        self.assertRaises(ConfigurationError, Registry().add, P(), "p")

    def test_resources(self) -> None:
        @implementer(IResourceProvider)
        class R:
            resources = {"": object()}

        r = Registry([R()])
        self.assertEqual(list(r.resources), [""])
        self.assertRaises(ConfigurationError, Registry, [R(), R()])

    def test_failedAddLeavesNothingHalfMerged(self) -> None:
        """A handler refused for a clash adds none of its routes."""
        class Partial(Handler):
            @call
            def fresh(self, session: Any, params: Any) -> None:
                pass

            @call
            def greet(self, session: Any, params: Any) -> None:
                pass

        r = Registry([fixtures.Greeter()])
        self.assertRaises(ConfigurationError, r.add, Partial())
        self.assertNotIn("fresh", r.calls)


class ResolveTests(SynchronousTestCase):
    """resolve('module:attribute'), and the errors naming the spec."""

    def test_resolves(self) -> None:
        self.assertIs(resolve("tests.fixtures:Greeter"), fixtures.Greeter)
        self.assertIs(resolve("wsservice.handler:Handler.calls"), Handler.calls)

    def test_noColon(self) -> None:
        e = self.assertRaises(ConfigurationError, resolve, "nocolon")
        self.assertIn("nocolon", str(e))

    def test_emptyParts(self) -> None:
        self.assertRaises(ConfigurationError, resolve, ":x")
        self.assertRaises(ConfigurationError, resolve, "tests.fixtures:")

    def test_noSuchModule(self) -> None:
        e = self.assertRaises(ConfigurationError, resolve, "no.such.module:x")
        self.assertIn("no.such.module:x", str(e))

    def test_noSuchAttribute(self) -> None:
        e = self.assertRaises(ConfigurationError, resolve, "wsservice:nosuch")
        self.assertIn("wsservice:nosuch", str(e))
        self.assertIn("nosuch", str(e))


class LoadTests(SynchronousTestCase):
    """load(spec): a class or factory is called, an instance used as is, others refused."""

    def test_class(self) -> None:
        h = load("tests.fixtures:Greeter")
        self.assertIsInstance(h, fixtures.Greeter)

    def test_factory(self) -> None:
        before = len(fixtures.made)
        h = load("tests.fixtures:make_greeter")
        self.assertEqual(len(fixtures.made), before + 1)
        self.assertIs(fixtures.made[-1], h)

    def test_instanceUsedAsIs(self) -> None:
        self.assertIs(load("tests.fixtures:GREETER"), fixtures.GREETER)

    def test_plainClass(self) -> None:
        h = load("tests.fixtures:PlainCalls")
        self.assertIsInstance(h, fixtures.PlainCalls)

    def test_demo(self) -> None:
        from wsservice.demo import DemoApp
        self.assertIsInstance(load("wsservice.demo:DemoApp"), DemoApp)

    def test_providesNothingNamesSpec(self) -> None:
        for spec in ("tests.fixtures:Nothing", "tests.fixtures:NOTHING",
                     "tests.fixtures:make_nothing"):
            e = self.assertRaises(ConfigurationError, load, spec)
            self.assertIn(spec, str(e))

    def test_brokenContractNamesSpec(self) -> None:
        e = self.assertRaises(ConfigurationError, load, "tests.fixtures:NoCallsAttribute")
        self.assertIn("tests.fixtures:NoCallsAttribute", str(e))

    def test_factoryFailsNamesSpec(self) -> None:
        e = self.assertRaises(ConfigurationError, load, "tests.fixtures:NeedsArgument")
        self.assertIn("tests.fixtures:NeedsArgument", str(e))

    def test_resolveErrorsPropagate(self) -> None:
        self.assertRaises(ConfigurationError, load, "no.such.module:x")


class LoadAuthenticatorTests(SynchronousTestCase):
    """load_authenticator(spec): only what provides IAuthenticator."""

    def test_class(self) -> None:
        a = load_authenticator("tests.fixtures:Authenticator")
        self.assertIsInstance(a, fixtures.Authenticator)
        self.assertTrue(IAuthenticator.providedBy(a))

    def test_instance(self) -> None:
        self.assertIs(load_authenticator("tests.fixtures:AUTHENTICATOR"),
                      fixtures.AUTHENTICATOR)

    def test_default(self) -> None:
        from wsservice.auth import AnonymousAuthenticator
        self.assertIsInstance(load_authenticator("wsservice.auth:AnonymousAuthenticator"),
                              AnonymousAuthenticator)

    def test_notAnAuthenticator(self) -> None:
        for spec in ("tests.fixtures:Greeter", "tests.fixtures:NOTHING"):
            e = self.assertRaises(ConfigurationError, load_authenticator, spec)
            self.assertIn(spec, str(e))
            self.assertIn("IAuthenticator", str(e))

    def test_brokenAuthenticator(self) -> None:
        e = self.assertRaises(ConfigurationError, load_authenticator,
                              "tests.fixtures:BrokenAuthenticator")
        self.assertIn("tests.fixtures:BrokenAuthenticator", str(e))


class VerifyTests(SynchronousTestCase):
    """verify(obj, interfaces, name): passes or names what is missing."""

    def test_ok(self) -> None:
        verify(Sample(), (ICallHandler, IEventHandler, ISessionObserver), "sample")

    def test_notProvided(self) -> None:
        e = self.assertRaises(ConfigurationError, verify, object(), (ICallHandler,), "thing")
        self.assertIn("thing", str(e))
        self.assertIn("ICallHandler", str(e))
