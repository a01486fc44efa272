"""Host policy for HTTP requests (DNS rebinding defence), independent of any transport.

A page on ``evil.example`` whose name an attacker re-points at 127.0.0.1 talks to a loopback
server with ``Host`` and ``Origin`` both ``evil.example``: the Origin check sees the same
site and lets it through. Only the ``Host`` header tells: a server that listens on loopback
alone is never really called ``evil.example``. So, as Jupyter and Django's ALLOWED_HOSTS do,
a loopback-only listener serves only requests naming a loopback host, unless the operator
names more hosts (``--allowed-host``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Iterable

_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_PATTERN = re.compile(r"(?:\*\.)?(?:[a-z0-9_-]+|\*)(?:\.(?:[a-z0-9_-]+|\*))*")
_PORT = re.compile(r"(?::[0-9]{0,5})?")
_MEMO = 256  # Host values remembered per policy
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")


def _bracketed(text: str) -> str | None:
    """``[address]`` with the IPv6 address in its canonical form, or None if not one."""
    try:
        return f"[{ipaddress.IPv6Address(text[1:-1]).compressed}]"
    except ValueError:
        return None


def host_name(value: str | None) -> str | None:
    """The host of a ``Host`` header value, lower-cased and without port or final dot
    (an IPv6 address in brackets, canonical); None when it is not a host[:port]."""
    if value is None:
        return None
    text = value.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        name, rest = text[:end + 1], text[end + 1:]
        canonical = _bracketed(name) if end > 0 else None
        if canonical is None or not _PORT.fullmatch(rest):
            return None
        return canonical
    name, colon, port = text.partition(":")
    if not _PORT.fullmatch(colon + port):
        return None
    name = name[:-1] if name.endswith(".") else name
    return name if _NAME.fullmatch(name) else None


def is_loopback_name(name: str) -> bool:
    """Whether a host name (as ``host_name`` gives it) can only mean this machine: localhost,
    ``*.localhost`` (RFC 6761), 127.0.0.0/8 or ``[::1]``."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    if name.startswith("["):
        address = ipaddress.IPv6Address(name[1:-1])
        mapped = address.ipv4_mapped
        return address.is_loopback or (mapped is not None and mapped.is_loopback)
    if _IPV4.fullmatch(name):
        try:
            return ipaddress.IPv4Address(name).is_loopback
        except ValueError:
            return False
    return False


def is_loopback_address(address: Any) -> bool:
    """Whether a Twisted address (``IPv4Address``/``IPv6Address``) is on a loopback interface;
    False for anything else (unix sockets, unknown kinds)."""
    host = getattr(address, "host", None)
    if getattr(address, "type", None) not in ("TCP", "UDP") or not isinstance(host, str):
        return False
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def host_pattern(host: str) -> re.Pattern[str]:
    """A host pattern (of --allowed-host, or an --allowed-origin's host): a leading ``*.``
    stands for one or more labels, ``*`` else for one; ``[v6]`` is that address."""
    if host.startswith("["):
        return re.compile(re.escape(host[1:-1]))
    prefix = ""
    if host.startswith("*."):
        prefix, host = r"(?:[a-z0-9_-]+\.)+", host[2:]
    return re.compile(prefix + r"\.".join(
        "[a-z0-9_-]+" if label == "*" else re.escape(label) for label in host.split(".")))


class HostPolicy:
    """Decides whether an HTTP request's ``Host`` may be served on a listener.

    Patterns are host names (``chat.example.com``), ``*.example.com`` for any sub-domain,
    IP addresses (``192.0.2.7``, ``[2001:db8::1]``), or ``*`` for any host; any port. Loopback
    names are always allowed. A loopback-only listener always checks; any other listener
    checks only when patterns are given (unix sockets: by the same rule, never by default).
    """

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(p.strip().lower() for p in patterns)
        self.allow_all = False
        self._exact: set[str] = set()
        self._rules: list[re.Pattern[str]] = []
        self._memo: dict[str, bool] = {}
        for pattern in self.patterns:
            if pattern == "*":
                self.allow_all = True
            elif pattern.startswith("["):
                canonical = _bracketed(pattern) if pattern.endswith("]") else None
                if canonical is None:
                    raise ValueError(f"not an IPv6 address in brackets: {pattern!r}")
                self._exact.add(canonical)
            elif (name := pattern[:-1] if pattern.endswith(".") else pattern) != "*" \
                    and _PATTERN.fullmatch(name):
                if "*" in name:
                    self._rules.append(host_pattern(name))
                else:
                    self._exact.add(name)
            else:
                raise ValueError(f"not a host pattern (a name such as chat.example.com or "
                                 f"*.example.com, an address, or *; no port): {pattern!r}")

    def checks(self, loopback: bool) -> bool:
        """Whether a listener checks Host at all: a loopback-only one always (unless ``*``),
        any other only when patterns are given."""
        return not self.allow_all and (loopback or bool(self.patterns))

    def allows(self, host: str | None) -> bool:
        """True if a request whose ``Host`` header is ``host`` may be served (when checked)."""
        if self.allow_all:
            return True
        if host is None:
            return False
        # every request of a listener names the same few hosts: answer them from a memo
        # (bounded: Host is the client's to choose)
        known = self._memo.get(host)
        if known is None:
            name = host_name(host)
            known = name is not None and (is_loopback_name(name) or name in self._exact
                                          or any(rule.fullmatch(name) for rule in self._rules))
            if len(self._memo) >= _MEMO:
                self._memo.clear()
            self._memo[host] = known
        return known
