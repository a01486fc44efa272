"""Settings: every limit and timer of the service, with protocol.md's defaults."""

from __future__ import annotations

from dataclasses import dataclass

from .origin import OriginPolicy

MiB = 1024 * 1024
MAX_DEPTH = 1000  # orjson refuses nesting past 1024 whatever we allow


@dataclass(frozen=True)
class Settings:
    """The service's limits and timers; defaults are exactly protocol.md's."""

    path: str = "/ws"
    allowed_origins: tuple[str, ...] = ()
    hello_timeout: float = 10.0
    max_message_size: int = 1 * MiB
    max_depth: int = 32
    max_inflight_calls: int = 64
    call_timeout: float = 30.0
    max_bad_messages: int = 20
    heartbeat: float = 25.0
    max_sessions: int = 10000
    max_subscriptions: int = 100
    resume_ttl: float = 60.0
    replay_limit: int = 1000
    replay_bytes: int = 1 * MiB
    rate: float = 200.0
    burst: int = 400
    max_send_queue: int = 4 * MiB
    drain_timeout: float = 10.0
    # Serve /echo (text and binary echo, same WebSocket stack) for the Autobahn Testsuite.
    conformance_echo: bool = False
    # Messages held while an asynchronous authenticator decides on a hello.
    max_pending_before_welcome: int = 64

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or self.path == "/":
            raise ValueError(f"path must start with '/' and name a resource, not {self.path!r}")
        for name in ("hello_timeout", "call_timeout", "heartbeat", "rate", "drain_timeout"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ValueError(f"{name} must be a finite number > 0")
        if not 0 <= self.resume_ttl < float("inf"):
            raise ValueError("resume_ttl must be >= 0 (0 turns resume off)")
        for name in ("max_message_size", "max_depth", "max_inflight_calls", "max_sessions",
                     "max_subscriptions", "replay_limit", "replay_bytes", "burst",
                     "max_send_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        OriginPolicy(self.allowed_origins)  # raises ValueError on a malformed pattern
        if self.max_depth > MAX_DEPTH:
            raise ValueError(f"max_depth must be <= {MAX_DEPTH} (the JSON parser's own limit)")
        if self.max_bad_messages < 0:
            raise ValueError("max_bad_messages must be >= 0")
