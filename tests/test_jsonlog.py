"""``--log-format json`` (wsservice/jsonlog.py): the observer on its own, wsservice's own
events through it with no secret in them, and a real ``twistd -n wsservice --log-format
json`` whose every output line is one JSON object."""

from __future__ import annotations

import io
import math
import os
import re
import sys
from typing import Any

import orjson
from twisted.application.service import Application
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher
from twisted.python import log as legacy_log
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsservice import Settings, log as wslog, tap
from wsservice.jsonlog import JSONLogObserver, eventAsJSON, isSecret, twistdLogFile

from . import docs, live, processes
from .wsclient import connect

TWISTD = [sys.executable, processes.TWISTD]
KEYS = {"time", "level", "namespace", "message", "fields"}
OPERATIONS = os.path.join(docs.ROOT, "docs", "operations.md")
ISO_UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class Unprintable:
    """A field value whose str() fails."""

    def __str__(self) -> str:
        raise RuntimeError("no")


def emitted(observer: Any, emit: Any) -> None:
    """Run ``emit(logger)`` with a Logger whose only observer is ``observer``."""
    emit(Logger(namespace="test.jsonlog", observer=observer))


class ObserverTests(SynchronousTestCase):
    """The observer, fed events as Twisted makes them."""

    def lines(self, emit: Any) -> list[dict[str, Any]]:
        out = io.StringIO()
        emitted(JSONLogObserver(out), emit)
        text = out.getvalue()
        self.assertTrue(text.endswith("\n"), text)
        return [orjson.loads(line) for line in text.splitlines()]

    def test_failure_with_secret_fields(self) -> None:
        """A failure logged with secret-named fields: the traceback is there, no secret."""
        def emit(log: Logger) -> None:
            try:
                raise ValueError("the handler broke")
            except ValueError:
                log.failure("call {method} of {who} failed ({token})", method="echo",
                            who="s1", token="tok-SECRET-1", api_key="key-SECRET-2",
                            password="pw-SECRET-3", Cookie="c-SECRET-4",
                            headers={"accept": "*/*", "authorization": "Bearer SECRET-5",
                                     "x": [{"session_token": "SECRET-6", "n": 1}]})
        [line] = self.lines(emit)
        self.assertEqual(set(line), KEYS | {"traceback"})
        self.assertRegex(line["time"], ISO_UTC_MS)
        self.assertEqual((line["level"], line["namespace"]), ("critical", "test.jsonlog"))
        self.assertEqual(line["message"], "call echo of s1 failed ([redacted])")
        self.assertEqual(line["fields"], {"method": "echo", "who": "s1",
                                          "headers": {"accept": "*/*", "x": [{"n": 1}]}})
        self.assertIn("ValueError: the handler broke", line["traceback"])
        self.assertIn("Traceback", line["traceback"])
        self.assertNotIn("SECRET", orjson.dumps(line).decode())

    def test_levels_and_values(self) -> None:
        """Each level by name; values JSON cannot hold are shown as text."""
        def emit(log: Logger) -> None:
            log.debug("d")
            log.info("i {n}", n=1)
            log.warn("w", ratio=0.5, nan=math.nan, big=1 << 70, raw=b"\x00", when=None,
                     flags=(True, False), tags={"a", "a"}, lvl=LogLevel.warn,
                     odd=Unprintable())
            log.error("e")
            log.critical("c")
        lines = self.lines(emit)
        self.assertEqual([line["level"] for line in lines],
                         ["debug", "info", "warn", "error", "critical"])
        self.assertEqual(lines[1]["message"], "i 1")
        self.assertEqual(lines[2]["fields"], {
            "ratio": 0.5, "nan": "nan", "big": str(1 << 70), "raw": "b'\\x00'", "when": None,
            "flags": [True, False], "tags": ["a"], "lvl": "<LogLevel=warn>",
            "odd": "<Unprintable that cannot be shown>"})
        for line in lines:
            self.assertNotIn("traceback", line)

    def test_time_is_the_events_own(self) -> None:
        event = {"log_time": 1700000000.1234, "log_format": "x", "log_level": LogLevel.info,
                 "log_namespace": "n"}
        self.assertEqual(orjson.loads(eventAsJSON(event))["time"], "2023-11-14T22:13:20.123Z")

    def test_legacy_err(self) -> None:
        """twisted.python.log.err(): its why as the message, its failure as the traceback,
        none of the legacy log's own keys as fields."""
        out = io.StringIO()
        observer = JSONLogObserver(out)
        globalLogPublisher.addObserver(observer)
        try:
            legacy_log.err(Failure(KeyError("gone")), "while doing it")
        finally:
            globalLogPublisher.removeObserver(observer)
        self.flushLoggedErrors(KeyError)
        [line] = [orjson.loads(text) for text in out.getvalue().splitlines()]
        self.assertEqual((line["message"], line["level"]), ("while doing it", "critical"))
        self.assertIn("KeyError: 'gone'", line["traceback"])
        self.assertEqual(line["fields"], {})

    def test_secret_names(self) -> None:
        for name in ("token", "session_token", "secret", "password", "passwd", "key",
                     "api_key", "auth", "authorization", "Authorization", "cookie",
                     "Set-Cookie", "jwt", "credentials", "bearer", "session_id"):
            self.assertTrue(isSecret(name), name)
        for name in ("session", "peer", "topic", "count", "reason", "description", "url"):
            self.assertFalse(isSecret(name), name)


