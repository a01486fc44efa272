#!/usr/bin/env python
"""A wsservice cluster on this machine: one Redis, N nodes, HAProxy in front (make cluster).

    .venv/bin/python scripts/cluster.py [--nodes 2] [--port 8080] [--node-port 8081]
        [--redis-port 6380] [--dir .cluster] [--fresh] [-- TWISTD-WSSERVICE-OPTIONS...]

Everything listens on 127.0.0.1 only:

- redis-server on --redis-port (6380 by default, not 6379: a system Redis may hold that),
  its data in DIR/redis/ with the append-only file on (kept across runs; --fresh empties it);
- nodes node1..nodeN: ``twistd -n --pidfile= wsservice --redis redis://127.0.0.1:PORT/0
  --node-id nodeI --listen tcp:PORTI:interface=127.0.0.1`` on --node-port, --node-port + 1,
  ... (or the ports --node-ports lists), with whatever follows ``--`` appended;
- HAProxy on --port: round robin, no stickiness, WebSocket-friendly timeouts, health check
  GET /healthz; its configuration is generated into DIR/haproxy.cfg.

Each step and the URLs are printed; the children's output follows, each line prefixed with
its name. SIGINT (Ctrl-C) or SIGTERM stops it all: the nodes drain (SIGTERM: clients get
1001 and resume elsewhere), then HAProxy stops, then Redis; no process stays behind. A node
that dies meanwhile (try ``kill -9`` on the pid printed) is reported and the rest go on.
The children run in their own sessions, so a terminal's Ctrl-C reaches this script only and
the order holds; should this script itself be killed, they get SIGTERM from the kernel.

The classes here (Child, Cluster) are also what bench/soak_cluster.py runs its cluster with.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import sys
import time
from typing import Any, Callable

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.error import ProcessExitedAlready
from twisted.python.failure import Failure
from twisted.web.client import Agent, readBody

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
READY_TIMEOUT = 30.0      # seconds a child has to become ready
DRAIN_WAIT = 25.0         # a node's --drain-timeout is 10 s by default; then SIGKILL
STOP_WAIT = 15.0          # HAProxy's and Redis's bound, then SIGKILL
SHUT_DOWN = "Server Shut Down."  # twistd's last line after a clean stop
# A child's first steps, in its own process: its own session (a terminal's Ctrl-C reaches
# this script only, which then stops the children in order), and SIGTERM should this script
# die without stopping it (Linux's parent-death signal).
LAUNCH = (
    "import os, signal, sys\n"
    "os.setsid()\n"
    "try:\n"
    "    import ctypes\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "except Exception:\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('parent gone before start')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n")
COLORS = ["36", "33", "35", "32", "34", "91", "92", "93", "94", "95", "96"]


def find_program(name: str) -> str | None:
    """``name`` on PATH, or in /usr/sbin and /usr/bin (Debian puts haproxy in /usr/sbin,
    which a user's PATH may lack)."""
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/bin", "/sbin"):
        path = os.path.join(d, name)
        if os.access(path, os.X_OK):
            return path
    return None


def twistd_path() -> str:
    """The twistd of this checkout's .venv, else the one next to this interpreter."""
    candidate = os.path.join(ROOT, ".venv", "bin", "twistd")
    if os.path.exists(candidate):
        return candidate
    return os.path.join(os.path.dirname(sys.executable), "twistd")


def port_busy(port: int) -> bool:
    """Whether something listens on (or holds) 127.0.0.1:port now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


async def http_get(port: int, path: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """GET http://127.0.0.1:port/path: (status, body)."""
    d = Agent(reactor, connectTimeout=timeout).request(
        b"GET", f"http://{HOST}:{port}{path}".encode())
    response = await d.addTimeout(timeout, reactor)
    body = await readBody(response).addTimeout(timeout, reactor)
    return response.code, body


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


class Child(protocol.ProcessProtocol):
    """One child process. Its output goes line by line to ``sink(child, line)`` and to each
    of ``watchers``; ``ended`` fires with the exit status (a ProcessDone/ProcessTerminated
    value) once it is gone."""

    def __init__(self, name: str, argv: list[str], cwd: str,
                 sink: Callable[["Child", str], None],
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.cwd = cwd
        self.sink = sink
        self.env = dict(os.environ) if env is None else env
        self.watchers: list[Callable[[str], None]] = []
        self.ended: defer.Deferred = defer.Deferred()
        self.exit: Any = None
        self.pid: int | None = None
        self.lines: list[str] = []   # the last ones, for a failure's explanation
        self.shut_down = False       # twistd said "Server Shut Down."
        self.expected_end = False    # we stopped it (any exit is then no surprise)
        self._partial = b""
        self._waiters: list[defer.Deferred] = []
        self.transport: Any = None

    def start(self) -> "Child":
        launcher = [sys.executable, "-I", "-S", "-c", LAUNCH, str(os.getpid())]
        reactor.spawnProcess(self, launcher[0], launcher + self.argv, env=self.env,
                             path=self.cwd)
        self.pid = self.transport.pid
        return self

    def _data(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            self._line(raw.decode("utf-8", "replace").rstrip("\r"))

    outReceived = errReceived = _data

    def _line(self, line: str) -> None:
        self.lines.append(line)
        del self.lines[:-40]
        if SHUT_DOWN in line:
            self.shut_down = True
        for watch in self.watchers:
            watch(line)
        self.sink(self, line)

    def processEnded(self, reason: Failure) -> None:
        if self._partial:
            self._line(self._partial.decode("utf-8", "replace"))
            self._partial = b""
        self.exit = reason.value
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(reason.value)
        self.ended.callback(reason.value)

    def wait_end(self, timeout: float | None = None) -> defer.Deferred:
        """A Deferred firing with the exit status once it is gone (TimeoutError after
        ``timeout`` seconds)."""
        d: defer.Deferred = defer.Deferred()
        if self.exit is not None:
            d.callback(self.exit)
        else:
            self._waiters.append(d)
            if timeout is not None:
                d.addTimeout(timeout, reactor)
        return d

    @property
    def running(self) -> bool:
        return self.exit is None

    def signal(self, name: str) -> None:
        if self.exit is None:
            try:
                self.transport.signalProcess(name)
            except ProcessExitedAlready:
                pass

    def status(self) -> str:
        """How it ended, in words."""
        code = getattr(self.exit, "exitCode", None)
        sig = getattr(self.exit, "signal", None)
        if sig is not None:
            return f"killed by {signal.Signals(sig).name}"
        return f"exit status {code}"

    def clean_stop(self) -> bool:
        """Whether it ended by itself or by the SIGTERM it was sent (twistd re-raises it
        after a clean shutdown, Redis and HAProxy exit 0)."""
        code = getattr(self.exit, "exitCode", None)
        sig = getattr(self.exit, "signal", None)
        return code == 0 or (sig == signal.SIGTERM and self.shut_down)

    async def stop(self, sig: str, wait: float, say: Callable[[str], None]) -> bool:
        """Send ``sig``, wait at most ``wait`` seconds, then SIGKILL. True when it stopped
        cleanly in time."""
        self.expected_end = True
        if self.exit is None:
            self.signal(sig)
            try:
                await self.wait_end(wait)
            except defer.TimeoutError:
                pass
            if self.exit is None:
                say(f"{self.name} (pid {self.pid}) still running {wait:g} s after SIG{sig}: "
                    "killing it (SIGKILL)")
                self.signal("KILL")
                await self.wait_end()
                return False
        return self.clean_stop()


class Cluster:
    """Redis, nodes and (optionally) HAProxy as children of this process."""

    def __init__(self, directory: str, redis_port: int, node_ports: list[int],
                 proxy_port: int | None, node_args: list[str] | None = None,
                 twistd: str | None = None, say: Callable[[str], None] | None = None,
                 sink: Callable[[Child, str], None] | None = None,
                 appendfsync: str = "everysec") -> None:
        self.dir = os.path.abspath(directory)
        self.redis_port = redis_port
        self.node_ports = node_ports
        self.proxy_port = proxy_port
        self.node_args = list(node_args or [])
        self.twistd = twistd or twistd_path()
        self.say = say or (lambda text: print("==> " + text, flush=True))
        self.sink = sink or self.print_line
        self.appendfsync = appendfsync
        self.redis: Child | None = None
        self.proxy: Child | None = None
        self.nodes: list[Child | None] = [None] * len(node_ports)
        self.starts = [0] * len(node_ports)   # how many times each node was started
        self.width = max(len("haproxy"), *(len(self.node_name(i)) for i in
                                           range(len(node_ports))))
        self.color = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None
        self.died: Callable[[Child], None] = lambda child: None  # an unexpected exit
        self.closing = False  # stop() began: nothing more is started

    # -- naming and output -----------------------------------------------------------------

    @staticmethod
    def node_name(i: int) -> str:
        return f"node{i + 1}"

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.redis_port}/0"

    def print_line(self, child: Child, line: str) -> None:
        tag = f"{child.name:<{self.width}} |"
        if self.color:
            names = ["redis", "haproxy"] + [self.node_name(i) for i in range(len(self.nodes))]
            color = COLORS[names.index(child.name) % len(COLORS)] \
                if child.name in names else "0"
            tag = f"\x1b[{color}m{tag}\x1b[0m"
        print(f"{tag} {line}", flush=True)

    def _spawn(self, name: str, argv: list[str]) -> Child:
        if self.closing:
            raise RuntimeError(f"not starting {name}: the cluster is stopping")
        child = Child(name, argv, self.dir, self.sink).start()
        child.ended.addCallback(self._ended, child)
        return child

    def _ended(self, value: Any, child: Child) -> Any:
        if not child.expected_end:
            self.say(f"{child.name} (pid {child.pid}) ended unexpectedly: {child.status()}")
            self.died(child)
        return value

    def busy_ports(self) -> list[str]:
        """What would not listen: 'PORT (what)' for every port that is taken now."""
        wanted = [(self.redis_port, "Redis, --redis-port")]
        wanted += [(p, f"{self.node_name(i)}, --node-port") for i, p in
                   enumerate(self.node_ports)]
        if self.proxy_port is not None:
            wanted.append((self.proxy_port, "HAProxy, --port"))
        return [f"{p} ({what})" for p, what in wanted if port_busy(p)]

    # -- Redis ---------------------------------------------------------------------------------

    def redis_argv(self) -> list[str]:
        program = find_program("redis-server")
        if program is None:
            raise RuntimeError("redis-server is not installed: run make system-deps-cluster "
                               "(or apt-get install redis-server)")
        data = os.path.join(self.dir, "redis")
        os.makedirs(data, exist_ok=True)
        return [program, "--port", str(self.redis_port), "--bind", HOST,
                "--protected-mode", "yes", "--dir", data, "--appendonly", "yes",
                "--appendfsync", self.appendfsync, "--save", "", "--daemonize", "no",
                "--logfile", "", "--loglevel", "notice"]

    async def start_redis(self) -> Child:
        argv = self.redis_argv()
        self.say(f"starting Redis: {' '.join(argv)}")
        self.redis = self._spawn("redis", argv)
        await self._until(self.redis, self._redis_ping, "answer PING")
        self.say(f"Redis ready (pid {self.redis.pid}): {self.redis_url}")
        return self.redis

    async def _redis_ping(self) -> bool:
        def ping() -> bool:
            try:
                with socket.create_connection((HOST, self.redis_port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False
        return ping()

    # -- nodes ---------------------------------------------------------------------------------

    def node_argv(self, i: int) -> list[str]:
        return [self.twistd, "-n", "--pidfile=", "wsservice", "--redis", self.redis_url,
                "--node-id", self.node_name(i),
                "--listen", f"tcp:{self.node_ports[i]}:interface={HOST}",
                *self.node_args]

    def spawn_node(self, i: int, sink: Callable[[Child, str], None] | None = None) -> Child:
        """Start node ``i`` (again); it is ready once ``wait_node`` returns."""
        if self.closing:
            raise RuntimeError(f"not starting {self.node_name(i)}: the cluster is stopping")
        argv = self.node_argv(i)
        self.say(f"starting {self.node_name(i)}: {' '.join(argv)}")
        child = Child(self.node_name(i), argv, self.dir, sink or self.sink).start()
        child.ended.addCallback(self._ended, child)
        self.nodes[i] = child
        self.starts[i] += 1
        return child

    async def wait_node(self, i: int) -> Child:
        """Until node ``i`` answers /healthz with 200 (it is in step with Redis)."""
        child = self.nodes[i]
        assert child is not None
        port = self.node_ports[i]

        async def healthy() -> bool:
            try:
                code, _ = await http_get(port, "/healthz", 1.0)
            except Exception:
                return False
            return code == 200
        await self._until(child, healthy, f"answer /healthz on port {port} with 200")
        self.say(f"{child.name} ready (pid {child.pid}): ws://{HOST}:{port}/ws, page "
                 f"http://{HOST}:{port}/, /healthz, /metrics")
        return child

    async def start_node(self, i: int) -> Child:
        self.spawn_node(i)
        return await self.wait_node(i)

    async def kill_node(self, i: int) -> None:
        """kill -9 node ``i`` and wait until it is gone."""
        child = self.nodes[i]
        if child is None or not child.running:
            return
        child.expected_end = True
        child.signal("KILL")
        await child.wait_end()

    # -- HAProxy -------------------------------------------------------------------------------

    def haproxy_config(self) -> str:
        servers = "\n".join(f"    server {self.node_name(i)} {HOST}:{p} check"
                            for i, p in enumerate(self.node_ports))
        # two descriptors per proxied connection: stay within this process's limit
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        maxconn = max(256, min(20000, (soft - 200) // 2)) if soft > 0 else 20000
        return f"""\
# Generated by scripts/cluster.py at each start: edits are overwritten.
global
    log stdout format raw local0 info
    maxconn {maxconn}
    hard-stop-after 5s

defaults
    mode http
    log global
    option httplog
    option dontlognull
    # the nodes learn the client's address (they trust {HOST}: --trusted-proxy)
    option forwardfor
    timeout connect 5s
    # an HTTP request must be complete within 10 s (the nodes' hello timeout, too)
    timeout http-request 10s
    timeout client 60s
    timeout server 60s
    # past the WebSocket upgrade this one counts: the nodes ping every 25 s
    timeout tunnel 1h
    timeout client-fin 5s
    timeout server-fin 5s

frontend wsservice
    bind {HOST}:{self.proxy_port}
    default_backend nodes

# round robin over every node, no stickiness: a client resumes on whichever node it lands on
backend nodes
    balance roundrobin
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host {HOST}
    http-check expect status 200
    default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 2
{servers}
"""

    async def start_proxy(self) -> Child:
        program = find_program("haproxy")
        if program is None:
            raise RuntimeError("haproxy is not installed: run make system-deps-cluster "
                               "(or apt-get install haproxy)")
        path = os.path.join(self.dir, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(self.haproxy_config())
        self.say(f"wrote {path}; checking it: {program} -c -f {path}")
        check = Child("haproxy", [program, "-c", "-q", "-f", path], self.dir, self.sink)
        check.expected_end = True
        check.start()
        await check.wait_end()
        if not check.clean_stop():
            raise RuntimeError(f"haproxy -c refused {path} ({check.status()})")
        argv = [program, "-db", "-f", path]
        self.say(f"starting HAProxy: {' '.join(argv)}")
        self.proxy = self._spawn("haproxy", argv)
        port = self.proxy_port
        assert port is not None

        async def serving() -> bool:
            try:
                code, _ = await http_get(port, "/healthz", 1.0)
            except Exception:
                return False
            return code == 200
        await self._until(self.proxy, serving, f"pass /healthz on port {port} to a node")
        self.say(f"HAProxy ready (pid {self.proxy.pid}): http://{HOST}:{port}/")
        return self.proxy

    # -- the whole ------------------------------------------------------------------------------

    async def _until(self, child: Child, ready: Callable[[], Any], what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.closing:
                raise RuntimeError(f"the cluster is stopping: no more waiting for "
                                   f"{child.name}")
            if not child.running:
                tail = "\n".join("    " + line for line in child.lines[-15:])
                raise RuntimeError(f"{child.name} ended ({child.status()}) before it would "
                                   f"{what}; its last lines:\n{tail}")
            if await ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not {what} within {READY_TIMEOUT:g} s")
            await sleep(0.1)

    async def start(self) -> None:
        """Redis, then every node (in parallel), then HAProxy if it has a port."""
        await self.start_redis()
        for i in range(len(self.node_ports)):
            self.spawn_node(i)
        for i in range(len(self.node_ports)):
            await self.wait_node(i)
        if self.proxy_port is not None:
            await self.start_proxy()

    async def stop(self) -> bool:
        """Nodes drained (SIGTERM), then HAProxy, then Redis; True when all stopped
        cleanly."""
        self.closing = True
        clean = True
        nodes = [n for n in self.nodes if n is not None and n.running]
        if nodes:
            self.say("draining the nodes (SIGTERM: clients get 1001 and resume elsewhere): "
                     + ", ".join(f"{n.name} pid {n.pid}" for n in nodes))
            results = await defer.gatherResults([
                defer.Deferred.fromCoroutine(n.stop("TERM", DRAIN_WAIT, self.say))
                for n in nodes])
            for n, ok in zip(nodes, results):
                if not ok:
                    self.say(f"{n.name} did not stop cleanly: {n.status()}")
                    clean = False
        for child, what in ((self.proxy, "HAProxy"), (self.redis, "Redis")):
            if child is not None and child.running:
                self.say(f"stopping {what} (SIGTERM, pid {child.pid})")
                if not await child.stop("TERM", STOP_WAIT, self.say):
                    self.say(f"{what} did not stop cleanly: {child.status()}")
                    clean = False
        self.say("stopped: " + ", ".join(
            f"{c.name} {c.status()}" for c in self.children()))
        return clean

    def children(self) -> list[Child]:
        return [c for c in (self.redis, *self.nodes, self.proxy) if c is not None]

    def kill_all(self) -> None:
        for child in self.children():
            child.expected_end = True
            child.signal("KILL")


# -- make cluster ---------------------------------------------------------------------------------

def parse(argv: list[str]) -> argparse.Namespace:
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Options after -- go to every node's twistd wsservice, e.g. "
               "-- --resume-ttl 120")
    p.add_argument("--nodes", type=int, default=2, help="how many nodes (default 2)")
    p.add_argument("--port", type=int, default=8080,
                   help="HAProxy's port: the demo page and /ws (default 8080)")
    p.add_argument("--node-port", type=int, default=8081,
                   help="the first node's port; the next ones follow (default 8081)")
    p.add_argument("--node-ports", default=None,
                   help="every node's port, comma-separated (instead of --node-port)")
    p.add_argument("--redis-port", type=int, default=6380,
                   help="Redis's port (default 6380, beside a system Redis's 6379)")
    p.add_argument("--dir", default=os.path.join(ROOT, ".cluster"),
                   help="Redis's data and HAProxy's configuration (default .cluster/)")
    p.add_argument("--fresh", action="store_true",
                   help="empty Redis's data directory first (sessions of earlier runs go)")
    p.add_argument("--twistd", default=None, help="the twistd to run (default .venv's)")
    args = p.parse_args(argv)
    if args.node_ports:
        try:
            args.node_ports = [int(x) for x in args.node_ports.split(",") if x.strip()]
        except ValueError:
            p.error(f"--node-ports {args.node_ports}: comma-separated port numbers expected")
        args.nodes = len(args.node_ports)
    else:
        args.node_ports = [args.node_port + i for i in range(args.nodes)]
    if not 1 <= args.nodes <= 32:
        p.error("--nodes must be 1..32")
    ports = [args.port, args.redis_port, *args.node_ports]
    if any(not 1 <= x <= 65535 for x in ports):
        p.error("ports must be 1..65535")
    if len(set(ports)) != len(ports):
        p.error(f"every port must differ: {', '.join(map(str, ports))}")
    args.node_args = extra
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.fresh and os.path.isdir(os.path.join(args.dir, "redis")):
        shutil.rmtree(os.path.join(args.dir, "redis"))
    os.makedirs(args.dir, exist_ok=True)
    # behind HAProxy the nodes take the client's address from X-Forwarded-For
    node_args = ["--trusted-proxy", HOST, *args.node_args]
    cluster = Cluster(args.dir, args.redis_port, args.node_ports, args.port, node_args,
                      args.twistd)
    missing = [name for name in ("redis-server", "haproxy") if find_program(name) is None]
    if missing:
        print(f"cluster: {' and '.join(missing)} not installed: run make system-deps-cluster "
              f"(or apt-get install {' '.join(missing)})", file=sys.stderr)
        return 1
    busy = cluster.busy_ports()
    if busy:
        print(f"cluster: port {', '.join(busy)} already in use (is another cluster "
              "running?); choose others, e.g. make cluster ARGS='--port 9080 --node-port "
              "9081 --redis-port 6390'", file=sys.stderr)
        return 1
    result = {"code": 1}
    state = {"stopping": False, "ready": False}

    async def run() -> None:
        names = ", ".join(f"{cluster.node_name(i)} on {p}" for i, p in
                          enumerate(args.node_ports))
        cluster.say(f"cluster in {args.dir}: Redis on {HOST}:{args.redis_port} (AOF on), "
                    f"{names}, HAProxy on {args.port}")
        try:
            await cluster.start()
        except Exception as e:
            cluster.say(f"start-up failed: {e}")
            if not state["stopping"]:
                await stop(1)
            return
        if state["stopping"]:
            return
        state["ready"] = True
        lines = [f"cluster ready: demo page http://{HOST}:{args.port}/ , WebSocket "
                 f"ws://{HOST}:{args.port}/ws (through HAProxy, round robin)"]
        for i, n in enumerate(cluster.nodes):
            assert n is not None
            lines.append(f"    {n.name}: pid {n.pid}, http://{HOST}:{args.node_ports[i]}/ "
                         "(/healthz, /metrics)")
        assert cluster.redis is not None
        lines.append(f"    redis: pid {cluster.redis.pid}, {cluster.redis_url} "
                     f"(redis-cli -p {args.redis_port}), data in {args.dir}/redis")
        lines.append("    kill -9 a node's pid to see the others adopt its sessions; Ctrl-C "
                     "stops everything (nodes drained, then HAProxy, then Redis)")
        cluster.say("\n".join(lines))

    async def stop(code: int) -> None:
        state["stopping"] = True
        clean = await cluster.stop()
        result["code"] = code if clean else 1
        reactor.stop()

    def essential_died(child: Child) -> None:
        if child.name in ("redis", "haproxy") and not state["stopping"]:
            cluster.say(f"without {child.name} the cluster cannot serve: stopping it all")
            defer.Deferred.fromCoroutine(stop(1))
    cluster.died = essential_died

    def on_signal(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if state["stopping"]:
            if signum == signal.SIGINT:
                reactor.callFromThread(cluster.say, f"{name} again: killing everything now")
                reactor.callFromThread(cluster.kill_all)
            return
        state["stopping"] = True
        reactor.callFromThread(cluster.say, f"{name}: stopping the cluster")
        reactor.callFromThread(lambda: defer.Deferred.fromCoroutine(stop(0)))

    def install() -> None:
        # after the reactor's own handlers (its SIGCHLD handling stays)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, on_signal)
        defer.Deferred.fromCoroutine(run())

    reactor.callWhenRunning(install)
    reactor.run()
    return result["code"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
