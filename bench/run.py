#!/usr/bin/env python
"""wsservice side-by-side benchmark: each server in turn, the same load generator, a table.

    cd bench && npm ci --silent && ../.venv/bin/python run.py          # the full run (make bench)
    ../.venv/bin/python run.py --quick                                  # 1 run, short: smoke test
    ../.venv/bin/python run.py --only call --only fanout --runs 5

For every workload and every run, in turns (wsservice, wsservice --no-fast-path, baseline, ...),
it starts the server as its own process (a fresh one each time), pinned with ``taskset`` to
one core, and the load generator (``node loadgen.js``, the ``ws`` package) pinned to another,
then stops the server with SIGTERM. Servers:

- wsservice: ``.venv/bin/twistd -n --pidfile= wsservice`` with the demo app, a ``tcp:`` and a
  ``unix:`` listener, rate limit, session limits and per-peer connection limits raised out
  of the way (every load-generator connection comes from 127.0.0.1).
- no-fast-path: the same with ``--no-fast-path`` (Autobahn's public send and receive paths).
- baseline: ``bench/baseline_autobahn.py``, a bare Autobahn/Twisted JSON echo server (orjson,
  prepared-message broadcast for topics, no session layer), same two listeners.
- the peers (``bench/peers.py``; ``--no-peers`` leaves them out): Node socket.io and
  python-socketio on uvicorn, for call, fanout and idle only, driven by ``sioloadgen.js``.

Then the cluster workloads (``--only cluster``), in turns on one wsservice ("single") and on a
cluster ("cluster"): a fresh redis-server (loopback, a free port, no persistence) and two
nodes on it (the wsservice command plus ``--redis``/``--node-id``), all three pinned to the
server CPU; their CPU is summed, and each figure is given as the ratio cluster/single.

The server's CPU time comes from its own ``/proc/PID/stat`` (utime + stime), read by the load
generator at both edges of the measured window; every reply is checked and errors are counted
and printed. Each figure is the median over the runs, shown with each wsservice's ratio to the baseline.
Everything is bounded: per-run durations, message counts, and timeouts on every wait.
Loopback only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import peers  # the socket.io peers (bench/peers.py)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
LOADGEN = os.path.join(HERE, "loadgen.js")
BASELINE = os.path.join(HERE, "baseline_autobahn.py")

TCP_URL = re.compile(r"ws://127\.0\.0\.1:(\d+)(/\S*)?")
TROUBLE = re.compile(r"#(error|critical)\]|Traceback|Unhandled|unexpected failure")


# -- servers ------------------------------------------------------------------------------------

def venv(name: str) -> str:
    path = os.path.join(VENV_BIN, name)
    return path if os.path.exists(path) else os.path.join(os.path.dirname(sys.executable), name)


class ServerSpec:
    def __init__(self, name: str, kind: str, command: Callable[[str, str], list[str]],
                 ready: str | None = None, workloads: frozenset[str] | None = None,
                 loadgen: str = LOADGEN) -> None:
        self.name = name
        self.kind = kind
        self.command = command
        self.ready = ready  # a log line (regex) that must also appear before the server is used
        self.workloads = workloads  # the workloads it runs (None: every one)
        self.loadgen = loadgen  # the load generator that drives it


def wsservice_command(tcp: str, unix: str) -> list[str]:
    return [venv("twistd"), "-n", "--pidfile=", "wsservice",
            "--listen", tcp, "--listen", unix,
            "--rate", "1e9", "--burst", "1000000000", "--max-sessions", "100000",
            # every load-generator connection comes from 127.0.0.1: lift the per-peer
            # limits (5000 idle sessions, thousands of connects a second) and the total
            "--max-connections", "100000", "--max-peer-connections", "100000",
            "--max-sessions-per-peer", "100000", "--peer-connect-rate", "1e9",
            "--peer-connect-burst", "1000000000"]


def slow_path_command(tcp: str, unix: str) -> list[str]:
    return wsservice_command(tcp, unix) + ["--no-fast-path"]


def baseline_command(tcp: str, unix: str) -> list[str]:
    return [venv("python"), BASELINE, "--listen", tcp, "--listen", unix]


# wsservice first (the targets are its), then the baseline (every other ratio is to it), then
# the peers (wsservice's ratio to each)
SERVERS = [
    ServerSpec("wsservice", "wsservice", wsservice_command),
    ServerSpec("no-fast-path", "wsservice", slow_path_command),
    ServerSpec("baseline", "baseline", baseline_command),
] + peers.specs(ServerSpec)  # socket.io (node), python-socketio: call, fanout, idle only


class Running:
    """One server process: started pinned, its output in a log file, stopped with SIGTERM."""

    def __init__(self, spec: ServerSpec, workdir: str, pin: list[str], n: int) -> None:
        self.spec = spec
        self.unix_path = os.path.join(workdir, f"{spec.name}-{n}.sock")
        self.log_path = os.path.join(workdir, f"{spec.name}-{n}.log")
        self.log = open(self.log_path, "wb")
        command = pin + spec.command("tcp:0:interface=127.0.0.1", f"unix:{self.unix_path}")
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        self.pid = self.proc.pid  # taskset execs the server: same pid
        self.tcp_url: str | None = None
        self.unix_url = f"ws+unix:{self.unix_path}:/ws"

    def wait_listening(self, timeout: float = 30.0) -> None:
        """Wait until the log says the server listens (``listening_url``): ``tcp_url`` is set."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.read_log()
            url = self.listening_url(text)
            if url is not None:
                self.tcp_url = url
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited ({self.proc.returncode}) before "
                                   f"listening:\n{text[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.spec.name} not listening after {timeout} s:\n"
                           f"{self.read_log()[-2000:]}")

    def listening_url(self, text: str) -> str | None:
        """The WebSocket tcp URL once the log ``text`` shows both listeners up (and the spec's
        ready line); None before."""
        lines = [line for line in text.splitlines() if "listening on" in line]
        m = TCP_URL.search("\n".join(lines))
        ready = self.spec.ready is None or re.search(self.spec.ready, text)
        if m and len(lines) >= 2 and os.path.exists(self.unix_path) and ready:
            return f"ws://127.0.0.1:{m.group(1)}{m.group(2) or '/ws'}"
        return None

    def read_log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, timeout: float = 20.0) -> list[str]:
        """SIGTERM, then SIGKILL after ``timeout``; the problems seen, if any."""
        problems = []
        if self.proc.poll() is not None:
            problems.append(f"server died during the run (exit {self.proc.returncode})")
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                problems.append(f"no exit {timeout} s after SIGTERM; killed")
                self.proc.kill()
                self.proc.wait(10)
            # twistd stops cleanly on SIGTERM, then re-raises it on itself
            if self.proc.returncode not in (0, -signal.SIGTERM):
                problems.append(f"exit status {self.proc.returncode}")
        self.log.close()
        for line in self.read_log().splitlines():
            if TROUBLE.search(line):
                problems.append(f"server log: {line.strip()[:200]}")
        try:
            os.unlink(self.unix_path)
        except OSError:
            pass
        return problems


