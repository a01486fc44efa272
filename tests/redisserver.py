"""Real redis-server processes for tests: started on a free loopback port (and a unix
socket), killed, restarted with or without their append-only file. No mock, no fakeredis."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
MISSING = ("redis-server is not installed: the cluster tests need a real Redis (>= 6.2); "
           "install it (e.g. apt-get install redis-server) and run make test again")


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server of the tests' own, in a scratch directory."""

    def __init__(self, aof: bool = False, port: int | None = None) -> None:
        if not os.path.exists(REDIS_SERVER):
            raise RuntimeError(MISSING)
        self.dir = tempfile.mkdtemp(prefix="wsservice-redis-")
        self.port = port or free_port()
        self.socket = os.path.join(self.dir, "redis.sock")
        self.aof = aof
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Its redis:// URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        """Its unix:// URL (database 0)."""
        return f"unix://{self.socket}?db=0"

    def start(self) -> RedisServer:
        """Start it and wait until it answers PING."""
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--unixsocket", self.socket, "--unixsocketperm", "700", "--dir", self.dir,
                "--save", "", "--appendonly", "yes" if self.aof else "no",
                "--appendfsync", "always", "--daemonize", "no", "--loglevel", "warning",
                "--logfile", os.path.join(self.dir, "redis.log")]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ping():
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}: "
                           f"{self.log()[-2000:]}")

    def ping(self) -> bool:
        """Whether it answers PING now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def log(self) -> str:
        """What it logged."""
        try:
            with open(os.path.join(self.dir, "redis.log")) as f:
                return f.read()
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9 it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def restart(self, empty: bool = False) -> None:
        """Kill it, and start it again on the same port (with its AOF unless ``empty``)."""
        self.kill()
        if empty:
            for name in os.listdir(self.dir):
                if name.startswith("appendonly") or name.endswith(".rdb"):
                    path = os.path.join(self.dir, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        self.start()

    def cli(self, *args: str) -> str:
        """Run redis-cli against it; its output."""
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        return subprocess.run([cli, "-p", str(self.port), *args], capture_output=True,
                              text=True, timeout=10).stdout

    def dump(self, pattern: str) -> str:
        """Every key matching ``pattern`` and its value, as text."""
        script = ("local out = {} for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
                  "local t = redis.call('TYPE', k).ok local v "
                  "if t == 'hash' then v = redis.call('HGETALL', k) "
                  "elseif t == 'list' then v = redis.call('LRANGE', k, 0, -1) "
                  "elseif t == 'set' then v = redis.call('SMEMBERS', k) "
                  "else v = {redis.call('GET', k)} end "
                  "out[#out + 1] = k .. ' ' .. table.concat(v, ' ') end "
                  "return table.concat(out, '\\n')")
        return self.cli("--no-raw", "EVAL", script, "0", pattern)

    def stop(self) -> None:
        """Stop it and remove its directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


_shared: RedisServer | None = None


def shared() -> RedisServer:
    """One server for every test of this run that needs only isolation by key prefix."""
    global _shared
    if _shared is None or _shared.process is None or _shared.process.poll() is not None:
        _shared = RedisServer().start()
        import atexit
        atexit.register(_shared.stop)
    return _shared


_prefixes = iter(range(1, 1 << 30))


def prefix() -> str:
    """A key prefix no other test of this run uses."""
    return f"t{os.getpid()}.{next(_prefixes)}:"


def up(engine: Any, timeout: float = 10.0) -> Any:
    """Start ``engine`` and wait until it is in step with Redis (a Deferred)."""
    from twisted.internet import reactor
    engine.startService()
    return engine.whenUp().addTimeout(timeout, reactor)
