"""Origin policy for browser handshakes (protocol.md section 1), independent of any transport."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _host_port(netloc: str, default_port: int) -> tuple[str, int] | None:
    """Split 'host[:port]' (IPv6 in brackets) into a lower-case host and a port."""
    try:
        parts = urlsplit("//" + netloc)
        port = parts.port
    except ValueError:
        return None
    if parts.hostname is None:
        return None
    return parts.hostname.lower(), default_port if port is None else port


class OriginPolicy:
    """Decides whether a handshake's Origin may connect: same host as Host, or a pattern."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(p.lower().rstrip("/") for p in patterns)
        self.allow_all = "*" in self.patterns

    def allows(self, origin: str | None, host: str | None, secure: bool = False) -> bool:
        """True if a handshake with this Origin and Host headers may go ahead."""
        if origin is None or self.allow_all:
            return True
        origin = origin.strip().lower().rstrip("/")
        for pattern in self.patterns:
            if fnmatchcase(origin, pattern):
                return True
        try:
            parts = urlsplit(origin)
            origin_port = parts.port
        except ValueError:
            return False
        if parts.scheme not in _DEFAULT_PORTS or parts.hostname is None:
            return False
        if origin_port is None:
            origin_port = _DEFAULT_PORTS[parts.scheme]
        if host is None:
            return False
        expected = _host_port(host.strip(), 443 if secure else 80)
        return expected == (parts.hostname, origin_port)
