"""The close codes of protocol.md section 4: how the adapters put a close reason on the wire."""

from __future__ import annotations

from .reasons import Close

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_PROTOCOL_VIOLATION = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_HELLO_TIMEOUT = 4408
CLOSE_SESSION_TAKEN = 4409
CLOSE_RATE_LIMITED = 4429
CLOSE_SLOW_CONSUMER = 4508

CODES: dict[Close, int] = {
    Close.NORMAL: CLOSE_NORMAL,
    Close.GOING_AWAY: CLOSE_GOING_AWAY,
    Close.UNSUPPORTED_DATA: CLOSE_UNSUPPORTED_DATA,
    Close.INVALID_PAYLOAD: CLOSE_INVALID_PAYLOAD,
    Close.TOO_BIG: CLOSE_TOO_BIG,
    Close.INTERNAL_ERROR: CLOSE_INTERNAL_ERROR,
    Close.TRY_AGAIN_LATER: CLOSE_TRY_AGAIN_LATER,
    Close.PROTOCOL_VIOLATION: CLOSE_PROTOCOL_VIOLATION,
    Close.UNAUTHORIZED: CLOSE_UNAUTHORIZED,
    Close.HELLO_TIMEOUT: CLOSE_HELLO_TIMEOUT,
    Close.TAKEN_OVER: CLOSE_SESSION_TAKEN,
    Close.RATE_LIMITED: CLOSE_RATE_LIMITED,
    Close.SLOW_CONSUMER: CLOSE_SLOW_CONSUMER,
}

# What a server may put in a close frame below 3000 (RFC 6455 section 7.4.1).
SERVER_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                1013, 1014})


# What a peer may put in a close frame (RFC 6455 section 7.4 and the IANA registry): 1004-1006
# and 1015 are reserved, 1016-2999 unassigned, < 1000 and >= 5000 never valid.
PEER_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
                              1014})


def peer_may_send(code: int) -> bool:
    """Whether a client's close frame may carry ``code`` (else it is answered 1002)."""
    return code in PEER_CLOSE_CODES or 3000 <= code <= 4999


def code_of(reason: Close | int) -> int:
    """The close code for a reason (an application's own code is already one)."""
    return reason if isinstance(reason, int) else CODES[reason]


def check_code(code: int) -> int:
    """``code`` if a server may send it (RFC 6455 section 7.4), else ValueError."""
    if not (code in SERVER_CLOSE_CODES or 3000 <= code <= 4999):
        raise ValueError(f"{code} is not a close code a server may send")
    return code