class NoSecretInWsserviceEventsTests(TestCase):
    """wsservice's own events, DEBUG included, carry neither session ids nor tokens."""

    timeout = 60

    async def test_session_life_logged_without_secrets(self) -> None:
        out = io.StringIO()
        observer = JSONLogObserver(out)
        wslog.setDebug(True)
        self.addCleanup(wslog.setDebug, False)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        server = await live.serve(self, Settings(max_bad_messages=1))
        c, welcome = await server.session(auth={"token": "hello-auth-SECRET"})
        await c.call("echo", {"x": 1})
        c.sendRaw(b"{not json")
        await c.next()
        c.dropConnection(abort=True)
        await c.waitClosed()
        # resumed, then a wrong token, then bad messages until closed 4400
        resume = {"session": welcome["session"], "token": welcome["token"], "last_seq": 0}
        c2, again = await server.session(resume=resume)
        self.assertTrue(again["resumed"])
        c3, other = await server.session(resume={**resume, "token": "wrong-token-SECRET"})
        self.assertFalse(other["resumed"])
        for _ in range(3):
            c3.sendRaw(b"nope")
        await c3.waitClosed()
        await server.stop()
        text = out.getvalue()
        lines = [orjson.loads(line) for line in text.splitlines()]
        self.assertTrue(any(line["level"] == "debug" and line["namespace"].startswith(
            "wsservice.") for line in lines), text)
        for secret in (welcome["session"], welcome["token"], other["session"],
                       other["token"], "SECRET"):
            self.assertNotIn(secret, text)


class OptionTests(SynchronousTestCase):
    """--log-format: text (the default) or json; json is an observer for twistd's application."""

    def test_values(self) -> None:
        options = tap.Options()
        options.parseOptions([])
        self.assertEqual(options["log-format"], "text")
        e = self.assertRaises(tap.OptionError, tap.Options().parseOptions,
                              ["--log-format", "xml"])
        self.assertEqual(str(e), "--log-format xml: must be text or json; e.g. --log-format json")

    def test_json_observer_becomes_the_applications(self) -> None:
        """makeService's service sets its observer as its application's ILogObserver,
        writing where twistd's text log would go (here --logfile)."""
        path = os.path.join(self.mktemp())
        options = tap.Options()
        options.parent = {"nodaemon": True, "logfile": path}  # type: ignore[assignment]
        options.parseOptions(["--log-format", "json", "--listen", "tcp:0:interface=127.0.0.1"])
        service = tap.makeService(options)
        application = Application("wsservice")
        service.setServiceParent(application)
        observer = application.getComponent(ILogObserver)
        self.assertIsInstance(observer, JSONLogObserver)
        observer({"log_format": "hi {who}", "who": "you", "log_level": LogLevel.info,
                  "log_namespace": "t", "log_time": 0.0})
        with open(path) as f:
            line = orjson.loads(f.read())
        self.assertEqual(line, {"time": "1970-01-01T00:00:00.000Z", "level": "info",
                                "namespace": "t", "message": "hi you",
                                "fields": {"who": "you"}})

    def test_text_leaves_twistd_its_observer(self) -> None:
        options = tap.Options()
        options.parent = {"nodaemon": True}  # type: ignore[assignment]
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1"])
        application = Application("wsservice")
        tap.makeService(options).setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver, None))

    def test_docs_application_snippet(self) -> None:
        """docs/operations.md's lines for a .tac file set the observer on the application."""
        [snippet] = [body for lang, body in docs.blocks(OPERATIONS) if lang == "python"]
        application = Application("wsservice")
        exec(snippet, {"application": application})
        self.assertIsInstance(application.getComponent(ILogObserver), JSONLogObserver)

    def test_destination_as_twistd_chooses(self) -> None:
        self.assertIs(twistdLogFile({"nodaemon": True}), sys.stdout)
        self.assertIs(twistdLogFile({"nodaemon": True, "logfile": "-"}), sys.stdout)
        path = self.mktemp()
        logfile: Any = twistdLogFile({"nodaemon": False, "logfile": path})
        self.addCleanup(logfile.close)
        self.assertEqual(logfile.path, os.path.abspath(path))


