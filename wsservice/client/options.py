"""The client's options (``connect(url, **options)``), checked when the client is made."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping


@dataclass(frozen=True)
class Options:
    """What ``connect()`` takes beyond the URL, meta, auth and reactor (times in seconds)."""

    call_timeout: float = 30.0  # default timeout of call/subscribe/unsubscribe/publish (0: none)
    backoff_initial: float = 0.5  # reconnect delays: full jitter below
    backoff_factor: float = 2.0  # min(backoff_max, backoff_initial * backoff_factor ** n)
    backoff_max: float = 10.0
    # an IOpenSSLClientConnectionCreator for wss:// (e.g. optionsForClientTLS(host,
    # trustRoot=a private CA)); default optionsForClientTLS(host)
    tls_options: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)  # extra handshake headers
    max_queued_calls: int = 1000  # requests waiting for a connection; past it: too_many_calls
    origin: str | None = None  # the Origin header to send (none by default)
    connect_timeout: float = 10.0  # TCP connect, then handshake, then hello -> welcome each
    ack_every: int = 100  # ack at least every this many delivered messages
    ack_delay: float = 1.0  # and at most this long after the first unacked one
    deflate: bool = True  # offer permessage-deflate

    def __post_init__(self) -> None:
        for name in ("backoff_max", "connect_timeout", "ack_delay"):
            _positive(name, getattr(self, name))
        if not _number(self.call_timeout) or self.call_timeout < 0:
            raise ValueError(f"call_timeout must be a number >= 0 (0: none), got "
                             f"{self.call_timeout!r}")
        _positive("backoff_initial", self.backoff_initial)
        if not _number(self.backoff_factor) or self.backoff_factor < 1:
            raise ValueError(f"backoff_factor must be a number >= 1, got {self.backoff_factor!r}")
        for name in ("max_queued_calls", "ack_every"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if not isinstance(self.headers, Mapping):
            raise ValueError(f"headers must be a mapping, got {self.headers!r}")


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _positive(name: str, value: Any) -> None:
    if not _number(value) or value <= 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")


NAMES = frozenset(f.name for f in fields(Options))


def options(given: Mapping[str, Any]) -> Options:
    """Options from keyword arguments; TypeError names an unknown one."""
    unknown = sorted(set(given) - NAMES)
    if unknown:
        raise TypeError(f"unknown connect() option {unknown[0]!r}; known: "
                        + ", ".join(sorted(NAMES)))
    return Options(**given)
