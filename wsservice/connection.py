"""Connection: one transport connection's protocol state, from handshake to session end.

Sans-IO: it gets text payloads and sends through a Link, so any framing can drive it.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from . import errors, logflood, wire
from .auth import AuthRequest
from .config import Settings
from .errors import ApplicationError
from .interfaces import ISessionRecord
from .log import logger
from .logflood import LogFlood
from .metrics import Metrics
from .reasons import Close
from .session import Link, Session
from .store import Claim

AWAITING_HELLO, AUTHENTICATING, OPEN, CLOSED = range(4)


class ConnectionHost(Protocol):
    """What a connection needs of the service (so neither module imports the other)."""

    running: bool | int
    clock: IReactorTime
    settings: Settings
    metrics: Metrics
    logs: LogFlood

    def room(self, peer: str) -> str | None:
        """Make room for a new session of ``peer``; None, or why there is none."""

    def admit(self, connection: Connection, request: AuthRequest) -> Close | None:
        """Take a new connection in (setting its ``peer``); None, or why it must close."""

    def forget(self, connection: Connection) -> None:
        """A connection is gone for good."""

    def authenticate(self, request: AuthRequest) -> Deferred[Any]:
        """Who the hello's client is."""

    def claim(self, request: wire.Resume) -> Deferred[Claim | None]:
        """Ask the store for the session a resuming hello names."""

    def release(self, claim: Claim) -> None:
        """A claim that will not be used."""

    def resume(self, claim: Claim, request: wire.Resume, link: Link,
               peer: str = "") -> Session | None:
        """Attach a claimed session to ``link``, or None."""

    def create(self, principal: Any, meta: dict | None) -> Deferred[tuple[ISessionRecord, str]]:
        """A new session's record and token."""

    def discard(self, record: ISessionRecord) -> None:
        """Forget a record that will not be used."""

    def open(self, record: ISessionRecord, token: str, link: Link, peer: str = "") -> Session:
        """The new session of ``record`` on ``link``."""

    def receive(self, session: Session, payload: bytes) -> None:
        """A session's message."""

    def frame(self, session: Session) -> None:
        """One more frame of a session's message that is still arriving."""

    def disconnect(self, session: Session, reason: Close, text: str) -> None:
        """Close a session's connection; it stays resumable."""

    def detach(self, session: Session) -> None:
        """A session lost its connection."""

    def end(self, session: Session, reason: str, close: Close | int | None = None,
            text: str = "") -> None:
        """End a session for good."""


