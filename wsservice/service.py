"""SessionService: creates and ends sessions and routes each client message to its handler."""

from __future__ import annotations

import itertools
import secrets
from inspect import iscoroutine
from typing import Any, Callable, Iterable

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import errors, wire
from ._version import __version__
from .auth import AnonymousAuthenticator, AuthRequest
from .config import Settings
from .connection import Connection
from .errors import ApplicationError, ConfigurationError
from .interfaces import IAuthenticator
from .metrics import Metrics
from .registry import Registry, verify
from .session import Link, Session

SERVER_NAME = f"wsservice/{__version__}"
_TOKEN_BYTES = 18  # 144 random bits each for session ids and tokens


class SessionService(Service):
    """The heart of wsservice: sessions, dispatch of client messages to handlers, limits.

    It knows nothing of WebSocket frames: a transport adapter feeds it through ``connect()``.
    """

    _log = Logger()
    name = "wsservice-sessions"

    def __init__(self, handlers: Iterable[Any] | Registry = (), settings: Settings | None = None,
                 authenticator: Any = None, clock: IReactorTime | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        self.settings = settings or Settings()
        self.clock: IReactorTime = clock  # type: ignore[assignment]
        self.registry = handlers if isinstance(handlers, Registry) else Registry(handlers)
        reserved = {"healthz", "metrics", self.settings.path.strip("/").split("/")[0]}
        for path in self.registry.resources:
            top = path.strip("/").split("/")[0]
            if top in reserved:
                raise ConfigurationError(
                    f"a handler's HTTP resource {path!r} would hide the service's own /{top}")
        self.authenticator = authenticator or AnonymousAuthenticator()
        verify(self.authenticator, (IAuthenticator,), f"authenticator {self.authenticator!r}")
        self.sessions: dict[str, Session] = {}
        # every open connection, with or without a session yet, so shutdown reaches them all
        self.connections: set[Connection] = set()
        self.metrics = Metrics(lambda: len(self.sessions))
        self._labels = itertools.count(1)
        heartbeat = self.settings.heartbeat
        self._heartbeat = int(heartbeat) if heartbeat == int(heartbeat) else heartbeat
        # The message registry: one bound method per message class, no if-chain per message.
        self._dispatch: dict[type, Callable[[Session, Any], None]] = {
            wire.Event: self._event,
            wire.Call: self._call,
            wire.Cancel: self._cancel,
            wire.Result: self._result,
            wire.Error: self._error,
            wire.Ping: self._ping,
            wire.Ack: self._ack,
            wire.Bye: self._bye,
            wire.Hello: self._second_hello,
            wire.Subscribe: self._topic_unsupported,
            wire.Unsubscribe: self._topic_unsupported,
            wire.Publish: self._topic_unsupported,
        }
        self._in = self.metrics.messages_in
        self._type_names = {cls: cls.__name__.lower() for cls in self._dispatch}

    # -- lifecycle ------------------------------------------------------------------------------

    def stopService(self) -> Deferred | None:
        """Close every connection 1001, ending its session, and stop."""
        for connection in list(self.connections):
            connection.shutdown()
        for session in list(self.sessions.values()):
            self.end(session, "shutdown", errors.CLOSE_GOING_AWAY, "server shutting down")
        return super().stopService()

    @property
    def full(self) -> bool:
        """True when no new session may be created (``max_sessions`` reached)."""
        return len(self.sessions) >= self.settings.max_sessions

    def connect(self, link: Link, headers: dict[str, str] | None = None, peer: str = "",
                listener: str = "") -> Connection:
        """A transport opened a connection: return the object to feed its messages to."""
        return Connection(self, link, AuthRequest(None, headers or {}, peer, listener))

    # -- sessions -------------------------------------------------------------------------------

    def authenticate(self, request: AuthRequest) -> Deferred:
        """Ask the authenticator about a hello; a Deferred firing with the principal."""
        def ask() -> Any:
            result = self.authenticator.authenticate(request)
            if iscoroutine(result):
                return Deferred.fromCoroutine(result)
            return result
        return maybeDeferred(ask)

    def open(self, principal: Any, meta: dict | None, link: Link) -> Session:
        """Create a session for an authenticated hello, send ``welcome``, tell the observers."""
        label = f"s{next(self._labels)}"
        session = Session(self, secrets.token_urlsafe(_TOKEN_BYTES),
                          secrets.token_urlsafe(_TOKEN_BYTES), label, principal, meta or {}, link)
        self.sessions[session.id] = session
        self.metrics.sessions_opened += 1
        self._log.info("session {session} opened for {principal!r} ({count} open)",
                       session=label, principal=principal, count=len(self.sessions))
        # welcome first: an observer may push or call at once, and the client must see
        # its welcome before anything else
        self.welcome(session)
        for observer in self.registry.observers:
            try:
                observer.sessionOpened(session)
            except Exception:
                self._log.failure("observer {observer!r} failed on sessionOpened",
                                  observer=observer)
        return session

    def welcome(self, session: Session, resumed: bool = False) -> None:
        """Send ``welcome`` to a session's link."""
        session._send(wire.encode_welcome(session.id, session.token, resumed,
                                          self._heartbeat, SERVER_NAME), "welcome")

    def end(self, session: Session, reason: str, code: int | None = None,
            text: str = "") -> None:
        """End ``session`` for good; close its link with ``code`` when one is given."""
        if session.closed:
            return
        link = session.link
        self.sessions.pop(session.id, None)
        session.ended()
        self.metrics.sessions_closed[reason] += 1
        if link is not None and code is not None:
            link.closeWith(code, text)
        self._log.info("session {session} ended ({reason}; {count} open)",
                       session=session.label, reason=reason, count=len(self.sessions))
        for observer in self.registry.observers:
            try:
                observer.sessionClosed(session, reason)
            except Exception:
                self._log.failure("observer {observer!r} failed on sessionClosed",
                                  observer=observer)

    def lost(self, session: Session) -> None:
        """The session's connection went away without ending the session itself."""
        self.end(session, "lost")

    # -- per-message dispatch -------------------------------------------------------------------

    def dispatch(self, session: Session, message: wire.Message) -> None:
        """Route one decoded client message of a registered session."""
        kind = type(message)
        self._in[self._type_names[kind]] += 1
        self._dispatch[kind](session, message)

    def bad_message(self, session: Session, code: str, message: str,
                    call_id: wire.CallId | None = None) -> None:
        """Answer bad input; past ``max_bad_messages`` also close the connection (4400)."""
        session.error(code, message, None, call_id)
        session.bad_messages += 1
        if session.bad_messages > self.settings.max_bad_messages:
            close = (errors.CLOSE_RATE_LIMITED if code == errors.RATE_LIMITED
                     else errors.CLOSE_PROTOCOL_VIOLATION)
            self._log.info("session {session}: too many bad messages, closing {code}",
                           session=session.label, code=close)
            self.end(session, "closed", close, "too many bad messages")

    def _event(self, session: Session, msg: wire.Event) -> None:
        handler = self.registry.events.get(msg.event)
        if handler is None:
            session.error(errors.UNKNOWN_EVENT, f"no handler for event {msg.event!r}")
            return
        try:
            result = handler(session, msg.data)
        except ApplicationError as e:
            session.error(e.code, e.message, e.data)
            return
        except Exception:
            self._log.failure("{session}: event {event!r} failed", session=session.label,
                              event=msg.event)
            session.error(errors.INTERNAL, "internal error")
            return
        if result is not None:
            if iscoroutine(result):
                result = Deferred.fromCoroutine(result)
            if isinstance(result, Deferred):
                result.addErrback(lambda f: session.fail(None, f, f"event {msg.event!r}"))

    def _call(self, session: Session, msg: wire.Call) -> None:
        call_id = msg.id
        handler = self.registry.calls.get(msg.method)
        if handler is None:
            session.error(errors.UNKNOWN_METHOD, f"no handler for method {msg.method!r}",
                          None, call_id)
            return
        inflight = session.inflight
        if call_id in inflight:
            session.error(errors.DUPLICATE_ID, "a call with this id is still in flight",
                          None, call_id)
            return
        if len(inflight) >= self.settings.max_inflight_calls:
            session.error(errors.TOO_MANY_CALLS,
                          f"at most {self.settings.max_inflight_calls} calls may be in flight",
                          None, call_id)
            return
        started = self.clock.seconds()
        try:
            result = handler(session, msg.params)
        except Exception:
            session.fail(call_id, Failure(), f"call {msg.method!r}")
            self.metrics.observe_call(self.clock.seconds() - started)
            return
        if iscoroutine(result):
            result = Deferred.fromCoroutine(result)
        if not isinstance(result, Deferred):
            # The common fast path: a plain value, answered at once with no Deferred or timer.
            session.reply(call_id, result)
            self.metrics.observe_call(self.clock.seconds() - started)
            return
        inflight[call_id] = result
        result.addTimeout(self.settings.call_timeout, self.clock)

        def done(value: Any) -> None:
            if inflight.get(call_id) is result:
                del inflight[call_id]
            self.metrics.observe_call(self.clock.seconds() - started)
            if isinstance(value, Failure):
                if value.check(TimeoutError):
                    session.error(errors.TIMEOUT, f"{msg.method!r} took longer than "
                                  f"{self.settings.call_timeout:g} s", None, call_id)
                elif value.check(CancelledError):
                    session.error(errors.CANCELLED, "the call was cancelled", None, call_id)
                else:
                    session.fail(call_id, value, f"call {msg.method!r}")
            else:
                session.reply(call_id, value)

        result.addBoth(done)

    def _cancel(self, session: Session, msg: wire.Cancel) -> None:
        d = session.inflight.get(msg.id)
        if d is not None:
            d.cancel()

    def _result(self, session: Session, msg: wire.Result) -> None:
        if not session.answer(msg.id, True, msg.result):
            self.bad_message(session, errors.BAD_MESSAGE,
                             "no server call with this id is in flight")

    def _error(self, session: Session, msg: wire.Error) -> None:
        if not session.answer(msg.id, False, (msg.code, msg.message, msg.data)):
            self.bad_message(session, errors.BAD_MESSAGE,
                             "no server call with this id is in flight")

    def _ping(self, session: Session, msg: wire.Ping) -> None:
        try:
            frame = wire.encode_pong(msg.data)
        except TypeError:  # orjson refuses what it parsed only for exotic ints; stay safe
            frame = wire.encode_pong(None)
        session._send(frame, "pong")

    def _ack(self, session: Session, msg: wire.Ack) -> None:
        # Nothing is buffered for replay yet; an ack is valid and needs no answer.
        pass

    def _bye(self, session: Session, msg: wire.Bye) -> None:
        self.end(session, "bye", errors.CLOSE_NORMAL, "bye")

    def _second_hello(self, session: Session, msg: wire.Hello) -> None:
        self.bad_message(session, errors.ALREADY_REGISTERED, "this connection has a session")

    def _topic_unsupported(self, session: Session, msg: Any) -> None:
        session.error(errors.BAD_MESSAGE, "topics are not available on this server", None,
                      msg.id)