# -- workloads ----------------------------------------------------------------------------------

class Figure:
    def __init__(self, key: str, label: str, fmt: str, better: str,
                 target: str = "", check: Callable[[float, float, float], Any] | None = None):
        self.key, self.label, self.fmt, self.better = key, label, fmt, better
        self.target, self.check = target, check


class Workload:
    def __init__(self, name: str, title: str, loadgen: str, params: dict, quick: dict,
                 figures: list[Figure], transport: str = "tcp") -> None:
        self.name, self.title, self.loadgen = name, title, loadgen
        self.params, self.quick, self.figures, self.transport = params, quick, figures, transport


def ratio_at_most(limit: float) -> Callable[[float, float, float], bool]:
    return lambda ws, base, ratio: ratio <= limit


def ratio_at_least(limit: float) -> Callable[[float, float, float], bool]:
    return lambda ws, base, ratio: ratio >= limit


def value_at_most(limit: float) -> Callable[[float, float, float], bool]:
    return lambda ws, base, ratio: ws <= limit


CALL_FIGURES = lambda target=None: [  # noqa: E731
    Figure("server_us_per", "server CPU µs / call", "{:.1f}", "lower", *(target or ())),
    Figure("per_s", "calls / s", "{:,.0f}", "higher"),
    Figure("p50_ms", "p50 latency ms", "{:.2f}", "lower"),
    Figure("p99_ms", "p99 latency ms", "{:.2f}", "lower"),
]

WORKLOADS = [
    Workload("call", "call echo, tcp, C=50 W=10", "call",
             dict(connections=50, window=10, warmup=1.0, duration=4.0, max_count=2_000_000),
             dict(warmup=0.3, duration=1.0),
             CALL_FIGURES(("≤ 0.70× (at least ≤ 1.0×)",
                           lambda ws, base, ratio: True if ratio <= 0.70 else
                           ("only ≤ 1.0×" if ratio <= 1.0 else False)))),
    Workload("call-unix", "call echo, unix, C=50 W=10", "call",
             dict(connections=50, window=10, warmup=1.0, duration=4.0, max_count=2_000_000),
             dict(warmup=0.3, duration=1.0), CALL_FIGURES(), transport="unix"),
    Workload("latency", "call echo, tcp, C=1 W=1", "call",
             dict(connections=1, window=1, warmup=0.5, duration=3.0, max_count=500_000),
             dict(warmup=0.2, duration=1.0),
             [Figure("p50_ms", "p50 latency ms", "{:.3f}", "lower", "≤ 1.1×",
                     ratio_at_most(1.1)),
              Figure("p99_ms", "p99 latency ms", "{:.3f}", "lower"),
              Figure("per_s", "calls / s", "{:,.0f}", "higher"),
              Figure("server_us_per", "server CPU µs / call", "{:.1f}", "lower")]),
    Workload("event", "event echo (push with seq), tcp, C=50 W=10", "event",
             dict(connections=50, window=10, warmup=1.0, duration=4.0, max_count=2_000_000),
             dict(warmup=0.3, duration=1.0),
             [Figure("server_us_per", "server CPU µs / event", "{:.1f}", "lower", "≤ 0.70×",
                     ratio_at_most(0.70)),
              Figure("per_s", "events / s", "{:,.0f}", "higher"),
              Figure("p50_ms", "p50 latency ms", "{:.2f}", "lower"),
              Figure("p99_ms", "p99 latency ms", "{:.2f}", "lower")]),
    Workload("fanout", "topic fan-out, 1000 subscribers, 1 publisher", "fanout",
             dict(subscribers=1000, publications_in_flight=8, warmup=1.0, duration=4.0,
                  max_count=5_000_000),
             dict(warmup=0.3, duration=1.0),
             [Figure("server_us_per", "server CPU µs / delivery", "{:.2f}", "lower", "≤ 4 µs",
                     value_at_most(4.0)),
              Figure("per_s", "deliveries / s", "{:,.0f}", "higher"),
              Figure("p50_ms", "publish to last delivery p50 ms", "{:.1f}", "lower")]),
    Workload("connect", "connection setup: handshake + hello + welcome + close", "connect",
             dict(concurrency=20, warmup=0.5, duration=4.0, max_count=200_000),
             dict(warmup=0.2, duration=1.0),
             [Figure("per_s", "connections / s", "{:,.0f}", "higher", "≥ 1.0×",
                     ratio_at_least(1.0)),
              Figure("server_us_per", "server CPU µs / connection", "{:.0f}", "lower"),
              Figure("p50_ms", "p50 ms per connection", "{:.2f}", "lower")]),
    Workload("idle", "idle memory: sessions connected after hello", "idle",
             dict(sessions=5000, warm_sessions=200, concurrency=100, settle=1.0),
             dict(sessions=1000, warm_sessions=100, settle=0.5),
             [Figure("kib_per_session", "server RSS KiB / idle session", "{:.1f}", "lower",
                     "≤ 8 KiB", value_at_most(8.0)),
              Figure("server_us_per_open", "server CPU µs / session opened", "{:.0f}",
                     "lower")]),
]


