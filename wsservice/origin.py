"""Origin policy for browser handshakes (protocol.md section 1), independent of any transport."""

from __future__ import annotations

import re
from typing import Iterable
from urllib.parse import urlsplit

from .hosts import host_pattern

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_PATTERN = re.compile(
    r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[0-9a-f:.]+\]|[a-z0-9*._-]+)"
    r"(?::(?P<port>\d+|\*))?/?$")


def _split(origin: str, default_port: int | None = None) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an Origin or Host value, or None when it is not one."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not parts.scheme or not host or parts.path not in ("", "/") or parts.query \
            or parts.fragment or parts.username is not None:
        return None
    if port is None:
        port = _DEFAULT_PORTS.get(parts.scheme, default_port)
        if port is None:
            return None
    return parts.scheme, host, port


class OriginPolicy:
    """Decides whether a handshake's Origin may connect: same host as Host, or a pattern.

    Patterns are ``scheme://host[:port]``; ``*.`` in front of the host matches any
    subdomains, ``:*`` any port, ``null`` the opaque origin (sandboxed frames, ``file:``
    pages) and ``*`` alone any origin.
    """

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(p.strip().lower().rstrip("/") for p in patterns)
        self.allow_all = False
        self.allow_null = False
        self._rules: list[tuple[str, re.Pattern[str], int | None]] = []
        for pattern in self.patterns:
            text = pattern
            if text == "*":
                self.allow_all = True
                continue
            if text == "null":
                self.allow_null = True
                continue
            m = _PATTERN.match(text)
            if m is None:
                raise ValueError(f"not an origin pattern (scheme://host[:port]): {pattern!r}")
            scheme, port = m["scheme"], m["port"]
            if port is None:
                number: int | None = _DEFAULT_PORTS.get(scheme)
                if number is None:
                    raise ValueError(f"{pattern!r}: give a port for scheme {scheme!r}")
            else:
                number = None if port == "*" else int(port)
            self._rules.append((scheme, host_pattern(m["host"]), number))

    def allows(self, origin: str | None, host: str | None) -> bool:
        """True if a handshake with this Origin and Host headers may go ahead."""
        if origin is None or self.allow_all:
            return True
        text = origin.strip().lower()
        if text == "null":
            # any page can be opaque (a sandboxed iframe): never same-origin with anything
            return self.allow_null
        parsed = _split(text)
        if parsed is None:
            return False
        scheme, name, port = parsed
        for rule_scheme, rule_host, rule_port in self._rules:
            if scheme == rule_scheme and rule_host.fullmatch(name) \
                    and rule_port in (None, port):
                return True
        if host is None:
            return False
        # A Host without a port takes the default port of the Origin's scheme: behind a
        # TLS-terminating proxy the listener is plain but the page is https on 443.
        expected = _split(scheme + "://" + host.strip().lower())
        return expected is not None and expected[1:] == (name, port)
