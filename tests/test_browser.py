"""End to end in a real browser: wsservice.js (the browser client, clients.md) in Debian's
headless Chromium, driven by playwright-core, against the real service.

Each test starts the server it needs in this process (tests/live.py; the reactor keeps
serving it) or a real cluster (real twistd nodes on a real redis-server), then runs one
scenario of tests/browser/scenarios.mjs as a child process: `node tests/browser/run.mjs
SCENARIO --server 127.0.0.1:PORT`. The scenario checks what the page saw (results, error
codes, seqs, the frames on the wire); a failure shows everything the child printed, the
browser's console included, and where its screenshots are.

Nothing is skipped: without Chromium, Node.js or tests/browser/node_modules these tests
fail, saying what to install (`make test` installs all three).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python import log
from twisted.trial.unittest import FailTest, TestCase

from wsservice import Settings

from . import live, processes
from .clusternodes import Cluster

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BROWSER_DIR = os.path.join(HERE, "browser")
RUNNER = os.path.join(BROWSER_DIR, "run.mjs")
CHROMIUM = os.environ.get("WSSERVICE_CHROMIUM", "/usr/bin/chromium")
NODE = shutil.which("node") or "/usr/bin/node"
SCENARIO_TIMEOUT = 60  # the runner ends itself after this; we kill it 20 s later
MIN_NODE = 20


def missing() -> str | None:
    """What the browser tests lack on this machine, said so that one knows what to do."""
    if not os.path.exists(CHROMIUM):
        return (f"{CHROMIUM} is missing: install Debian's chromium (sh scripts/system-deps.sh "
                "test, or apt-get install chromium fonts-dejavu-core)")
    if not os.path.exists(NODE):
        return "node is missing: the browser tests need Node.js >= 20 and npm"
    try:
        version = subprocess.run([NODE, "--version"], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
        major = int(version.lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        return f"cannot tell the version of {NODE}: {e!r}"
    if major < MIN_NODE:
        return f"node {version} is too old: the browser tests need Node.js >= {MIN_NODE}"
    if not os.path.exists(os.path.join(BROWSER_DIR, "node_modules", "playwright-core",
                                       "package.json")):
        return ("tests/browser/node_modules is missing: run `make test` (it runs npm ci "
                "there), or `cd tests/browser && npm ci`")
    return None


class Runner(ProcessProtocol):
    """The scenario's child process: its output, and its exit code once it ends."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        value = reason.value
        code = getattr(value, "exitCode", None)
        if code is None:
            code = f"signal {getattr(value, 'signal', '?')}"
        self.ended.callback(code)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")


class BrowserTestCase(TestCase):
    timeout = 120

    def setUp(self) -> None:
        problem = missing()
        if problem:
            raise FailTest(f"the browser tests cannot run: {problem}")

    async def scenario(self, name: str, *servers: str, logs: Any = None) -> dict[str, Any]:
        """Run scenario ``name`` against ``servers``; its result (the runner's RESULT line),
        or fail with everything the runner printed (and ``logs()``, the servers' logs)."""
        artifacts = os.path.abspath(self.mktemp())
        argv = [NODE, RUNNER, name, "--artifacts", artifacts,
                "--timeout", str(SCENARIO_TIMEOUT)]
        for flag, server in zip(("--server", "--server2"), servers):
            argv += [flag, server]
        env = dict(processes.ENV)
        env.setdefault("HOME", artifacts)
        runner = Runner()
        process = reactor.spawnProcess(runner, NODE, argv, env=env, path=ROOT)
        killer = reactor.callLater(SCENARIO_TIMEOUT + 20, process.signalProcess, "KILL")
        code = await runner.ended
        if killer.active():
            killer.cancel()
        text = runner.text
        log.msg(f"browser scenario {name} (exit {code}):\n{text}")  # in _trial_temp/test.log
        results = [line[len("RESULT "):] for line in text.splitlines()
                   if line.startswith("RESULT ")]
        result = json.loads(results[-1]) if results else {}
        if code != 0 or not result.get("ok"):
            extra = f"\n{logs()}" if logs is not None else ""
            raise FailTest(f"browser scenario {name} failed (exit {code}):\n{text}{extra}")
        return result

    async def serve(self, **settings: Any) -> live.LiveServer:
        return await live.serve(self, Settings(**settings))