# -- the cluster: Redis and two nodes -------------------------------------------------------------

REDIS_READY = re.compile(r"Ready to accept connections")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller retries if it is taken)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A fresh redis-server for one cluster run: loopback, a free port, no persistence, pinned
    like the servers; stopped with SIGTERM."""

    def __init__(self, executable: str, workdir: str, pin: list[str], n: int) -> None:
        self.executable, self.workdir, self.pin, self.n = executable, workdir, pin, n
        self.log_path = os.path.join(workdir, f"redis-{n}.log")
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 15.0) -> None:
        for attempt in range(5):
            self.port = free_port()
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    self.pin + [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", self.workdir,
                                "--dbfilename", f"redis-{self.n}.rdb", "--daemonize", "no",
                                "--protected-mode", "yes", "--loglevel", "notice"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=self.workdir, start_new_session=True)
            self.pid = self.proc.pid  # taskset execs it: same pid
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                text = self.read_log()
                if REDIS_READY.search(text):
                    return
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
            if self.proc.poll() is None:
                self.stop()
                raise RuntimeError(f"redis-server not ready after {timeout} s:\n"
                                   f"{self.read_log()[-1000:]}")
            if "Address already in use" not in self.read_log():
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}):\n"
                                   f"{self.read_log()[-1000:]}")
        raise RuntimeError("redis-server: no free port found in 5 tries")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def read_log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> list[str]:
        if self.proc is None:
            return []
        problems = []
        if self.proc.poll() is not None:
            problems.append(f"redis-server died during the run (exit {self.proc.returncode})")
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                problems.append(f"redis-server: no exit {timeout} s after SIGTERM; killed")
                self.proc.kill()
                self.proc.wait(10)
            if self.proc.returncode != 0:
                problems.append(f"redis-server exit status {self.proc.returncode}")
        return problems


def node_spec(name: str, redis_url: str) -> ServerSpec:
    """A cluster node: the single-node wsservice command (same limits lifted) on Redis."""
    return ServerSpec(name, "wsservice",
                      lambda tcp, unix: wsservice_command(tcp, unix)
                      + ["--redis", redis_url, "--node-id", name],
                      ready=rf"node {name}: connected to Redis")


class Cluster:
    """redis-server and NODES nodes on it, every process pinned to the server CPU."""

    NODES = 2

    def __init__(self, executable: str, workdir: str, pin: list[str], n: int) -> None:
        self.redis = RedisServer(executable, workdir, pin, n)
        self.nodes: list[Running] = []
        self.workdir, self.pin, self.n = workdir, pin, n

    def start(self) -> None:
        self.redis.start()
        for k in range(1, self.NODES + 1):
            self.nodes.append(Running(node_spec(f"n{k}", self.redis.url), self.workdir,
                                      self.pin, self.n))
        for node in self.nodes:
            node.wait_listening()

    def stop(self) -> list[str]:
        problems = []
        for node in self.nodes:  # the nodes first: they leave the cluster, then Redis goes
            problems += [f"{node.spec.name}: {p}" for p in node.stop()]
        return problems + self.redis.stop()


class ClusterWorkload:
    """A workload run on one node ("single") and on the cluster ("cluster"), in turns."""

    def __init__(self, name: str, title: str, loadgen: str, params: dict, quick: dict,
                 figures: list[Figure], spread: bool) -> None:
        self.name, self.title, self.loadgen = name, title, loadgen
        self.params, self.quick, self.figures, self.spread = params, quick, figures, spread


CLUSTER_SETUPS = ["single", "cluster"]  # the ratio is cluster / single

CLUSTER_WORKLOADS = [
    ClusterWorkload(
        "cluster-fanout", "topic fan-out, 1000 subscribers (500 on each node), publisher on n1",
        # fill: every subscriber's replay buffer (1000 messages by default) is full before
        # the warm-up, so each delivery in the window also drops the oldest kept message, as
        # in any run longer than a few seconds (without it the cluster's window would see
        # buffers still filling: 2 fewer Redis commands per delivery, 1/3 less cost)
        "fanout", dict(subscribers=1000, publications_in_flight=8, warmup=1.0, duration=4.0,
                       max_count=5_000_000, fill=1100, fill_timeout=60.0),
        dict(warmup=0.3, duration=1.0, fill=0),
        [Figure("server_us_per", "server CPU µs / delivery (nodes + Redis)", "{:.2f}", "lower",
                "≤ 3×", ratio_at_most(3.0)),
         Figure("per_s", "deliveries / s", "{:,.0f}", "higher"),
         Figure("p50_ms", "publish to last delivery p50 ms", "{:.1f}", "lower")],
        spread=True),
    ClusterWorkload(
        "cluster-event", "event echo (push through Redis), C=50 W=10, all on n1", "event",
        dict(connections=50, window=10, warmup=1.0, duration=4.0, max_count=2_000_000),
        dict(warmup=0.3, duration=1.0),
        [Figure("server_us_per", "server CPU µs / event (nodes + Redis)", "{:.1f}", "lower",
                "≤ 2.5×", ratio_at_most(2.5)),
         Figure("per_s", "events / s", "{:,.0f}", "higher"),
         Figure("p50_ms", "p50 latency ms", "{:.2f}", "lower"),
         Figure("p99_ms", "p99 latency ms", "{:.2f}", "lower")],
        spread=False),
    ClusterWorkload(
        "cluster-call", "call echo (no push), C=50 W=10, all on n1", "call",
        dict(connections=50, window=10, warmup=1.0, duration=4.0, max_count=2_000_000),
        dict(warmup=0.3, duration=1.0),
        [Figure("server_us_per", "server CPU µs / call (nodes + Redis)", "{:.1f}", "lower",
                "≤ 1.2×", ratio_at_most(1.2)),
         Figure("per_s", "calls / s", "{:,.0f}", "higher"),
         Figure("p50_ms", "p50 latency ms", "{:.2f}", "lower"),
         Figure("p99_ms", "p99 latency ms", "{:.2f}", "lower")],
        spread=False),
]

CLUSTER_PROCESSES = ["n1", "n2", "redis"]  # the order of cpu_by_process in a cluster run


# -- running ------------------------------------------------------------------------------------

def pinning(args: argparse.Namespace) -> tuple[list[str], list[str], str]:
    """taskset prefixes for the server and the load generator, and a description."""
    taskset = shutil.which("taskset")
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cpus = list(range(os.cpu_count() or 1))
    if args.no_pin or not taskset or len(cpus) < 2:
        why = "off (--no-pin)" if args.no_pin else (
            "off (no taskset)" if not taskset else "off (one CPU)")
        return [], [], why
    server_cpu, client_cpus = cpus[0], cpus[1:]
    clients = ",".join(map(str, client_cpus))
    return ([taskset, "-c", str(server_cpu)], [taskset, "-c", clients],
            f"server on CPU {server_cpu}, load generator on CPU {clients} (taskset)")


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            print(f"warning: cannot raise the open-files limit to {need}: {e}", file=sys.stderr)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        print(f"warning: open-files limit {soft} < {need}: the idle workload may fail",
              file=sys.stderr)


def load_params(workload: Any, args: argparse.Namespace) -> dict:
    params = dict(workload.params)
    if args.quick:
        params.update(workload.quick)
    params.update(drain_timeout=10.0, clk_tck=os.sysconf("SC_CLK_TCK"))
    params.update(args.set)
    return params


def drive(config: dict, args: argparse.Namespace, pins: tuple[list[str], list[str], str],
          on_window: Callable[[], Any] | None = None, script: str = LOADGEN) -> dict:
    """Run the load generator (pinned) with ``config``; its JSON result. ``on_window()`` is
    called when the measured window opens (the load generator says so on stderr)."""
    budget = 120.0 + config.get("warmup", 0) + config.get("duration", 0) \
        + (config.get("fill_timeout", 0) if config.get("fill") else 0)
    config = dict(config, timeout=budget, announce_window=on_window is not None)
    if on_window is None:
        try:
            out = subprocess.run(pins[1] + [args.node, script, json.dumps(config)],
                                 capture_output=True, text=True, timeout=budget + 15, cwd=HERE)
        except subprocess.TimeoutExpired:
            return {"fatal": "loadgen timed out", "errors": 1, "examples": []}
        stdout, stderr, returncode = out.stdout, out.stderr, out.returncode
    else:
        import threading
        proc = subprocess.Popen(pins[1] + [args.node, script, json.dumps(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=HERE)
        errs: list[str] = []

        def read_stderr() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if line.strip() == "loadgen: window open":
                    on_window()
                else:
                    errs.append(line)
        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        timer = threading.Timer(budget + 15, proc.kill)
        timer.start()
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        returncode = proc.wait()
        timer.cancel()
        reader.join(10)
        stderr = "".join(errs)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    return {"fatal": f"no result from loadgen (exit {returncode}): "
                     f"{stderr.strip()[-1000:]}", "errors": 1, "examples": []}


class Profilers:
    """``--profile DIR``: py-spy on each node and perf on redis-server over the measured window
    of a cluster run (the profilers pinned with the load generator, off the server CPU)."""

    def __init__(self, directory: str, label: str, cluster: Any, seconds: float,
                 pin: list[str]) -> None:
        self.directory, self.label, self.cluster = directory, label, cluster
        self.seconds, self.pin = seconds, pin
        self.procs: list[subprocess.Popen] = []
        self.perf_data = os.path.join(directory, f"{label}-redis.perf.data")

    def start(self) -> None:
        rate, secs = "250", str(max(1, int(self.seconds)))
        py_spy = venv("py-spy")
        for node in self.cluster.nodes:
            if not os.path.exists(py_spy):
                break
            out = os.path.join(self.directory, f"{self.label}-{node.spec.name}.raw.txt")
            self.procs.append(subprocess.Popen(
                self.pin + [py_spy, "record", "--format", "raw", "--nonblocking", "-r", rate, "-d", secs,
                            "-o", out, "--pid", str(node.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        perf = shutil.which("perf")
        if perf:
            self.procs.append(subprocess.Popen(
                self.pin + [perf, "record", "-e", "cpu-clock", "-F", "999", "-g", "-o",
                            self.perf_data, "-p", str(self.cluster.redis.pid), "--", "sleep",
                            secs], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def finish(self) -> None:
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for node in self.cluster.nodes:
            path = os.path.join(self.directory, f"{self.label}-{node.spec.name}.raw.txt")
            if os.path.exists(path):
                with open(path[:-len(".raw.txt")] + ".summary.txt", "w") as f:
                    f.write(summarize_py_spy(path))
        perf = shutil.which("perf")
        if perf and os.path.exists(self.perf_data):
            with open(os.path.join(self.directory, f"{self.label}-redis.perf.txt"), "w") as f:
                subprocess.run([perf, "report", "-i", self.perf_data, "--stdio", "--no-children",
                                "--sort", "dso,symbol", "-g", "none", "--percent-limit", "0.5"],
                               stdout=f, stderr=subprocess.DEVNULL, timeout=120)


def summarize_py_spy(path: str, top: int = 40) -> str:
    """py-spy's raw (collapsed) stacks: the functions by own samples and by total samples."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            samples += n
            frames = [re.sub(r" \((?:.*/)?(site-packages/)?([^/]*/[^/]*\.py|[^/]*\.py):\d+\)$",
                             r" (\2)", fr) for fr in stack.split(";")]
            own[frames[-1]] = own.get(frames[-1], 0) + n
            for fr in set(frames):
                total[fr] = total.get(fr, 0) + n
    if not samples:
        return "no samples\n"
    lines = [f"{samples} samples (250/s while the process ran Python)", "", "own %  function"]
    for fr, n in sorted(own.items(), key=lambda x: -x[1])[:top]:
        lines.append(f"{100 * n / samples:5.1f}  {fr}")
    lines += ["", "total %  function"]
    for fr, n in sorted(total.items(), key=lambda x: -x[1])[:top]:
        lines.append(f"{100 * n / samples:5.1f}  {fr}")
    return "\n".join(lines) + "\n"


