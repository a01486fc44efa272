"""Where a client connects: ws://, wss:// and unix: URLs, and the endpoint for each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS

FORMS = "ws://HOST[:PORT]/PATH, wss://HOST[:PORT]/PATH or unix:/PATH/TO/SOCKET"
UNIX_WS_PATH = "/ws"


@dataclass(frozen=True)
class Target:
    """A parsed URL: the unix socket ``path``, or ``host`` and ``port`` (TLS if ``secure``);
    ``ws_url`` is what the WebSocket handshake names (its Host and resource)."""

    url: str
    ws_url: str
    secure: bool = False
    host: str = ""
    port: int = 0
    path: str = ""


def parse_url(url: Any) -> Target:
    """Parse a client URL; ValueError says what is wrong and which forms are accepted.

    ``ws://host:port`` without a path means the server's default path ``/ws``.
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"a wsservice URL must be a non-empty string ({FORMS}), got {url!r}")
    if url.startswith("unix:"):
        path = url[len("unix:"):]
        if not path or path.startswith("?"):
            raise ValueError(f"{url!r} names no socket: use unix:/PATH/TO/SOCKET")
        return Target(url, f"ws://localhost{UNIX_WS_PATH}", path=path)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{url!r} is not a valid URL ({e}); use {FORMS}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        scheme_text = f"{parts.scheme}:" if parts.scheme else "(none)"
        raise ValueError(f"{url!r}: unsupported scheme {scheme_text}; use {FORMS}")
    host = parts.hostname
    if not host:
        raise ValueError(f"{url!r} names no host; use {FORMS}")
    if parts.fragment:
        raise ValueError(f"{url!r}: a WebSocket URL cannot have a #fragment")
    secure = scheme == "wss"
    if port is None:
        port = 443 if secure else 80
    if port == 0:
        raise ValueError(f"{url!r}: port 0 cannot be connected to")
    path = parts.path or UNIX_WS_PATH
    ws_url = urlunsplit((scheme, parts.netloc, path, parts.query, ""))
    return Target(url, ws_url, secure, host, port)


def endpoint(target: Target, reactor: Any, timeout: float,
             tls_options: Any = None) -> IStreamClientEndpoint:
    """The Twisted client endpoint that reaches ``target``."""
    if target.path:
        return UNIXClientEndpoint(reactor, target.path, timeout=timeout)
    tcp = HostnameEndpoint(reactor, target.host, target.port, timeout=timeout)
    if not target.secure:
        return tcp
    return wrapClientTLS(tls_options or optionsForClientTLS(target.host), tcp)
