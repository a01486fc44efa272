"""``--workers N``: every core on one set of listening sockets.

A parent process binds every listener as one process would (``unix:`` sockets mode 0600, a
stale socket file cleaned up), never accepts on them, and runs N ``twistd wsservice``
worker processes that accept on the same sockets (Twisted's ``spawnProcess(childFDs=…)`` /
``adoptStreamPort`` pattern): the kernel spreads the connections among them. Every worker is
a node of the cluster on ``--redis``, so a session lives on in Redis when its worker dies,
and its client resumes on another worker.

A worker's file descriptors, as the parent (``Supervisor``) sets them up:

- 0: a pipe from the parent, which writes nothing. It closes when the parent asks the worker
  to stop or when the parent dies; either way the worker drains as on SIGTERM and exits
  (``WorkerLink``), so no worker outlives its parent.
- 1, 2: the parent's stdout and stderr (or pipes the parent re-logs, when it logs to a file).
- 3: a pipe to the parent: the worker writes ``ready`` once it listens and is in step with
  Redis.
- 4, 5, …: the listening sockets, ``--listen`` ones then ``--listen-ndjson`` ones, in order
  (the internal option ``--adopt-fds 4,5,…`` names them; ``InheritedEndpoint`` adopts one).

Worker I's node id is ``NODE-wI`` (NODE: ``--node-id``, or random). A worker that ends while
the parent runs is replaced under a new node id (``NODE-wI-2``, ``-3``…): under the dead
one's id the newcomer's heartbeat would keep the other nodes from adopting the sessions the
dead process held. A replacement starts 0.5 s after the end, the delay doubling up to 10 s
while workers of that slot keep dying young (back to 0.5 s once one lived 30 s).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from typing import Any, Callable, Sequence

from twisted.application.service import MultiService, Service
from twisted.internet import fdesc, tcp, unix
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone, ProcessExitedAlready, ReactorNotRunning
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IReadDescriptor,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import LogLevel
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from . import summary
from .listener import ListenerService
from .log import logger

__all__ = ["InheritedEndpoint", "MAX_WORKERS", "Supervisor", "WorkerFailed", "WorkerLink",
           "WorkersService", "nodeName"]

MAX_WORKERS = 256
# the longest --node-id --workers takes: room for "-w256-" and a restart count of 10 digits
MAX_NODE_BASE = 48
CONTROL_FD = 0
READY_FD = 3
FIRST_LISTENER_FD = 4
READY = b"ready\n"
# how long past drain_timeout a stopping worker may take to exit (its Redis goodbye, the
# interpreter's exit) before it is killed
STOP_MARGIN = 15.0
FIRST_DELAY = 0.5
MAX_DELAY = 10.0
STEADY = 30.0  # a worker that lived this long resets its slot's restart delay


def nodeName(base: str, index: int, incarnation: int = 1) -> str:
    """The node id of worker ``index``'s ``incarnation``-th process: NODE-wI, NODE-wI-2…"""
    return f"{base}-w{index}" if incarnation == 1 else f"{base}-w{index}-{incarnation}"


def exitText(reason: Failure) -> str:
    """How a process ended, in words: ``exited with status 1``, ``killed by signal 9 (SIGKILL)``."""
    value = reason.value
    number = getattr(value, "signal", None)
    if number is not None:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "?"
        return f"killed by signal {number} ({name})"
    return f"exited with status {getattr(value, 'exitCode', None)}"


class WorkerFailed(Exception):
    """A worker ended before it ever served, while the workers first started."""


# -- the parent -------------------------------------------------------------------------------


