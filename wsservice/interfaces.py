"""The zope.interface contracts between wsservice and the code its users write."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class ISession(Interface):
    """One client session, as handlers see it."""

    id = Attribute("str: the session id (a secret: do not log it at INFO or above).")
    label = Attribute("str: a short, non-secret name for this session, fit for logs.")
    principal = Attribute("object: what the authenticator returned for this session.")
    meta = Attribute("dict: the hello's ``meta`` object (empty when none was sent).")
    seq = Attribute("int: the seq of the last message pushed to this session.")
    closed = Attribute("bool: True once the session has ended.")
    attached = Attribute("bool: True while a client connection is attached (False while the "
                         "session waits to be resumed, and once it has ended).")

    def push(event: str, data: object = None) -> int:
        """Push event ``event`` with ``data`` to the client; return its ``seq``.

        While the client is away (resumable), the push is kept for replay.
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

    def publish(topic: str, data: object = None) -> int:
        """Publish ``data`` on ``topic``; return how many subscribers got it."""

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
