"""Why a connection closes, in the service's words; each transport adapter maps them to its wire."""

from __future__ import annotations

import enum


class Close(enum.Enum):
    """A reason the server closes a connection (protocol.md section 4 gives each its code)."""

    NORMAL = "normal"                        # bye, or session.close() by a handler
    GOING_AWAY = "going away"                # the server is draining or stopping
    UNSUPPORTED_DATA = "unsupported data"    # a binary message
    INVALID_PAYLOAD = "invalid payload"      # a text message that is not UTF-8
    TOO_BIG = "too big"                      # a message over max_message_size
    INTERNAL_ERROR = "internal error"        # a bug on the server's side
    TRY_AGAIN_LATER = "try again later"      # the server is full
    PROTOCOL_VIOLATION = "protocol violation"
    UNAUTHORIZED = "unauthorized"
    HELLO_TIMEOUT = "hello timeout"
    TAKEN_OVER = "taken over"                # the session was resumed on another connection
    RATE_LIMITED = "rate limited"
    SLOW_CONSUMER = "slow consumer"