def add_problems(result: dict, problems: list[str]) -> None:
    """Count what went wrong around a run (a server's exit, its log) as errors of the run."""
    if problems:
        result["errors"] = result.get("errors", 0) + len(problems)
        result["examples"] = result.get("examples", []) + problems[:5]


def run_once(workload: Workload, spec: ServerSpec, args: argparse.Namespace,
             pins: tuple[list[str], list[str], str], workdir: str, n: int,
             running: type[Running] = Running,
             profiler: Callable[[Running, dict], Any] | None = None) -> dict:
    """One fresh server (a ``running``), one load generator; the result. ``profiler(server,
    params)``, if given, may return a profiler (``start()`` when the window opens, ``finish()``
    after the run) or None."""
    params = load_params(workload, args)
    server = running(spec, workdir, pins[0], n)
    result: dict[str, Any]
    try:
        server.wait_listening()
        url = server.unix_url if workload.transport == "unix" else server.tcp_url
        prof = profiler(server, params) if profiler else None
        result = drive(dict(params, workload=workload.loadgen, url=url, pid=server.pid,
                            server_kind=spec.kind), args, pins,
                       prof.start if prof else None, script=spec.loadgen)
        if prof:
            prof.finish()
            result["profiled"] = True
    except Exception as e:  # a server that does not start counts as a failed run
        result = {"fatal": str(e), "errors": 1, "examples": []}
    finally:
        problems = server.stop()
    add_problems(result, problems)
    return result


