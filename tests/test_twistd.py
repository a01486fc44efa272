"""twistd itself, as a user runs it: plugin discovery, --help, serving, SIGTERM, bad options."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from .wsclient import connect, http

# The twistd script the package installs next to this interpreter, as a user would run it.
TWISTD = [sys.executable, os.path.join(os.path.dirname(sys.executable), "twistd")]
# Run away from the checkout so the installed package (and its plugin) is what runs.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


class _Twistd(ProcessProtocol):
    """Collects a twistd child's output; ``listening`` fires once both listeners are up."""

    def __init__(self, listeners: int) -> None:
        self.output = b""
        self.listening: Deferred = Deferred()
        self.ended: Deferred = Deferred()
        self._listeners = listeners

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.listening.called and self.output.count(b"listening on ") >= self._listeners:
            self.listening.callback(self.output.decode())

    errReceived = outReceived

    def processEnded(self, reason: object) -> None:
        value = getattr(reason, "value", None)
        # twistd re-raises the signal that stopped it once shut down, so the parent sees it
        code = getattr(value, "exitCode", None)
        if code is None and getattr(value, "signal", None) == signal.SIGTERM:
            code = "SIGTERM"
        if not self.listening.called:
            self.listening.errback(RuntimeError("twistd exited before listening:\n"
                                                + self.output.decode()))
        self.ended.callback(code)


class TwistdTests(TestCase):
    """``python -m twisted wsservice`` (that is, twistd) in a subprocess."""

    timeout = 60

    def setUp(self) -> None:
        self.cwd = tempfile.mkdtemp(prefix="wst")
        self.addCleanup(shutil.rmtree, self.cwd, True)

    async def run_twistd(self, *args: str) -> tuple[str, str, int]:
        out, err, code = await getProcessOutputAndValue(
            TWISTD[0], TWISTD[1:] + list(args), env=ENV, path=self.cwd)
        return out.decode(), err.decode(), code

    async def test_help_documents_every_option(self) -> None:
        out, err, code = await self.run_twistd("wsservice", "--help")
        self.assertEqual(code, 0, err)
        for option in ("--listen", "--handler", "--path", "--allowed-origin", "--hello-timeout",
                       "--max-message-size", "--max-depth", "--max-inflight-calls",
                       "--call-timeout", "--max-bad-messages", "--max-sessions", "--auth"):
            self.assertIn(option, out)

    async def test_plugin_listed(self) -> None:
        out, err, code = await self.run_twistd("--help")
        self.assertIn("wsservice", out)

    async def test_bad_option_is_a_usage_error(self) -> None:
        out, err, code = await self.run_twistd("-n", "wsservice", "--max-depth", "0")
        self.assertNotEqual(code, 0)
        self.assertIn("max-depth", out + err)
        self.assertNotIn("Traceback", out + err)

    async def test_bad_handler_names_it(self) -> None:
        out, err, code = await self.run_twistd("-n", "wsservice", "--handler", "nosuch.mod:App")
        self.assertNotEqual(code, 0)
        self.assertIn("nosuch.mod:App", out + err)
        self.assertNotIn("Traceback", out + err)

    async def test_serves_tcp_and_unix_then_stops_on_sigterm(self) -> None:
        sock = os.path.join(self.cwd, "ws.sock")
        proto = _Twistd(listeners=2)
        process = reactor.spawnProcess(
            proto, TWISTD[0], TWISTD + ["-n", "--pidfile=", "--logfile=-", "wsservice",
                                        "--listen", "tcp:0:interface=127.0.0.1",
                                        "--listen", f"unix:{sock}"],
            env=ENV, path=self.cwd)
        self.addCleanup(lambda: proto.ended.called or process.signalProcess("KILL"))
        self.addCleanup(lambda: proto.ended)
        log = await proto.listening.addTimeout(30, reactor)
        port = re.search(r"ws://127\.0\.0\.1:(\d+)/ws", log)
        self.assertIsNotNone(port, log)
        assert port is not None
        self.assertEqual(os.stat(sock).st_mode & 0o777, 0o600)

        tcp = await connect(f"127.0.0.1:{port.group(1)}")
        unix = await connect(f"unix:{sock}")
        secrets = []
        for client in (tcp, unix):
            welcome = await client.hello()
            secrets += [welcome["session"], welcome["token"]]
            reply = await client.call("echo", {"via": "twistd"})
            self.assertEqual(reply["result"], {"via": "twistd"})
        code, _, body = await http(f"unix:{sock}", "/healthz")
        self.assertEqual((code, b'"sessions":2' in body), (200, True))

        process.signalProcess(signal.SIGTERM)
        for client in (tcp, unix):
            closed, reason = await client.waitClosed()
            self.assertEqual(closed, 1001, reason)
        exit_code = await proto.ended.addTimeout(30, reactor)
        self.assertIn(exit_code, (0, "SIGTERM"), proto.output.decode())
        self.assertIn("Server Shut Down.", proto.output.decode())
        self.assertFalse(os.path.exists(sock), "the unix socket file was left behind")
        output = proto.output.decode()
        self.assertNotIn("Traceback", output)
        # the operator sees the drain; session ids and tokens never reach the log
        self.assertIn("draining 2 connections", output)
        for secret in secrets:
            self.assertNotIn(secret, output)
