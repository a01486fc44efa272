"""``python -m wsservice.client`` as a user runs it: a real subprocess against the real
service (in this process), over TCP and a unix socket."""

from __future__ import annotations

import os
import sys
from typing import Any

import orjson
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import TestCase

from wsservice import Settings

from . import live, processes, pyclient

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the client of this checkout (the installed copy may be older while one edits)
ENV = {**processes.ENV, "PYTHONPATH": CHECKOUT}
CLI = [sys.executable, "-m", "wsservice.client"]


async def run(*args: str) -> tuple[str, str, int]:
    """Run the command line to its end: (stdout, stderr, exit code)."""
    return await processes.run(CLI + list(args), CHECKOUT, env=ENV)


class Listener(ProcessProtocol):
    """A ``listen`` command running: its stdout and stderr apart; ``ended`` fires with its
    exit code."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None))

    @property
    def lines(self) -> list[Any]:
        return [orjson.loads(line) for line in self.out.splitlines()]


class CommandLineTests(TestCase):

    unix = False
    stop_signal = "INT"

    async def _start(self) -> None:
        self.server = await live.serve(self, Settings(), unix=self.unix)
        self.url = pyclient.url(self.server.address)

    def setUp(self) -> Deferred:
        return Deferred.fromCoroutine(self._start())

    def assertOneLine(self, err: str, starts: str = "python -m wsservice.client: ") -> None:
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith(starts), err)
        self.assertNotIn("Traceback", err)

    async def test_call(self) -> None:
        """call prints the result as one JSON line and exits 0; --meta goes in the hello."""
        out, err, code = await run(self.url, "call", "echo", '{"a": [1, "two"]}')
        self.assertEqual((out, err, code), ('{"a":[1,"two"]}\n', "", 0))
        out, err, code = await run(self.url, "--meta", '{"m": 1}', "call", "whoami")
        self.assertEqual(code, 0, err)
        self.assertEqual(orjson.loads(out)["meta"], {"m": 1})

    async def test_call_rejected(self) -> None:
        """A remote error: {"error": {...}} on stderr, nothing on stdout, exit 1."""
        out, err, code = await run(self.url, "call", "reject", "[1]")
        self.assertEqual((out, code), ("", 1))
        self.assertEqual(orjson.loads(err), {"error": {
            "code": "demo.rejected", "message": "rejected, as asked", "data": [1]}})
        out, err, code = await run(self.url, "--timeout", "0.2", "call", "sleep",
                                   '{"seconds": 5}')
        self.assertEqual((out, code), ("", 1))
        self.assertEqual(orjson.loads(err)["error"]["code"], "timeout")

    async def test_listen_publish_and_interrupt(self) -> None:
        """listen prints topic messages and pushes as JSON lines; a publish from another
        command reaches it; presence lists it; SIGINT (SIGTERM over unix) ends it cleanly:
        exit 0, bye."""
        listener = Listener()
        process = reactor.spawnProcess(
            listener, CLI[0], CLI + [self.url, "--meta", '{"public": {"name": "cli"}}',
                                     "listen", "news"], env=ENV, path=CHECKOUT)
        self.addCleanup(lambda: listener.ended.called or process.signalProcess("KILL"))
        await live.until(lambda: b"listening on news" in listener.err,
                         lambda: f"the listener to start; it said {listener.err!r}")
        out, err, code = await run(self.url, "presence", "news")
        self.assertEqual(code, 0, err)
        [member] = orjson.loads(out)
        self.assertEqual((member["user"], member["meta"]), (None, {"name": "cli"}))
        self.assertEqual(len(out.splitlines()), 1)
        out, err, code = await run(self.url, "publish", "news", '{"n": 1}')
        self.assertEqual((out, err, code), ("", "", 0))
        await live.until(lambda: listener.lines, "the listener to print the message")
        sessions = self.server.sessions.sessions
        [session] = [s for s in sessions.values() if s.attached]
        session.push("note", {"x": True})
        await live.until(lambda: len(listener.lines) == 2, "the listener to print the push")
        self.assertEqual(listener.lines, [
            {"type": "message", "topic": "news", "data": {"n": 1}, "seq": 1},
            {"type": "event", "event": "note", "data": {"x": True}, "seq": 2}])
        process.signalProcess(self.stop_signal)
        self.assertEqual(await listener.ended.addTimeout(10, reactor), 0, listener.err)
        self.assertNotIn(b"Traceback", listener.err)
        await live.until(lambda: not sessions, "the listener's session to end (bye)")

    async def test_usage_errors(self) -> None:
        """A bad URL, bad JSON, a missing argument: exit 2, one line on stderr."""
        for args in (["http://x/ws", "call", "echo"], [self.url, "call", "echo", "{bad"],
                     [self.url, "publish", "t"], [self.url, "shout"],
                     [self.url, "presence"], [self.url, "presence", "a", "b"],
                     [self.url, "--meta", "[]", "call", "echo"],
                     [self.url, "--timeout", "soon", "call", "echo"]):
            out, err, code = await run(*args)
            self.assertEqual((out, code), ("", 2), args)
            self.assertOneLine(err, "python -m wsservice.client: error: ")

    async def test_connection_refused(self) -> None:
        """Nothing listening: one line, exit 1."""
        await self.server.stop()
        out, err, code = await run(self.url, "call", "echo")
        self.assertEqual((out, code), ("", 1))
        self.assertOneLine(err)
        self.assertIn("cannot connect", err)


class UNIXCommandLineTests(CommandLineTests):
    """The same over a unix socket (``unix:PATH``), stopping the listener with SIGTERM."""

    unix = True
    stop_signal = "TERM"