class Worker:
    """One worker slot of the parent: its number, and its process of the moment."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.incarnation = 0
        self.node = ""
        self.pid: int | None = None
        self.process: Any = None  # the IProcessTransport while it runs
        self.started = 0.0
        self.ready = False
        self.delay = FIRST_DELAY  # before the next replacement
        self.restart: IDelayedCall | None = None


# a worker's log line's level, in text (``[namespace#error]``) or JSON (``"level": "error"``)
_LEVEL = re.compile(rb'#(debug|info|warn|error|critical)\]|"level": ?"(debug|info|warn|error|'
                    rb'critical)"')


class _WorkerProcess(ProcessProtocol):
    """The parent's end of one worker process."""

    _log = logger()

    def __init__(self, supervisor: Supervisor, worker: Worker) -> None:
        self.supervisor = supervisor
        self.worker = worker
        self._ready = b""
        self._lines = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """``ready`` on fd 3; log lines on fds 1 and 2 (when they are pipes)."""
        if childFD == READY_FD:
            if not self.worker.ready:
                self._ready += data
                if READY in self._ready:
                    self.supervisor.ready(self.worker)
        elif childFD in self._lines:
            *lines, self._lines[childFD] = (self._lines[childFD] + data).split(b"\n")
            for line in lines:
                self._relog(line)

    def childConnectionLost(self, childFD: int) -> None:
        """A log pipe's last line, if it did not end with a newline."""
        if self._lines.get(childFD):
            self._relog(self._lines[childFD])
            self._lines[childFD] = b""

    def _relog(self, line: bytes) -> None:
        # the parent logs to a file (or syslog): a worker's lines go there, marked [wI]
        if not line.strip():
            return
        found = _LEVEL.search(line)
        level = (found.group(1) or found.group(2)).decode() if found else "info"
        self._log.emit(LogLevel.levelWithName(level), "[w{index}] {line}",
                       index=self.worker.index, line=line.decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:
        """Tell the supervisor."""
        self.supervisor.ended(self.worker, reason)


class Supervisor(Service):
    """Runs N worker processes: starts them, replaces one that ends, stops them all.

    ``command(node, fds)`` is the command line of a worker with node id ``node`` adopting
    the listening sockets at ``fds`` (its own descriptor numbers); ``sockets()`` the
    parent's descriptors of those sockets, once they listen. ``whenReady`` fires once every
    worker served (the first time), or fails with WorkerFailed if one ended before it did.
    """

    _log = logger()

    def __init__(self, count: int, base: str, command: Callable[[str, list[int]], list[str]],
                 sockets: Callable[[], Sequence[int]], reactor: Any = None,
                 env: dict[str, str] | None = None, cwd: str | None = None,
                 drain_timeout: float = 10.0, relog: bool = False) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.workers = [Worker(index) for index in range(1, count + 1)]
        self.base = base
        self._command = command
        self._sockets = sockets
        self._reactor = reactor
        self._env = dict(os.environ if env is None else env)
        for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):  # systemd's: not theirs
            self._env.pop(name, None)
        self._cwd = cwd
        self.stop_timeout = drain_timeout + STOP_MARGIN
        self._relog = relog
        self._fds: list[int] = []
        self.whenReady: Deferred[None] = Deferred()
        self._stopped: Deferred[None] | None = None
        self._kill: IDelayedCall | None = None

    def startService(self) -> None:
        """Start every worker."""
        super().startService()
        self._fds = list(self._sockets())
        for worker in self.workers:
            self._spawn(worker)

    def _spawn(self, worker: Worker) -> None:
        worker.restart = None
        worker.incarnation += 1
        worker.node = nodeName(self.base, worker.index, worker.incarnation)
        worker.ready = False
        fds = list(range(FIRST_LISTENER_FD, FIRST_LISTENER_FD + len(self._fds)))
        child_fds: dict[int, Any] = {CONTROL_FD: "w", READY_FD: "r",
                                     1: "r" if self._relog else 1,
                                     2: "r" if self._relog else 2}
        child_fds.update(zip(fds, self._fds))
        argv = self._command(worker.node, fds)
        worker.started = self._reactor.seconds()
        try:
            worker.process = self._reactor.spawnProcess(
                _WorkerProcess(self, worker), argv[0], argv, env=self._env, path=self._cwd,
                childFDs=child_fds)
        except OSError as e:  # out of processes or memory: like a worker that died at once
            self._died(worker, f"could not be started ({e.strerror or e})")
            return
        worker.pid = worker.process.pid
        self._log.info("worker {index} started (pid {pid}, node {node})", index=worker.index,
                       pid=worker.pid, node=worker.node)

    def ready(self, worker: Worker) -> None:
        """Worker ``worker`` listens and is in step with Redis."""
        worker.ready = True
        self._log.info("worker {index} serves (pid {pid}, node {node})", index=worker.index,
                       pid=worker.pid, node=worker.node)
        if not self.whenReady.called and all(w.ready for w in self.workers):
            self.whenReady.callback(None)

    def ended(self, worker: Worker, reason: Failure) -> None:
        """Worker ``worker``'s process ended: expected while stopping, else replaced."""
        worker.process = None
        worker.ready = False
        status = exitText(reason)
        if not self.running:
            self._log.info("worker {index} (pid {pid}, node {node}) stopped: {status}",
                           index=worker.index, pid=worker.pid, node=worker.node,
                           status=status)
            self._checkStopped()
            return
        self._died(worker, status)

    def _died(self, worker: Worker, status: str) -> None:
        lived = self._reactor.seconds() - worker.started
        if not self.whenReady.called:
            # a worker that cannot start at all (a mistake its lines above show) would
            # only fail again: stop rather than restart it forever
            self._log.critical("worker {index} (node {node}) {status} before it served; "
                               "stopping (its lines above say why)", index=worker.index,
                               node=worker.node, status=status)
            self.whenReady.errback(WorkerFailed(f"worker {worker.index} {status} before it "
                                                "served"))
            return
        if lived >= STEADY:
            worker.delay = FIRST_DELAY
        delay, worker.delay = worker.delay, min(worker.delay * 2, MAX_DELAY)
        self._log.error("worker {index} (pid {pid}, node {node}) {status} after {lived:.1f} s; "
                        "a new one starts in {delay:g} s", index=worker.index, pid=worker.pid,
                        node=worker.node, status=status, lived=lived, delay=delay)
        worker.restart = self._reactor.callLater(delay, self._spawn, worker)

    def stopService(self) -> Deferred[None]:
        """Close every worker's pipe (each drains and exits), wait for them (at most the
        drain timeout and STOP_MARGIN, then SIGKILL)."""
        super().stopService()
        for worker in self.workers:
            if worker.restart is not None and worker.restart.active():
                worker.restart.cancel()
            worker.restart = None
        live = [worker for worker in self.workers if worker.process is not None]
        if not live:
            return succeed(None)
        self._log.info("stopping {count} workers (each drains first; at most {timeout:g} s)",
                       count=len(live), timeout=self.stop_timeout)
        self._stopped = Deferred()
        for worker in live:
            try:
                worker.process.closeStdin()
            except Exception:  # already gone: its processEnded is on its way
                pass
        self._kill = self._reactor.callLater(self.stop_timeout, self._killAll)
        return self._stopped

    def _killAll(self) -> None:
        self._kill = None
        for worker in self.workers:
            if worker.process is not None:
                self._log.warn("worker {index} (pid {pid}) did not stop in {timeout:g} s: "
                               "killing it", index=worker.index, pid=worker.pid,
                               timeout=self.stop_timeout)
                try:
                    worker.process.signalProcess("KILL")
                except ProcessExitedAlready:
                    pass

    def _checkStopped(self) -> None:
        if self._stopped is None or any(w.process is not None for w in self.workers):
            return
        if self._kill is not None and self._kill.active():
            self._kill.cancel()
        self._kill = None
        stopped, self._stopped = self._stopped, None
        stopped.callback(None)


