"""Tests for wsservice.tap (twistd Options and makeService) and the twistd plugin."""

from __future__ import annotations

import os

from twisted.application.service import IService, IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from wsservice import tap
from wsservice.app import DEFAULT_LISTEN
from wsservice.config import Settings
from wsservice.listener import ListenerService
from wsservice.service import SessionService

OPTION_NAMES = (
    "listen", "handler", "path", "allowed-origin", "hello-timeout", "max-message-size",
    "max-depth", "max-inflight-calls", "call-timeout", "max-bad-messages", "max-sessions",
    "auth",
)


def parse(*args: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(args))
    return options


class OptionsDefaultsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        o = parse()
        self.assertEqual(o["listen"], ["tcp:8080:interface=127.0.0.1"])
        self.assertEqual(o["listen"], [DEFAULT_LISTEN])
        self.assertEqual(o["handler"], ["wsservice.demo:DemoApp"])
        self.assertEqual(o["allowed-origin"], [])
        self.assertEqual(o["path"], "/ws")
        self.assertIsNone(o["auth"])
        self.assertEqual(o["hello-timeout"], 10)
        self.assertEqual(o["max-message-size"], 1048576)
        self.assertEqual(o["max-depth"], 32)
        self.assertEqual(o["max-inflight-calls"], 64)
        self.assertEqual(o["call-timeout"], 30)
        self.assertEqual(o["max-bad-messages"], 20)
        self.assertEqual(o["max-sessions"], 10000)

    def test_defaultSettings(self) -> None:
        s = parse()["settings"]
        self.assertIsInstance(s, Settings)
        self.assertEqual(s, Settings())
        self.assertEqual(s.path, "/ws")
        self.assertEqual(s.allowed_origins, ())
        self.assertEqual(s.hello_timeout, 10)
        self.assertEqual(s.max_message_size, 1048576)
        self.assertEqual(s.max_depth, 32)
        self.assertEqual(s.max_inflight_calls, 64)
        self.assertEqual(s.call_timeout, 30)
        self.assertEqual(s.max_bad_messages, 20)
        self.assertEqual(s.max_sessions, 10000)

    def test_optionsAreFreshPerInstance(self) -> None:
        """Repeatable options must not share a list between Options instances."""
        parse("--listen", "tcp:1234", "--handler", "tests.fixtures:Greeter",
              "--allowed-origin", "https://x.example")
        o = parse()
        self.assertEqual(o["listen"], [DEFAULT_LISTEN])
        self.assertEqual(o["handler"], ["wsservice.demo:DemoApp"])
        self.assertEqual(o["allowed-origin"], [])


class OptionsValuesTests(SynchronousTestCase):
    def test_repeatableListen(self) -> None:
        o = parse("--listen", "tcp:0:interface=127.0.0.1", "--listen", "tcp:0")
        self.assertEqual(o["listen"], ["tcp:0:interface=127.0.0.1", "tcp:0"])

    def test_unixListenAccepted(self) -> None:
        o = parse("--listen", "unix:/tmp/wsservice-test.sock")
        self.assertEqual(o["listen"], ["unix:/tmp/wsservice-test.sock"])

    def test_repeatableHandler(self) -> None:
        o = parse("--handler", "tests.fixtures:Greeter", "--handler", "tests.fixtures:PlainCalls")
        self.assertEqual(o["handler"], ["tests.fixtures:Greeter", "tests.fixtures:PlainCalls"])

    def test_repeatableAllowedOrigin(self) -> None:
        o = parse("--allowed-origin", "https://*.example.com",
                  "--allowed-origin", "http://localhost:3000")
        self.assertEqual(o["allowed-origin"], ["https://*.example.com", "http://localhost:3000"])
        self.assertEqual(o["settings"].allowed_origins,
                         ("https://*.example.com", "http://localhost:3000"))

    def test_valuesReachSettings(self) -> None:
        s = parse("--path", "/socket", "--hello-timeout", "2.5", "--max-message-size", "100",
                  "--max-depth", "4", "--max-inflight-calls", "3", "--call-timeout", "7",
                  "--max-bad-messages", "0", "--max-sessions", "5")["settings"]
        self.assertEqual(s.path, "/socket")
        self.assertEqual(s.hello_timeout, 2.5)
        self.assertEqual(s.max_message_size, 100)
        self.assertIsInstance(s.max_message_size, int)
        self.assertEqual(s.max_depth, 4)
        self.assertEqual(s.max_inflight_calls, 3)
        self.assertEqual(s.call_timeout, 7.0)
        self.assertIsInstance(s.call_timeout, float)
        self.assertEqual(s.max_bad_messages, 0)
        self.assertEqual(s.max_sessions, 5)

    def test_auth(self) -> None:
        self.assertEqual(parse("--auth", "tests.fixtures:Authenticator")["auth"],
                         "tests.fixtures:Authenticator")


