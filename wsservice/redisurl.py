"""``--redis`` URLs: redis://, rediss:// (TLS) and unix:// into a Twisted client endpoint."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .errors import ConfigurationError

_NODE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class RedisAddress:
    """Where a Redis server is and how to log in: parsed from a URL."""

    scheme: str  # redis, rediss or unix
    host: str
    port: int
    path: str  # the socket file, for unix
    db: int
    username: str | None
    password: str | None

    def endpoint(self, reactor: Any) -> Any:
        """A client endpoint reaching the server (TLS checked against the host name)."""
        from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
        if self.scheme == "unix":
            return UNIXClientEndpoint(reactor, self.path, timeout=5)
        endpoint = HostnameEndpoint(reactor, self.host, self.port, timeout=5)
        if self.scheme == "rediss":
            from twisted.internet.ssl import optionsForClientTLS
            return wrapClientTLS(optionsForClientTLS(self.host), endpoint)
        return endpoint

    def __str__(self) -> str:
        """The address without its password (fit for logs)."""
        if self.scheme == "unix":
            return f"unix://{self.path}?db={self.db}"
        return f"{self.scheme}://{self.host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisAddress:
    """Parse ``redis://[user:password@]host[:port][/db]``, ``rediss://…`` or
    ``unix:///path/redis.sock[?db=N][&password=…]``; ConfigurationError if it is not one."""
    parts = urlsplit(url)
    try:
        query = parse_qs(parts.query)
        scheme = parts.scheme.lower()
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if "password" in query:
            password = query["password"][0]
        if scheme == "unix":
            if not parts.path:
                raise ValueError("a unix:// URL needs the socket's path")
            db = int(query.get("db", ["0"])[0])
            address = RedisAddress("unix", "", 0, parts.path, db, username, password)
        elif scheme in ("redis", "rediss"):
            if not parts.hostname:
                raise ValueError("no host")
            path = parts.path.strip("/")
            db = int(path) if path else int(query.get("db", ["0"])[0])
            address = RedisAddress(scheme, parts.hostname, parts.port or 6379, "", db,
                                   username, password)
        else:
            raise ValueError(f"unknown scheme {parts.scheme!r}")
        if db < 0:
            raise ValueError("the database number must not be negative")
    except ValueError as e:
        shown = url.replace(f":{parts.password}@", ":***@") if parts.password else url
        raise ConfigurationError(
            f"--redis {shown!r}: {e} (expected redis://HOST:PORT/DB, rediss://HOST:PORT/DB "
            f"or unix:///path/redis.sock?db=N)") from None
    return address


def node_name(value: str | None) -> str:
    """A node id: the given one (letters, digits, ``-`` and ``_``), or a random one."""
    if value is None or value == "":
        return "n" + secrets.token_hex(6)
    if not _NODE_ID.fullmatch(value):
        raise ConfigurationError(f"--node-id {value!r}: use at most 64 letters, digits, "
                                 "'-' and '_'")
    return value
