"""Session: one client's state and the API handlers use to talk back to it."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from .log import logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import errors, wire
from .errors import ApplicationError, RemoteError, SessionClosed
from .interfaces import ISession

if TYPE_CHECKING:
    from .service import SessionService


class Link(Protocol):
    """What a session needs of its connection: send a text message, close, abort."""

    def sendText(self, payload: bytes) -> None:
        """Send one text message."""

    def closeWith(self, code: int, reason: str) -> None:
        """Close the connection with a WebSocket close code."""

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake."""


@implementer(ISession)
class Session:
    """One client session: identity, seq and replay buffer, calls in flight both ways,
    subscriptions, rate-limit bucket, and the attached link (None while resumable)."""

    _log = logger()

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
        self.subscriptions: set[str] = set()
        # pushed frames kept for resume: (seq, frame), oldest first, and their total size
        self.replay: deque[tuple[int, bytes]] = deque()
        self.replay_size = 0
        # token bucket: tokens left and when it was last filled
        self.tokens = float(service.settings.burst)
        self.filled = service.clock.seconds()
        # expiry of a detached, resumable session
        self.expiry: IDelayedCall | None = None
        self._service = service
        self._server_calls: dict[int, tuple[Deferred, IDelayedCall]] = {}
        self._next_call_id = 0
        self._out = service.metrics.messages_out
        settings = service.settings
        self._keep = settings.resume_ttl > 0
        self._replay_limit = settings.replay_limit
        self._replay_bytes = settings.replay_bytes

    def __repr__(self) -> str:
        return f"<Session {self.label}>"

    @property
    def attached(self) -> bool:
        """True while a connection is attached (False while resumable or once ended)."""
        return self.link is not None

    # -- handler API --------------------------------------------------------------------------

    def push(self, event: str, data: Any = None) -> int:
        """Push event ``event`` with ``data`` to the client; return its ``seq``."""
        if self.closed:
            raise SessionClosed(f"{self.label} has ended")
        return self.deliver(wire.event_prefix(event, data), "event")

    def call(self, method: str, params: Any = None, timeout: float | None = None) -> Deferred:
        """Call ``method`` on the client; the Deferred fires with its result (see ISession)."""
        if self.closed:
            raise SessionClosed(f"{self.label} has ended")
        call_id = self._next_call_id + 1
        prefix = wire.call_prefix(call_id, method, params)  # raises before anything changes
        self._next_call_id = call_id

        def forget(d: Deferred) -> None:
            # cancelled by the caller: stop waiting for the client's answer
            pending = self._server_calls.pop(call_id, None)
            if pending is not None and pending[1].active():
                pending[1].cancel()

        d: Deferred = Deferred(forget)
        wait = self._service.settings.call_timeout if timeout is None else timeout
        timer = self._service.clock.callLater(wait, self._server_call_timed_out, call_id, method)
        self._server_calls[call_id] = (d, timer)
        self.deliver(prefix, "call")
        return d

    def subscribe(self, topic: str) -> None:
        """Subscribe this session to ``topic`` (no authorization or limit: the server decides)."""
        self._service.subscribe(self, topic)

    def unsubscribe(self, topic: str) -> None:
        """Unsubscribe this session from ``topic``."""
        self._service.unsubscribe(self, topic)

    def publish(self, topic: str, data: Any = None) -> int:
        """Publish ``data`` on ``topic`` to every subscriber; return how many got it."""
        return self._service.publish(topic, data)

    def close(self, code: int = errors.CLOSE_NORMAL, reason: str = "") -> None:
        """End the session for good and close its connection with ``code`` and ``reason``."""
        if not (code in errors.SERVER_CLOSE_CODES or 3000 <= code <= 4999):
            raise ValueError(f"{code} is not a close code a server may send")
        self._service.end(self, "closed", code, reason)

    # -- used by the service --------------------------------------------------------------------

    def deliver(self, prefix: bytes, kind: str) -> int:
        """Stamp a pushed message with the next seq, keep it for replay, send it if attached."""
        seq = self.seq = self.seq + 1
        frame = b"%b%d}" % (prefix, seq)
        if self._keep:
            replay = self.replay
            replay.append((seq, frame))
            self.replay_size += len(frame)
            while len(replay) > self._replay_limit or self.replay_size > self._replay_bytes:
                self.replay_size -= len(replay.popleft()[1])
        self._out[kind] += 1
        link = self.link
        if link is not None:
            link.sendText(frame)
        return seq

    def ack(self, seq: int) -> None:
        """The client holds every message up to ``seq``: forget them."""
        replay = self.replay
        while replay and replay[0][0] <= seq:
            self.replay_size -= len(replay.popleft()[1])

    def can_replay(self, last_seq: int) -> bool:
        """Whether every message after ``last_seq`` can still be sent again."""
        if last_seq > self.seq:
            return False
        if last_seq == self.seq:
            return True
        return bool(self.replay) and self.replay[0][0] <= last_seq + 1

    def replay_after(self, last_seq: int) -> None:
        """Send again, in order, every kept message after ``last_seq``."""
        self.ack(last_seq)
        link = self.link
        if link is not None:
            for _, frame in self.replay:
                link.sendText(frame)

    def send(self, frame: bytes, kind: str) -> None:
        """Send an un-numbered message (reply, error, pong, welcome) if attached."""
        link = self.link
        if link is not None:
            self._out[kind] += 1
            link.sendText(frame)

    def reply(self, call_id: wire.CallId, result: Any) -> None:
        """Answer the client's request ``call_id`` with ``result``."""
        try:
            frame = wire.encode_result(call_id, result)
        except TypeError as e:
            self._log.error(
                "{session}: result of call {id!r} is not JSON-serializable: {err}",
                session=self.label, id=call_id, err=e)
            self.error(errors.INTERNAL, "internal error", None, call_id)
            return
        self.send(frame, "result")

    def error(self, code: str, message: str, data: Any = None,
              call_id: wire.CallId | None = None) -> None:
        """Send an ``error`` (answering request ``call_id`` when given)."""
        # Codes are metric labels: an application's own codes (which may come from a client,
        # relayed by a handler) share one label so clients cannot grow the label set.
        self._service.metrics.errors[code if code in errors.CODES else "application"] += 1
        try:
            frame = wire.encode_error(code, message, data, call_id)
        except TypeError:
            frame = wire.encode_error(code, message, None, call_id)
        self.send(frame, "error")

    def fail(self, call_id: wire.CallId | None, failure: Failure, what: str) -> None:
        """Answer request ``call_id`` with the error a handler failure stands for."""
        exc = failure.value
        if isinstance(exc, ApplicationError):
            self.error(exc.code, exc.message, exc.data, call_id)
        else:
            self._log.failure("{session}: {what} failed", failure,
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
        """Mark the session over: cancel client calls, fail server calls, drop state."""
        self.closed = True
        self.link = None
        if self.expiry is not None and self.expiry.active():
            self.expiry.cancel()
        self.expiry = None
        self.replay.clear()
        self.replay_size = 0
        calls = list(self.inflight.values())
        self.inflight.clear()
        for d in calls:
            d.cancel()
        pending, self._server_calls = self._server_calls, {}
        for d, timer in pending.values():
            timer.cancel()
            d.errback(SessionClosed(f"{self.label} ended before the client answered"))