class OptionsInvalidTests(SynchronousTestCase):
    """Each bad value is an OptionError whose one line names the option, the value and the
    problem (so an unknown option or any other UsageError cannot pass for it)."""

    def assertMistake(self, line: str, *args: str) -> None:
        e = self.assertRaises(tap.OptionError, parse, *args)
        self.assertEqual(str(e), line)

    def assertBounds(self, option: str, value: str, problem: str) -> None:
        e = self.assertRaises(tap.OptionError, parse, option, value)
        self.assertTrue(str(e).startswith(f"{option} {value}: {problem}; e.g. {option} "), e)

    def test_helloTimeoutZero(self) -> None:
        self.assertBounds("--hello-timeout", "0", "must be a finite number > 0")

    def test_helloTimeoutNotANumber(self) -> None:
        self.assertBounds("--hello-timeout", "abc", "not a number")

    def test_helloTimeoutNegative(self) -> None:
        self.assertBounds("--hello-timeout", "-1", "must be a finite number > 0")

    def test_maxMessageSizeNegative(self) -> None:
        self.assertMistake("--max-message-size -1: must be a whole number >= 1; "
                           "e.g. --max-message-size 1048576 (the default)",
                           "--max-message-size", "-1")

    def test_maxMessageSizeNotInteger(self) -> None:
        self.assertBounds("--max-message-size", "1.5", "not a whole number")

    def test_maxDepthZero(self) -> None:
        self.assertBounds("--max-depth", "0", "must be a whole number from 1 to 1000")

    def test_maxInflightCallsZero(self) -> None:
        self.assertBounds("--max-inflight-calls", "0", "must be a whole number >= 1")

    def test_maxBadMessagesNegative(self) -> None:
        self.assertBounds("--max-bad-messages", "-1", "must be a whole number >= 0")

    def test_maxSessionsZero(self) -> None:
        self.assertBounds("--max-sessions", "0", "must be a whole number >= 1")

    def test_callTimeoutNotANumber(self) -> None:
        self.assertBounds("--call-timeout", "x", "not a number")

    def test_callTimeoutNaN(self) -> None:
        self.assertBounds("--call-timeout", "nan", "must be a finite number > 0")

    def test_everySettingsOptionIsChecked(self) -> None:
        """The table: every numeric Settings field is an option refusing 'x' and '-1'."""
        from wsservice.config import OPTION_FIELDS, bounds, kind
        numeric = [f for f in OPTION_FIELDS.values() if kind(f) is not str]
        self.assertEqual(len(numeric), 16)
        for spec in numeric:
            option = "--" + spec.name.replace("_", "-")
            self.assertBounds(option, "x", "not a whole number" if kind(spec) is int
                              else "not a number")
            self.assertBounds(option, "-1", f"must be {bounds(spec)}")

    def test_bogusListen(self) -> None:
        e = self.assertRaises(tap.OptionError, parse, "--listen", "bogus:1")
        self.assertTrue(str(e).startswith("--listen bogus:1: unknown endpoint type 'bogus'"), e)

    def test_badTcpPort(self) -> None:
        e = self.assertRaises(tap.OptionError, parse, "--listen", "tcp:notaport")
        self.assertTrue(str(e).startswith("--listen tcp:notaport: not a valid tcp: endpoint"), e)

    def test_pathWithoutSlash(self) -> None:
        self.assertMistake("--path ws: must start with '/' and name a resource; e.g. --path /ws",
                           "--path", "ws")

    def test_pathRoot(self) -> None:
        self.assertMistake("--path /: must start with '/' and name a resource; e.g. --path /ws",
                           "--path", "/")

    def test_unknownOption(self) -> None:
        self.assertMistake("--no-such-option: unknown option; "
                           "'twistd wsservice --help' lists the options",
                           "--no-such-option", "1")

    def test_underTwistdOneLineAndExit(self) -> None:
        """With a parent (twistd's ServerOptions) the error is one line on stderr, exit 2."""
        from io import StringIO
        import sys
        err = StringIO()
        self.patch(sys, "__stderr__", err)
        options = tap.Options()
        options.parent = usage.Options()
        e = self.assertRaises(SystemExit, options.parseOptions, ["--max-depth", "0"])
        self.assertEqual(e.code, 2)
        self.assertEqual(err.getvalue(), "wsservice: --max-depth 0: must be a whole number "
                                         "from 1 to 1000; e.g. --max-depth 32 (the default)\n")


