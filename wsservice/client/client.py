"""Client: one wsservice session over a WebSocket that comes back after every loss.

It connects, says hello, resumes after a loss (exponential backoff, full jitter), delivers
each pushed seq once and in order, acks, keeps calls bounded in time, and re-subscribes
when the server could not resume the session. ``connect()`` makes one.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Mapping

import orjson
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from ..errors import RemoteError
from ..log import logger
from . import errors, presence as _presence
from .backoff import Backoff
from .errors import ClientError
from .inbox import AnyListener, Handler, Inbox, Listener
from .options import Options, options as make_options
from .presence import PresenceListener
from .protocol import ClientFactory, ClientProtocol
from .requests import EVENT, Request, Requests, remote_error
from .url import Target, endpoint, parse_url

CONNECTING = "connecting"
OPEN = "open"
RECONNECTING = "reconnecting"
CLOSED = "closed"

# Close codes after which the session is over: no reconnect (protocol.md §4; 4409: the
# session was resumed on another connection, which now owns it).
FINAL_CLOSE_CODES = frozenset({1000, 4400, 4401, 4409})

StateCallback = Callable[[str, dict[str, Any]], Any]


def connect(url: str, meta: Mapping[str, Any] | None = None, auth: Any = None,
            reactor: Any = None, **options: Any) -> Deferred[Client]:
    """Connect to a wsservice server; a Deferred firing with the open Client at the first
    welcome (or failing: the server's error, a ClientError, or why no connection was made).

    ``url`` is ``ws://host:port/path``, ``wss://host:port/path`` or ``unix:/path/s.sock``
    (ValueError otherwise); ``options`` are Options' fields (TypeError for others).
    """
    return Client(url, meta, auth, reactor, **options).start()


def _encode(message: dict[str, Any]) -> bytes:
    """A request's message as bytes, open at the end for its id: b'{...,"id":'."""
    return orjson.dumps(message)[:-1] + b',"id":'


class Client:
    """One wsservice session; make it with ``connect()``. ``state`` is "connecting",
    "open", "reconnecting" or "closed"; ``session`` the current session id."""

    _log = logger()
    _markers = itertools.count(1)

    def __init__(self, url: str, meta: Mapping[str, Any] | None = None, auth: Any = None,
                 reactor: Any = None, **options: Any) -> None:
        self.target: Target = parse_url(url)
        self.options: Options = make_options(options)
        if meta is not None and not isinstance(meta, Mapping):
            raise TypeError(f"meta must be a mapping, got {meta!r}")
        if reactor is None:
            from twisted.internet import reactor
        self.url = url
        self.meta = dict(meta or {})
        self.auth = auth
        self.state = CONNECTING
        self.session: str | None = None
        self._token: str | None = None
        self._reactor: Any = reactor
        self._clock: IReactorTime = reactor
        o = self.options
        self._backoff = Backoff(o.backoff_initial, o.backoff_factor, o.backoff_max)
        self._factory = ClientFactory(self, self.target.ws_url, reactor, dict(o.headers),
                                      o.origin, o.connect_timeout, o.deflate)
        self._requests = Requests(self._clock, self._send, o.max_queued_calls)
        self._inbox = Inbox(self._clock, self._send, o.ack_every, o.ack_delay)
        self._proto: ClientProtocol | None = None  # the connection being made or in use
        self._open: ClientProtocol | None = None  # the connection that said welcome
        self._connecting: Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None
        self._welcome_timer: IDelayedCall | None = None
        self._replay: tuple[str, int] | None = None  # (pong marker, delivered at welcome)
        self._ready: Deferred[Client] = Deferred(lambda d: self._abandonStart())
        self._closing: list[Deferred[None]] = []
        self._state_callbacks: list[StateCallback] = []
        self._lost_callbacks: list[Callable[[dict[str, Any]], Any]] = []
        self._unconfirmed: set[str] = set()  # topics subscribed again, not yet answered
        self._error_callbacks: list[Callable[[RemoteError], Any]] = []
        self.heartbeat: float = 0  # from the last welcome
        self.resumes = 0  # sessions resumed so far
        self.replayed = 0  # messages delivered during them

    def __repr__(self) -> str:
        return f"<wsservice Client {self.url} {self.state}>"

    # -- public API --------------------------------------------------------------------------

    def start(self) -> Deferred[Client]:
        """Make the first connection; fires with this client at the first welcome."""
        if self._connecting is None and self._proto is None and self.state == CONNECTING:
            self._connect()
        return self._ready

    def call(self, method: str, params: Any = None, timeout: float | None = None
             ) -> Deferred[Any]:
        """Call ``method`` on the server: a Deferred of its result, failing with a
        RemoteError (``timeout`` after ``timeout`` s, default ``call_timeout``, 0: none;
        ``disconnected`` if the connection drops first); ``.cancel()`` cancels it there."""
        if not isinstance(method, str) or not method:
            raise TypeError(f"method must be a non-empty string, got {method!r}")
        return self._request("call", f"call {method!r}",
                             {"type": "call", "method": method, "params": params}, timeout)

    def emit(self, event: str, data: Any = None) -> None:
        """Send event ``event`` with ``data``, fire and forget (while disconnected it waits
        with the requests for the next welcome; ClientError ``too_many_calls`` past
        ``max_queued_calls``, ``closed`` once closed)."""
        if not isinstance(event, str) or not event:
            raise TypeError(f"event must be a non-empty string, got {event!r}")
        if self.state == CLOSED:
            raise ClientError(errors.CLOSED, f"emit {event!r}: the client is closed")
        payload = orjson.dumps({"type": "event", "event": event, "data": data})
        if self._open is not None and self._send(payload):
            return
        refused: list[Failure] = []
        # failing at once: too many waiting (raised here); later: closed (nobody to tell)
        self._requests.add(Request(EVENT, f"emit {event!r}", payload), 0, False).addErrback(
            refused.append)
        if refused:
            refused[0].raiseException()

    def on(self, event: str, listener: Listener) -> None:
        """Call ``listener(data, seq)`` for every pushed event ``event``."""
        self._inbox.events.setdefault(event, []).append(listener)

    def off(self, event: str, listener: Listener) -> None:
        """Stop calling ``listener`` for event ``event``."""
        listeners = self._inbox.events.get(event, [])
        if listener in listeners:
            listeners.remove(listener)
        if not listeners:
            self._inbox.events.pop(event, None)

    def onAnyEvent(self, listener: AnyListener) -> None:
        """Call ``listener(event, data, seq)`` for every pushed event, whatever its name."""
        self._inbox.any_events.append(listener)

    def handle(self, method: str, handler: Handler | None) -> None:
        """Answer the server's calls of ``method`` with ``handler(params)`` (a value, a
        Deferred or a coroutine; raise ApplicationError to answer an error); None removes."""
        if handler is None:
            self._inbox.handlers.pop(method, None)
        else:
            self._inbox.handlers[method] = handler

    def subscribe(self, topic: str, listener: Listener, timeout: float | None = None,
                  presence: PresenceListener | None = None) -> Deferred[None]:
        """Subscribe to ``topic``: ``listener(data, seq)`` gets its messages; fires once
        the server has subscribed (kept across reconnects, renewed after a lost session).

        With ``presence``, ``presence(kind, member)`` is told of each session that joins
        (kind "join") or leaves ("leave") the topic; ``presence(topic)`` gives the members
        as they are now. The latest subscribe of a topic decides its listeners.
        """
        if presence is not None and not callable(presence):
            raise TypeError(f"presence must be a callable or None, got {presence!r}")
        self._inbox.topics[topic] = listener
        if presence is None:
            self._inbox.presence.pop(topic, None)
        else:
            self._inbox.presence[topic] = presence
        d = self._request("subscribe", f"subscribe {topic!r}", _subscription(topic, presence),
                          timeout)

        def failed(failure: Failure) -> Failure:
            if self._inbox.topics.get(topic) is listener:
                del self._inbox.topics[topic]
                self._inbox.presence.pop(topic, None)
            return failure
        return d.addErrback(failed)

    def unsubscribe(self, topic: str, timeout: float | None = None) -> Deferred[None]:
        """Leave ``topic`` (its listeners are dropped at once); fires once the server has."""
        self._inbox.topics.pop(topic, None)
        self._inbox.presence.pop(topic, None)
        return self._request("unsubscribe", f"unsubscribe {topic!r}",
                             {"type": "unsubscribe", "topic": topic}, timeout)

    def presence(self, topic: str, timeout: float | None = None
                 ) -> Deferred[list[dict[str, Any]]]:
        """Who is in ``topic`` now: a Deferred of members ``{"client", "user", "meta"}``
        (``client`` a public per-session id, ``user`` the principal's public name or None,
        ``meta`` the member's hello ``meta["public"]`` or None); RemoteError ``forbidden``
        when the topic may not be subscribed to."""
        if not isinstance(topic, str) or not topic:
            raise TypeError(f"topic must be a non-empty string, got {topic!r}")
        d = self._request("presence", f"presence {topic!r}",
                          {"type": "presence", "topic": topic}, timeout)
        return d.addCallback(self._members, topic)

    def _members(self, result: Any, topic: str) -> list[dict[str, Any]]:
        good, bad = _presence.members(result, topic)
        for value in bad:
            self._log.warn("wsservice client: dropped a malformed member of {topic!r}: "
                           "{member!r}", topic=topic, member=value)
        return good

    def publish(self, topic: str, data: Any = None, timeout: float | None = None
                ) -> Deferred[None]:
        """Publish ``data`` on ``topic``; fires once the server has taken it."""
        return self._request("publish", f"publish {topic!r}",
                             {"type": "publish", "topic": topic, "data": data}, timeout)

    @property
    def topics(self) -> frozenset[str]:
        """The topics this client is subscribed to (or subscribing to)."""
        return frozenset(self._inbox.topics)

    @property
    def last_seq(self) -> int:
        """The seq of the last pushed message delivered to the application."""
        return self._inbox.last_seq

    def onStateChange(self, callback: StateCallback) -> None:
        """Call ``callback(state, info)`` on each change of ``state``.

        ``info`` on "open": ``session``, ``resumed`` and, after a resume, ``replayed`` (how
        many messages were replayed: "open" comes once they are delivered), after a lost
        session ``lost: True``; on "reconnecting" and "closed": the close ``code`` and
        ``reason`` (none on "closed" after ``close()``; ``error`` when connect() failed).
        """
        self._state_callbacks.append(callback)

    def onError(self, callback: Callable[[RemoteError], Any]) -> None:
        """Call ``callback(error)`` for each ``error`` the server sends that answers no
        request (e.g. ``unknown_event`` after an emit); it is logged at WARN as well."""
        self._error_callbacks.append(callback)

    def reconnect(self) -> None:
        """Drop the connection now; the client reconnects and resumes the session."""
        if self._proto is not None:
            self._proto.abort()

    def onLost(self, callback: Callable[[dict[str, Any]], Any]) -> None:
        """Call ``callback(info)`` when a reconnect could not resume the session: the
        session is new (``info["session"]``), messages pushed meanwhile are lost, the
        topics are being subscribed again. Fires before the state change to "open"."""
        self._lost_callbacks.append(callback)

    def close(self) -> Deferred[None]:
        """End the session (``bye``): no reconnect; every pending request fails ``closed``.
        Fires once the connection is closed."""
        d = self._shutdown()
        if not self._ready.called:
            self._ready.errback(ClientError(errors.CLOSED, "closed before the first welcome"))
        return d

    def _shutdown(self) -> Deferred[None]:
        if self.state != CLOSED:
            self._finish({})
            proto = self._proto
            if proto is not None:
                if proto is self._open and proto.isOpen:
                    proto.sendText(b'{"type":"bye"}')
                    proto.sendClose(1000)
                else:
                    proto.abort()
        if self._proto is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closing.append(d)
        return d

    # -- requests ----------------------------------------------------------------------------

    def _request(self, kind: str, what: str, message: dict[str, Any],
                 timeout: float | None) -> Deferred[Any]:
        if timeout is None:
            timeout = self.options.call_timeout
        elif type(timeout) not in (int, float) or not 0 <= timeout < float("inf"):
            raise ValueError(f"timeout must be a number >= 0 (0: none), got {timeout!r}")
        if self.state == CLOSED:
            return _failed(ClientError(errors.CLOSED, f"{what}: the client is closed"))
        try:
            prefix = _encode(message)
        except TypeError as e:
            return _failed(TypeError(f"{what}: cannot be sent as JSON: {e}"))
        return self._requests.add(Request(kind, what, prefix), timeout,
                                  self._open is not None)

    def _send(self, payload: bytes) -> bool:
        """Write to the welcomed connection; False if there is none."""
        proto = self._open
        return proto is not None and proto.sendText(payload)

    # -- the connection ----------------------------------------------------------------------

    def _connect(self) -> None:
        self._retry = None
        ep = endpoint(self.target, self._reactor, self.options.connect_timeout,
                      self.options.tls_options)
        self._connecting = d = ep.connect(self._factory)
        d.addCallbacks(self._tcpConnected, self._connectFailed)

    def _built(self, proto: ClientProtocol) -> None:
        """The factory made ``proto`` for the connection being made."""
        self._proto = proto

    def _tcpConnected(self, proto: ClientProtocol) -> None:
        self._connecting = None

    def _connectFailed(self, failure: Failure) -> None:
        self._connecting = None
        self._proto = None
        if self.state == CLOSED:
            self._gone()
            return
        if self.session is None:
            self._failStart(failure)
            return
        self._log.info("wsservice client: reconnect to {url} failed: {error}",
                       url=self.url, error=failure.getErrorMessage())
        self._reconnectLater()

    def _opened(self, proto: ClientProtocol) -> None:
        """The WebSocket handshake is done: say hello."""
        if proto is not self._proto or self.state == CLOSED:
            proto.abort()
            return
        hello: dict[str, Any] = {"type": "hello"}
        if self.auth is not None:
            hello["auth"] = self.auth
        if self.meta:
            hello["meta"] = self.meta
        if self.session is not None and self._token is not None:
            hello["resume"] = {"session": self.session, "token": self._token,
                               "last_seq": self._inbox.last_seq}
        try:
            payload = orjson.dumps(hello)
        except TypeError as e:
            self._failStart(Failure(TypeError(f"auth and meta must be JSON: {e}")))
            proto.abort()
            return
        proto.sendText(payload)
        self._welcome_timer = self._clock.callLater(self.options.connect_timeout,
                                                    self._noWelcome, proto)

    def _noWelcome(self, proto: ClientProtocol) -> None:
        self._welcome_timer = None
        self._log.warn("wsservice client: no welcome within {seconds:g} s; dropping the "
                       "connection", seconds=self.options.connect_timeout)
        proto.abort()

    def _closed(self, proto: ClientProtocol, code: int, reason: str) -> None:
        """The connection ``proto`` is gone (``code``: its close code, 1006 when dropped)."""
        if proto is not self._proto:
            return
        self._proto = None
        was_open = self._open is proto
        self._open = None
        self._replay = None
        self._cancelWelcomeTimer()
        self._inbox.stop()
        self._requests.disconnected()
        if self.state == CLOSED:
            self._gone()
            return
        info = {"code": code, "reason": reason}
        if self.session is None:
            self._failStart(Failure(self._refused(proto, code, reason)))
        elif code in FINAL_CLOSE_CODES:
            self._log.info("wsservice client: the server ended the session (close {code}: "
                           "{reason})", code=code, reason=reason)
            self._finish(info)
        else:
            if was_open:
                self._log.info("wsservice client: connection to {url} lost (close {code}); "
                               "reconnecting", url=self.url, code=code)
            self._setState(RECONNECTING, info)
            self._reconnectLater()

    def _gone(self) -> None:
        """No connection is left: close() has finished."""
        closing, self._closing = self._closing, []
        for d in closing:
            d.callback(None)

    def _refused(self, proto: ClientProtocol, code: int, reason: str) -> ClientError:
        """Why the first connection came to nothing, as an error."""
        if proto.refusal is not None:
            error = remote_error(proto.refusal)
            return ClientError(error.code, f"{error.message} (close {code})", error.data, code)
        return ClientError(errors.CONNECT_FAILED, f"{self.url}: connection closed before the "
                           f"welcome (close {code}: {reason})", None, code)

    def _reconnectLater(self) -> None:
        delay = self._backoff.next()
        self._log.debug("wsservice client: reconnecting in {delay:.3f} s", delay=delay)
        self._retry = self._clock.callLater(delay, self._connect)

    def _failStart(self, failure: Failure) -> None:
        """The first connection failed: connect() fails, the client is closed."""
        ready = self._ready
        self._finish({"error": failure.getErrorMessage()})
        if not ready.called:
            ready.errback(failure)

    def _abandonStart(self) -> None:
        """connect()'s Deferred was cancelled (it fails CancelledError): give up."""
        self._shutdown()

    def _finish(self, info: dict[str, Any]) -> None:
        """Closed for good: no reconnect, pending requests fail."""
        retry, self._retry = self._retry, None
        if retry is not None and retry.active():
            retry.cancel()
        connecting, self._connecting = self._connecting, None
        self._setState(CLOSED, info)
        self._requests.failAll(errors.CLOSED, "the client is closed")
        self._inbox.stop()
        if connecting is not None:
            connecting.cancel()

    def _cancelWelcomeTimer(self) -> None:
        timer, self._welcome_timer = self._welcome_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _setState(self, state: str, info: dict[str, Any]) -> None:
        if state == self.state:
            return
        self.state = state
        for callback in list(self._state_callbacks):
            try:
                callback(state, info)
            except Exception:
                self._log.failure("wsservice client: a state-change callback failed")

    # -- messages from the server -----------------------------------------------------------

    def _received(self, proto: ClientProtocol, payload: bytes) -> None:
        """One text message from the server: never raises (bad input is logged, dropped)."""
        if proto is not self._proto:
            return
        try:
            self._dispatch(proto, payload)
        except Exception:
            self._log.failure("wsservice client: failed to handle a message from the server")

    def _dispatch(self, proto: ClientProtocol, payload: bytes) -> None:
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._log.warn("wsservice client: dropped malformed JSON from the server "
                           "({size} bytes)", size=len(payload))
            return
        kind = message.get("type") if type(message) is dict else None
        if type(kind) is not str:
            self._log.warn("wsservice client: dropped a message that is not an object with "
                           "a string 'type'")
            return
        if proto is not self._open:
            if kind == "welcome":
                self._welcome(proto, message)
            elif kind == "error":
                proto.refusal = message.get("error")
                self._log.info("wsservice client: the server refused the hello: {error!r}",
                               error=message.get("error"))
            else:
                self._log.warn("wsservice client: dropped a {type!r} that came before the "
                               "welcome", type=kind)
            return
        inbox = self._inbox
        if kind == "event":
            inbox.event(message)
        elif kind == "message":
            inbox.message(message)
        elif kind == "call":
            inbox.call(message)
        elif kind == "result" or kind == "error":
            self._answer(message, kind)
        elif kind == "pong":
            self._pong(message)
        elif kind == "welcome":
            self._log.warn("wsservice client: dropped a second welcome")
        else:
            self._log.warn("wsservice client: dropped a message of unknown type {type!r}",
                           type=kind)

    def _answer(self, message: dict[str, Any], kind: str) -> None:
        request_id = message.get("id")
        ok = kind == "result"
        if request_id is None and not ok:
            error = remote_error(message.get("error"))
            self._log.warn("wsservice client: the server reported {code}: {text}",
                           code=error.code, text=error.message)
            for callback in list(self._error_callbacks):
                try:
                    callback(error)
                except Exception:
                    self._log.failure("wsservice client: an error callback failed")
            return
        value = message.get("result") if ok else message.get("error")
        if not self._requests.answer(request_id, ok, value):
            self._log.warn("wsservice client: dropped {type!r} for unknown request id {id!r}",
                           type=kind, id=request_id)

    def _welcome(self, proto: ClientProtocol, message: dict[str, Any]) -> None:
        session, token = message.get("session"), message.get("token")
        heartbeat = message.get("heartbeat", 0)
        if type(session) is not str or type(token) is not str or not session:
            self._log.warn("wsservice client: malformed welcome; dropping the connection")
            proto.abort()
            return
        if type(heartbeat) not in (int, float) or heartbeat < 0:
            heartbeat = 0
        self._cancelWelcomeTimer()
        first = self.session is None
        resumed = message.get("resumed") is True and session == self.session
        self.session, self._token = session, token
        self._open = proto
        self._backoff.reset()
        self.heartbeat = heartbeat
        proto.startHeartbeat(self._clock, heartbeat)
        info: dict[str, Any] = {"session": session, "resumed": resumed}
        if resumed:
            self._inbox.resumed()
            # the server writes the replay before it reads this ping: the pong ends it
            marker = f"replayed-{next(self._markers)}"
            self._replay = (marker, self._inbox.delivered)
            proto.sendText(orjson.dumps({"type": "ping", "data": marker}))
            self._log.info("wsservice client: session resumed")
            self._resubscribe(self._unconfirmed & set(self._inbox.topics))
        elif not first:
            self._inbox.reset()
            info["lost"] = True
            self._log.info("wsservice client: the session could not be resumed (a new one "
                           "began); subscribing again to {count} topics",
                           count=len(self._inbox.topics))
            self._resubscribe(set(self._inbox.topics))
        self._requests.flush()
        if first:
            self._setState(OPEN, info)
            self._ready.callback(self)
        elif not resumed:
            for callback in list(self._lost_callbacks):
                try:
                    callback(info)
                except Exception:
                    self._log.failure("wsservice client: a lost-session callback failed")
            self._setState(OPEN, info)

    def _pong(self, message: dict[str, Any]) -> None:
        if self._replay is None or message.get("data") != self._replay[0]:
            self._log.debug("wsservice client: unexpected pong")
            return
        replayed = self._inbox.delivered - self._replay[1]
        self._replay = None
        self.resumes += 1
        self.replayed += replayed
        self._setState(OPEN, {"session": self.session, "resumed": True, "replayed": replayed})

    def _resubscribe(self, topics: set[str]) -> None:
        """Subscribe again to ``topics`` (a new session has none); until the server says
        so they stay unconfirmed, and a resume subscribes to them once more."""
        self._unconfirmed = set(topics)
        for topic in sorted(topics):
            listener = self._inbox.topics[topic]
            message = _subscription(topic, self._inbox.presence.get(topic))
            d = self._requests.add(
                Request("subscribe", f"subscribe {topic!r}", _encode(message)),
                self.options.call_timeout, True, bounded=False)
            d.addCallbacks(lambda _, t=topic: self._unconfirmed.discard(t),
                           self._resubscribeFailed, errbackArgs=(topic, listener))

    def _resubscribeFailed(self, failure: Failure, topic: str, listener: Listener) -> None:
        if failure.check(ClientError) and failure.value.code in (errors.DISCONNECTED,
                                                                 errors.CLOSED):
            return  # still unconfirmed: the next connection subscribes again
        self._unconfirmed.discard(topic)
        self._log.warn("wsservice client: could not subscribe again to {topic!r}: {error}",
                       topic=topic, error=failure.getErrorMessage())
        if self._inbox.topics.get(topic) is listener:
            del self._inbox.topics[topic]
            self._inbox.presence.pop(topic, None)


def _subscription(topic: str, presence: PresenceListener | None) -> dict[str, Any]:
    """The ``subscribe`` message of ``topic``, asking for presence events when there is a
    listener for them."""
    message: dict[str, Any] = {"type": "subscribe", "topic": topic}
    if presence is not None:
        message["presence"] = True
    return message


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(error)
    return d
