"""Real child processes for tests: the installed twistd, run as a user runs it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue

# The twistd script the package installs next to this interpreter, as a user would run it.
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
# Children see the installed package only: no PYTHONPATH into the checkout.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
WS_URL = re.compile(r"ws://127\.0\.0\.1:(\d+)/ws")
STARTUP_TIMEOUT = 30


class Child(ProcessProtocol):
    """Collects a child's output; ``listening`` fires with it once ``listeners`` listen;
    ``ended`` fires with the exit code ('SIGTERM' when twistd re-raised that signal)."""

    def __init__(self, listeners: int = 1) -> None:
        self.output = b""
        self.listening: Deferred = Deferred()
        self.ended: Deferred = Deferred()
        self._listeners = listeners
        self.transport: Any = None

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.listening.called and self.output.count(b"listening on ") >= self._listeners:
            self.listening.callback(self.text)

    errReceived = outReceived

    @property
    def text(self) -> str:
        """Everything it printed so far, decoded."""
        return self.output.decode(errors="replace")

    def port(self) -> int:
        """The TCP port of its first ws:// listener, from its start-up line."""
        found = WS_URL.search(self.text)
        assert found is not None, self.text
        return int(found.group(1))

    def processEnded(self, reason: Any) -> None:
        value = getattr(reason, "value", None)
        # twistd re-raises the signal that stopped it once shut down, so the parent sees it
        code = getattr(value, "exitCode", None)
        if code is None and getattr(value, "signal", None) == signal.SIGTERM:
            code = "SIGTERM"
        if not self.listening.called:
            self.listening.errback(RuntimeError(f"exited ({code}) before listening:\n"
                                                + self.text))
        self.ended.callback(code)


async def start(testcase: Any, argv: list[str], cwd: str, listeners: int = 1,
                env: dict[str, str] | None = None,
                child_fds: dict[int, Any] | None = None, stop_signal: str = "TERM") -> Child:
    """Spawn ``argv``, wait until it listens; at cleanup it gets ``stop_signal`` (then
    SIGKILL if it lingers)."""
    child = Child(listeners)
    process = reactor.spawnProcess(child, argv[0], argv, env=ENV if env is None else env,
                                   path=cwd, childFDs=child_fds)

    async def stop() -> None:
        if child.ended.called:
            return
        try:
            process.signalProcess(stop_signal)
        except ProcessExitedAlready:  # ended; its processEnded is on its way
            pass
        timer = reactor.callLater(STARTUP_TIMEOUT, process.signalProcess, "KILL")
        await child.ended
        if timer.active():
            timer.cancel()
    testcase.addCleanup(stop)
    await child.listening.addTimeout(STARTUP_TIMEOUT, reactor)
    return child


async def stop(child: Child) -> Any:
    """SIGTERM a started child and return its exit code."""
    child.transport.signalProcess("TERM")
    return await child.ended.addTimeout(STARTUP_TIMEOUT, reactor)


async def stop_cleanly(testcase: Any, child: Child) -> str:
    """SIGTERM a started child; fail unless it exits 0 (or by the SIGTERM twistd re-raises
    once shut down) without a traceback. Returns everything it printed."""
    code = await stop(child)
    testcase.assertIn(code, (0, "SIGTERM"), child.text)
    testcase.assertNotIn("Traceback", child.text)
    return child.text


def scratch(testcase: Any, prefix: str) -> str:
    """A fresh directory under the system's temporary one (short: unix socket paths fit),
    removed on cleanup."""
    where = tempfile.mkdtemp(prefix=prefix)
    testcase.addCleanup(shutil.rmtree, where, True)
    return where


async def run(argv: list[str], cwd: str, env: dict[str, str] | None = None
              ) -> tuple[str, str, int]:
    """Run a command to its end: (stdout, stderr, exit code)."""
    out, err, code = await getProcessOutputAndValue(
        argv[0], argv[1:], env=ENV if env is None else env, path=cwd)
    return out.decode(errors="replace"), err.decode(errors="replace"), code


def shell(command: str) -> tuple[list[str], dict[str, str]]:
    """A documented command line as a POSIX shell runs it: (argv, environment).

    Leading ``NAME=value`` words go into the environment, the rest is split with shell
    quoting and ``\\`` line continuations. Signals then reach the program itself (a
    ``sh -c`` in between would take the SIGTERM).
    """
    words = shlex.split(command.replace("\\\n", " "))
    env = dict(ENV)
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return words, env
