"""Session: one client's state and the API handlers use to talk back to it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from zope.interface import implementer

from . import errors, wire
from .errors import ApplicationError, RemoteError, SessionClosed
from .interfaces import ISession

if TYPE_CHECKING:
    from .service import SessionService


class Link(Protocol):
    """What a session needs of its connection: send a text frame, close with a code."""

    def sendText(self, payload: bytes) -> None:
        """Send one text message."""

    def closeWith(self, code: int, reason: str) -> None:
        """Close the connection with a WebSocket close code."""


@implementer(ISession)
class Session:
    """One client session: identity, seq counter, calls in flight both ways, attached link."""

    def __init__(self, service: SessionService, id: str, token: str, label: str,
                 principal: Any, meta: dict, link: Link | None) -> None:
        self.id = id
        self.token = token
        self.label = label
        self.principal = principal
        self.meta = meta
        self.seq = 0
        self.closed = False
        self.link = link
        self.bad_messages = 0
        # client call id -> Deferred of its handler
        self.inflight: dict[wire.CallId, Deferred] = {}
        self._service = service
        self._server_calls: dict[int, tuple[Deferred, IDelayedCall]] = {}
        self._next_call_id = 0
        self._out = service.metrics.messages_out

    def __repr__(self) -> str:
        return f"<Session {self.label}>"

    # -- handler API --------------------------------------------------------------------------

    def push(self, event: str, data: Any = None) -> int:
        """Push event ``event`` with ``data`` to the client; return its ``seq``."""
        if self.closed:
            raise SessionClosed(f"{self.label} has ended")
        frame = wire.encode_event(event, data, self.seq + 1)  # raises before seq moves on
        self.seq += 1
        self._send(frame, "event")
        return self.seq

    def call(self, method: str, params: Any = None, timeout: float | None = None) -> Deferred:
        """Call ``method`` on the client; the Deferred fires with its result (see ISession)."""
        if self.closed:
            raise SessionClosed(f"{self.label} has ended")
        self._next_call_id += 1
        call_id = self._next_call_id
        frame = wire.encode_call(call_id, method, params, self.seq + 1)
        self.seq += 1

        def forget(d: Deferred) -> None:
            # cancelled by the caller: stop waiting for the client's answer
            pending = self._server_calls.pop(call_id, None)
            if pending is not None and pending[1].active():
                pending[1].cancel()

        d: Deferred = Deferred(forget)
        wait = self._service.settings.call_timeout if timeout is None else timeout
        timer = self._service.clock.callLater(wait, self._server_call_timed_out, call_id, method)
        self._server_calls[call_id] = (d, timer)
        self._send(frame, "call")
        return d

    def close(self, code: int = errors.CLOSE_NORMAL, reason: str = "") -> None:
        """End the session and close its connection with ``code`` and ``reason``."""
        self._service.end(self, "closed", code, reason)

    # -- used by the service --------------------------------------------------------------------

    def _send(self, frame: bytes, kind: str) -> None:
        self._out[kind] += 1
        link = self.link
        if link is not None:
            link.sendText(frame)

    def reply(self, call_id: wire.CallId, result: Any) -> None:
        """Answer the client's request ``call_id`` with ``result``."""
        try:
            frame = wire.encode_result(call_id, result)
        except TypeError as e:
            self._service._log.error(
                "{session}: result of call {id!r} is not JSON-serializable: {err}",
                session=self.label, id=call_id, err=e)
            self.error(errors.INTERNAL, "internal error", None, call_id)
            return
        self._send(frame, "result")

    def error(self, code: str, message: str, data: Any = None,
              call_id: wire.CallId | None = None) -> None:
        """Send an ``error`` (answering request ``call_id`` when given)."""
        self._service.metrics.errors[code] += 1
        try:
            frame = wire.encode_error(code, message, data, call_id)
        except TypeError:
            frame = wire.encode_error(code, message, None, call_id)
        self._send(frame, "error")

    def fail(self, call_id: wire.CallId | None, failure: Failure, what: str) -> None:
        """Answer request ``call_id`` with the error a handler failure stands for."""
        exc = failure.value
        if isinstance(exc, ApplicationError):
            self.error(exc.code, exc.message, exc.data, call_id)
        else:
            self._service._log.failure("{session}: {what} failed", failure,
                                       session=self.label, what=what)
            self.error(errors.INTERNAL, "internal error", None, call_id)

    def answer(self, call_id: wire.CallId, ok: bool, value: Any) -> bool:
        """The client answered server call ``call_id``; False if no such call is in flight."""
        pending = self._server_calls.pop(call_id, None) if type(call_id) is int else None
        if pending is None:
            return False
        d, timer = pending
        timer.cancel()
        if ok:
            d.callback(value)
        else:
            d.errback(RemoteError(*value))
        return True

    def _server_call_timed_out(self, call_id: int, method: str) -> None:
        pending = self._server_calls.pop(call_id, None)
        if pending is not None:
            pending[0].errback(ApplicationError(
                errors.TIMEOUT, f"the client did not answer {method!r} in time"))

    def ended(self) -> None:
        """Mark the session over: cancel client calls, fail server calls, drop the link."""
        self.closed = True
        self.link = None
        calls = list(self.inflight.values())
        self.inflight.clear()
        for d in calls:
            d.cancel()
        pending, self._server_calls = self._server_calls, {}
        for d, timer in pending.values():
            timer.cancel()
            d.errback(SessionClosed(f"{self.label} ended before the client answered"))
