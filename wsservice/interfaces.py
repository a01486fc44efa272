"""The zope.interface contracts between wsservice and the code its users write."""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from .store import Claim


class ISession(Interface):
    """One client session, as handlers see it."""

    id = Attribute("str: the session id (a secret: do not log it at INFO or above).")
    label = Attribute("str: a short, non-secret name for this session, fit for logs.")
    principal = Attribute("object: what the authenticator returned for this session.")
    meta = Attribute("dict: the hello's ``meta`` object (empty when none was sent).")
    seq = Attribute("int: the seq of the last message pushed to this session.")
    closed = Attribute("bool: True once the session has ended.")
    service = Attribute("SessionService: the service of this session; its push() and call() "
                        "reach any session by id, on any node of a cluster.")
    attached = Attribute("bool: True while a client connection is attached (False while the "
                         "session waits to be resumed, and once it has ended).")
    member = Attribute("dict: the session as presence lists it: ``client`` (its public id, "
                       "not a secret), ``user`` (the principal's publicName or None) and "
                       "``meta`` (its hello meta's ``public``, or None).")

    def push(event: str, data: object = None) -> object:
        """Push event ``event`` with ``data`` to the client; return its ``seq``.

        While the client is away (resumable), the push is kept for replay. In a cluster Redis
        numbers the message: push returns a Deferred firing with the seq once Redis keeps
        it (0 if it could not: then it was not sent either).
        """

    def call(method: str, params: object = None, timeout: float | None = None) -> object:
        """Call ``method`` on the client; return a Deferred firing with its result.

        The Deferred fails with RemoteError carrying the client's error, or with
        ApplicationError ``timeout`` after ``timeout`` (default: the service's call_timeout).
        """

    def subscribe(topic: str) -> None:
        """Subscribe this session to ``topic`` (no authorization or limit applies)."""

    def unsubscribe(topic: str) -> None:
        """Unsubscribe this session from ``topic``."""

    def publish(topic: str, data: object = None) -> Deferred[None]:
        """Publish ``data`` on ``topic`` to every subscriber, on every node; the Deferred
        fires once the publication is accepted for delivery (there is no count: with a
        cluster, subscribers on other nodes are not known here)."""

    def close(code: int = 1000, reason: str = "") -> None:
        """End the session for good and close its connection with ``code`` and ``reason``."""


class IEventHandler(Interface):
    """Serves client ``event`` messages by name."""

    events = Attribute(
        "Mapping[str, Callable[[ISession, object], object]]: event name to a callable taking "
        "(session, data). Its result is ignored; an exception is logged."
    )


class ICallHandler(Interface):
    """Serves client ``call`` messages by method name."""

    calls = Attribute(
        "Mapping[str, Callable[[ISession, object], object]]: method name to a callable taking "
        "(session, params) and returning the result, a Deferred of it, or a coroutine. "
        "ApplicationError raised from it becomes the client's error."
    )


class ISessionObserver(Interface):
    """Told when sessions begin and end."""

    def sessionOpened(session: ISession) -> None:
        """A session was created; its ``welcome`` has just been sent, so it may be pushed to."""

    def sessionClosed(session: ISession, reason: str) -> None:
        """A session ended for good; ``reason`` is ``bye`` (the client said bye or closed
        1000), ``closed`` (``session.close()``), ``expired`` (not resumed within
        ``resume_ttl``, or it could not be resumed exactly), ``lost`` (the connection went
        away with resume off) or ``shutdown`` (``SessionService.endAll()``)."""


class ITopicAuthorizer(Interface):
    """Decides who may subscribe and publish to which topic (every authorizer must agree)."""

    def allowSubscribe(session: ISession, topic: str) -> bool:
        """Whether ``session`` may subscribe to ``topic`` (False: error ``forbidden``)."""

    def allowPublish(session: ISession, topic: str) -> bool:
        """Whether ``session`` may publish on ``topic`` (False: error ``forbidden``)."""


class IResourceProvider(Interface):
    """Adds plain-HTTP resources next to the WebSocket path (e.g. a demo page)."""

    resources = Attribute(
        "Mapping[str, twisted.web.resource.IResource]: path (e.g. '' for '/', "
        "'wsservice.js') to the resource served there."
    )