def run_cluster_once(workload: ClusterWorkload, setup: str, args: argparse.Namespace,
                     pins: tuple[list[str], list[str], str], workdir: str, n: int) -> dict:
    """One run of ``workload`` on one wsservice ("single") or on a fresh redis-server and two
    nodes ("cluster"): every server-side process on the server CPU, CPU summed over them."""
    params = dict(load_params(workload, args), workload=workload.loadgen,
                  server_kind="wsservice")
    running: Any = None
    result: dict[str, Any]
    try:
        if setup == "single":
            running = Running(SERVERS[0], workdir, pins[0], n)
            running.wait_listening()
            config = dict(params, url=running.tcp_url, pid=running.pid)
        else:
            running = Cluster(args.redis_server, workdir, pins[0], n)
            if args.profile and pins[1]:
                # py-spy counts a preempted thread as busy: with Redis on the nodes' CPU the
                # node's sends to Redis (which wake it) would look expensive. Profiled runs
                # put Redis beside the load generator instead.
                running.redis.pin = pins[1]
            running.start()
            urls = [node.tcp_url for node in running.nodes]
            config = dict(params, url=urls[0], urls=urls if workload.spread else urls[:1],
                          pid=running.nodes[0].pid,
                          pids=[node.pid for node in running.nodes] + [running.redis.pid],
                          redis=dict(host="127.0.0.1", port=running.redis.port))
        profilers = None
        if args.profile and setup == "cluster":
            profilers = Profilers(args.profile, f"{workload.name}-{n}", running,
                                  params.get("duration", 4.0), pins[1])
        result = drive(config, args, pins, profilers.start if profilers else None)
        if profilers:
            profilers.finish()
            result["profiled"] = True
    except Exception as e:  # a server that does not start counts as a failed run
        result = {"fatal": str(e), "errors": 1, "examples": []}
    finally:
        problems = running.stop() if running is not None else []
    add_problems(result, problems)
    derive_cluster(result)
    return result