class _Refuse(Factory):
    """The parent's factory: it never accepts (its ports stop reading at once)."""

    noisy = False

    def logPrefix(self) -> str:
        """What Twisted's port logs call it."""
        return "WorkersParent"

    def buildProtocol(self, addr: Any) -> None:
        """No protocol: a connection that reached the parent is closed."""
        return None


def parentListener(description: str, path: str = "/ws", page: bool = False,
                   ndjson: bool = False, reactor: Any = None) -> ListenerService:
    """The parent's listener on ``description``: it binds as the single process would and
    names itself alike in the start-up summary, but accepts nothing (the workers do)."""
    listener: ListenerService
    if ndjson:
        from .ndjson import NDJSONListener
        listener = NDJSONListener(description, _Refuse(), reactor)
    else:
        listener = ListenerService(description, _Refuse(), reactor, path, page)

    def quiet(port: IListeningPort) -> IListeningPort:
        # bound and listening: connections queue in the kernel for the workers to accept
        port.stopReading()  # type: ignore[attr-defined]
        return port
    listener.whenListening.addCallback(quiet)
    return listener


class WorkersService(MultiService):
    """The ``--workers`` parent: its listeners (bound, never accepting) and the Supervisor.

    Once every worker serves it logs the start-up summary; stopping stops the workers first
    (they drain) and closes the sockets after (a unix socket file is removed then).
    """

    _log = logger()

    def __init__(self, listeners: list[ListenerService], supervisor: Supervisor,
                 redis: str) -> None:
        super().__init__()
        self.listeners = listeners
        for listener in listeners:
            listener.setServiceParent(self)
        self.supervisor = supervisor
        supervisor.setServiceParent(self)
        self.redis = redis  # as logs show it: no password
        supervisor.whenReady.addCallbacks(self._serving, self._failure)

    def _serving(self, _: Any) -> None:
        summary.announceWorkers(self.listeners, [w.node for w in self.supervisor.workers],
                                self.redis)

    def _failure(self, failure: Failure) -> None:
        """A worker ended before it ever served (the supervisor said so): the command
        line's parent stops (tap.py); here, the other workers go on."""

    def stopService(self) -> Deferred[None]:
        """Stop the workers (they drain), then close the listening sockets."""
        Service.stopService(self)  # not MultiService's: it would close the sockets first

        def close(_: Any) -> Deferred[Any]:
            return DeferredList([maybeDeferred(listener.stopService)
                                 for listener in self.listeners if listener.running],
                                consumeErrors=True)
        d: Deferred[Any] = maybeDeferred(self.supervisor.stopService) \
            if self.supervisor.running else succeed(None)
        return d.addBoth(close).addCallback(lambda _: None)


