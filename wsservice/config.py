"""Settings: every limit and timer of the service, with protocol.md's defaults.

The fields are the one table of settings: each option field's metadata carries the help
text and the bounds that both ``Settings`` validation and the twistd options (``tap.py``)
use, so a setting is spelled out once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from .hosts import HostPolicy
from .origin import OriginPolicy
from .peers import parse_networks

MiB = 1024 * 1024
MAX_DEPTH = 1000  # orjson refuses nesting past 1024 whatever we allow


class SettingError(ValueError):
    """A setting's value is out of bounds; ``name`` is the field, ``problem`` says why."""

    def __init__(self, name: str, value: Any, problem: str) -> None:
        super().__init__(f"{name} {problem}, got {value!r}")
        self.name = name
        self.value = value
        self.problem = problem


def _option(default: Any, help: str, low: float | None = None, low_open: bool = False,
            high: float | None = None, unit: str = "") -> Any:
    """A field that is also a twistd option: its help, bounds and unit live in metadata."""
    return field(default=default, metadata={
        "help": help, "low": low, "low_open": low_open, "high": high, "unit": unit})


def _switch(default: bool, flag: str, help: str) -> Any:
    """A boolean field that is also a twistd flag (``no-...`` flags turn it off)."""
    return field(default=default, metadata={"help": help, "flag": flag})


def _seconds(default: float, help: str, zero: bool = False) -> Any:
    return _option(default, help, low=0, low_open=not zero, unit="s")


def _count(default: int, help: str, zero: bool = False, high: int | None = None,
           unit: str = "") -> Any:
    return _option(default, help, low=0 if zero else 1, high=high, unit=unit)


