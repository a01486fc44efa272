"""make cluster's script for real: Redis, two nodes and HAProxy round robin; Ctrl-C stops all."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from . import wsclient
from .redisserver import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


class ClusterScript:
    """scripts/cluster.py (make cluster) running for a test: HAProxy on ``port``, the nodes
    on ``node_ports``, Redis on ``redis_port``; killed on cleanup if the
    test did not stop it."""

    def __init__(self, testcase: TestCase) -> None:
        self.testcase = testcase
        # each one free now (node_port + 1 need not be: hence --node-ports)
        ports: list[int] = []
        while len(ports) < 4:
            port = free_port()
            if port not in ports:
                ports.append(port)
        self.port, self.redis_port, *self.node_ports = ports
        self.workdir = tempfile.mkdtemp(prefix="wsservice-cluster-")
        testcase.addCleanup(shutil.rmtree, self.workdir, True)
        self.log = open(os.path.join(self.workdir, "out.log"), "wb")
        testcase.addCleanup(self.log.close)
        self.proc: subprocess.Popen | None = None

    def output(self) -> str:
        """Everything the script (and what it runs) printed so far."""
        self.log.flush()
        with open(os.path.join(self.workdir, "out.log"), "rb") as f:
            return f.read().decode(errors="replace")

    async def start(self) -> ClusterScript:
        """Start it and wait for its 'cluster ready' line."""
        self.proc = proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "scripts", "cluster.py"), "--port",
             str(self.port), "--node-ports", ",".join(map(str, self.node_ports)), "--redis-port",
             str(self.redis_port), "--dir", self.workdir, "--fresh",
             "--twistd", os.path.join(os.path.dirname(sys.executable), "twistd")],
            stdout=self.log, stderr=subprocess.STDOUT)

        def kill() -> None:
            if proc.poll() is None:
                proc.kill()
        self.testcase.addCleanup(kill)
        deadline = time.monotonic() + 60
        while "cluster ready" not in self.output():
            self.testcase.assertIsNone(proc.poll(), self.output()[-3000:])
            self.testcase.assertLess(time.monotonic(), deadline, self.output()[-3000:])
            await deferLater(reactor, 0.1, lambda: None)
        return self

    async def stop(self) -> str:
        """Ctrl-C it and wait until it has stopped everything; what it printed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 45
        while self.proc.poll() is None:
            self.testcase.assertLess(time.monotonic(), deadline, self.output()[-3000:])
            await deferLater(reactor, 0.1, lambda: None)
        return self.output()


class ClusterScriptTests(TestCase):
    """scripts/cluster.py (make cluster) serves the demo through HAProxy on both nodes."""

    timeout = 120

    async def test_serves_through_haproxy_on_both_nodes_and_stops_on_ctrl_c(self) -> None:
        self.assertTrue(os.path.exists(HAPROXY), "haproxy is not installed: make test's "
                        "system-deps step installs it (apt-get install haproxy)")
        cluster = await ClusterScript(self).start()
        port, node_ports, redis_port = cluster.port, cluster.node_ports, cluster.redis_port
        workdir, output = cluster.workdir, cluster.output
        # four sessions through HAProxy: round robin puts them on both nodes
        nodes = set()
        for _ in range(4):
            client = await wsclient.connect(f"127.0.0.1:{port}")
            client.send({"type": "hello"})
            welcome = await client.next()
            self.assertEqual(welcome["type"], "welcome")
            client.send({"type": "call", "id": 1, "method": "echo", "params": "hi"})
            self.assertEqual(await client.next(), {"type": "result", "id": 1, "result": "hi"})
            client.transport.loseConnection()
        for i, p in enumerate(node_ports):
            status, _, body = await wsclient.http(f"127.0.0.1:{p}", "/metrics")
            opened = [line for line in body.decode().splitlines()
                      if line.startswith("wsservice_sessions_opened_total")]
            if opened and float(opened[0].split()[-1]) > 0:
                nodes.add(i)
        self.assertEqual(nodes, {0, 1}, output()[-3000:])
        status, _, page = await wsclient.http(f"127.0.0.1:{port}", "/")
        self.assertEqual(status, 200)
        text = await cluster.stop()
        self.assertIn("==> stopped:", text)
        # nothing it started is left
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        self.assertNotIn(workdir, ps)
        self.assertNotIn(f"--redis-port {redis_port}", ps)
        self.assertNotIn(f"redis://127.0.0.1:{redis_port}", ps)
