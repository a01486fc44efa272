"""The errors the client raises itself; the server's own arrive as ``wsservice.RemoteError``."""

from __future__ import annotations

from typing import Any

from ..errors import RemoteError

# error.code strings of failures the client decides itself (the server's are protocol.md §4)
TIMEOUT = "timeout"
DISCONNECTED = "disconnected"
TOO_MANY_CALLS = "too_many_calls"
CLOSED = "closed"
CONNECT_FAILED = "connect_failed"


class ClientError(RemoteError):
    """A request or connection failed on the client's side: code ``timeout``,
    ``disconnected``, ``too_many_calls``, ``closed`` or ``connect_failed`` (or the server's
    code when it refused the first connection); ``close_code`` is the WebSocket close code
    that ended the connection, when there is one."""

    def __init__(self, code: str, message: str = "", data: Any = None,
                 close_code: int | None = None) -> None:
        super().__init__(code, message, data)
        self.close_code = close_code