class Connection:
    """Feeds one connection's messages to the service; owns the hello timer and its state."""

    _log = logger()

    def __init__(self, service: ConnectionHost, link: Link, request: AuthRequest) -> None:
        self.service = service
        self.link = link
        self.session: Session | None = None
        self.state = AWAITING_HELLO
        self._request: AuthRequest | None = request
        self.peer = ""  # set by admit(): the peer address limits are counted under
        self.forwarded: str | None = None  # a trusted proxy's client counted by admit()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._max_depth = service.settings.max_depth
        self._hello_timer: IDelayedCall | None = None
        self._meta: dict | None = None
        self._resume: wire.Resume | None = None
        refused = service.admit(self, request)
        if refused is not None:
            self.close(refused, "server shutting down" if refused is Close.GOING_AWAY
                       else "server full, try again later")
            return
        self._hello_timer = service.clock.callLater(service.settings.hello_timeout,
                                                    self._helloTimedOut)

    def awaitingAnswers(self) -> bool:
        """Whether answers are still due to what the client sent: its hello's (being
        authenticated or stored), or its calls'."""
        if self.state == AUTHENTICATING:
            return True
        session = self.session
        return self.state == OPEN and session is not None \
            and session.isAttachedTo(self.link) and session.busy()

    def received(self, payload: bytes) -> None:
        """One text message arrived. A failure of ours while handling it (never a handler's:
        those are answered) closes the connection 1011; the session stays resumable."""
        try:  # (free in Python 3.11 unless something raises)
            if self.state == OPEN:
                session = self.session
                assert session is not None
                if session._link is not self.link:  # isAttachedTo, inline: per message
                    # ended, closed by the server, or resumed elsewhere while closing
                    self.state = CLOSED
                    return
                self.service.receive(session, payload)
            elif self.state == AWAITING_HELLO:
                self._firstMessage(payload)
            elif self.state == AUTHENTICATING:
                # held for after welcome, bounded in count and in bytes (one largest message)
                settings = self.service.settings
                self._pending_bytes += len(payload)
                if len(self._pending) >= settings.max_pending_before_welcome \
                        or self._pending_bytes > settings.max_message_size:
                    self._refuse(errors.NOT_REGISTERED, "too much sent before welcome",
                                 Close.PROTOCOL_VIOLATION)
                else:
                    self._pending.append(payload)
        except Exception:
            if self.service.logs.admit(logflood.ADAPTER_FAILURE):
                self._log.failure("unexpected failure handling a message; closing 1011")
            self.close(Close.INTERNAL_ERROR, "internal error")

    def frame(self) -> None:
        """One more frame of a message still arriving: the session's rate limit counts it
        (before the session exists only the adapter's cap on frames applies)."""
        if self.state == OPEN:
            session = self.session
            assert session is not None
            if session.isAttachedTo(self.link):
                self.service.frame(session)

    def binaryReceived(self) -> None:
        """A binary message arrived: protocol.md allows text only."""
        self.close(Close.UNSUPPORTED_DATA, "binary messages are not supported")

    def shutdown(self) -> None:
        """The server is stopping (a session stays resumable)."""
        self.close(Close.GOING_AWAY, "server shutting down")

    def close(self, reason: Close, text: str) -> None:
        """Close the connection; its session, if any, stays resumable."""
        self._stopTimer()
        self.state = CLOSED
        self._pending = []
        session = self.session
        if session is not None and session.isAttachedTo(self.link):
            self.service.disconnect(session, reason, text)
        else:
            self.link.close(reason, text)

    def lost(self, ended: bool = False) -> None:
        """The transport connection is gone; ``ended`` when the client closed it normally,
        which ends its session for good."""
        self.service.forget(self)
        self._stopTimer()
        self.state = CLOSED
        self._pending = []
        session, self.session = self.session, None
        if session is not None and session.isAttachedTo(self.link):
            if ended:
                self.service.end(session, "bye")
            else:
                self.service.detach(session)

    # -- the hello ------------------------------------------------------------------------------

    def _firstMessage(self, payload: bytes) -> None:
        try:
            message = wire.decode(payload, self._max_depth)
        except wire.WireError as e:
            if e.code == errors.INVALID_UTF8:
                self.close(Close.INVALID_PAYLOAD, e.message)
            elif e.kind == "hello":
                self._refuse(errors.BAD_MESSAGE, e.message, Close.PROTOCOL_VIOLATION)
            else:
                self._refuse(errors.NOT_REGISTERED, "the first message must be a hello",
                             Close.PROTOCOL_VIOLATION)
            return
        if not isinstance(message, wire.Hello):
            self._refuse(errors.NOT_REGISTERED, "the first message must be a hello",
                         Close.PROTOCOL_VIOLATION)
            return
        self.state = AUTHENTICATING
        self._meta = message.meta
        self._resume = message.resume
        self.service.metrics.messages_in["hello"] += 1  # later ones count in receive()
        request = self._request
        assert request is not None
        d = self.service.authenticate(AuthRequest(message.auth, request.headers, request.peer,
                                                  request.listener))
        d.addCallbacks(self._authenticated, self._unauthenticated)

    # The hello timer runs until the session is attached: neither an authenticator nor a
    # store that never answers may pin the connection open. Whatever the store answers
    # after the connection has gone is undone, not used.

    def _authenticated(self, principal: Any) -> None:
        if self.state != AUTHENTICATING:
            return  # the connection went away while the authenticator decided
        if not self.service.running:
            self.close(Close.GOING_AWAY, "server shutting down")
            return
        resume, self._resume = self._resume, None
        if resume is None:
            self._new(principal)
        else:
            self.service.claim(resume).addCallbacks(self._claimed, self._storeFailed,
                                                    (resume, principal))

    def _claimed(self, claim: Claim | None, resume: wire.Resume, principal: Any) -> None:
        if self.state != AUTHENTICATING:
            if claim is not None:
                self.service.release(claim)
            return
        session = None if claim is None else self.service.resume(claim, resume, self.link,
                                                                 self.peer)
        if session is None:
            self._new(principal)
        else:
            self._opened(session)

    def _new(self, principal: Any) -> None:
        refused = self.service.room(self.peer)
        if refused is not None:
            self.close(Close.TRY_AGAIN_LATER, refused)
            return
        self.service.create(principal, self._meta).addCallbacks(self._created,
                                                                self._storeFailed)

    def _created(self, made: tuple[ISessionRecord, str]) -> None:
        record, token = made
        if self.state != AUTHENTICATING:
            self.service.discard(record)  # nobody ever got its token
            return
        self._opened(self.service.open(record, token, self.link, self.peer))

    def _storeFailed(self, failure: Failure) -> None:
        """The session store could not answer (Redis away): try again later."""
        if self.state != AUTHENTICATING:
            return
        if self.service.logs.admit(logflood.STORE_FAILURE):
            self._log.warn("session store unavailable: {why}", why=failure.getErrorMessage())
        self.close(Close.TRY_AGAIN_LATER, "sessions unavailable, try again later")

    def _opened(self, session: Session) -> None:
        self._stopTimer()
        self.state = OPEN
        self.session = session
        # the handshake's headers were for the authenticator only (and read no more)
        self._request = None
        pending, self._pending = self._pending, []
        for payload in pending:
            if self.state != OPEN:
                break
            self.received(payload)

    def _unauthenticated(self, failure: Failure) -> None:
        if self.state != AUTHENTICATING:
            return
        logs = self.service.logs
        if isinstance(failure.value, ApplicationError):
            message = failure.value.message
        else:
            if logs.admit(logflood.AUTHENTICATOR_FAILURE):
                self._log.failure("authenticator failed unexpectedly", failure)
            message = "authentication failed"
        # one per refused client: anyone can send a bad credential as often as they connect
        if logs.admit(logflood.HELLO_REFUSED):
            # not a field named 'message': the legacy log bridge overwrites that one with ()
            self._log.info("hello from {peer} refused: {why}",
                           peer=self._request.peer if self._request else "?", why=message)
        self._refuse(errors.UNAUTHORIZED, message, Close.UNAUTHORIZED)

    def _refuse(self, code: str, message: str, reason: Close) -> None:
        """Answer an error (there is no session to answer through yet), then close."""
        metrics = self.service.metrics
        metrics.errors[code] += 1
        metrics.messages_out["error"] += 1
        self.link.sendText(wire.encode_error(code, message))
        self.close(reason, message)

    def _helloTimedOut(self) -> None:
        self._hello_timer = None
        if self.state in (AWAITING_HELLO, AUTHENTICATING):
            self.close(Close.HELLO_TIMEOUT, "no hello in time"
                       if self.state == AWAITING_HELLO else "authentication took too long")

    def _stopTimer(self) -> None:
        if self._hello_timer is not None:
            if self._hello_timer.active():
                self._hello_timer.cancel()
            self._hello_timer = None
