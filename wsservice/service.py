"""SessionService: creates and ends sessions and routes each client message to its handler."""

from __future__ import annotations

import itertools
import secrets
from inspect import iscoroutine
from typing import Any, Callable, Iterable

from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from . import errors, logflood, wire
from ._version import SERVER_NAME
from .auth import AnonymousAuthenticator, AuthRequest
from .config import Settings
from .connection import Connection
from .errors import ApplicationError
from .interfaces import IAuthenticator, IBroker, ISessionRecord, ISessionStore
from .log import logger
from .logflood import LogFlood
from .memorybroker import MemoryBroker
from .memorystore import MemorySessionStore
from .metrics import Metrics
from .peers import PeerLimits, parse_networks, peer_host, peer_key
from .reasons import Close
from .registry import Registry, verify
from .session import Link, Session
from .store import Claim
from .summary import Drain

# a presence answer costs its asker one rate-limit token (one message) per this many members
PRESENCE_MEMBERS_PER_TOKEN = 50
_TOKEN_BYTES = 18  # 144 random bits each for session ids and tokens
# what a handler returns when it answers at once (anything else may be a Deferred/coroutine)
_PLAIN = frozenset({type(None), bool, int, float, str, list, dict, tuple})


class SessionService(Service):
    """The heart of wsservice: sessions, dispatch of client messages to handlers, limits.

    It knows nothing of WebSocket frames: a transport adapter feeds it through ``connect()``.
    Resumable state lives in a session store, delivery beyond a connection goes through a
    broker (both in memory unless given).
    """

    _log = logger()
    name: str | None = "wsservice-sessions"  # type: ignore[assignment]

    def __init__(self, handlers: Iterable[Any] | Registry = (), settings: Settings | None = None,
                 authenticator: Any = None, clock: IReactorTime | None = None,
                 store: ISessionStore | None = None, broker: IBroker | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.settings = settings = settings or Settings()
        self.clock: IReactorTime = clock  # type: ignore[assignment]
        self.registry = handlers if isinstance(handlers, Registry) else Registry(handlers)
        self.authenticator = authenticator or AnonymousAuthenticator()
        verify(self.authenticator, (IAuthenticator,), f"authenticator {self.authenticator!r}")
        # with resume off nothing is ever replayed: the replay buffer holds nothing (the seq
        # still counts, for a client that takes its live session over)
        self.store: ISessionStore = store if store is not None else MemorySessionStore(
            self.clock, settings.replay_limit if settings.resume_ttl > 0 else 0,
            settings.replay_bytes, settings.max_replay_memory)
        verify(self.store, (ISessionStore,), f"session store {self.store!r}")
        self.broker: IBroker = broker if broker is not None else MemoryBroker()
        verify(self.broker, (IBroker,), f"broker {self.broker!r}")
        # a shared store brings its own kind of session (Redis numbers its messages) and
        # hands over sessions adopted from a node that died
        self._session_class: type[Session] = getattr(self.store, "session_class", None) \
            or Session
        if hasattr(self.store, "adopt"):
            shared: Any = self.store
            shared.adopt = self.adopt
            shared.session_of = lambda session_id: self.sessions.get(session_id)
        # this node's sessions, attached or resumable
        self.sessions: dict[str, Session] = {}
        self.broker.bind(self.sessions.get)
        # every open connection, with or without a session yet, so shutdown reaches them all
        self.connections: set[Connection] = set()
        # connections per peer from TCP accept (every listener's Site shares this), and the
        # clients of trusted proxies, counted at the upgrade
        self.peers = PeerLimits(self.clock, settings.max_connections,
                                settings.max_peer_connections, settings.peer_connect_rate,
                                settings.peer_connect_burst,
                                parse_networks(settings.trusted_proxies))
        # sessions per peer, and the detached ones (longest-detached first) that are expired
        # to make room for new sessions, overall and per peer
        self._per_peer: dict[str, int] = {}
        self._detached: dict[str, Session] = {}
        self._detached_of: dict[str, dict[str, Session]] = {}
        self.metrics = Metrics(lambda: len(self.sessions))
        self.metrics.refused = self.peers.refused
        self.metrics.connections = lambda: max(self.peers.total, len(self.connections))
        self.metrics.send_queue = lambda: sum(c.link.queued() for c in self.connections
                                              if hasattr(c.link, "queued"))
        self.metrics.presence = self.broker.members
        self._after_kept: Callable[[Callable[[], Any]], None] | None = getattr(
            self.store, "afterKept", None)
        engine = getattr(self.store, "engine", None)
        if engine is not None:
            self.metrics.cluster = engine.stats
        stats = getattr(self.store, "replayStats", None)
        if stats is not None:
            self.metrics.replay = stats
        # the log lines clients can cause, bounded per interval on the service's clock
        self.logs = LogFlood(self.clock)
        self._labels = itertools.count(1)
        heartbeat = settings.heartbeat
        self._heartbeat = int(heartbeat) if heartbeat == int(heartbeat) else heartbeat
        self._max_depth = settings.max_depth
        self._rate = float(settings.rate)
        self._burst = float(settings.burst)
        self._max_calls = settings.max_inflight_calls
        self._seconds = self.clock.seconds
        # the call histogram's own observe, looked up once (metrics.observe_call calls it)
        self._observe_call = self.metrics.call_durations.observe
        self._now = 0.0  # when the message being dispatched arrived
        self._drained: Deferred | None = None
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
            wire.Hello: self._secondHello,
            wire.Subscribe: self._subscribe,
            wire.Unsubscribe: self._unsubscribe,
            wire.Presence: self._presence,
            wire.Publish: self._publish,
        }
        self._in = self.metrics.messages_in
        self._type_names = {cls: cls.__name__.lower() for cls in self._dispatch}

    # -- lifecycle ------------------------------------------------------------------------------

    def startService(self) -> None:
        """Start taking connections; client-caused log lines are bounded from now on."""
        self.logs.open()
        super().startService()

    def stopService(self) -> Deferred:
        """Drain: refuse new sessions, close every connection going-away (sessions stay
        resumable), and fire once all are gone or ``drain_timeout`` has passed (the rest
        are dropped)."""
        super().stopService()
        # what was held back is written now, and no timer outlives the service
        self.logs.close()
        self._drain = drain = Drain(self)  # logs the start of the drain and its summary
        if not self.connections:
            drain.done()
            return succeed(None)
        self._drained = drained = Deferred[None]()
        timer = self.clock.callLater(self.settings.drain_timeout, self._drainTimedOut)
        for connection in list(self.connections):
            connection.shutdown()

        def done(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            drain.done()
            return result
        return drained.addBoth(done)

    def _drainTimedOut(self) -> None:
        self._drain.timedOut(len(self.connections))
        connections = list(self.connections)
        self.connections.clear()  # their lost() follows, after the drain is over
        for connection in connections:
            connection.link.abort()
        self._connectionsGone()

    def _connectionsGone(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None:
            drained.callback(None)

    def admit(self, connection: Connection, request: AuthRequest) -> Close | None:
        """Take a new connection in (and learn its peer); None, or the reason it must close
        at once."""
        if not self.running:
            return Close.GOING_AWAY
        # The listener's Site counted this connection from its TCP accept; this bound also
        # holds for a transport without one. (A full server still lets sessions resume.)
        if len(self.connections) >= self.settings.max_connections:
            return Close.TRY_AGAIN_LATER
        host = peer_host(request.peer)
        if self.peers.isTrusted(host):
            # behind a trusted proxy the client is known only now: count it now
            client = self.peers.client(host, request.headers)
            if client != host:
                if not self.peers.forwarded(client):
                    return Close.TRY_AGAIN_LATER
                connection.forwarded = client
            host = client
        connection.peer = peer_key(host)
        self.connections.add(connection)
        return None

    def forget(self, connection: Connection) -> None:
        """A connection is gone for good."""
        if connection in self.connections:
            self.connections.discard(connection)
            if connection.forwarded is not None:
                self.peers.unforwarded(connection.forwarded)
        if self._drained is not None and not self.connections:
            self._connectionsGone()

    def endAll(self, reason: str = "shutdown") -> None:
        """End every session at once, resumable or not (e.g. before a process exits)."""
        for session in list(self.sessions.values()):
            self.end(session, reason, Close.GOING_AWAY, "server shutting down")

    def room(self, peer: str) -> str | None:
        """Make room for a new session of ``peer``: expire the longest-detached session of
        that peer past ``max_sessions_per_peer``, or overall past ``max_sessions``. None, or
        why there is no room (every session there is attached)."""
        settings = self.settings
        if self._per_peer.get(peer, 0) >= settings.max_sessions_per_peer \
                and not self._evict(self._detached_of.get(peer)):
            return "too many sessions from your address, try again later"
        if len(self.sessions) >= settings.max_sessions and not self._evict(self._detached):
            return "server full, try again later"
        return None

    def _evict(self, detached: dict[str, Session] | None) -> bool:
        if not detached:
            return False
        session = next(iter(detached.values()))
        # its client learns resumed:false when it comes back
        self.end(session, "evicted")
        return True

    def _attached(self, session: Session) -> None:
        """``session`` is no longer detached."""
        if self._detached.pop(session.id, None) is not None:
            of = self._detached_of.get(session.peer)
            if of is not None:
                of.pop(session.id, None)
                if not of:
                    del self._detached_of[session.peer]

    def unavailable(self) -> str | None:
        """Why this node cannot take new sessions now (its shared store is away), or None."""
        return getattr(self.store, "unavailable", None)

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

    def create(self, principal: Any, meta: dict | None) -> Deferred[tuple[ISessionRecord, str]]:
        """Make a new session's record in the store; a Deferred of (record, token)."""
        label = f"s{next(self._labels)}"
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        d = self.store.create(secrets.token_urlsafe(_TOKEN_BYTES), token, label, principal,
                              meta or {})
        return d.addCallback(lambda record: (record, token))

    def discard(self, record: ISessionRecord) -> None:
        """Forget a record made by create() whose connection went away before its welcome."""
        self.store.end(record)

    def open(self, record: ISessionRecord, token: str, link: Link, peer: str = "") -> Session:
        """The new session of ``record`` on ``link`` (from ``peer``): send ``welcome``, tell
        the observers."""
        session = self._session_class(self, record, link)
        self._own(session, peer)
        self.metrics.sessions_opened += 1
        # Per-session lines are DEBUG: at thousands of sessions a second, INFO lines would
        # cost more than the sessions. The principal may carry claims: only its type.
        self._log.debug("session {session} opened for a {kind} ({count} open)",
                        session=session.label, kind=type(session.principal).__name__,
                        count=len(self.sessions))
        # welcome first: an observer may push or call at once, and the client must see
        # its welcome before anything else
        self.welcome(session, token, heartbeat=getattr(link, "heartbeat", None))
        for observer in self.registry.observers:
            try:
                observer.sessionOpened(session)
            except Exception:
                if self.logs.admit(logflood.OBSERVER_FAILURE):
                    self._log.failure("observer {observer!r} failed on sessionOpened",
                                      observer=observer)
        return session

    def claim(self, request: wire.Resume) -> Deferred[Claim | None]:
        """Ask the store for the session a resuming hello names (see ISessionStore.claim)."""
        d = self.store.claim(request.session, request.token, request.last_seq)
        return d.addCallback(self._refusedIfNone)

    def _refusedIfNone(self, claim: Claim | None) -> Claim | None:
        if claim is None:  # gone, or the wrong token: the hello gets a new session
            self.metrics.resumes_refused += 1
        return claim

    def release(self, claim: Claim) -> None:
        """A claim whose connection went away before it was used: the session, if detached,
        is resumable again for ``resume_ttl``."""
        session = self.sessions.get(claim.record.id)
        if session is not None and not session.attached:
            self._resumable(session)

    def _own(self, session: Session, peer: str) -> None:
        session.peer = peer
        self.sessions[session.id] = session
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1

    def resume(self, claim: Claim, request: wire.Resume, link: Link,
               peer: str = "") -> Session | None:
        """Re-attach a claimed session to ``link`` and replay what the client missed; None
        when that cannot be done exactly (then a new session is opened)."""
        record = claim.record
        session = self.sessions.get(record.id)
        if session is None:
            # resumable state kept elsewhere (a shared store): this node owns it from now on
            session = self._session_class(self, record, None)
            self._own(session, peer)
            session.rejoin()
        self._attached(session)
        if claim.replay is None:
            # The client holds a gap we cannot fill: it gets a new session and must know.
            if self.logs.admit(logflood.RESUME_GAP):
                self._log.info("session {session} cannot be resumed after seq {last} (has "
                               "{seq}); ending it", session=session.label,
                               last=request.last_seq, seq=session.seq)
            self.end(session, "expired", Close.TAKEN_OVER,
                     "session taken over and could not be resumed")
            self.metrics.resumes_refused += 1
            return None
        old = session.attach(link)
        if old is not None:
            old.close(Close.TAKEN_OVER, "session resumed on another connection")
        self.metrics.sessions_resumed += 1
        self.metrics.replayed += len(claim.replay)
        self._log.debug("session {session} resumed after seq {last} ({n} to replay)",
                        session=session.label, last=request.last_seq, n=len(claim.replay))
        self.welcome(session, request.token, resumed=True,
                     heartbeat=getattr(link, "heartbeat", None))
        session.resend(claim.replay)
        return session

    def welcome(self, session: Session, token: str, resumed: bool = False,
                heartbeat: float | None = None) -> None:
        """Send ``welcome`` to a session's link; ``heartbeat``: the link's own, when it has
        one (an NDJSON stream is never pinged: 0), else the configured one."""
        session.send(wire.encode_welcome(session.id, token, resumed,
                                         self._heartbeat if heartbeat is None else heartbeat,
                                         SERVER_NAME), "welcome")

    def end(self, session: Session, reason: str, close: Close | int | None = None,
            text: str = "") -> None:
        """End ``session`` for good; close its link for ``close`` when one is given."""
        if session.closed:
            return
        self._disown(session)
        link = session.ended()
        self.store.end(session.record())
        self.metrics.sessions_closed[reason] += 1
        if link is not None and close is not None:
            link.close(close, text)
        self._log.debug("session {session} ended ({reason}; {count} open)",
                        session=session.label, reason=reason, count=len(self.sessions))
        for observer in self.registry.observers:
            try:
                observer.sessionClosed(session, reason)
            except Exception:
                if self.logs.admit(logflood.OBSERVER_FAILURE):
                    self._log.failure("observer {observer!r} failed on sessionClosed",
                                      observer=observer)

    def _disown(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is not None:
            self._attached(session)
            left = self._per_peer[session.peer] - 1
            if left:
                self._per_peer[session.peer] = left
            else:
                del self._per_peer[session.peer]

    def moved(self, session: Session) -> None:
        """Another node took ``session`` (its client resumed there, or this node was thought
        dead): let go of it here without ending it; its connection here is closed 4409."""
        if session.closed:
            return
        self._disown(session)
        link = session.ended()
        forget = getattr(self.store, "forget", None)
        if forget is not None:
            forget(session.record())
        self.metrics.disconnects["taken_over"] += 1
        if link is not None:
            link.close(Close.TAKEN_OVER, "session resumed on another connection")
        self._log.debug("session {session} moved to another node", session=session.label)

    def adopt(self, record: ISessionRecord, ttl: float) -> None:
        """A session of a node that died: held here, detached, until resumed or expired."""
        if record.id in self.sessions:
            return
        session = self._session_class(self, record, None)
        self._own(session, "adopted")
        session.rejoin()
        self.store.detach(record, ttl, lambda: self.end(session, "expired"))
        self._detached[session.id] = session
        self._detached_of.setdefault(session.peer, {})[session.id] = session

    def disconnect(self, session: Session, reason: Close, text: str) -> None:
        """Close a session's connection for ``reason``; the session stays resumable."""
        link = session.detach()
        if link is None:
            return
        self.metrics.disconnects[reason.name.lower()] += 1
        self._resumable(session)
        link.close(reason, text)

    def detach(self, session: Session) -> None:
        """The session lost its connection: keep it resumable for ``resume_ttl``."""
        session.detach()
        self._resumable(session)

    def _resumable(self, session: Session) -> None:
        if session.closed:
            return
        ttl = self.settings.resume_ttl
        if ttl <= 0:
            self.end(session, "lost")
            return
        self.store.detach(session.record(), ttl, lambda: self.end(session, "expired"))
        # longest-detached first: a session detached again goes to the back
        self._attached(session)
        self._detached[session.id] = session
        self._detached_of.setdefault(session.peer, {})[session.id] = session

    def push(self, session_id: str, event: str, data: Any = None) -> Deferred[bool]:
        """Push ``event`` to the session ``session_id`` wherever it is; a Deferred firing
        with True, or False when there is no such session."""
        return self.broker.send(session_id, wire.event_prefix(event, data), "event")

    def call(self, session_id: str, method: str, params: Any = None,
             timeout: float | None = None) -> Deferred:
        """Call ``method`` on the client of session ``session_id`` wherever it is; a Deferred
        of its result (see ISession.call). Fails with ApplicationError ``unknown_session``
        when there is no such session."""
        wait = self.settings.call_timeout if timeout is None else timeout
        session = self.sessions.get(session_id)
        if session is not None and not session.closed:
            return session.call(method, params, wait)
        remote = getattr(self.broker, "call", None)
        if remote is None:
            return fail(ApplicationError("unknown_session", "no such session"))
        return remote(session_id, method, params, wait)

    # -- per-message dispatch -------------------------------------------------------------------

    def receive(self, session: Session, payload: bytes) -> None:
        """One text message of a registered session: rate limit, decode, route."""
        now = self._now = self._seconds()
        if not session.allow(now, self._rate, self._burst):
            self.badMessage(session, errors.RATE_LIMITED,
                            f"over {self.settings.rate:g} messages/s; slow down")
            return
        try:
            message = wire.decode(payload, self._max_depth)
        except wire.WireError as e:
            if e.code == errors.INVALID_UTF8:
                self.disconnect(session, Close.INVALID_PAYLOAD, e.message)
            else:
                self.badMessage(session, e.code, e.message, e.id)
            return
        kind = type(message)
        self._in[self._type_names[kind]] += 1
        self._dispatch[kind](session, message)

    def frame(self, session: Session) -> None:
        """One more frame of a message still arriving: it costs a rate-limit token, as a
        message does, and one over the rate is answered like a message over it."""
        if not session.allow(self._seconds(), self._rate, self._burst):
            self.badMessage(session, errors.RATE_LIMITED,
                            f"over {self.settings.rate:g} messages/s (each frame past a "
                            f"message's first counts); slow down")

    def badMessage(self, session: Session, code: str, message: str,
                   call_id: wire.CallId | None = None) -> None:
        """Answer bad input; past ``max_bad_messages`` also close the connection (rate
        limited, or protocol violation). The session stays resumable."""
        self.metrics.bad_messages[code] += 1
        session.error(code, message, None, call_id)
        if session.misbehaved() > self.settings.max_bad_messages:
            close = (Close.RATE_LIMITED if code == errors.RATE_LIMITED
                     else Close.PROTOCOL_VIOLATION)
            if self.logs.admit(logflood.TOO_MANY_BAD):
                self._log.info("session {session}: too many bad messages, closing ({why})",
                               session=session.label, why=close.value)
            self.disconnect(session, close, "too many bad messages")

    def _event(self, session: Session, msg: wire.Event) -> None:
        handler = self.registry.events.get(msg.event)
        if handler is None:
            session.error(errors.UNKNOWN_EVENT, f"no handler for event {msg.event!r}")
            return
        try:
            result = handler(session, msg.data)
        except Exception:
            session.fail(None, Failure(), f"event {msg.event!r}")
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
        busy = len(session._inflight)  # callsRunning(), inline: per call
        if busy:  # only calls still running are kept: most sessions have none
            if session.running(call_id):
                session.error(errors.DUPLICATE_ID, "a call with this id is still in flight",
                              None, call_id)
                return
            if busy >= self._max_calls:
                session.error(errors.TOO_MANY_CALLS,
                              f"at most {self._max_calls} calls may be in flight",
                              None, call_id)
                return
        # receive() just read the clock for the rate limit: the call started then
        started = self._now
        try:
            result = handler(session, msg.params)
        except Exception:
            session.fail(call_id, Failure(), f"call {msg.method!r}")
            self.metrics.observe_call(self._seconds() - started)
            return
        # The common fast path: a plain value, answered at once with no Deferred or timer
        # (checked by exact type first: isinstance(x, Deferred) goes through ABCMeta).
        if type(result) not in _PLAIN:
            if iscoroutine(result):
                result = Deferred.fromCoroutine(result)
            plain = not isinstance(result, Deferred)
        else:
            plain = True
        if plain:
            session.reply(call_id, result)
            self._observe_call(self._seconds() - started)
            return
        if not result.called:
            # only a call still running needs a slot and a timer
            session.started(call_id, result)
            result.addTimeout(self.settings.call_timeout, self.clock)

        def done(value: Any) -> None:
            session.finished(call_id, result)
            self.metrics.observe_call(self._seconds() - started)
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
        session.cancel(msg.id)

    def _result(self, session: Session, msg: wire.Result) -> None:
        if not session.answer(msg.id, True, msg.result):
            self.badMessage(session, errors.BAD_MESSAGE,
                             "no server call with this id is in flight")

    def _error(self, session: Session, msg: wire.Error) -> None:
        if not session.answer(msg.id, False, (msg.code, msg.message, msg.data)):
            self.badMessage(session, errors.BAD_MESSAGE,
                             "no server call with this id is in flight")

    def _ping(self, session: Session, msg: wire.Ping) -> None:
        try:
            frame = wire.encode_pong(msg.data)
        except TypeError:  # not expected: decode refuses the integers orjson cannot write
            frame = wire.encode_pong(None)
        session.send(frame, "pong")

    def _ack(self, session: Session, msg: wire.Ack) -> None:
        if msg.seq > session.seq:
            self.badMessage(session, errors.BAD_MESSAGE, "ack of a seq not sent yet")
            return
        session.ack(msg.seq)

    def _bye(self, session: Session, msg: wire.Bye) -> None:
        self.end(session, "bye", Close.NORMAL, "bye")

    def _secondHello(self, session: Session, msg: wire.Hello) -> None:
        self.badMessage(session, errors.ALREADY_REGISTERED, "this connection has a session")

    # -- topics -------------------------------------------------------------------------------

    def _allowed(self, session: Session, topic: str, publish: bool) -> bool:
        for authorizer in self.registry.authorizers:
            allow = authorizer.allowPublish if publish else authorizer.allowSubscribe
            if not allow(session, topic):
                return False
        return True

    def _subscribe(self, session: Session, msg: wire.Subscribe) -> None:
        topic = msg.topic
        if not session.isSubscribed(topic):
            if len(session.subscriptions) >= self.settings.max_subscriptions:
                session.error(errors.TOO_MANY_SUBSCRIPTIONS,
                              f"at most {self.settings.max_subscriptions} subscriptions",
                              None, msg.id)
                return
            if not self._guard(session, topic, False, msg.id):
                return
            session.subscribe(topic)
        # the latest subscribe decides whether this subscriber hears joins and leaves
        self.broker.watch(session, topic, msg.presence)
        if msg.id is not None:
            self._answerKept(session, msg.id)

    def _presence(self, session: Session, msg: wire.Presence) -> None:
        if not self._guard(session, msg.topic, False, msg.id):
            return
        call_id = msg.id

        def failed(failure: Failure) -> None:
            if self.logs.admit(logflood.HANDLER_FAILURE):
                self._log.failure("presence of a topic failed", failure)
            session.error(errors.INTERNAL, "presence is not available now; try again", None,
                          call_id)
        def answer(members: list) -> None:
            session.reply(call_id, {"members": members})
            # the answer grows with the topic: a large one costs its asker more of its
            # message rate, so asking again and again cannot keep the process busy
            session.charge(len(members) / PRESENCE_MEMBERS_PER_TOKEN)
        self.presence(msg.topic).addCallbacks(answer, failed)

    def presence(self, topic: str) -> Deferred[list]:
        """Who is in ``topic``, on every node: a Deferred of member dicts (``client``,
        ``user``, ``meta``; see ISession.member)."""
        return self.broker.presence(topic)

    def _unsubscribe(self, session: Session, msg: wire.Unsubscribe) -> None:
        session.unsubscribe(msg.topic)
        if msg.id is not None:
            self._answerKept(session, msg.id)

    def _answerKept(self, session: Session, call_id: wire.CallId) -> None:
        """Answer ``null`` once what the request changed is in the shared store (so a
        subscription is in effect on every node when its client hears so)."""
        after = self._after_kept
        if after is None:
            session.reply(call_id, None)
        else:
            after(lambda: session.reply(call_id, None))

    def _publish(self, session: Session, msg: wire.Publish) -> None:
        if not self._guard(session, msg.topic, True, msg.id):
            return
        try:
            d = self.publish(msg.topic, msg.data)
        except TypeError:  # not expected (decode refuses integers orjson cannot write)
            session.error(errors.BAD_MESSAGE, "data cannot be published", None, msg.id)
            return
        call_id = msg.id
        if call_id is not None:
            # answered once accepted: at once in memory, once kept in Redis in a cluster
            d.addCallbacks(lambda _: session.reply(call_id, None),
                           lambda f: session.error(errors.INTERNAL, "the publication could "
                                                   "not be kept; try again", None, call_id))
        elif not d.called:
            d.addErrback(lambda f: None)  # a publication without id wants no answer

    def _guard(self, session: Session, topic: str, publish: bool,
               call_id: wire.CallId | None) -> bool:
        """Ask the authorizers; answer ``forbidden`` (or ``internal``) when they refuse."""
        try:
            if self._allowed(session, topic, publish):
                return True
            session.error(errors.FORBIDDEN, f"not allowed to "
                          f"{'publish on' if publish else 'subscribe to'} this topic",
                          None, call_id)
        except ApplicationError as e:
            session.error(e.code, e.message, e.data, call_id)
        except Exception:
            session.fail(call_id, Failure(), "topic authorizer")
        return False

    def publish(self, topic: str, data: Any = None) -> Deferred[None]:
        """Deliver ``data`` on ``topic`` to every subscriber (on every node, with a shared
        broker); the Deferred fires once the broker has accepted it.

        The message is encoded once; each subscriber's copy only gets its own seq stamped.
        Data that cannot be encoded raises TypeError at once.
        """
        return self.broker.publish(topic, wire.message_prefix(topic, data))