class BrowserClientTests(BrowserTestCase):
    """wsservice.js against the in-process server."""

    async def test_calls(self) -> None:
        """hello with meta; echo's result; reject -> WsServiceError demo.rejected with message
        and data; unknown_method, internal, invalid_params; 30 concurrent calls each get
        their own answer; emit/on/off and pushed events with their seq."""
        server = await self.serve()
        result = await self.scenario("calls", server.address)
        # the demo's fail method raised, as asked: the server logged it with its traceback
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        session = server.sessions.sessions.get(result["session"])
        assert session is not None, "the page's session is still on the server"
        self.assertEqual(session.meta, {"user": "alice", "n": 1})

    async def test_call_timeout_and_cancel(self) -> None:
        """A call past its timeout rejects 'timeout' after ~0.3 s, an aborted one 'cancelled';
        both send cancel, which the server obeys (with one call slot, the next call works)."""
        server = await self.serve(max_inflight_calls=1)
        await self.scenario("call_timeout_cancel", server.address)

    async def test_server_calls(self) -> None:
        """client.handle() answers the server's calls (demo ask): values, promises,
        WsServiceError codes, internal; unknown_method without a handler."""
        server = await self.serve()
        await self.scenario("server_calls", server.address)

    async def test_pubsub(self) -> None:
        """Two pages: subscribe, publish (the sender too), unsubscribe, bursts in order."""
        server = await self.serve()
        await self.scenario("pubsub", server.address)

    async def test_network_drop_resumes(self) -> None:
        """The proxy cuts the page's connection and refuses new ones while another page
        tells it 20 events and publishes 10 messages; back up, the page resumes (default
        backoff) and gets all 30 once, in order, seqs 1..35 without a gap; a call made
        meanwhile is answered after."""
        server = await self.serve()
        result = await self.scenario("network_drop", server.address)
        session = server.sessions.sessions.get(result["session"])
        assert session is not None, "the resumed session is on the server"
        self.assertEqual(session.seq, result["lastSeq"], "the server's last seq is the page's")

    async def test_resume_after_ttl_is_lost(self) -> None:
        """A drop longer than resume_ttl: 'lost' event, a new session, its topic subscribed
        again (a new publication arrives, seq 1), calls work."""
        server = await self.serve(resume_ttl=1)
        result = await self.scenario("resume_lost", server.address)
        self.assertNotIn(result["old"], server.sessions.sessions)
        self.assertIn(result["session"], server.sessions.sessions)

    async def test_stalled_connection(self) -> None:
        """heartbeat=1: a connection that goes quiet (no FIN) is found dead by the protocol
        ping within two heartbeats; the call sent into it rejects 'disconnected'; the page
        resumes on a new connection with what was pushed meanwhile."""
        server = await self.serve(heartbeat=1)
        await self.scenario("stall", server.address)

    async def test_calls_across_reconnects(self) -> None:
        """A call in flight at a drop rejects 'disconnected' at once; calls and events made
        while reconnecting are sent after (maxQueuedCalls bounds them); reconnect()."""
        server = await self.serve()
        await self.scenario("reconnect_calls", server.address)

    async def test_close(self) -> None:
        """close(): bye, state closed, the session ended on the server, no reconnect, also
        when closed while reconnecting."""
        server = await self.serve()
        result = await self.scenario("close", server.address)
        self.assertNotIn(result["session"], server.sessions.sessions)

    async def test_acks(self) -> None:
        """250 pushes: acked at least every 100, the last within 1 s; 3 more: one ack."""
        server = await self.serve()
        await self.scenario("acks", server.address)

    async def test_bad_input_from_server(self) -> None:
        """A fake server (routeWebSocket) sends malformed JSON, non-objects, unknown types,
        duplicate and lower seqs, replies to unknown ids: each dropped with a warning, the
        next good message delivered, every seq once."""
        server = await self.serve()
        await self.scenario("bad_input", server.address)

    async def test_close_codes(self) -> None:
        """A fake server closes with 4401, 4400, 1000: no reconnect; 1013, 4408, 1001, 1006:
        reconnect and resume; 1013 at hello: retried until a welcome."""
        server = await self.serve()
        await self.scenario("close_codes", server.address)


    async def test_presence(self) -> None:
        """Two pages: B (subscribed with the presence option) hears A join, leave, join
        again, and A's session end after a drop longer than resume_ttl; presence() lists
        both on both pages; A's new session subscribes again with presence and hears B
        leave (bye)."""
        server = await self.serve(resume_ttl=1)
        await self.scenario("presence", server.address)

    async def test_presence_bad_input(self) -> None:
        """A fake server's malformed presence answers (rejected bad_result; bad members
        left out) and events (warned, not routed); the option turned on and off on a
        subscribed topic; a presence request whose answer the drop lost is asked again."""
        server = await self.serve()
        await self.scenario("presence_fake", server.address)


