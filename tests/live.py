"""The real service on a real socket, in this process, for end-to-end tests; its clients,
and the waiting helpers the tests share (``until``, ``sleep``, ``caught_up``)."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.trial.unittest import FailTest

from wsservice import Settings, SessionService, WSService, makeService
from wsservice.demo import DemoApp

from .wsclient import TIMEOUT, Client, connect, socket_path

LOOPBACK = "tcp:0:interface=127.0.0.1"


def sleep(seconds: float) -> Deferred:
    """A Deferred that fires after ``seconds`` of real time (0: on the next reactor turn)."""
    return deferLater(reactor, seconds, lambda: None)


async def until(condition: Callable[[], Any], what: str | Callable[[], str],
                timeout: float = TIMEOUT, interval: float = 0.02) -> Any:
    """Poll ``condition`` (a function, or one returning an awaitable) every ``interval``
    seconds until it gives a true value, and return that value; fail the test, naming
    ``what`` was awaited (a function: what it returns then), after ``timeout`` seconds."""
    deadline = reactor.seconds() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if reactor.seconds() >= deadline:
            awaited = what() if callable(what) else what
            raise FailTest(f"timed out after {timeout:g} s waiting for {awaited}")
        await sleep(interval)


async def caught_up(client: Client) -> None:
    """Fail unless nothing is waiting for ``client``: a ping's pong must be the next message.

    The server answers one connection's messages in order, so whatever it had sent before
    it read the ping (a reply, a push, an error fired by a timer) would arrive first.
    """
    marker = {"caught_up": id(client)}
    client.send({"type": "ping", "data": marker})
    got = await client.next()
    if got != {"type": "pong", "data": marker}:
        raise FailTest(f"expected nothing before the pong, got {got}")


class Clients:
    """The WebSocket clients a test opened; on cleanup each one still open is dropped (its
    transport resumed first, should the test have paused it) and its end awaited."""

    def __init__(self, testcase: Any) -> None:
        self.open: list[Client] = []
        testcase.addCleanup(lambda: Deferred.fromCoroutine(self.drop_all()))

    def add(self, client: Client) -> Client:
        self.open.append(client)
        return client

    async def drop_all(self) -> None:
        clients, self.open = self.open, []
        for client in clients:
            if not client.closed.called:
                transport: Any = client.transport  # a TCP or unix transport: a producer
                transport.resumeProducing()
                client.dropConnection(abort=True)
        for client in clients:
            await client.closed.addTimeout(TIMEOUT, reactor)


class LiveServer:
    """The demo app under the real service, listening on loopback TCP (or a unix socket,
    or ``listen``); stopped on cleanup, after its clients are dropped, and its sessions
    ended (resumable ones would otherwise wait out their TTL).

    With a ``clock`` (a twisted.internet.task.Clock) the service's and the demo's time is
    that clock: hello, call and server-call timeouts, the demo's sleep, the rate limit, the
    drain and resume timers. Sockets, WebSocket framing and heartbeats stay on the reactor.
    """

    def __init__(self, testcase: Any, settings: Settings | None = None, unix: bool = False,
                 listen: str | None = None, clock: IReactorTime | None = None,
                 authenticator: Any = None) -> None:
        self.testcase = testcase
        self.settings = settings or Settings()
        self.authenticator = authenticator
        self.clock = clock
        self.path = socket_path(testcase) if unix else None
        if listen is None:
            listen = f"unix:{self.path}" if self.path else LOOPBACK
        self.listen = listen
        self.clients = Clients(testcase)
        self.address = ""

    async def start(self) -> LiveServer:
        if self.clock is None:
            self.service = makeService([DemoApp()], [self.listen], self.settings,
                                       authenticator=self.authenticator)
        else:
            sessions = SessionService([DemoApp(self.clock)], self.settings, self.authenticator,
                                      clock=self.clock)
            self.service = WSService(sessions)
            self.service.listen(self.listen)
        self.sessions = self.service.sessions
        self.service.startService()
        # runs before the cleanups registered earlier (the socket directory's)
        self.testcase.addCleanup(lambda: Deferred.fromCoroutine(self.stop()))
        port: Any = await self.service.listeners[0].whenListening
        self.address = f"unix:{self.path}" if self.path else f"127.0.0.1:{port.getHost().port}"
        return self

    async def stop(self) -> None:
        await self.clients.drop_all()
        if self.service.running:
            await self.service.stopService()
        self.sessions.endAll()

    async def client(self, **kwargs: Any) -> Client:
        """A WebSocket client connected to the server (handshake done), dropped on cleanup."""
        return self.clients.add(await connect(self.address, **kwargs))

    async def session(self, **hello: Any) -> tuple[Client, dict[str, Any]]:
        """A client that said hello: (client, its welcome)."""
        client = await self.client()
        return client, await client.hello(**hello)


async def serve(testcase: Any, settings: Settings | None = None, unix: bool = False,
                listen: str | None = None, clock: IReactorTime | None = None,
                authenticator: Any = None) -> LiveServer:
    """Start a LiveServer for ``testcase`` (with ``authenticator``, default everyone
    anonymous) and wait until it listens."""
    return await LiveServer(testcase, settings, unix, listen, clock, authenticator).start()