def derive_cluster(result: dict) -> None:
    """Per-message shares of each process, and what Redis ran per message."""
    count = result.get("count")
    if not count or result.get("fatal"):
        return
    for name, cpu in zip(CLUSTER_PROCESSES, result.get("cpu_by_process") or ()):
        result[f"{name}_us_per"] = cpu * 1e6 / count
    commands = result.get("redis_commands") or {}
    evalsha = commands.get("evalsha")
    if evalsha and evalsha["calls"]:
        result["per_script"] = count / evalsha["calls"]
        result["script_us_per"] = evalsha["usec"] / count
    if commands:
        # what the scripts called (the EVALSHAs themselves, and our INFO, left out)
        inner = [c for name, c in commands.items() if name not in ("evalsha", "eval", "info")]
        result["redis_calls_per"] = sum(c["calls"] for c in inner) / count


def fmt(figure: Figure, value: Any) -> str:
    if value is None:
        return "-"
    return figure.fmt.format(value)


def median(values: list[Any]) -> float | None:
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def headline(result: dict, workload: Workload) -> str:
    if result.get("fatal"):
        return f"FAILED: {result['fatal']}"
    parts = [f"{f.label} {fmt(f, result.get(f.key))}" for f in workload.figures[:3]]
    if "server_cpu_pct" in result:
        parts.append(f"cpu server {result['server_cpu_pct']:.0f}% / loadgen "
                     f"{result['client_cpu_pct']:.0f}%")
    parts.append(f"errors {result.get('errors', 0)}")
    return ", ".join(parts)


def record(results: dict, raw: list[dict], workload: str, server: str, run: int, runs: int,
           result: dict, text: str, widths: tuple[int, int] = (9, 10)) -> None:
    """Keep one run's result (``results`` by (workload, server), and ``raw``) and print its
    line (time, workload, run, server, ``text``) and its first error examples."""
    results.setdefault((workload, server), []).append(result)
    raw.append(dict(workload=workload, server=server, run=run, **result))
    print(f"{time.strftime('%H:%M:%S')} {workload:{widths[0]}} run {run}/{runs} "
          f"{server:{widths[1]}} {text}", flush=True)
    for example in result.get("examples", [])[:5]:
        print(f"    error: {example}", flush=True)


def cluster_headline(result: dict, workload: ClusterWorkload) -> str:
    text = headline(result, workload)  # type: ignore[arg-type]
    shares = [result.get(f"{p}_us_per") for p in CLUSTER_PROCESSES]
    if all(v is not None for v in shares):
        text += " (µs: " + " / ".join(f"{p} {v:.2f}" for p, v in zip(CLUSTER_PROCESSES, shares))
        if result.get("per_script") is not None:
            text += f"; {result['per_script']:.0f} per EVALSHA"
        text += ")"
    return text


def cpu_cell(rs: list[dict]) -> str:
    """How busy the server side and the load generator were over the runs ``rs`` (medians)."""
    s = median([r.get("server_cpu_pct") for r in rs])
    c = median([r.get("client_cpu_pct") for r in rs])
    return "-" if s is None else f"{s:.0f}% / {c:.0f}%"


def errors_cell(rs: list[dict], runs: int) -> str:
    """The errors of the runs ``rs``, and how many of ``runs`` gave figures."""
    errs = sum(r.get("errors", 0) for r in rs)
    counted = len([r for r in rs if not r.get("fatal")])
    return f"{errs} ({counted}/{runs})"


def table(results: dict, workloads: list[Workload], runs: int) -> list[str]:
    names = [s.name for s in SERVERS]
    base = next(s.name for s in SERVERS if s.kind == "baseline")
    pairs = peers.ratio_pairs(names, base)  # (numerator, denominator) of each ratio column
    lines = ["| workload | figure | " + " | ".join(names) + " | "
             + " | ".join(f"ratio {a}/{b}" for a, b in pairs) + " | target | met |",
             "| --- | --- | " + "---: | " * (len(names) + len(pairs)) + "--- | --- |"]
    blank = " |" * len(pairs)
    for w in workloads:
        per = {name: results.get((w.name, name), []) for name in names}
        first = True
        for f in w.figures:
            value = {name: median([r.get(f.key) for r in per[name] if not r.get("fatal")])
                     for name in names}
            ratios = [value[a] / value[b] if value[a] is not None and value[b] else None
                      for a, b in pairs]
            a, b, ratio = value[names[0]], value[base], ratios[0]
            met = ""
            if f.check is not None:
                verdict = None if a is None or ratio is None else f.check(a, b, ratio)
                met = ("?" if verdict is None else "yes" if verdict is True
                       else "**no**" if verdict is False else str(verdict))
            target, vs_peer = f.target, peers.target(w.name, f.key, a, value)
            if vs_peer:  # issue 13's targets against a peer, beside the figure's own
                target = "; ".join(t for t in (target, vs_peer[0]) if t)
                met = "; ".join(m for m in (met, vs_peer[1]) if m)
            lines.append(f"| {w.title if first else ''} | {f.label} | "
                         + " | ".join(fmt(f, value[name]) for name in names) + " | "
                         + " | ".join("-" if r is None else f"{r:.2f}" for r in ratios)
                         + f" | {target} | {met} |")
            first = False
        if w.loadgen in ("call", "event", "fanout", "connect"):
            cpu = [cpu_cell(per[name]) for name in names]
            lines.append("| | CPU busy: server / loadgen | " + " | ".join(cpu) + " |"
                         + blank + " | |")
        cells = [errors_cell(per[spec.name], runs)
                 if spec.workloads is None or w.name in spec.workloads else "-"
                 for spec in SERVERS]
        lines.append("| | errors (runs ok) | " + " | ".join(cells) + " |" + blank + " | |")
    return lines


