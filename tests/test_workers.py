"""``--workers N`` (wsservice/workers.py): a parent binding every listener, N worker processes
(cluster nodes) accepting on them; restarts, drains, no orphans.

End to end: real ``twistd`` processes on a real redis-server and real clients. Which worker
serves a connection is read from Redis, where each session's hash names its node: the
demo's answers do not say it, and a test that only counted connections could pass with
one worker serving them all. In process: the supervisor on a Clock, and the sockets a
worker adopts.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import FailTest, SynchronousTestCase, TestCase

from wsservice import tap, workers
from wsservice.workers import InheritedEndpoint, Supervisor, WorkerFailed, WorkerLink

from . import certs, live, processes
from .clusternodes import Cluster, pushed
from .ndjsonclient import NDJSONClient
from .wsclient import Client, connect

TWISTD = [sys.executable, processes.TWISTD]
LOOPBACK = "tcp:0:interface=127.0.0.1"
STARTED = re.compile(r"worker (\d+) started \(pid (\d+), node (\S+)\)")
SERVES = re.compile(r"worker (\d+) serves \(pid (\d+), node (\S+)\)")
NO_REDIS = "--workers 2: workers share sessions through Redis; give --redis URL too"


def parse(*args: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(args))
    return options


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie nobody reaped has ended too)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (Linux)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(p) for p in f.read().split() if not gone(int(p))}


# == usage ========================================================================================


class UsageTests(SynchronousTestCase):
    """--workers: its values, the need for --redis, the config file key."""

    def mistake(self, *args: str) -> str:
        with self.assertRaises(tap.OptionError) as caught:
            parse(*args)
        return str(caught.exception)

    def test_default_is_one_process(self) -> None:
        options = parse()
        self.assertEqual(options["workers"], 1)
        self.assertIsNone(options["adopt-fds"])
        self.assertEqual(parse("--workers", "1")["workers"], 1)
        self.assertEqual(parse("--workers", "3", "--redis", "redis://127.0.0.1:1/0")["workers"],
                         3)

    def test_more_than_one_needs_redis(self) -> None:
        self.assertEqual(self.mistake("--workers", "2"), NO_REDIS)

    def test_bounds(self) -> None:
        redis = ("--redis", "redis://127.0.0.1:1/0")
        example = f"e.g. --workers {os.cpu_count() or 2} (one per core of this machine)"
        for value in ("0", "-1", "257", "100000"):
            self.assertEqual(self.mistake("--workers", value, *redis),
                             f"--workers {value}: must be a whole number from 1 to 256; "
                             f"{example}")
        for value in ("two", "1.5", ""):
            self.assertEqual(self.mistake("--workers", value, *redis),
                             f"--workers {value}: not a whole number; {example}")
        self.assertEqual(parse("--workers", "256", *redis)["workers"], 256)

    def test_node_id_leaves_room_for_the_workers_names(self) -> None:
        redis = ("--redis", "redis://127.0.0.1:1/0")
        long = "n" * 49
        self.assertEqual(self.mistake("--workers", "2", "--node-id", long, *redis),
                         f"--node-id {long}: at most 48 characters with --workers (the "
                         f"workers are {long}-w1, {long}-w2, ...)")
        self.assertEqual(parse("--workers", "2", "--node-id", "n" * 48, *redis)["workers"], 2)
        # one process may have the longest id
        self.assertEqual(parse("--node-id", "n" * 64, *redis)["node-id"], "n" * 64)

    def test_config_file_key(self) -> None:
        folder = processes.scratch(self, "wsw")
        path = os.path.join(folder, "w.toml")
        with open(path, "w") as f:
            f.write('workers = 2\nredis = "redis://127.0.0.1:1/0"\n')
        self.assertEqual(parse("--config", path)["workers"], 2)
        # the command line wins, as for every option
        self.assertEqual(parse("--config", path, "--workers", "1")["workers"], 1)
        with open(path, "w") as f:
            f.write("workers = 2\n")
        self.assertEqual(self.mistake("--config", path),
                         f"workers in {path}: 2: workers share sessions through Redis; "
                         "give --redis URL too")
        with open(path, "w") as f:
            f.write('workers = "2"\n')
        self.assertEqual(self.mistake("--config", path),
                         f'workers in {path}: "2" is a string; it takes a number (no quotes)')
        with open(path, "w") as f:
            f.write('adopt-fds = "4"\n')
        self.assertIn("adopt-fds in", self.mistake("--config", path))
        self.assertIn("unknown option", self.mistake("--config", path))

    def test_adopt_fds_one_per_listener(self) -> None:
        options = parse("--listen", "tcp:0", "--listen-ndjson", "tcp:0", "--adopt-fds", "4,5")
        self.assertEqual(options["adopt-fds"], [4, 5])
        for value in ("4", "4,5,6", "4,x", "-1,4"):
            self.assertEqual(
                self.mistake("--listen", "tcp:0", "--listen-ndjson", "tcp:0",
                             "--adopt-fds", value),
                f"--adopt-fds {value}: internal (a --workers parent gives its workers their "
                "listening sockets): 2 descriptor numbers expected, comma-separated")
        # a worker does not check its endpoint strings: its parent did, and a systemd:
        # socket is not its to find
        options = parse("--listen", "systemd:domain=INET:index=0", "--adopt-fds", "4")
        self.assertEqual(options["adopt-fds"], [4])

    def test_help(self) -> None:
        text = tap.Options().getUsage()
        self.assertIn("--workers=", text)
        self.assertIn("--adopt-fds=", text)


# == the supervisor, on a Clock ===================================================================


class FakeProcess:
    """What the supervisor uses of a process transport."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.stdin_closed = False
        self.signals: list[str] = []

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class ProcessReactor(Clock):
    """A Clock that records spawnProcess calls."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, list[str], dict[int, Any], FakeProcess]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str],
                     env: dict[str, str], path: str | None, childFDs: dict[int, Any]
                     ) -> FakeProcess:
        process = FakeProcess(1000 + len(self.spawned))
        self.spawned.append((protocol, args, childFDs, process))
        return process


KILLED = Failure(ProcessTerminated(signal=signal.SIGKILL))


class SupervisorTests(SynchronousTestCase):
    """Starts, readiness, restarts with backoff, stop with a bound."""

    def make(self, count: int = 2, relog: bool = False) -> tuple[Supervisor, ProcessReactor]:
        clock = ProcessReactor()
        supervisor = Supervisor(count, "base", lambda node, fds: ["twistd", node,
                                                                 ",".join(map(str, fds))],
                                lambda: [17, 23], clock, env={"LISTEN_FDS": "2", "A": "b"},
                                cwd="/somewhere", drain_timeout=10, relog=relog)
        supervisor.startService()
        return supervisor, clock

    def ready(self, clock: ProcessReactor, index: int) -> None:
        clock.spawned[index][0].childDataReceived(workers.READY_FD, b"ready\n")

    def end(self, clock: ProcessReactor, index: int, reason: Failure = KILLED) -> None:
        clock.spawned[index][0].processEnded(reason)

    def test_start(self) -> None:
        """Each worker: its node id and command line, the sockets at 4 and 5 (the
        parent's 17 and 23), its pipes; systemd's variables are not passed on."""
        supervisor, clock = self.make()
        self.assertEqual([args for _, args, _, _ in clock.spawned],
                         [["twistd", "base-w1", "4,5"], ["twistd", "base-w2", "4,5"]])
        for _, _, fds, _ in clock.spawned:
            self.assertEqual(fds, {0: "w", 3: "r", 1: 1, 2: 2, 4: 17, 5: 23})
        self.assertEqual(supervisor._env, {"A": "b"})
        self.assertEqual([w.pid for w in supervisor.workers], [1000, 1001])

    def test_ready_once_every_worker_serves(self) -> None:
        supervisor, clock = self.make()
        self.ready(clock, 1)
        self.assertFalse(supervisor.whenReady.called)
        clock.spawned[0][0].childDataReceived(workers.READY_FD, b"rea")
        self.assertFalse(supervisor.whenReady.called)
        clock.spawned[0][0].childDataReceived(workers.READY_FD, b"dy\n")
        self.assertEqual(self.successResultOf(supervisor.whenReady), None)

    def test_a_worker_that_never_served_stops_the_start(self) -> None:
        supervisor, clock = self.make()
        self.ready(clock, 0)
        self.end(clock, 1, Failure(ProcessTerminated(exitCode=2)))
        failure = self.failureResultOf(supervisor.whenReady, WorkerFailed)
        self.assertEqual(str(failure.value), "worker 2 exited with status 2 before it served")
        clock.advance(60)
        self.assertEqual(len(clock.spawned), 2)  # not restarted

    def test_restart_backoff(self) -> None:
        """0.5 s, doubling up to 10 s while the slot's workers die young; a new node id
        each time; back to 0.5 s after one lived 30 s."""
        supervisor, clock = self.make()
        self.ready(clock, 0)
        self.ready(clock, 1)
        delays = []
        for attempt in range(7):
            self.end(clock, len(clock.spawned) - 1 if attempt else 0)
            before = len(clock.spawned)
            waited = 0.0
            while len(clock.spawned) == before:
                clock.advance(0.25)
                waited += 0.25
            delays.append(waited)
        self.assertEqual(delays, [0.5, 1, 2, 4, 8, 10, 10])
        self.assertEqual([args[1] for _, args, _, _ in clock.spawned[2:]],
                         [f"base-w1-{n}" for n in range(2, 9)])
        # this one lives 30 s: the next restart is quick again
        clock.advance(30)
        self.end(clock, len(clock.spawned) - 1)
        before = len(clock.spawned)
        clock.advance(0.5)
        self.assertEqual(len(clock.spawned), before + 1)
        # worker 2 was never touched
        self.assertEqual(supervisor.workers[1].node, "base-w2")

    def test_stop_closes_the_pipes_then_kills_the_late(self) -> None:
        supervisor, clock = self.make()
        self.ready(clock, 0)
        self.ready(clock, 1)
        self.end(clock, 0)  # a restart is pending: stopping cancels it
        stopped = supervisor.stopService()
        self.assertEqual([p.stdin_closed for _, _, _, p in clock.spawned], [False, True])
        self.end(clock, 1, Failure(ProcessDone(0)))
        self.assertEqual(self.successResultOf(stopped), None)
        clock.advance(60)
        self.assertEqual(len(clock.spawned), 2)

    def test_stop_kills_after_the_drain_timeout_and_margin(self) -> None:
        supervisor, clock = self.make()
        stopped = supervisor.stopService()
        self.assertTrue(all(p.stdin_closed for _, _, _, p in clock.spawned))
        self.end(clock, 0, Failure(ProcessDone(0)))
        clock.advance(10 + workers.STOP_MARGIN - 1)
        self.assertEqual(clock.spawned[1][3].signals, [])
        self.assertNoResult(stopped)
        clock.advance(1)
        self.assertEqual(clock.spawned[1][3].signals, ["KILL"])
        self.end(clock, 1)
        self.assertEqual(self.successResultOf(stopped), None)

    def test_relog(self) -> None:
        """A parent logging to a file gets its workers' lines through pipes and logs them
        marked [wI], at their level."""
        supervisor, clock = self.make(relog=True)
        self.assertEqual(clock.spawned[0][2][1], "r")
        self.assertEqual(clock.spawned[0][2][2], "r")
        events: list[dict[str, Any]] = []
        self.patch(workers._WorkerProcess, "_log", Logger(observer=events.append))
        protocol = clock.spawned[1][0]
        protocol.childDataReceived(1, b"2026 [a.b#info] one\n2026 [c#error] tw")
        protocol.childDataReceived(1, b"o\n")
        protocol.childDataReceived(2, b'{"level": "warn", "message": "three"}')
        protocol.childConnectionLost(2)
        from twisted.logger import formatEvent
        self.assertEqual([(e["log_level"].name, formatEvent(e)) for e in events],
                         [("info", "[w2] 2026 [a.b#info] one"),
                          ("error", "[w2] 2026 [c#error] two"),
                          ("warn", '[w2] {"level": "warn", "message": "three"}')])

    def test_node_names(self) -> None:
        self.assertEqual(workers.nodeName("web", 3), "web-w3")
        self.assertEqual(workers.nodeName("web", 3, 2), "web-w3-2")
        longest = workers.nodeName("n" * workers.MAX_NODE_BASE, workers.MAX_WORKERS, 10 ** 9)
        from wsservice.redisurl import node_name
        self.assertEqual(node_name(longest), longest)


# == a worker's side, in process ==================================================================


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class Received(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.got: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if not self.got.called:
            self.got.callback(self.data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class InheritedEndpointTests(TestCase):
    """The sockets a worker adopts: served as the endpoint string says, the unix file's
    mode and existence left to the parent."""

    timeout = 30

    async def roundtrip(self, endpoint: Any) -> None:
        client = await endpoint.connect(Factory.forProtocol(Received))
        client.transport.write(b"ping")
        self.assertEqual(await client.got.addTimeout(10, reactor), b"ping")
        client.transport.loseConnection()
        await client.lost.addTimeout(10, reactor)

    async def test_unix_keeps_mode_and_file(self) -> None:
        folder = processes.scratch(self, "wsw")
        path = os.path.join(folder, "s.sock")
        parent = socket.socket(socket.AF_UNIX)
        self.addCleanup(parent.close)
        parent.bind(path)
        os.chmod(path, 0o600)
        parent.listen(5)
        fd = os.dup(parent.fileno())
        port = await InheritedEndpoint(reactor, f"unix:{path}", fd).listen(
            Factory.forProtocol(Echo))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertRaises(OSError, os.fstat, fd)  # the port has its own copy
        await self.roundtrip(UNIXClientEndpoint(reactor, path))
        await port.stopListening()
        self.assertTrue(os.path.exists(path))  # the parent's to remove
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    async def test_tcp(self) -> None:
        parent = socket.socket()
        self.addCleanup(parent.close)
        parent.bind(("127.0.0.1", 0))
        parent.listen(5)
        number = parent.getsockname()[1]
        port = await InheritedEndpoint(reactor, f"tcp:{number}:interface=127.0.0.1",
                                       os.dup(parent.fileno())).listen(Factory.forProtocol(Echo))
        self.assertEqual(port.getHost().port, number)
        await self.roundtrip(TCP4ClientEndpoint(reactor, "127.0.0.1", number))
        await port.stopListening()

    async def test_ssl(self) -> None:
        """An ssl: string's certificate and key wrap the adopted socket in TLS."""
        from twisted.internet import ssl
        key, cert, _ = certs.self_signed(self)
        parent = socket.socket()
        self.addCleanup(parent.close)
        parent.bind(("127.0.0.1", 0))
        parent.listen(5)
        number = parent.getsockname()[1]
        port = await InheritedEndpoint(
            reactor, f"ssl:{number}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            os.dup(parent.fileno())).listen(Factory.forProtocol(Echo))
        await self.roundtrip(SSL4ClientEndpoint(reactor, "127.0.0.1", number,
                                                ssl.CertificateOptions(verify=False)))
        await port.stopListening()


class LinkReactor:
    """The real reactor's readers; stop and the system events only recorded."""

    def __init__(self) -> None:
        self.stops = 0
        self.triggers: list[Any] = []

    def addReader(self, reader: Any) -> None:
        reactor.addReader(reader)

    def removeReader(self, reader: Any) -> None:
        reactor.removeReader(reader)

    def stop(self) -> None:
        self.stops += 1

    def addSystemEventTrigger(self, *args: Any) -> None:
        self.triggers.append(args)

    def callWhenRunning(self, f: Any) -> None:
        pass  # trial's own signal handlers stay as they are


class WorkerLinkTests(TestCase):
    """A worker stops when its parent's pipe closes, once; says ready when serving."""

    timeout = 30

    async def test_ready_then_stop_on_the_pipes_end(self) -> None:
        control_r, control_w = os.pipe()
        ready_r, ready_w = os.pipe()
        self.addCleanup(os.close, ready_r)
        fake = LinkReactor()
        link = WorkerLink(lambda: succeed(None), fake, control_fd=control_r, ready_fd=ready_w)
        link.startService()
        self.addCleanup(lambda: link.running and link.stopService())
        self.assertEqual(os.read(ready_r, 100), b"ready\n")
        self.assertEqual(os.read(ready_r, 100), b"")  # and closed
        self.assertEqual(fake.stops, 0)
        os.close(control_w)
        await live.until(lambda: fake.stops, "the worker to stop")
        self.assertEqual(fake.stops, 1)
        # a signal after that (to the whole process group) is not a second stop
        asked = []
        link._once(lambda number, frame: asked.append(number))(signal.SIGTERM, None)
        self.assertEqual(asked, [])
        link.stopService()
        os.close(control_r)

    def test_a_signal_first_then_the_pipe(self) -> None:
        control_r, control_w = os.pipe()
        self.addCleanup(os.close, control_w)
        fake = LinkReactor()
        link = WorkerLink(lambda: Deferred(), fake, control_fd=control_r, ready_fd=-1)
        link.startService()
        asked: list[int] = []
        handler = link._once(lambda number, frame: asked.append(number))
        handler(signal.SIGINT, None)
        handler(signal.SIGTERM, None)
        self.assertEqual(asked, [signal.SIGINT])
        link._parentGone()
        self.assertEqual(fake.stops, 0)
        link.stopService()
        os.close(control_r)


# == twistd --workers, end to end =================================================================


class WorkersCluster(Cluster):
    """Cluster's Redis, clients and bounded waits, around one ``--workers`` parent."""

    parent: processes.Child | None = None

    def logs(self) -> str:
        text = self.parent.text if self.parent is not None else ""
        return f"----- the --workers parent's log (with its workers'), tail:\n{text[-8000:]}"


class WorkersTests(TestCase):
    timeout = 120

    async def start(self, count: int = 2, *args: str, ndjson: bool = False) -> WorkersCluster:
        """A --workers parent on loopback TCP and a unix socket (and an NDJSON unix
        socket), once its summary says every worker serves."""
        c = self.c = WorkersCluster(self)
        self.sock = os.path.join(c.cwd, "ws.sock")
        self.ndjson = os.path.join(c.cwd, "nd.sock")
        argv = TWISTD + ["-n", "--pidfile=", "wsservice", "--workers", str(count),
                         "--redis", c.redis.url, "--listen", LOOPBACK, "--listen",
                         f"unix:{self.sock}", *args]
        if ndjson:
            argv += ["--listen-ndjson", f"unix:{self.ndjson}"]
        # runs after the parent's own stop (cleanups run last-added first)
        self.addCleanup(self.kill_leftovers)
        c.parent = await processes.start(self, argv, c.cwd)
        await c.until(lambda: f"workers: {count} processes" in c.parent.text,  # type: ignore
                      "the parent's summary", timeout=60)
        self.address = f"127.0.0.1:{c.parent.port()}"
        return c

    @property
    def text(self) -> str:
        """What the parent and its workers printed so far."""
        return "" if self.c.parent is None else self.c.parent.text

    def workers(self) -> dict[int, tuple[int, str]]:
        """Worker number -> (pid, node) of its latest process, from the parent's log."""
        return {int(i): (int(pid), node) for i, pid, node in STARTED.findall(self.text)}

    def kill_leftovers(self) -> None:
        """Should a test fail midway, no worker it started outlives it."""
        for pid, _ in self.workers().values():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    ours = b"--adopt-fds" in f.read()
                if ours and not gone(pid):
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    async def node_of(self, welcome: dict[str, Any]) -> str:
        """The node holding the session, as Redis says."""
        key = f"wss:s:{welcome['session']}"
        return await self.c.until(lambda: self.c.redis.cli("HGET", key, "node").strip(),
                                  f"{key} in Redis")

    async def session(self, address: str) -> tuple[Client, dict[str, Any], str]:
        """A client of ``address`` that said hello: (client, welcome, its node)."""
        try:
            client = self.c.clients.add(await connect(address))
        except Exception as e:
            raise FailTest(f"cannot connect to {address}: {e!r}\n{self.c.logs()}")
        welcome = await self.c.hello(client)
        return client, welcome, await self.node_of(welcome)

    async def one_on_each(self, address: str, nodes: set[str], tries: int = 200
                          ) -> dict[str, tuple[Client, dict[str, Any]]]:
        """Connect to ``address`` until a session is on each of ``nodes``: node ->
        (client, welcome). The kernel gives each connection to whichever worker accepts
        first; the extra clients are dropped."""
        found: dict[str, tuple[Client, dict[str, Any]]] = {}
        for _ in range(tries):
            client, welcome, node = await self.session(address)
            self.assertIn(node, nodes, self.c.logs())
            if node in found:
                client.dropConnection(abort=True)
                continue
            found[node] = (client, welcome)
            if set(found) == nodes:
                return found
        raise FailTest(f"{tries} connections to {address} all went to {sorted(found)}, "
                       f"none to {sorted(nodes - set(found))}\n{self.c.logs()}")

    async def test_without_redis_one_line_status_2(self) -> None:
        out, err, code = await processes.run(
            TWISTD + ["-n", "--pidfile=", "wsservice", "--workers", "2"],
            processes.scratch(self, "wsw"))
        self.assertEqual((code, err), (2, f"wsservice: {NO_REDIS}\n"), out)

    async def test_two_workers_share_tcp_and_unix(self) -> None:
        """Every worker is a node of its own, and connections on the one TCP port, the
        one unix socket (mode 0600) and the NDJSON socket reach both."""
        c = await self.start(2, ndjson=True)
        assert c.parent is not None
        started = self.workers()
        self.assertEqual(sorted(started), [1, 2])
        nodes = {node for _, node in started.values()}
        base = started[1][1][:-len("-w1")]
        self.assertEqual(nodes, {f"{base}-w1", f"{base}-w2"})
        self.assertEqual(children(c.parent.transport.pid), {pid for pid, _ in started.values()})
        self.assertEqual(os.stat(self.sock).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(self.ndjson).st_mode & 0o777, 0o600)
        # the parent's summary: the workers and where they listen
        self.assertRegex(self.text, rf"started \(pid {c.parent.transport.pid}\): 2 workers\n")
        self.assertIn(f"workers: 2 processes, cluster nodes {base}-w1, {base}-w2 on Redis "
                      f"{c.redis.url}", self.text)
        self.assertIn(f"ws+unix:{self.sock}:/ws", self.text)

        for address in (self.address, f"unix:{self.sock}"):
            found = await self.one_on_each(address, nodes)
            for client, _ in found.values():
                self.assertEqual(await c.call(client, "echo", {"via": address}, 1),
                                 {"via": address})
        # NDJSON: both workers serve it too
        seen = set()
        for _ in range(200):
            stream = await UNIXClientEndpoint(reactor, self.ndjson).connect(
                Factory.forProtocol(NDJSONClient))
            self.c.clients.add(stream)  # type: ignore[arg-type]
            welcome = await stream.hello()
            seen.add(await self.node_of(welcome))
            stream.dropConnection(abort=True)
            if seen == nodes:
                break
        self.assertEqual(seen, nodes, self.c.logs())
        c.no_tracebacks()
        self.assertNotIn("Traceback", self.text)

    async def test_killed_worker_is_replaced_and_its_clients_resume(self) -> None:
        """kill -9 of a worker: the parent logs it and starts another (a new pid, a new
        node id); the dead worker's clients resume on the workers left, replayed exactly."""
        c = await self.start(2)
        assert c.parent is not None
        started = self.workers()
        nodes = {node for _, node in started.values()}
        on_tcp = await self.one_on_each(self.address, nodes)
        on_unix = await self.one_on_each(f"unix:{self.sock}", nodes)
        victim_index = 1
        victim_pid, victim_node = started[victim_index]
        other_node = next(n for n in nodes if n != victim_node)
        publisher, _ = on_tcp[other_node]
        victims = [on_tcp[victim_node], on_unix[victim_node]]
        for client, _ in victims:
            await c.subscribe(client, "news")
        publisher.send({"type": "publish", "topic": "news", "data": "before", "id": "p0"})
        self.assertEqual(await c.next(publisher, "the publish's answer"),
                         {"type": "result", "id": "p0", "result": None})
        for client, _ in victims:
            got = await c.receive(client, 1, "the publication before the kill")
            self.assertEqual(pushed(got), [(1, "message:news", "before")])

        os.kill(victim_pid, signal.SIGKILL)
        for client, _ in victims:
            code, _reason = await c.closed(client, "a client of the killed worker")
            self.assertEqual(code, 1006)
        # meanwhile, published to their sessions (kept in Redis, numbered 2..4)
        for i in range(3):
            publisher.send({"type": "publish", "topic": "news", "data": f"away-{i}",
                            "id": f"p{i + 1}"})
            self.assertEqual(await c.next(publisher, "the publish's answer"),
                             {"type": "result", "id": f"p{i + 1}", "result": None})
        await c.until(lambda: f"worker {victim_index} (pid {victim_pid}, node {victim_node}) "
                      "killed by signal 9 (SIGKILL) after" in self.text,
                      "the parent to log the death")
        new_pid, new_node = await c.until(
            lambda: next(((int(p), n) for i, p, n in SERVES.findall(self.text)
                          if int(i) == victim_index and int(p) != victim_pid), None),
            "the replacement to serve", timeout=60)
        self.assertEqual(new_node, f"{victim_node}-2")
        self.assertEqual(self.workers()[victim_index], (new_pid, new_node))
        self.assertEqual(children(c.parent.transport.pid),
                         {new_pid, started[3 - victim_index][0]})
        self.assertTrue(gone(victim_pid))

        for (client, welcome), address in zip(victims, (self.address, f"unix:{self.sock}")):
            again, resumed, node = await self.session_resuming(address, welcome, 1)
            self.assertNotEqual(node, victim_node)
            self.assertEqual((resumed["resumed"], resumed["session"]),
                             (True, welcome["session"]), resumed)
            got = await c.receive(again, 3, "the replay")
            self.assertEqual(pushed(got), [(2 + i, "message:news", f"away-{i}")
                                           for i in range(3)])
            await c.caught_up(again, "the replay")
        # the socket file is the parent's: the dead worker neither removed nor opened it up
        self.assertEqual(os.stat(self.sock).st_mode & 0o777, 0o600)
        self.assertNotIn("Traceback", self.text)

    async def session_resuming(self, address: str, welcome: dict[str, Any], last_seq: int
                               ) -> tuple[Client, dict[str, Any], str]:
        client = self.c.clients.add(await connect(address))
        resumed = await self.c.hello(client, resume={"session": welcome["session"],
                                                     "token": welcome["token"],
                                                     "last_seq": last_seq})
        return client, resumed, await self.node_of(resumed)

    async def test_sigterm_drains_every_worker(self) -> None:
        """SIGTERM of the parent: every worker drains (its clients are closed 1001), every
        process exits cleanly, and the socket files go."""
        c = await self.start(2)
        assert c.parent is not None
        started = self.workers()
        nodes = {node for _, node in started.values()}
        clients = list((await self.one_on_each(self.address, nodes)).values())
        clients += list((await self.one_on_each(f"unix:{self.sock}", nodes)).values())
        text = await processes.stop_cleanly(self, c.parent)
        for client, _ in clients:
            code, reason = await c.closed(client, "a client while its worker drains")
            self.assertEqual(code, 1001, reason)
        self.assertEqual(text.count("drained; "), 2, text)
        for index, (pid, node) in started.items():
            self.assertIn(f"worker {index} (pid {pid}, node {node}) stopped: exited with "
                          "status 0", text)
            self.assertTrue(gone(pid))
        self.assertFalse(os.path.exists(self.sock))
        self.assertFalse(os.path.lexists(self.sock + ".lock"))

    async def test_parent_killed_leaves_no_orphans(self) -> None:
        """kill -9 of the parent: its workers see their pipe close and exit; the stale
        socket file left behind does not stop the next start."""
        c = await self.start(2)
        assert c.parent is not None
        pids = [pid for pid, _ in self.workers().values()]
        c.parent.transport.signalProcess("KILL")
        await c.parent.ended
        await c.until(lambda: all(gone(pid) for pid in pids), "every worker to exit",
                      timeout=60)
        self.assertIn("closed this worker's pipe", self.text)
        self.assertTrue(os.path.exists(self.sock))  # nobody removed it
        argv = TWISTD + ["-n", "--pidfile=", "wsservice", "--workers", "2", "--redis",
                         c.redis.url, "--listen", f"unix:{self.sock}"]
        again = await processes.start(self, argv, c.cwd)
        await c.until(lambda: "workers: 2 processes" in again.text, "the second start",
                      timeout=60)
        client, welcome, _ = await self.session(f"unix:{self.sock}")
        self.assertEqual(welcome["type"], "welcome")
        await processes.stop_cleanly(self, again)

    async def test_systemd_socket_reaches_the_workers(self) -> None:
        """A socket handed over as systemd does (descriptor 3, LISTEN_FDS, LISTEN_PID) is
        the parent's, which passes it on: both workers serve on it."""
        c = self.c = WorkersCluster(self)
        held = socket.socket()  # what systemd's ListenStream= would hold
        self.addCleanup(held.close)
        held.bind(("127.0.0.1", 0))
        held.listen()
        number = held.getsockname()[1]
        env = {k: v for k, v in processes.ENV.items() if not k.startswith("LISTEN_")}
        env["LISTEN_FDS"] = "1"
        env["LISTEN_FDNAMES"] = "wsservice.socket"  # systemd's default: the unit's name
        argv = TWISTD + ["-n", "--pidfile=", "wsservice", "--workers", "2", "--redis",
                         c.redis.url, "--listen", "systemd:domain=INET:index=0"]
        # systemd sets LISTEN_PID to the service's own pid: exec keeps the shell's pid
        wrapped = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", *argv]
        self.addCleanup(self.kill_leftovers)
        c.parent = await processes.start(self, wrapped, c.cwd, env=env,
                                         child_fds={0: "w", 1: "r", 2: "r", 3: held.fileno()})
        await c.until(lambda: "workers: 2 processes" in self.text, "the parent's summary",
                      timeout=60)
        held.close()  # the parent and its workers hold their own copies
        nodes = {node for _, node in self.workers().values()}
        self.assertIn(f"listening on systemd:domain=INET:index=0: ws://127.0.0.1:{number}/ws",
                      self.text)
        await self.one_on_each(f"127.0.0.1:{number}", nodes)
        await processes.stop_cleanly(self, c.parent)

    async def test_a_worker_that_cannot_start_stops_the_parent(self) -> None:
        """A worker that ends before it ever served is not restarted in a loop: the parent
        stops the others and exits with status 1."""
        cwd = processes.scratch(self, "wsw")
        with open(os.path.join(cwd, "onlyparent.py"), "w") as f:
            f.write("import sys\n"
                    "if '--adopt-fds' in sys.argv:\n"
                    "    raise RuntimeError('not in a worker')\n"
                    "from wsservice.demo import DemoApp as App\n")
        from .redisserver import RedisServer
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        out, err, code = await processes.run(
            TWISTD + ["-n", "--pidfile=", "wsservice", "--workers", "2", "--redis", redis.url,
                      "--listen", LOOPBACK, "--handler", "onlyparent:App"], cwd)
        self.assertEqual(code, 1, out + err)
        self.assertIn("exited with status 2 before it served; stopping", out)
        self.assertIn("not in a worker", err)
        self.assertEqual(len(STARTED.findall(out)), 2, out)  # no restart