# -- a worker ---------------------------------------------------------------------------------


def _family(fd: int) -> int:
    with socket.socket(fileno=os.dup(fd)) as s:
        return int(s.family)


class _InheritedUNIXPort(unix.Port):
    """A unix socket adopted from the parent: it keeps its file's mode and leaves the file
    to the parent.

    ``reactor.adoptStreamPort`` would make a Twisted unix port that chmods the socket file
    to 0666 when it starts (the parent made it 0600) and removes the file when it stops
    (while the parent and the other workers still serve on it).
    """

    def connectionLost(self, reason: Failure) -> None:
        """Close the socket, not unix.Port's way: the file stays (the parent removes it)."""
        tcp.Port.connectionLost(self, reason)


def _adoptUNIX(reactor: Any, fd: int, factory: IProtocolFactory) -> IListeningPort:
    with socket.socket(fileno=os.dup(fd)) as s:
        name = s.getsockname()
    port = _InheritedUNIXPort._fromListeningDescriptor(reactor, fd, factory)
    if isinstance(name, str) and name:  # a file, not Linux's abstract namespace
        port.mode = os.stat(name).st_mode & 0o7777  # its chmod at start changes nothing
    port.startListening()
    return port


class _TLSAdopter:
    """What an ``ssl:`` endpoint is given for a reactor in a worker: its ``listenSSL``
    adopts the inherited socket behind TLS, as the reactor's ``listenSSL`` would wrap a
    socket it bound (so every TLS option of the endpoint string applies)."""

    def __init__(self, reactor: Any, fd: int, family: int) -> None:
        self._reactor = reactor
        self._fd = fd
        self._family = family

    def listenSSL(self, port: int, factory: Factory, contextFactory: Any, backlog: int = 50,
                  interface: str = "") -> IListeningPort:
        """Adopt the socket, with ``contextFactory``'s TLS in front of ``factory``."""
        listening: IListeningPort = self._reactor.adoptStreamPort(
            self._fd, self._family, TLSMemoryBIOFactory(contextFactory, False, factory))
        return listening


