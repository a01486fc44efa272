"""Connection: one transport connection's protocol state, from handshake to session end.

Sans-IO: it gets text payloads and sends through a Link, so any framing can drive it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from .log import logger
from twisted.python.failure import Failure

from . import errors, wire
from .auth import AuthRequest
from .errors import ApplicationError

if TYPE_CHECKING:
    from .service import SessionService
    from .session import Link, Session

AWAITING_HELLO, AUTHENTICATING, OPEN, CLOSED = range(4)


class Connection:
    """Feeds one connection's messages to the service; owns the hello timer and its state."""

    _log = logger()

    def __init__(self, service: SessionService, link: Link, request: AuthRequest) -> None:
        self.service = service
        self.link = link
        self.session: Session | None = None
        self.state = AWAITING_HELLO
        self._request = request
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._max_depth = service.settings.max_depth
        self._hello_timer: IDelayedCall | None = None
        self._meta: dict | None = None
        self._resume: wire.Resume | None = None
        if not service.running:
            self.close(errors.CLOSE_GOING_AWAY, "server shutting down")
            return
        # Connections are bounded like sessions: a flood that never says hello cannot grow
        # past max_sessions either. (A full server still lets existing sessions resume.)
        if len(service.connections) >= service.settings.max_sessions:
            self.close(errors.CLOSE_TRY_AGAIN_LATER, "server full, try again later")
            return
        service.connections.add(self)
        self._hello_timer = service.clock.callLater(service.settings.hello_timeout,
                                                    self._hello_timed_out)

    def received(self, payload: bytes) -> None:
        """One text message arrived."""
        if self.state == OPEN:
            session = self.session
            assert session is not None
            if session.link is not self.link:
                # ended, closed by the server, or resumed elsewhere while closing
                self.state = CLOSED
                return
            self.service.receive(session, payload)
        elif self.state == AWAITING_HELLO:
            self._first_message(payload)
        elif self.state == AUTHENTICATING:
            # held for after welcome, bounded in count and in bytes (one largest message)
            settings = self.service.settings
            self._pending_bytes += len(payload)
            if len(self._pending) >= settings.max_pending_before_welcome \
                    or self._pending_bytes > settings.max_message_size:
                self._refuse(errors.NOT_REGISTERED, "too much sent before welcome",
                             errors.CLOSE_PROTOCOL_VIOLATION)
            else:
                self._pending.append(payload)

    def binaryReceived(self) -> None:
        """A binary message arrived: protocol.md allows text only (close 1003)."""
        self.close(errors.CLOSE_UNSUPPORTED_DATA, "binary messages are not supported")

    def shutdown(self) -> None:
        """The server is stopping: close 1001 (a session stays resumable)."""
        self.close(errors.CLOSE_GOING_AWAY, "server shutting down")

    def close(self, code: int, reason: str) -> None:
        """Close the connection; its session, if any, stays resumable."""
        self._stop_timer()
        self.state = CLOSED
        self._pending = []
        session = self.session
        if session is not None and session.link is self.link:
            self.service.disconnect(session, code, reason)
        else:
            self.link.closeWith(code, reason)

    def lost(self, ended: bool = False) -> None:
        """The transport connection is gone; ``ended`` when the client closed it with 1000,
        which ends its session for good."""
        self.service.forget(self)
        self._stop_timer()
        self.state = CLOSED
        self._pending = []
        session, self.session = self.session, None
        if session is not None and session.link is self.link:
            if ended:
                self.service.end(session, "bye")
            else:
                self.service.detach(session)

    # -- the hello ------------------------------------------------------------------------------

    def _first_message(self, payload: bytes) -> None:
        try:
            message = wire.decode(payload, self._max_depth)
        except wire.WireError as e:
            if e.code == errors.INVALID_UTF8:
                self.close(errors.CLOSE_INVALID_PAYLOAD, e.message)
            elif e.kind == "hello":
                self._refuse(errors.BAD_MESSAGE, e.message, errors.CLOSE_PROTOCOL_VIOLATION)
            else:
                self._refuse(errors.NOT_REGISTERED, "the first message must be a hello",
                             errors.CLOSE_PROTOCOL_VIOLATION)
            return
        if not isinstance(message, wire.Hello):
            self._refuse(errors.NOT_REGISTERED, "the first message must be a hello",
                         errors.CLOSE_PROTOCOL_VIOLATION)
            return
        # The hello timer keeps running: an authenticator that never answers must not pin
        # the connection open.
        self.state = AUTHENTICATING
        self._meta = message.meta
        self._resume = message.resume
        self.service.metrics.messages_in["hello"] += 1  # later ones count in receive()
        request = AuthRequest(message.auth, self._request.headers, self._request.peer,
                              self._request.listener)
        d = self.service.authenticate(request)
        d.addCallbacks(self._authenticated, self._unauthenticated)

    def _authenticated(self, principal: Any) -> None:
        if self.state != AUTHENTICATING:
            return  # the connection went away while the authenticator decided
        service = self.service
        if not service.running:
            self.close(errors.CLOSE_GOING_AWAY, "server shutting down")
            return
        self._stop_timer()
        session = None
        if self._resume is not None:
            session = service.resume(self._resume, self.link)
        if session is None:
            if service.full:
                self.close(errors.CLOSE_TRY_AGAIN_LATER, "server full, try again later")
                return
            session = service.open(principal, self._meta, self.link)
        self.state = OPEN
        self.session = session
        # the handshake's headers were for the authenticator only (and read no more)
        self._request = None  # type: ignore[assignment]
        pending, self._pending = self._pending, []
        for payload in pending:
            if self.state != OPEN:
                break
            self.received(payload)

    def _unauthenticated(self, failure: Failure) -> None:
        if self.state != AUTHENTICATING:
            return
        if isinstance(failure.value, ApplicationError):
            message = failure.value.message
        else:
            self._log.failure("authenticator failed unexpectedly", failure)
            message = "authentication failed"
        self._log.info("hello from {peer} refused: {message}", peer=self._request.peer,
                       message=message)
        self._refuse(errors.UNAUTHORIZED, message, errors.CLOSE_UNAUTHORIZED)

    def _refuse(self, code: str, message: str, close: int) -> None:
        """Answer an error (there is no session to answer through yet), then close."""
        self.service.metrics.errors[code] += 1
        self.service.metrics.messages_out["error"] += 1
        self.link.sendText(wire.encode_error(code, message))
        self.close(close, message)

    def _hello_timed_out(self) -> None:
        self._hello_timer = None
        if self.state in (AWAITING_HELLO, AUTHENTICATING):
            self.close(errors.CLOSE_HELLO_TIMEOUT, "no hello in time"
                       if self.state == AWAITING_HELLO else "authentication took too long")

    def _stop_timer(self) -> None:
        if self._hello_timer is not None:
            if self._hello_timer.active():
                self._hello_timer.cancel()
            self._hello_timer = None

