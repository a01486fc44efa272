"""wsservice: real-time JSON messaging over WebSocket, as a Twisted service."""

from ._version import __version__
from .apikeys import APIKeys
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
from .hmactokens import HMACAuthenticator
from .jwtauth import JWTAuthenticator, JWTPrincipal
from .interfaces import (
    IAuthenticator,
    IAuthRequest,
    IBroker,
    ICallHandler,
    IDeliverable,
    IEventHandler,
    IResourceProvider,
    ISession,
    ISessionObserver,
    ISessionRecord,
    ISessionStore,
    ITopicAuthorizer,
)
from .jsonlog import JSONLogObserver
from .listener import ListenerService
from .memorybroker import MemoryBroker
from .memorystore import MemoryRecord, MemorySessionStore
from .ndjson import NDJSONFactory, NDJSONListener
from .reasons import Close
from .redisstore import RedisBroker, RedisRecord, RedisSessionStore
from .service import SessionService
from .session import Session
from .clustersession import ClusterSession
from .cluster import cluster_seams
from .store import Claim

__all__ = [
    "__version__",
    "ANONYMOUS", "APIKeys", "AnonymousAuthenticator", "ApplicationError", "AuthRequest", "Claim", "Close",
    "ClusterSession", "RedisBroker", "RedisRecord", "RedisSessionStore", "cluster_seams",
    "ConfigurationError", "Forbidden", "HMACAuthenticator", "Handler", "IAuthRequest",
    "JSONLogObserver", "JWTAuthenticator", "JWTPrincipal",
    "IAuthenticator", "IBroker", "ICallHandler", "IDeliverable", "IEventHandler",
    "IResourceProvider", "ISession", "ISessionObserver", "ISessionRecord", "ISessionStore",
    "ITopicAuthorizer", "InvalidParams", "ListenerService", "MemoryBroker", "MemoryRecord",
    "MemorySessionStore", "NDJSONFactory", "NDJSONListener", "RemoteError", "Session", "SessionClosed", "SessionService",
    "Settings", "Unauthorized", "WSService", "call", "event", "makeService",
]
