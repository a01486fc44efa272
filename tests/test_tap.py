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
    "listen", "handler", "path", "allowed-origin", "allowed-host", "server-version",
    "hello-timeout", "max-message-size",
    "max-depth", "max-inflight-calls", "call-timeout", "max-bad-messages", "max-sessions",
    "auth",
)


# what every --listen mistake suggests instead
ENDPOINTS = ("tcp:PORT[:interface=ADDRESS], unix:PATH, ssl:PORT:privateKey=KEY.pem:"
             "certKey=CERT.pem or systemd:domain=INET:index=N")


def parse(*args: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(args))
    return options


class OptionsDefaultsTests(SynchronousTestCase):
    """With no option given: the documented defaults, as options and as Settings."""

    def test_defaults(self) -> None:
        o = parse()
        self.assertEqual(o["listen"], ["tcp:8080:interface=127.0.0.1"])
        self.assertEqual(o["listen"], [DEFAULT_LISTEN])
        self.assertEqual(o["handler"], ["wsservice.demo:DemoApp"])
        self.assertEqual(o["allowed-origin"], [])
        self.assertEqual(o["allowed-host"], [])
        self.assertEqual(o["path"], "/ws")
        self.assertIsNone(o["auth"])
        self.assertEqual(o["hello-timeout"], 10)
        self.assertEqual(o["max-message-size"], 1048576)
        self.assertEqual(o["max-frames"], 256)
        self.assertEqual(o["max-depth"], 32)
        self.assertEqual(o["max-inflight-calls"], 64)
        self.assertEqual(o["call-timeout"], 30)
        self.assertEqual(o["max-bad-messages"], 20)
        self.assertEqual(o["max-sessions"], 10000)

    def test_flags(self) -> None:
        self.assertEqual((parse()["settings"].fast_path, parse()["settings"].conformance_echo),
                         (True, False))
        s = parse("--no-fast-path", "--conformance-echo")["settings"]
        self.assertEqual((s.fast_path, s.conformance_echo), (False, True))
        self.assertIn("--no-fast-path", str(tap.Options()))

    def test_serverVersionSwitch(self) -> None:
        self.assertIs(parse()["settings"].server_version, False)
        self.assertIs(parse("--server-version")["settings"].server_version, True)

    def test_defaultSettings(self) -> None:
        s = parse()["settings"]
        self.assertIsInstance(s, Settings)
        self.assertEqual(s, Settings())
        self.assertEqual(s.path, "/ws")
        self.assertEqual(s.allowed_origins, ())
        self.assertEqual(s.allowed_hosts, ())
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
    """Given values reach the options and Settings, repeatable options accumulate."""

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

    def test_repeatableAllowedHost(self) -> None:
        o = parse("--allowed-host", "chat.example.com", "--allowed-host", "*.example.org")
        self.assertEqual(o["allowed-host"], ["chat.example.com", "*.example.org"])
        self.assertEqual(o["settings"].allowed_hosts, ("chat.example.com", "*.example.org"))
        self.assertEqual(parse()["allowed-host"], [])

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
    """Each bad value's OptionError line, whole: option as typed, value, problem, hint."""

    def assertMistake(self, line: str, *args: str) -> None:
        """Whole: an unknown option, a misspelt one or another UsageError cannot pass."""
        e = self.assertRaises(tap.OptionError, parse, *args)
        self.assertEqual(str(e), line)

    def test_helloTimeoutZero(self) -> None:
        self.assertMistake("--hello-timeout 0: must be a finite number > 0; "
                           "e.g. --hello-timeout 10 (the default)", "--hello-timeout", "0")

    def test_helloTimeoutNotANumber(self) -> None:
        self.assertMistake("--hello-timeout abc: not a number; "
                           "e.g. --hello-timeout 10 (the default)", "--hello-timeout", "abc")

    def test_helloTimeoutNegative(self) -> None:
        self.assertMistake("--hello-timeout -1: must be a finite number > 0; "
                           "e.g. --hello-timeout 10 (the default)", "--hello-timeout", "-1")

    def test_maxMessageSizeNegative(self) -> None:
        self.assertMistake("--max-message-size -1: must be a whole number >= 1; "
                           "e.g. --max-message-size 1048576 (the default)",
                           "--max-message-size", "-1")

    def test_maxMessageSizeNotInteger(self) -> None:
        self.assertMistake("--max-message-size 1.5: not a whole number; "
                           "e.g. --max-message-size 1048576 (the default)",
                           "--max-message-size", "1.5")

    def test_maxDepthZero(self) -> None:
        self.assertMistake("--max-depth 0: must be a whole number from 1 to 1000; "
                           "e.g. --max-depth 32 (the default)", "--max-depth", "0")

    def test_maxInflightCallsZero(self) -> None:
        self.assertMistake("--max-inflight-calls 0: must be a whole number >= 1; "
                           "e.g. --max-inflight-calls 64 (the default)",
                           "--max-inflight-calls", "0")

    def test_maxBadMessagesNegative(self) -> None:
        self.assertMistake("--max-bad-messages -1: must be a whole number >= 0; "
                           "e.g. --max-bad-messages 20 (the default)",
                           "--max-bad-messages", "-1")

    def test_maxSessionsZero(self) -> None:
        self.assertMistake("--max-sessions 0: must be a whole number >= 1; "
                           "e.g. --max-sessions 10000 (the default)", "--max-sessions", "0")

    def test_callTimeoutNotANumber(self) -> None:
        self.assertMistake("--call-timeout x: not a number; "
                           "e.g. --call-timeout 30 (the default)", "--call-timeout", "x")

    def test_callTimeoutNaN(self) -> None:
        self.assertMistake("--call-timeout nan: must be a finite number > 0; "
                           "e.g. --call-timeout 30 (the default)", "--call-timeout", "nan")

    def test_everySettingsOptionIsChecked(self) -> None:
        """The table: every numeric Settings field is an option refusing 'x' and '-1', with
        its bounds and its default as the example."""
        from wsservice.config import OPTION_FIELDS, bounds, kind
        numeric = [f for f in OPTION_FIELDS.values() if kind(f) is not str]
        self.assertEqual(len(numeric), 23)
        for spec in numeric:
            name = spec.name.replace("_", "-")
            option, default = "--" + name, parse()[name]
            hint = f"; e.g. {option} {default if kind(spec) is int else f'{default:g}'} " \
                   "(the default)"
            self.assertMistake(f"{option} x: " + ("not a whole number" if kind(spec) is int
                                                  else "not a number") + hint, option, "x")
            self.assertMistake(f"{option} -1: must be {bounds(spec)}{hint}", option, "-1")

    def test_bogusListen(self) -> None:
        self.assertMistake("--listen bogus:1: unknown endpoint type 'bogus'; use " + ENDPOINTS,
                           "--listen", "bogus:1")

    def test_badTcpPort(self) -> None:
        self.assertMistake("--listen tcp:notaport: not a valid tcp: endpoint string (invalid "
                           "literal for int() with base 10: 'notaport'); use " + ENDPOINTS,
                           "--listen", "tcp:notaport")

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
    """Handlers and authenticators load while parsing: a bad one's OptionError line, whole."""

    def assertMistake(self, line: str, *args: str) -> None:
        e = self.assertRaises(tap.OptionError, parse, *args, "--listen", "tcp:0")
        self.assertEqual(str(e), line)

    def test_badHandler(self) -> None:
        self.assertMistake(
            "--handler no.such.module:Thing: no module named 'no'; looked in "
            f"{os.getcwd()} (--app-dir) and the installed packages: put no.py there or "
            "install it", "--handler", "no.such.module:Thing")

    def test_handlerProvidingNothing(self) -> None:
        self.assertMistake(
            "--handler tests.fixtures:Nothing: provides none of ICallHandler, IEventHandler, "
            "ISessionObserver, IResourceProvider, ITopicAuthorizer; subclass wsservice.Handler "
            "or declare one with @implementer", "--handler", "tests.fixtures:Nothing")

    def test_handlerBrokenContract(self) -> None:
        e = self.assertRaises(tap.OptionError, parse, "--handler",
                              "tests.fixtures:NoCallsAttribute", "--listen", "tcp:0")
        # zope.interface's own explanation names the object by its repr (an address)
        self.assertRegex(str(e), r"^--handler tests\.fixtures:NoCallsAttribute: does not "
                                 r"satisfy ICallHandler: The object <tests\.fixtures\."
                                 r"NoCallsAttribute object at 0x[0-9a-f]+> has failed to "
                                 r"implement interface wsservice\.interfaces\.ICallHandler: "
                                 r"The wsservice\.interfaces\.ICallHandler\.calls attribute "
                                 r"was not provided\.$")

    def test_duplicateHandlers(self) -> None:
        """Two handlers serving one call name: the line names the name and both handlers."""
        self.assertMistake(
            "--handler tests.fixtures:OtherGreeter: call 'greet' is already served by "
            "tests.fixtures:Greeter; a name may be served once: rename one of them or leave "
            "one out",
            "--handler", "tests.fixtures:Greeter", "--handler", "tests.fixtures:OtherGreeter")

    def test_badAllowedHost(self) -> None:
        self.assertMistake("--allowed-host: not a host pattern (a name such as "
                           "chat.example.com or *.example.com, an address, or *; no port): "
                           "'chat.example.com:443'", "--allowed-host", "chat.example.com:443")

    def test_badAuth(self) -> None:
        self.assertMistake("--auth tests.fixtures:Greeter: does not provide IAuthenticator",
                           "--auth", "tests.fixtures:Greeter")

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
    """The installed twisted/plugins entry: found, with these Options and makeService."""

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
    """--help: every option, the defaults, tidy wrapped text."""

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
        from collections import Counter
        lines = tap.Options().getUsage().splitlines()
        # where getUsage starts option descriptions: after the longest option, for all
        starts = Counter(m.end() for m in map(re.compile(r" +--\S+ +").match, lines) if m)
        column = starts.most_common(1)[0][0]
        for line in lines:
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