class IAuthRequest(Interface):
    """What an authenticator sees of a ``hello``."""

    auth = Attribute("object: the hello's ``auth`` member (None when absent).")
    headers = Attribute("Mapping[str, str]: the handshake's HTTP headers, names lower-cased.")
    peer = Attribute("str: the peer address, e.g. 'tcp4:127.0.0.1:5555' or 'unix'.")
    listener = Attribute("str: the endpoint description of the listener it came through.")


class IAuthenticator(Interface):
    """Decides who a client is."""

    def authenticate(request: IAuthRequest) -> object:
        """Return a principal (any object), a Deferred or coroutine of one, or raise Unauthorized."""


class ISessionRecord(Interface):
    """One session's resumable state, as a session store keeps it (the owning node's handle)."""

    id = Attribute("str: the session id.")
    label = Attribute("str: the session's non-secret name for logs.")
    principal = Attribute("object: what the authenticator returned for the session.")
    meta = Attribute("dict: the hello's ``meta``.")
    seq = Attribute("int: the seq of the last message appended (kept or not).")
    subscriptions = Attribute("Collection[str]: the topics the session is subscribed to.")

    def append(seq: int, frame: bytes) -> Deferred[None] | None:
        """Keep ``frame``, numbered ``seq``, for replay (oldest dropped past the store's
        replay_limit and replay_bytes); None once kept, or a Deferred firing once durable."""

    def ack(seq: int) -> None:
        """The client holds every message up to ``seq``: they need not be kept."""

    def subscribe(topic: str) -> None:
        """Remember that the session is subscribed to ``topic``."""

    def unsubscribe(topic: str) -> None:
        """Forget the session's subscription to ``topic``."""


class ISessionStore(Interface):
    """The session directory and everything resumable: in memory, or shared (Redis).

    Methods answer with Deferreds (an in-memory store's have already fired).
    """

    def create(session_id: str, token: str, label: str, principal: object,
               meta: dict) -> Deferred[ISessionRecord]:
        """A new session; a Deferred firing with its ISessionRecord (the token is kept
        only as a hash)."""

    def claim(session_id: str, token: str, last_seq: int) -> Deferred[Claim | None]:
        """Take a session back for a resuming client; a Deferred firing with a Claim, or
        None when there is no such session or the token is wrong. The Claim's ``replay``
        is every kept frame after ``last_seq`` in order, or None when some are no longer
        kept (a gap: the session cannot be resumed exactly). A claim cancels expiry."""

    def detach(record: ISessionRecord, ttl: float, expired: Callable[[], object]) -> None:
        """The session lost its connection: call ``expired()`` after ``ttl`` seconds unless
        it is claimed or ended first."""

    def end(record: ISessionRecord) -> Deferred[None]:
        """Forget the session and all its state; a Deferred firing once done."""


class IDeliverable(Interface):
    """What a broker delivers to: a session of this node."""

    def deliver(prefix: bytes, kind: str) -> int:
        """Stamp an encoded message (``prefix`` lacks only its seq) with the next seq, keep
        it for replay and send it; return the seq."""


class IBroker(Interface):
    """Delivery beyond one connection: topics, and messages addressed to a session id."""

    def bind(local: Callable[[str], IDeliverable | None]) -> None:
        """Deliver what is addressed to this node's sessions through ``local(session_id)``,
        which answers the IDeliverable or None."""

    def subscribe(session: IDeliverable, topic: str) -> None:
        """Deliver ``topic``'s publications to ``session`` from now on."""

    def unsubscribe(session: IDeliverable, topic: str) -> None:
        """Stop delivering ``topic`` to ``session``."""

    def publish(topic: str, prefix: bytes) -> Deferred[None]:
        """Deliver an encoded topic message to every subscriber, exactly once each, in the
        order published; a Deferred firing once the publication is accepted."""

    def send(session_id: str, prefix: bytes, kind: str) -> Deferred[bool]:
        """Deliver an encoded message to one session wherever it is; a Deferred firing
        with True, or False when there is no such session."""

    def watch(session: IDeliverable, topic: str, on: bool) -> None:
        """Push ``presence.join`` / ``presence.leave`` events of ``topic`` to ``session`` (a
        subscriber of it) from now on (``on``), or stop; unsubscribing stops them too.

        Every subscriber with a ``member`` (a session) is a member of the topic: it joins
        when it subscribes and leaves when it unsubscribes or ends (not when it detaches);
        a session is not told of its own join or leave."""

    def presence(topic: str) -> Deferred[list]:
        """The members of ``topic`` (each a session's ``member`` dict), on every node."""

    def members() -> int:
        """How many topic memberships this node's sessions hold (for metrics)."""