@dataclass(frozen=True)
class Settings:
    """The service's limits and timers; defaults are exactly protocol.md's."""

    path: str = _option("/ws", "HTTP path of the WebSocket endpoint.")
    allowed_origins: tuple[str, ...] = ()
    # proxies (addresses or networks) whose X-Forwarded-For names the real client
    trusted_proxies: tuple[str, ...] = ()
    # Host names a listener serves beyond loopback ones (hosts.HostPolicy; '*': any)
    allowed_hosts: tuple[str, ...] = ()
    hello_timeout: float = _seconds(
        10.0, "Seconds a client has to send its whole HTTP request after connecting, and "
        "hello after the WebSocket handshake (else the connection is dropped, or closed "
        "4408).")
    max_message_size: int = _count(
        1 * MiB, "Largest message accepted, in bytes (else close 1009).", unit="bytes")
    max_frames: int = _count(
        256, "Frames one message may arrive in (else close 1009); each frame past a "
        "message's first costs a rate-limit token.")
    max_depth: int = _count(
        32, "Deepest JSON nesting accepted (the top-level object is 1).", high=MAX_DEPTH)
    max_inflight_calls: int = _count(64, "Client calls a session may have in flight at once.")
    call_timeout: float = _seconds(
        30.0, "Seconds a call may take, either direction (else error 'timeout').")
    max_bad_messages: int = _count(
        20, "Bad messages answered per session before the connection is closed 4400.",
        zero=True)
    heartbeat: float = _seconds(
        25.0, "Seconds between WebSocket pings; no pong within as long again drops the "
        "connection (the session stays resumable).")
    max_sessions: int = _count(
        10000, "Sessions at once, attached or resumable; when full, the longest-detached "
        "session is expired to make room, and with none detached a hello is closed 1013.")
    max_sessions_per_peer: int = _count(
        1000, "Sessions at once from one peer address (an IPv4 address, an IPv6 /64); past "
        "it that peer's longest-detached session is expired, with none detached close 1013.")
    max_connections: int = _count(
        10000, "Connections at once, counted from TCP accept (HTTP included); past it new "
        "ones get HTTP 503.")
    max_peer_connections: int = _count(
        1000, "Connections at once from one peer address, counted from TCP accept; past it "
        "new ones get HTTP 503.")
    peer_connect_rate: float = _option(
        100.0, "New connections per second one peer address may open (token bucket refill; "
        "past it HTTP 503).", low=0, low_open=True, unit="/s")
    peer_connect_burst: int = _count(
        1000, "New connections one peer address may open at once (token bucket size).")
    max_subscriptions: int = _count(100, "Topics one session may subscribe to.")
    resume_ttl: float = _seconds(
        60.0, "Seconds a session whose connection was lost stays resumable (0: resume off).",
        zero=True)
    replay_limit: int = _count(1000, "Pushed messages kept per session for replay on resume.")
    replay_bytes: int = _count(
        1 * MiB, "Bytes of pushed messages kept per session for replay on resume.",
        unit="bytes")
    max_replay_memory: int = _count(
        256 * MiB, "Bytes of replay buffers kept by the whole process; past it detached "
        "sessions' buffers are trimmed first (longest-detached first), then the largest "
        "attached ones; a resume that needed a trimmed message gets a new session.",
        unit="bytes")
    rate: float = _option(200.0, "Messages per second a session may send (token bucket "
                          "refill).", low=0, low_open=True, unit="/s")
    burst: int = _count(400, "Messages a session may send at once (token bucket size).")
    max_send_queue: int = _count(
        4 * MiB, "Bytes that may wait to be written to one connection; past it close 4508.",
        unit="bytes")
    drain_timeout: float = _seconds(
        10.0, "Seconds a graceful shutdown waits for connections to close.")
    fast_path: bool = _switch(
        True, "no-fast-path", "Use only Autobahn's public send and receive paths (slower; the "
        "fast path is switched off by itself when its probe of Autobahn/Twisted fails).")
    conformance_echo: bool = _switch(
        False, "conformance-echo", "Also serve /echo, echoing text and binary messages on "
        "the same WebSocket stack, for the Autobahn Testsuite. For conformance runs only.")
    server_version: bool = _switch(
        False, "server-version", "Name the wsservice version in HTTP Server headers "
        "(by default they say 'wsservice' alone).")
    # Messages held while an asynchronous authenticator decides on a hello.
    max_pending_before_welcome: int = 64

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or self.path == "/":
            raise SettingError("path", self.path, "must start with '/' and name a resource")
        for spec in OPTION_FIELDS.values():
            check(spec, getattr(self, spec.name))
        OriginPolicy(self.allowed_origins)  # raises ValueError on a malformed pattern
        parse_networks(self.trusted_proxies)  # likewise for a malformed address
        HostPolicy(self.allowed_hosts)  # likewise


# The Settings fields that are options taking a value (they have help text), and those that
# are flags, by name, in declaration order.
OPTION_FIELDS: dict[str, Any] = {f.name: f for f in fields(Settings)
                                 if "help" in f.metadata and "flag" not in f.metadata}
FLAG_FIELDS: dict[str, Any] = {f.name: f for f in fields(Settings) if "flag" in f.metadata}


def kind(spec: Any) -> type:
    """The Python type of a field: int, float or str (annotations are strings here)."""
    return {"int": int, "float": float, "str": str}[str(spec.type)]


def bounds(spec: Any) -> str:
    """The accepted values of a numeric field, in words: 'a whole number >= 1'."""
    noun = "a whole number" if kind(spec) is int else "a finite number"
    m = spec.metadata
    if m["high"] is not None:
        return f"{noun} from {m['low']:g} to {m['high']:g}"
    return f"{noun} {'>' if m['low_open'] else '>='} {m['low']:g}"


def check(spec: Any, value: Any) -> None:
    """Raise SettingError unless ``value`` is within the bounds of the field ``spec``."""
    if kind(spec) is str:
        return
    m = spec.metadata
    number = kind(spec) is int and type(value) is int or \
        kind(spec) is float and type(value) in (int, float) and math.isfinite(value)
    if not number or value < m["low"] or (m["low_open"] and value == m["low"]) \
            or (m["high"] is not None and value > m["high"]):
        raise SettingError(spec.name, value, f"must be {bounds(spec)}")