class DemoPageTests(BrowserTestCase):
    """The demo page (built on wsservice.js) as a person uses it, and README's page."""

    async def test_demo_clicked_through(self) -> None:
        """Two tabs (one phone-sized) chat in a room, each marking its own lines and
        listing who is in the room, live; the echo, call and whoami buttons answer in the
        log; a network drop under one tab is shown (reconnecting, then 1 resume, 2 replayed;
        the other tab still lists her) and the missed lines appear once, in order; Drop &
        resume resumes again. Its screenshots are README's picture: with
        WSSERVICE_UPDATE_SCREENSHOT=1 the test writes docs/demo.png. Then Grace leaves for
        another room, comes back under a new name, and closes her tab: Ada's list follows."""
        server = await self.serve()
        result = await self.scenario("demo", server.address)
        desktop, phone = result["screenshots"]
        for shot, width in ((desktop, 1100), (phone, 390)):
            with open(shot, "rb") as f:
                head = f.read(24)
            self.assertEqual(head[:8], b"\x89PNG\r\n\x1a\n", shot)
            self.assertEqual(int.from_bytes(head[16:20], "big"), width, shot)
        if os.environ.get("WSSERVICE_UPDATE_SCREENSHOT"):
            shutil.copyfile(desktop, os.path.join(ROOT, "docs", "demo.png"))

    async def test_demo_lost_session(self) -> None:
        """resume_ttl=1: the other tab sees Ada's session end (she leaves the room list)
        and, while she is away, Grace takes a new name; back with a new session ('lost'),
        Ada's page fetches the room's list again (Grace's new name) and gets messages."""
        server = await self.serve(resume_ttl=1)
        await self.scenario("demo_lost", server.address)

    async def test_readme_page(self) -> None:
        """README's board.html, served by a static server on another port, with the service
        allowing that origin (as README says): it prints the state, the echo and the
        message it published."""
        from twisted.web.server import Site
        from twisted.web.static import File
        where = processes.scratch(self, "board")
        static = reactor.listenTCP(0, Site(File(where)), interface="127.0.0.1")
        self.addCleanup(static.stopListening)
        page_origin = f"http://127.0.0.1:{static.getHost().port}"
        server = await self.serve(allowed_origins=(page_origin,))
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        block = re.search(r"```html\n(<!DOCTYPE html>.*?)```", readme, re.S)
        assert block is not None, "README has the board.html example"
        self.assertIn("--allowed-origin http://127.0.0.1:8000", readme)
        with open(os.path.join(where, "board.html"), "w", encoding="utf-8") as f:
            f.write(block.group(1).replace("127.0.0.1:8080", server.address))
        await self.scenario("readme_page", page_origin[len("http://"):])


class BrowserClusterTests(BrowserTestCase):
    """wsservice.js against two real twistd nodes sharing a real Redis."""

    async def test_resume_on_other_node(self) -> None:
        """The page, through the proxy on node 1, loses its connection; the proxy now leads
        to node 2, where another page pushes and publishes meanwhile; the page resumes on
        node 2 with every message once, in order."""
        cluster = Cluster(self)
        node1, node2 = await cluster.start("n1", "n2")
        await self.scenario("cluster", node1.address, node2.address, logs=cluster.logs)
        cluster.no_tracebacks()

    async def test_through_make_cluster(self) -> None:
        """make cluster's own script (Redis, two nodes, HAProxy round robin): the demo page
        clicked through, and a network drop resumed, where HAProxy may hand the page's new
        connection to the other node."""
        from .test_cluster_script import ClusterScript
        cluster = await ClusterScript(self).start()
        self.addCleanup(cluster.stop)
        haproxy = f"127.0.0.1:{cluster.port}"

        def logs() -> str:
            return cluster.output()[-4000:]
        await self.scenario("network_drop", haproxy, logs=logs)
        await self.scenario("demo", haproxy, logs=logs)