class MakeServiceTests(SynchronousTestCase):
    """Handlers and authenticators are loaded while parsing: a bad one is a UsageError there."""

    def test_badHandler(self) -> None:
        e = self.assertRaises(usage.UsageError, parse,
                              "--handler", "no.such.module:Thing", "--listen", "tcp:0")
        self.assertIn("no.such.module:Thing", str(e))

    def test_handlerProvidingNothing(self) -> None:
        e = self.assertRaises(usage.UsageError, parse,
                              "--handler", "tests.fixtures:Nothing", "--listen", "tcp:0")
        self.assertIn("tests.fixtures:Nothing", str(e))

    def test_handlerBrokenContract(self) -> None:
        e = self.assertRaises(usage.UsageError, parse, "--handler",
                              "tests.fixtures:NoCallsAttribute", "--listen", "tcp:0")
        self.assertIn("tests.fixtures:NoCallsAttribute", str(e))

    def test_duplicateHandlers(self) -> None:
        """Two handlers serving one call name: a UsageError naming both."""
        e = self.assertRaises(usage.UsageError, parse, "--handler", "tests.fixtures:Greeter",
                              "--handler", "tests.fixtures:OtherGreeter", "--listen", "tcp:0")
        self.assertIn("greet", str(e))
        self.assertIn("Greeter", str(e))
        self.assertIn("OtherGreeter", str(e))

    def test_badAuth(self) -> None:
        e = self.assertRaises(usage.UsageError, parse,
                              "--auth", "tests.fixtures:Greeter", "--listen", "tcp:0")
        self.assertIn("tests.fixtures:Greeter", str(e))

    def test_service(self) -> None:
        o = parse("--listen", "tcp:0:interface=127.0.0.1", "--listen", "tcp:0",
                  "--max-sessions", "7")
        service = tap.makeService(o)
        self.assertTrue(IService.providedBy(service))
        self.assertFalse(service.running)
        self.assertIsInstance(service.sessions, SessionService)
        self.assertIs(service.sessions.settings, o["settings"])
        self.assertEqual(service.sessions.settings.max_sessions, 7)
        listeners = [s for s in service if isinstance(s, ListenerService)]
        self.assertEqual(len(listeners), 2)
        self.assertEqual([l.description for l in listeners],
                         ["tcp:0:interface=127.0.0.1", "tcp:0"])
        self.assertIn(service.sessions, list(service))
        for listener in listeners:
            self.assertIsNone(listener.port)

    def test_serviceWithHandlersAndAuth(self) -> None:
        from tests import fixtures
        o = parse("--listen", "tcp:0", "--handler", "tests.fixtures:Greeter",
                  "--handler", "tests.fixtures:PlainCalls",
                  "--auth", "tests.fixtures:Authenticator")
        service = tap.makeService(o)
        self.assertEqual(set(service.sessions.registry.calls), {"greet", "plain"})
        self.assertIsInstance(service.sessions.authenticator, fixtures.Authenticator)
        listeners = [s for s in service if isinstance(s, ListenerService)]
        self.assertEqual(len(listeners), 1)

    def test_defaultHandlerIsDemo(self) -> None:
        from wsservice.demo import DemoApp
        service = tap.makeService(parse("--listen", "tcp:0"))
        self.assertIn("echo", service.sessions.registry.calls)
        self.assertTrue(any(isinstance(o, DemoApp) for o in service.sessions.registry.observers))


class PluginTests(SynchronousTestCase):
    def _plugin(self) -> IServiceMaker:
        import twisted.plugins
        # Look only in the installed copy so discovery does not touch the source tree.
        source = os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "twisted", "plugins")
        installed = [p for p in twisted.plugins.__path__
                     if os.path.abspath(p) != source]
        self.assertTrue(any(os.path.exists(os.path.join(p, "wsservice_plugin.py"))
                            for p in installed), "the plugin is not installed in the venv")
        self.patch(twisted.plugins, "__path__", installed)
        makers = [m for m in getPlugins(IServiceMaker, twisted.plugins)
                  if m.tapname == "wsservice"]
        self.assertEqual(len(makers), 1, makers)
        return makers[0]

    def test_found(self) -> None:
        maker = self._plugin()
        self.assertTrue(IServiceMaker.providedBy(maker))
        self.assertTrue(maker.description)

    def test_optionsAndMakeService(self) -> None:
        maker = self._plugin()
        self.assertIs(maker.options, tap.Options)
        options = maker.options()
        options.parseOptions(["--listen", "tcp:0"])
        service = maker.makeService(options)
        self.assertTrue(IService.providedBy(service))
        self.assertIsInstance(service.sessions, SessionService)


class UsageTextTests(SynchronousTestCase):
    def test_helpMentionsEveryOption(self) -> None:
        text = tap.Options().getUsage()
        for name in OPTION_NAMES:
            self.assertIn(f"--{name}", text)

    def test_helpShowsDefaults(self) -> None:
        text = tap.Options().getUsage()
        self.assertIn("tcp:8080:interface=127.0.0.1", text)
        self.assertIn("wsservice.demo:DemoApp", text)
        self.assertIn("/ws", text)

    def test_helpHasNoStrayWhitespace(self) -> None:
        """Descriptions in --help are wrapped text: no runs of spaces between words.

        (Docstring indentation of multi-line opt_* docstrings must not leak into the text.)
        """
        import re
        column = 29  # where getUsage starts option descriptions
        for line in tap.Options().getUsage().splitlines():
            if line.startswith("      --") or line.startswith(" " * column):
                self.assertNotRegex(line[column:], r"\S {2,}\S", line)

    def test_helpOptionExits(self) -> None:
        """--help prints usage and exits (twistd's normal behaviour)."""
        options = tap.Options()
        from io import StringIO
        out = StringIO()
        self.patch(__import__("sys"), "stdout", out)
        self.assertRaises(SystemExit, options.parseOptions, ["--help"])
        self.assertIn("--max-sessions", out.getvalue())