@implementer(IStreamServerEndpoint)
class InheritedEndpoint:
    """A listening socket a worker inherited from its ``--workers`` parent as descriptor
    ``fd``, for the listener on ``description``: listening adopts it (once)."""

    def __init__(self, reactor: Any, description: str, fd: int) -> None:
        self.reactor = reactor
        self.description = description
        self.fd = fd

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Adopt the socket and serve ``protocolFactory`` on it."""
        return maybeDeferred(self._adopt, protocolFactory)

    def _adopt(self, factory: IProtocolFactory) -> Any:
        fd = self.fd
        fdesc.setNonBlocking(fd)
        family = _family(fd)
        if self.description.split(":", 1)[0] == "ssl":
            # the endpoint string gives the TLS context, as in a single process
            listening = serverFromString(_TLSAdopter(self.reactor, fd, family),
                                         self.description).listen(factory)
            return listening.addBoth(self._closed)
        if family == socket.AF_UNIX:
            port = _adoptUNIX(self.reactor, fd, factory)
        else:
            port = self.reactor.adoptStreamPort(fd, family, factory)
        return self._closed(port)

    def _closed(self, result: Any) -> Any:
        # the port holds its own copy of the socket
        try:
            os.close(self.fd)
        except OSError:
            pass
        return result


@implementer(IReadDescriptor)
class _ParentPipe:
    """The read end of the parent's pipe: its end (EOF) calls ``gone``."""

    def __init__(self, fd: int, gone: Callable[[], None]) -> None:
        self._fd = fd
        self._gone = gone

    def fileno(self) -> int:
        """The pipe's descriptor."""
        return self._fd

    def doRead(self) -> Any:
        """Read (the parent writes nothing); its end is ConnectionDone."""
        try:
            data = os.read(self._fd, 512)
        except BlockingIOError:
            return None
        except OSError as e:
            return ConnectionDone(str(e))
        return None if data else ConnectionDone()

    def connectionLost(self, reason: Failure) -> None:
        """The parent closed the pipe, or died."""
        self._gone()

    def logPrefix(self) -> str:
        """For Twisted's logs."""
        return "WorkersParentPipe"


class WorkerLink(Service):
    """A worker's link to its ``--workers`` parent: stops the worker when the parent's
    pipe (descriptor 0) closes, and writes ``ready`` to descriptor 3 once ``serving()``'s
    Deferred fires (its listeners listen and it is in step with Redis).

    A worker is often told to stop twice: by its parent's pipe and by a signal to the whole
    process group (Ctrl-C in a terminal, systemd stopping the unit, ``timeout``). The
    first one stops it; the others are ignored (twistd would stop a stopping reactor, which
    fails with a traceback).
    """

    _log = logger()

    def __init__(self, serving: Callable[[], Deferred[Any]], reactor: Any = None,
                 control_fd: int = CONTROL_FD, ready_fd: int = READY_FD) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self._serving = serving
        self._reactor = reactor
        self._ready_fd = ready_fd
        self._pipe = _ParentPipe(control_fd, self._parentGone)
        self.stopping = False  # asked to stop, by the pipe or a signal

    def startService(self) -> None:
        """Watch the parent's pipe and the stop signals; say ``ready`` once serving."""
        super().startService()
        fdesc.setNonBlocking(self._pipe.fileno())
        self._reactor.addReader(self._pipe)
        self._reactor.addSystemEventTrigger("before", "shutdown", self._stopping)
        # the reactor installs its signal handlers as it starts running
        self._reactor.callWhenRunning(self._guardSignals)
        self._serving().addCallbacks(self._ready, lambda failure: None)

    def _ready(self, _: Any) -> None:
        try:
            os.write(self._ready_fd, READY)
            os.close(self._ready_fd)
        except OSError:  # no parent listening there: nothing to tell
            pass

    def _stopping(self) -> None:
        self.stopping = True

    def _guardSignals(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(number)
            if callable(handler):
                signal.signal(number, self._once(handler))

    def _once(self, handler: Callable[[int, Any], Any]) -> Callable[[int, Any], None]:
        def handle(number: int, frame: Any) -> None:
            if not self.stopping:
                self.stopping = True
                handler(number, frame)
        return handle

    def _parentGone(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self._log.info("the --workers parent closed this worker's pipe (it stops the workers, "
                       "or it ended): stopping")
        try:
            self._reactor.stop()
        except ReactorNotRunning:  # already stopping
            pass

    def stopService(self) -> None:
        """Stop watching the pipe."""
        super().stopService()
        self._reactor.removeReader(self._pipe)


def flushedExit(status: int) -> None:
    """Exit the process now with ``status``, its output flushed (twistd's own exit status
    cannot be chosen from inside the reactor)."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
    os._exit(status)
