"""The client's requests (call, subscribe, unsubscribe, publish): those waiting for a
connection, those in flight by id, their timeouts and cancellation."""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ..errors import RemoteError
from ..log import logger
from . import errors
from .errors import ClientError

EVENT = "event"  # a client event waiting for a connection: sent as is, never answered

# ids given up on (timed out, cancelled, disconnected) whose late answer is ignored quietly
ABANDONED_KEPT = 1000


class Request:
    """One request: its encoded message but for the id (``prefix``), its Deferred, timer."""

    def __init__(self, kind: str, what: str, prefix: bytes) -> None:
        self.kind = kind  # "call", "subscribe", "unsubscribe", "publish" or "event"
        self.what = what  # for messages: "call 'echo'", "subscribe 'room.1'"
        self.prefix = prefix  # b'{"type":...,"id":' : the id and "}" complete it (an
        # event's is the whole message)
        self.id: int | None = None
        self.timer: IDelayedCall | None = None
        self.deferred: Deferred[Any] = Deferred(self._cancelled)
        self.owner: Requests | None = None

    def payload(self, request_id: int) -> bytes:
        """The message, with ``request_id``."""
        return b"%b%d}" % (self.prefix, request_id)

    def _cancelled(self, d: Deferred[Any]) -> None:
        if self.owner is not None:
            self.owner._forget(self, send_cancel=True)


class Requests:
    """Pending requests; ``send`` writes to the open connection (False: none is open)."""

    _log = logger()

    def __init__(self, clock: IReactorTime, send: Callable[[bytes], bool],
                 max_waiting: int) -> None:
        self._clock = clock
        self._send = send
        self._max_waiting = max_waiting
        self._ids = itertools.count(1)
        self.waiting: deque[Request] = deque()
        self.inflight: dict[int, Request] = {}
        self._abandoned: OrderedDict[int, None] = OrderedDict()

    def add(self, request: Request, timeout: float, open: bool, bounded: bool = True
            ) -> Deferred[Any]:
        """Send ``request`` now (``open``) or once connected; fail it after ``timeout`` s
        (0: never)."""
        d = request.deferred
        if not open and bounded and len(self.waiting) >= self._max_waiting:
            d.errback(ClientError(errors.TOO_MANY_CALLS, f"{request.what}: already "
                                  f"{self._max_waiting} requests wait for a connection"))
            return d
        request.owner = self
        if timeout > 0:
            request.timer = self._clock.callLater(timeout, self._timedOut, request, timeout)
        if open:
            self._sendNow(request)
        else:
            self.waiting.append(request)
        return d

    def flush(self) -> None:
        """Send every waiting request, in order (a connection has just opened)."""
        while self.waiting:
            request = self.waiting.popleft()
            if not self._sendNow(request):
                break

    def _sendNow(self, request: Request) -> bool:
        if request.kind == EVENT:  # fire and forget: no id, no answer
            if not self._send(request.prefix):
                self.waiting.appendleft(request)
                return False
            self._stop(request)
            request.deferred.callback(None)
            return True
        request_id = next(self._ids)
        if not self._send(request.payload(request_id)):
            self.waiting.appendleft(request)
            return False
        request.id = request_id
        self.inflight[request_id] = request
        return True

    def answer(self, request_id: Any, ok: bool, value: Any) -> bool:
        """Settle the request ``request_id`` with a ``result`` (ok) or an ``error`` body;
        False if no such request was ever in flight."""
        request = self.inflight.pop(request_id, None) if type(request_id) is int else None
        if request is None:
            if type(request_id) is int and request_id in self._abandoned:
                self._log.debug("wsservice client: late answer to request {id} ignored",
                                id=request_id)
                return True
            return False
        self._stop(request)
        if ok:
            request.deferred.callback(value)
        else:
            request.deferred.errback(remote_error(value))
        return True

    def disconnected(self) -> None:
        """The connection is gone: each request in flight fails ``disconnected``."""
        inflight, self.inflight = self.inflight, {}
        for request in inflight.values():
            self._abandon(request)
            self._stop(request)
            request.deferred.errback(ClientError(
                errors.DISCONNECTED, f"{request.what}: the connection was lost before "
                "the answer came"))

    def failAll(self, code: str, message: str) -> None:
        """Fail every request, waiting or in flight (the client is closed)."""
        everything = list(self.waiting) + list(self.inflight.values())
        self.waiting.clear()
        self.inflight = {}
        for request in everything:
            self._stop(request)
            request.deferred.errback(ClientError(code, f"{request.what}: {message}"))

    def _timedOut(self, request: Request, timeout: float) -> None:
        request.timer = None
        self._forget(request, send_cancel=True)
        request.deferred.errback(ClientError(
            errors.TIMEOUT, f"{request.what}: no answer within {timeout:g} s"))

    def _forget(self, request: Request, send_cancel: bool) -> None:
        """Take ``request`` out (timed out or cancelled); a call in flight is cancelled on
        the server too."""
        self._stop(request)
        if request in self.waiting:
            self.waiting.remove(request)
        elif request.id is not None and self.inflight.pop(request.id, None) is request:
            self._abandon(request)
            if send_cancel and request.kind == "call":
                self._send(b'{"type":"cancel","id":%d}' % request.id)

    def _abandon(self, request: Request) -> None:
        if request.id is None:
            return
        self._abandoned[request.id] = None
        while len(self._abandoned) > ABANDONED_KEPT:
            self._abandoned.popitem(last=False)

    def _stop(self, request: Request) -> None:
        request.owner = None
        timer, request.timer = request.timer, None
        if timer is not None and timer.active():
            timer.cancel()


def remote_error(body: Any) -> RemoteError:
    """The RemoteError an ``error`` member stands for (a malformed one: code ``internal``)."""
    if type(body) is not dict or type(body.get("code")) is not str:
        return RemoteError("internal", f"the server sent a malformed error: {body!r}")
    message = body.get("message")
    return RemoteError(body["code"], message if isinstance(message, str) else "",
                       body.get("data"))