def cluster_table(results: dict, workloads: list[ClusterWorkload], runs: int) -> list[str]:
    lines = ["| workload | figure | single node | cluster (2 nodes + Redis) | ratio cluster/single "
             "| target | met |",
             "| --- | --- | ---: | ---: | ---: | --- | --- |"]

    def med(name: str, key: str) -> float | None:
        return median([r.get(key) for r in results.get((w.name, name), [])
                       if not r.get("fatal")])

    for w in workloads:
        first = True
        for f in w.figures:
            single, cluster = med("single", f.key), med("cluster", f.key)
            ratio = cluster / single if cluster is not None and single else None
            met = ""
            if f.check is not None:
                verdict = None if ratio is None else f.check(cluster, single, ratio)
                met = "?" if verdict is None else "yes" if verdict is True else "**no**"
            lines.append(f"| {w.title if first else ''} | {f.label} | {fmt(f, single)} | "
                         f"{fmt(f, cluster)} | {'-' if ratio is None else f'{ratio:.2f}'} | "
                         f"{f.target} | {met} |")
            first = False
        unit = w.figures[0].label.split("/")[1].split("(")[0].strip()
        shares = [med("cluster", f"{p}_us_per") for p in CLUSTER_PROCESSES]
        if all(v is not None for v in shares):
            lines.append(f"| | of which µs / {unit}: n1 / n2 / redis-server | | "
                         + " / ".join(f"{v:.2f}" for v in shares) + " | | | |")
        per_script, calls = med("cluster", "per_script"), med("cluster", "redis_calls_per")
        if per_script is not None and calls is not None:
            units = unit[:-1] + "ies" if unit.endswith("y") else unit + "s"
            lines.append(f"| | Redis: {units} per EVALSHA (batch); commands the scripts ran / "
                         f"{unit} | | {per_script:,.0f}; {calls:.2f} | | | |")
        cpu = [cpu_cell(results.get((w.name, name), [])) for name in CLUSTER_SETUPS]
        lines.append(f"| | CPU busy: server side / loadgen | {cpu[0]} | {cpu[1]} | | | |")
        cells = [errors_cell(results.get((w.name, name), []), runs) for name in CLUSTER_SETUPS]
        lines.append(f"| | errors (runs ok) | {cells[0]} | {cells[1]} | | | |")
    return lines


def environment(pins: tuple[list[str], list[str], str], args: argparse.Namespace) -> list[str]:
    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                                  cwd=HERE).stdout.strip()
        except Exception:
            return "?"
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    py = version([venv("python"), "-c",
                  "import sys, autobahn, twisted, orjson; "
                  "from autobahn.websocket import HAS_NVX, USES_NVX; "
                  "print(f'Python {sys.version.split()[0]}, Twisted {twisted.__version__}, "
                  "Autobahn {autobahn.__version__} (NVX available {HAS_NVX}, used {USES_NVX}), "
                  "orjson {orjson.__version__}')"])
    ws = version([args.node, "-e", "process.stdout.write(require('ws/package.json').version)"])
    return [
        f"date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"machine: {os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}, "
        f"load average at start {os.getloadavg()[0]:.2f}",
        f"pinning: {pins[2]}",
        f"servers: {py}{peers.versions(args, SERVERS, version)}; "
        f"load generator: node {version([args.node, '--version'])}, ws {ws}",
        f"runs: {args.runs} per server per workload, in turns; figures are medians"
        + (" (--quick: 1 short run, not a measurement)" if args.quick else ""),
    ]


