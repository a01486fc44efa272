"""Session: one client's live state on the node that owns it, and the API handlers use."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from . import errors, logflood, wire
from .closecodes import check_code
from .config import Settings
from .errors import ApplicationError, RemoteError, SessionClosed
from .interfaces import IBroker, IDeliverable, ISession, ISessionRecord
from .log import logger
from .logflood import LogFlood
from .metrics import Metrics
from .reasons import Close
from .store import member_of


class Link(Protocol):
    """What a session needs of its connection: send a text message, close, abort.

    A link may also have a ``heartbeat`` attribute: the seconds its ``welcome`` announces
    when its transport differs from the service's setting (an NDJSON stream has none: 0).
    """

    def sendText(self, payload: bytes) -> None:
        """Send one text message."""

    def close(self, reason: Close | int, text: str) -> None:
        """Close the connection for ``reason`` (or with an application's own close code)."""

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake."""


class SessionHost(Protocol):
    """What a session needs of the service that owns it (so neither module imports the other)."""

    clock: IReactorTime
    settings: Settings
    metrics: Metrics
    broker: IBroker
    logs: LogFlood

    def publish(self, topic: str, data: Any = None) -> Deferred[None]:
        """Publish on ``topic``."""

    def end(self, session: Session, reason: str, close: Close | int | None = None,
            text: str = "") -> None:
        """End ``session`` for good."""


@implementer(ISession, IDeliverable)
class Session:
    """One client session: seq, calls in flight both ways, rate-limit bucket, the attached
    link (None while resumable), over the store's record of its resumable state."""

    _log = logger()

    def __init__(self, host: SessionHost, record: ISessionRecord, link: Link | None) -> None:
        self.id: str = record.id
        self.label: str = record.label
        self.principal: Any = record.principal
        self.meta: dict = record.meta
        self.closed = False
        self.peer = ""  # the peer address its limits are counted under (PeerLimits)
        self._record = record
        self._link = link
        self._host = host
        self._bad = 0
        # client call id -> Deferred of its handler
        self._inflight: dict[wire.CallId, Deferred] = {}
        # token bucket: tokens left and when it was last filled
        settings = host.settings
        self._tokens = float(settings.burst)
        self._filled = host.clock.seconds()
        self._server_calls: dict[int, tuple[Deferred, IDelayedCall]] = {}
        self._next_call_id = 0
        self._out = host.metrics.messages_out

    def __repr__(self) -> str:
        return f"<Session {self.label}>"

    # -- handler API --------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The seq of the last message pushed to this session (its record keeps it)."""
        return self._record.seq

    @property
    def service(self) -> Any:
        """The SessionService of this session: to push or call other sessions by id."""
        return self._host

    @property
    def attached(self) -> bool:
        """True while a connection is attached (False while resumable or once ended)."""
        return self._link is not None

    _member: dict[str, Any] | None = None  # made once, when first needed

    @property
    def member(self) -> dict[str, Any]:
        """This session as presence lists it (client id, user, meta.public), made once from
        its principal and hello meta."""
        member = self._member
        if member is None:
            member = self._member = self._makeMember()
        return member

    def _makeMember(self) -> dict[str, Any]:
        return member_of(self.id, self.principal, self.meta)

    @property
    def subscriptions(self) -> frozenset[str]:
        """The topics this session is subscribed to."""
        return frozenset(self._record.subscriptions)

    @property
    def bad_messages(self) -> int:
        """How many bad messages this session has sent."""
        return self._bad

    @property
    def inflight(self) -> Mapping[wire.CallId, Deferred]:
        """The client's calls still running, by id (read-only)."""
        return MappingProxyType(self._inflight)

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
        host = self._host
        wait = host.settings.call_timeout if timeout is None else timeout
        timer = host.clock.callLater(wait, self._serverCallTimedOut, call_id, method)
        self._server_calls[call_id] = (d, timer)
        self.deliver(prefix, "call")
        return d

    def subscribe(self, topic: str) -> None:
        """Subscribe this session to ``topic`` (no authorization or limit: the server decides)."""
        record = self._record
        if self.closed or topic in record.subscriptions:
            return
        record.subscribe(topic)
        self._host.broker.subscribe(self, topic)

    def unsubscribe(self, topic: str) -> None:
        """Unsubscribe this session from ``topic``."""
        record = self._record
        if topic in record.subscriptions:
            record.unsubscribe(topic)
            self._host.broker.unsubscribe(self, topic)

    def isSubscribed(self, topic: str) -> bool:
        """Whether this session is subscribed to ``topic``."""
        return topic in self._record.subscriptions

    def rejoin(self) -> None:
        """Subscribe to the broker again for every topic of the record (a session adopted
        from a shared store, whose broker subscriptions were another node's)."""
        broker = self._host.broker
        for topic in tuple(self._record.subscriptions):
            broker.subscribe(self, topic)

    def publish(self, topic: str, data: Any = None) -> Deferred[None]:
        """Publish ``data`` on ``topic``; the Deferred fires once it is accepted for delivery."""
        return self._host.publish(topic, data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """End the session for good and close its connection with ``code`` and ``reason``."""
        # the application's own choice of code, passed through to the adapter as it is
        self._host.end(self, "closed", check_code(code), reason)

    # -- used by the service and the broker --------------------------------------------------------

    def deliver(self, prefix: bytes, kind: str) -> int:
        """Stamp a pushed message with the next seq, keep it for replay, send it if attached."""
        record = self._record
        seq = record.seq + 1
        frame = b"%b%d}" % (prefix, seq)
        self._out[kind] += 1
        durable = record.append(seq, frame)
        if durable is not None:  # a shared store: the frame goes out once it is kept
            durable.addCallback(self._sendKept, frame)
            return seq
        link = self._link
        if link is not None:
            link.sendText(frame)
        return seq

    def _sendKept(self, _: Any, frame: bytes) -> None:
        link = self._link
        if link is not None:
            link.sendText(frame)

    def record(self) -> ISessionRecord:
        """The store's record of this session."""
        return self._record

    def attach(self, link: Link) -> Link | None:
        """Attach a (resuming) client's link; return the one it replaces, if any."""
        old, self._link = self._link, link
        return old

    def detach(self) -> Link | None:
        """Detach the link (the session stays resumable); return it, if there was one."""
        old, self._link = self._link, None
        return old

    def isAttachedTo(self, link: Link) -> bool:
        """Whether ``link`` is this session's current link."""
        return self._link is link

    def resend(self, frames: list[bytes]) -> None:
        """Send again, in order, frames kept for replay."""
        link = self._link
        if link is not None:
            for frame in frames:
                link.sendText(frame)

    def ack(self, seq: int) -> None:
        """The client holds every message up to ``seq``."""
        self._record.ack(seq)

    def allow(self, now: float, rate: float, burst: float) -> bool:
        """Take one token from the rate-limit bucket (refilled at ``rate`` per second up to
        ``burst``); False when it is empty."""
        tokens = self._tokens + (now - self._filled) * rate
        self._filled = now
        if tokens > burst:
            tokens = burst
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    def charge(self, tokens: float) -> None:
        """Take ``tokens`` more from the rate-limit bucket (it may go below empty: the
        messages after wait the longer) for a request whose answer cost more than one."""
        self._tokens -= tokens

    def misbehaved(self) -> int:
        """Count one bad message; return how many there have been."""
        self._bad += 1
        return self._bad

    def send(self, frame: bytes, kind: str) -> None:
        """Send an un-numbered message (reply, error, pong, welcome) if attached."""
        link = self._link
        if link is not None:
            self._out[kind] += 1
            link.sendText(frame)

    def reply(self, call_id: wire.CallId, result: Any) -> None:
        """Answer the client's request ``call_id`` with ``result``."""
        try:
            frame = wire.encode_result(call_id, result)
        except TypeError as e:
            if self._host.logs.admit(logflood.UNSERIALIZABLE_RESULT):
                self._log.error(
                    "{session}: result of call {id!r} is not JSON-serializable: {err}",
                    session=self.label, id=call_id, err=e)
            self.error(errors.INTERNAL, "internal error", None, call_id)
            return
        link = self._link  # send(), inline: one reply per call
        if link is not None:
            self._out["result"] += 1
            link.sendText(frame)

    def error(self, code: str, message: str, data: Any = None,
              call_id: wire.CallId | None = None) -> None:
        """Send an ``error`` (answering request ``call_id`` when given)."""
        # Codes are metric labels: an application's own codes (which may come from a client,
        # relayed by a handler) share one label so clients cannot grow the label set.
        self._host.metrics.errors[code if code in errors.CODES else "application"] += 1
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
            # a client may call a failing handler as often as it likes: the tracebacks
            # are rate-limited, the client's answer is not
            if self._host.logs.admit(logflood.HANDLER_FAILURE):
                self._log.failure("{session}: {what} failed", failure,
                                  session=self.label, what=what)
            self.error(errors.INTERNAL, "internal error", None, call_id)

    # -- the client's calls ---------------------------------------------------------------------

    def running(self, call_id: wire.CallId) -> bool:
        """Whether the client's call ``call_id`` is still running."""
        return call_id in self._inflight

    def busy(self) -> bool:
        """Whether replies are still due to the client: calls of its still running."""
        return bool(self._inflight)

    def callsRunning(self) -> int:
        """How many of the client's calls are still running."""
        return len(self._inflight)

    def started(self, call_id: wire.CallId, d: Deferred) -> None:
        """The client's call ``call_id`` goes on in ``d``."""
        self._inflight[call_id] = d

    def finished(self, call_id: wire.CallId, d: Deferred) -> None:
        """The client's call ``call_id`` (running in ``d``) is over."""
        if self._inflight.get(call_id) is d:
            del self._inflight[call_id]

    def cancel(self, call_id: wire.CallId) -> None:
        """Cancel the client's call ``call_id``, if it is still running."""
        d = self._inflight.get(call_id)
        if d is not None:
            d.cancel()

    # -- the server's calls ---------------------------------------------------------------------

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

    def _serverCallTimedOut(self, call_id: int, method: str) -> None:
        pending = self._server_calls.pop(call_id, None)
        if pending is not None:
            pending[0].errback(ApplicationError(
                errors.TIMEOUT, f"the client did not answer {method!r} in time"))

    def ended(self) -> Link | None:
        """Mark the session over: leave its topics, cancel client calls, fail server calls;
        return the link it had."""
        self.closed = True
        link, self._link = self._link, None
        broker = self._host.broker
        for topic in tuple(self._record.subscriptions):
            broker.unsubscribe(self, topic)
        calls = list(self._inflight.values())
        self._inflight.clear()
        for d in calls:
            d.cancel()
        pending, self._server_calls = self._server_calls, {}
        for d, timer in pending.values():
            timer.cancel()
            d.errback(SessionClosed(f"{self.label} ended before the client answered"))
        return link
