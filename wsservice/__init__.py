"""wsservice: real-time JSON messaging over WebSocket, as a Twisted service."""

from ._version import __version__
from .app import WSService, makeService
from .auth import ANONYMOUS, AnonymousAuthenticator, AuthRequest
from .config import Settings
from .errors import (
    ApplicationError,
    ConfigurationError,
    Forbidden,
    InvalidParams,
    RemoteError,
    SessionClosed,
    Unauthorized,
)
from .handler import Handler, call, event
from .interfaces import (
    IAuthenticator,
    IAuthRequest,
    ICallHandler,
    IEventHandler,
    IResourceProvider,
    ISession,
    ISessionObserver,
    ITopicAuthorizer,
)
from .listener import ListenerService
from .service import SessionService
from .session import Session
from .hmactokens import HMACAuthenticator

__all__ = [
    "__version__",
    "ANONYMOUS", "AnonymousAuthenticator", "ApplicationError", "AuthRequest",
    "ConfigurationError", "Forbidden", "HMACAuthenticator", "Handler", "IAuthRequest", "IAuthenticator",
    "ICallHandler", "IEventHandler", "IResourceProvider", "ISession", "ISessionObserver", "ITopicAuthorizer",
    "InvalidParams", "ListenerService", "RemoteError", "Session", "SessionClosed",
    "SessionService", "Settings", "Unauthorized", "WSService", "call", "event", "makeService",
]
