"""Error codes, close codes and the exception handlers raise to answer a client with an error."""

from __future__ import annotations

from typing import Any

# error.code strings of protocol.md section 4.
BAD_JSON = "bad_json"
BAD_MESSAGE = "bad_message"
NOT_REGISTERED = "not_registered"
ALREADY_REGISTERED = "already_registered"
UNKNOWN_EVENT = "unknown_event"
UNKNOWN_METHOD = "unknown_method"
INVALID_PARAMS = "invalid_params"
DUPLICATE_ID = "duplicate_id"
TOO_MANY_CALLS = "too_many_calls"
TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
RATE_LIMITED = "rate_limited"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
INTERNAL = "internal"
# Not an error code sent to clients: a text message that is not UTF-8 fails the connection
# with close 1007, as RFC 6455 requires.
INVALID_UTF8 = "invalid_utf8"

CODES = frozenset({
    BAD_JSON, BAD_MESSAGE, NOT_REGISTERED, ALREADY_REGISTERED, UNKNOWN_EVENT, UNKNOWN_METHOD,
    INVALID_PARAMS, DUPLICATE_ID, TOO_MANY_CALLS, TOO_MANY_SUBSCRIPTIONS, RATE_LIMITED,
    UNAUTHORIZED, FORBIDDEN, CANCELLED, TIMEOUT, INTERNAL,
})

# Codes that spend the session's bad-message budget (protocol.md section 4).
BAD_INPUT_CODES = frozenset({BAD_JSON, BAD_MESSAGE, ALREADY_REGISTERED, RATE_LIMITED})

# The close codes, for handler code that names them in session.close(code): they live
# with the adapters now (closecodes.py), and these stay for compatibility.
from .closecodes import (  # noqa: E402,F401
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_PAYLOAD,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_VIOLATION,
    CLOSE_RATE_LIMITED,
    CLOSE_SESSION_TAKEN,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNSUPPORTED_DATA,
    CLOSE_HELLO_TIMEOUT,
    SERVER_CLOSE_CODES,
)


class ApplicationError(Exception):
    """Raise from a handler to answer the client with ``error`` ``{code, message, data}``."""

    def __init__(self, code: str, message: str = "", data: Any = None) -> None:
        super().__init__(code, message, data)
        self.code = code
        self.message = message or code
        self.data = data

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, {self.data!r})"


class InvalidParams(ApplicationError):
    """Raise from a handler whose arguments are unacceptable (code ``invalid_params``)."""

    def __init__(self, message: str = "invalid params", data: Any = None) -> None:
        super().__init__(INVALID_PARAMS, message, data)


class Unauthorized(ApplicationError):
    """Raise from an authenticator to refuse a ``hello`` (code ``unauthorized``, close 4401)."""

    def __init__(self, message: str = "authentication failed", data: Any = None) -> None:
        super().__init__(UNAUTHORIZED, message, data)


class Forbidden(ApplicationError):
    """Raise from a handler or authorizer to refuse an operation (code ``forbidden``)."""

    def __init__(self, message: str = "forbidden", data: Any = None) -> None:
        super().__init__(FORBIDDEN, message, data)


class RemoteError(ApplicationError):
    """The client answered a server-initiated call with an ``error``; re-raised, it passes it on."""


class SessionClosed(Exception):
    """The session ended before a server-initiated call was answered."""


class ConfigurationError(Exception):
    """The service was composed wrongly (bad handler, duplicate name); raised at start-up."""