def installed_stamp() -> str:
    """When the wsservice that twistd will run was installed (newest .py of the package)."""
    try:
        out = subprocess.run([venv("python"), "-c", "import os, wsservice; "
                              "print(os.path.dirname(wsservice.__file__))"],
                             capture_output=True, text=True, timeout=30, cwd="/")
        package = out.stdout.strip()
        newest = max(os.path.getmtime(os.path.join(package, name))
                     for name in os.listdir(package) if name.endswith(".py"))
    except Exception as e:
        return f"unknown ({e})"
    stamp = datetime.datetime.fromtimestamp(newest).astimezone()
    return f"{package} as of {stamp.strftime('%Y-%m-%d %H:%M:%S %Z')}"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="1 run of each, short windows, fewer idle sessions (a smoke test)")
    p.add_argument("--runs", type=int, default=None, help="runs per server per workload "
                   "(default 3; 1 with --quick)")
    p.add_argument("--only", action="append", default=[], metavar="WORKLOAD",
                   help="run only this workload (repeatable, or comma-separated): "
                        + ", ".join(w.name for w in WORKLOADS + CLUSTER_WORKLOADS)  # type: ignore
                        + ", " + ", ".join(ndjson_bench.NAMES + workers_bench.NAMES)
                        + "; or a group: single (the first ones), cluster (the cluster-* ones)")
    p.add_argument("--redis-server", default=shutil.which("redis-server") or
                   "/usr/bin/redis-server", help="redis-server executable (cluster workloads)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--no-peers", action="store_true", help="leave out the socket.io peers "
                   "(Node socket.io, python-socketio: call, fanout and idle)")
    p.add_argument("--profile", metavar="DIR", help="cluster runs: py-spy on each node (pip "
                   "install py-spy into .venv) and perf on redis-server over the window, into "
                   "DIR; ndjson runs: py-spy on each server (the profilers disturb the "
                   "figures: not for measuring)")
    p.add_argument("--node", default=shutil.which("node") or "node", help="node executable")
    p.add_argument("--json", metavar="PATH", help="also write every run's raw figures here")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a load generator parameter for every workload, e.g. "
                        "connections=100, window=1, cork=false (for experiments; VALUE is JSON)")
    args = p.parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    groups = {"single": [w.name for w in WORKLOADS],
              "cluster": [w.name for w in CLUSTER_WORKLOADS]}
    known = {w.name for w in WORKLOADS} | {w.name for w in CLUSTER_WORKLOADS}
    known |= set(ndjson_bench.NAMES) | set(workers_bench.NAMES)
    for n in names:
        if n not in known and n not in groups:
            p.error(f"unknown workload {n!r}; known: {', '.join(sorted(known | set(groups)))}")
    args.only = [m for n in names for m in groups.get(n, [n])]
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--set needs KEY=VALUE, not {item!r}")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
    args.set = overrides
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if not 1 <= args.runs <= 21:
        p.error("--runs must be 1..21")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    if not os.path.isdir(os.path.join(HERE, "node_modules", "ws")):
        print("bench/node_modules/ws is missing: run `npm ci` in bench/ first", file=sys.stderr)
        return 2
    if not os.path.exists(venv("twistd")):
        print(f"{venv('twistd')} is missing: run `make install` first", file=sys.stderr)
        return 2
    missing = peers.use(args, SERVERS)  # drops the peers when they have nothing to do
    if missing:
        print(missing, file=sys.stderr)
        return 2
    raise_nofile(16384)
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    pins = pinning(args)
    workloads = [w for w in WORKLOADS if not args.only or w.name in args.only]
    cluster_workloads = [w for w in CLUSTER_WORKLOADS if not args.only or w.name in args.only]
    ndjson_workloads = ndjson_bench.selected(args)
    workers_workloads = workers_bench.selected(args)
    env = environment(pins, args)
    if cluster_workloads:
        if not os.access(args.redis_server, os.X_OK):
            print(f"{args.redis_server} is missing: the cluster workloads need redis-server "
                  "(apt-get install redis-server, or --redis-server PATH)", file=sys.stderr)
            return 2
        redis_version = subprocess.run([args.redis_server, "--version"], capture_output=True,
                                       text=True, timeout=30).stdout.strip()
        env.append(f"cluster: {redis_version.split(' sha=')[0]}, a fresh one per run (no "
                   "persistence, loopback); 2 nodes; Redis and the nodes pinned like the server")
    installed = installed_stamp()
    env.append(f"wsservice measured: {installed}")
    print("== wsservice benchmark ==")
    for line in env:
        print(line)
    print(flush=True)
    results: dict[tuple[str, str], list[dict]] = {}
    raw: list[dict] = []
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="wsbench-")
    n = 0
    try:
        for w in workloads:
            for run in range(1, args.runs + 1):
                for spec in SERVERS:
                    if spec.workloads is not None and w.name not in spec.workloads:
                        continue  # a peer without this workload: "-" in the table
                    n += 1
                    r = run_once(w, spec, args, pins, workdir, n)
                    record(results, raw, w.name, spec.name, run, args.runs, r, headline(r, w))
        n = ndjson_bench.run_all(ndjson_workloads, args, pins, workdir, n, results, raw)
        n = workers_bench.run_all(workers_workloads, args, pins, workdir, n, results, raw)
        for cw in cluster_workloads:
            for run in range(1, args.runs + 1):
                for setup in CLUSTER_SETUPS:
                    n += 1
                    r = run_cluster_once(cw, setup, args, pins, workdir, n)
                    record(results, raw, cw.name, setup, run, args.runs, r,
                           cluster_headline(r, cw), widths=(14, 9))
    except KeyboardInterrupt:
        print("interrupted: the table holds the runs done so far", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    print()
    print(f"== results (medians of {args.runs} run{'s' if args.runs > 1 else ''}, "
          f"{elapsed:.0f} s in all; load average at the end {os.getloadavg()[0]:.2f}) ==")
    print()
    if workloads:
        for line in table(results, workloads, args.runs):
            print(line)
    if ndjson_workloads:
        if workloads:
            print()
        for line in ndjson_bench.table(results, ndjson_workloads, args.runs):
            print(line)
        if cluster_workloads and not workloads:
            print()  # (the cluster part's own blank line follows the first table only)
    if cluster_workloads:
        if workloads:
            print()
        print("cluster: every figure is the CPU of all server-side processes (both nodes and "
              "redis-server) over the window, per message; single: the one wsservice")
        print()
        for line in cluster_table(results, cluster_workloads, args.runs):
            print(line)
    if workers_workloads:  # bench/workers_bench.py: --workers 1 and 2
        if workloads or ndjson_workloads or cluster_workloads:
            print()
        for line in workers_bench.table(results, workers_workloads, args.runs):
            print(line)
    total_errors = sum(r.get("errors", 0) for rs in results.values() for r in rs)
    if installed_stamp() != installed:
        print()
        print(f"WARNING: wsservice was reinstalled during the run (now {installed_stamp()}): "
              "the figures mix versions; run again.")
    print()
    print(f"errors: {total_errors}" + ("" if total_errors == 0 else "  (see the runs above)"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "runs": raw}, f, indent=1)
    return 1 if total_errors else 0


# the NDJSON workload (its own servers and table) uses this module's helpers: as `run`, this
# module, not a second copy of it
sys.modules.setdefault("run", sys.modules[__name__])
import ndjson_bench  # noqa: E402
import workers_bench  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