class TwistdTests(TestCase):
    """A real ``twistd -n wsservice --log-format json``."""

    timeout = 90

    def setUp(self) -> None:
        self.cwd = processes.scratch(self, "wsj")

    async def start(self, *args: str) -> processes.Child:
        """twistd with its stderr apart (in a file): the child's output is its stdout."""
        err = open(os.path.join(self.cwd, "stderr"), "wb")
        self.addCleanup(err.close)
        return await processes.start(
            self, TWISTD + ["-n", "--pidfile=", *args], self.cwd,
            child_fds={0: "w", 1: "r", 2: err.fileno()})

    def check_lines(self, text: str) -> list[dict[str, Any]]:
        """Every line is one JSON object with the keys of a log line; they are returned."""
        lines = []
        for raw in text.splitlines():
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.fail(f"not a JSON line: {raw!r} in\n{text}")
            self.assertEqual(set(line) - {"traceback"}, KEYS, raw)
            self.assertRegex(line["time"], ISO_UTC_MS)
            self.assertIsInstance(line["fields"], dict)
            lines.append(line)
        return lines

    async def test_every_stdout_line_is_json(self) -> None:
        child = await self.start("wsservice", "--listen", "tcp:0:interface=127.0.0.1",
                                 "--log-format", "json", "--max-sessions", "50")
        c = live.Clients(self).add(await connect(f"127.0.0.1:{child.port()}"))
        welcome = await c.hello()
        self.assertEqual((await c.call("echo", "hi"))["result"], "hi")
        stopping = Deferred.fromCoroutine(processes.stop_cleanly(self, child))
        await c.waitClosed()
        text = await stopping
        lines = self.check_lines(text)
        messages = [line["message"] for line in lines]
        # twistd's own start-up lines, the start-up summary, the drain summary, twistd's end
        self.assertTrue(any("starting up" in m for m in messages), messages)
        summary = {line["fields"]["item"]: line for line in lines
                   if line["fields"].get("summary") == "startup"}
        self.assertEqual(set(summary), {"version", "listener", "handler", "settings", "api",
                                        "auth", "cluster"})
        self.assertEqual(summary["listener"]["fields"]["url"],
                         f"ws://127.0.0.1:{child.port()}/ws")
        self.assertEqual(summary["settings"]["fields"]["settings"], {"max_sessions": 50})
        self.assertEqual(summary["auth"]["fields"]["kind"], "anonymous")
        [drained] = [line for line in lines if line["fields"].get("summary") == "drain"
                     and line["fields"]["item"] == "done"]
        self.assertEqual({k: drained["fields"][k] for k in ("connections", "closed",
                                                              "dropped", "sessions")},
                         {"connections": 1, "closed": 1, "dropped": 0, "sessions": 1})
        self.assertIn("Server Shut Down.", messages)
        for secret in (welcome["session"], welcome["token"]):
            self.assertNotIn(secret, text)

    async def test_logfile_gets_json(self) -> None:
        """With --logfile the JSON lines go to the file, as twistd's text would."""
        path = os.path.join(self.cwd, "ws.log")

        def logged() -> str:
            if not os.path.exists(path):
                return ""
            with open(path) as f:
                return f.read()
        child = processes.Child()
        argv = TWISTD + ["-n", "--pidfile=", "--logfile", path, "wsservice", "--listen",
                         "tcp:0:interface=127.0.0.1", "--log-format", "json"]
        process = reactor.spawnProcess(child, argv[0], argv, env=processes.ENV, path=self.cwd)
        child.listening.addErrback(lambda f: None)  # stdout stays empty: the file is read
        self.addCleanup(lambda: None if child.ended.called else (
            process.signalProcess("KILL"), child.ended)[1])
        await live.until(lambda: "listening on " in logged(), "the start-up summary in ws.log",
                         timeout=processes.STARTUP_TIMEOUT)
        code = await processes.stop(child)
        self.assertIn(code, (0, "SIGTERM"), child.text + logged())
        self.assertEqual(child.text, "")  # nothing on stdout or stderr: all in the file
        lines = self.check_lines(logged())
        self.assertIn("Server Shut Down.", [line["message"] for line in lines])

    async def test_json_cannot_go_with_syslog(self) -> None:
        out, err, code = await processes.run(
            TWISTD + ["-n", "--pidfile=", "--syslog", "wsservice", "--log-format", "json"],
            self.cwd)
        self.assertEqual(code, 2, out + err)
        self.assertEqual(err, "wsservice: --log-format json: twistd's --syslog chooses the "
                              "log's observer itself; give one of them\n")
