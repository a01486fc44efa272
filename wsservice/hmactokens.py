"""HMAC-signed bearer tokens with expiry: an authenticator that ships with wsservice.

A token is ``base64url(claims JSON) "." base64url(HMAC-SHA256(secret, first part))``; claims
hold ``sub`` (the principal's name) and ``exp`` (Unix time), plus anything else you add.
Clients send it as the hello's ``auth`` (a string, or ``{"token": ...}``) or in an
``Authorization: Bearer`` header. Use it with ``twistd wsservice --auth hmac:SECRET_FILE``;
mint tokens with ``python -m wsservice.tokens --secret-file SECRET_FILE --sub alice``
(``wsservice/tokens.py``, kept apart so ``python -m`` runs it without importing it twice).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
import time
from typing import Any, Callable

import orjson
from zope.interface import implementer

from .auth import hello_token
from .errors import ConfigurationError, Unauthorized
from .interfaces import IAuthenticator, IAuthRequest
from .log import logger

MIN_SECRET_BYTES = 32
MAX_TOKEN_LENGTH = 4096

_secret_log = logger("wsservice.hmactokens")


def read_secret_file(path: str, what: str, make: str, private: bool = True) -> bytes:
    """The bytes of a file holding secrets (``what``, e.g. 'the API key file'), for start-up.

    ConfigurationError, one line naming the file and what to do, when it cannot be read
    (``make`` says how to make one) or when group or others have any access to it; with
    ``private=False`` that last is only warned about (kept for --auth hmac:, which always
    accepted such a file).
    """
    try:
        with open(path, "rb") as f:
            # the mode of the file read, not of whatever the path names a moment later
            mode = os.fstat(f.fileno()).st_mode
            data = f.read()
    except OSError as e:
        raise ConfigurationError(f"cannot read {what} {path}: {e.strerror}; {make}") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        if private:
            raise ConfigurationError(
                f"{what} {path} is open to group or others (mode {stat.S_IMODE(mode):04o}); "
                f"run 'chmod 600 {path}' so that only the service's user can read it")
        _secret_log.warn("{what} {path} is readable by others; chmod 600 it",
                         what=what, path=path)
    return data


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@implementer(IAuthenticator)
class HMACAuthenticator:
    """Accepts unexpired tokens signed with a shared secret; the principal is their claims."""

    _log = logger()

    def __init__(self, secret: bytes, now: Callable[[], float] = time.time) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigurationError(f"an HMAC secret needs at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._now = now

    @classmethod
    def fromFile(cls, path: str) -> HMACAuthenticator:
        """Read the secret from a file (surrounding whitespace ignored)."""
        secret = read_secret_file(
            path, "the HMAC secret file",
            f"make one with 'head -c 32 /dev/urandom | base64 > {path}; chmod 600 {path}'",
            private=False)
        return cls(secret.strip())

    def _sign(self, body: str) -> str:
        return _b64encode(hmac.new(self._secret, body.encode("ascii"), hashlib.sha256).digest())

    def mint(self, subject: str, ttl: float = 3600, **claims: Any) -> str:
        """A token for ``subject`` valid ``ttl`` seconds from now (extra claims included)."""
        body = _b64encode(orjson.dumps({**claims, "sub": subject,
                                        "exp": int(self._now() + ttl)}))
        return f"{body}.{self._sign(body)}"

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid, unexpired token; Unauthorized otherwise."""
        if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
            raise Unauthorized("malformed token")
        body, signature = token.split(".")
        try:
            good = hmac.compare_digest(self._sign(body), signature)
        except (UnicodeEncodeError, TypeError):
            good = False
        if not good:
            raise Unauthorized("bad token signature")
        try:
            claims = orjson.loads(_b64decode(body))
        except (ValueError, orjson.JSONDecodeError):
            raise Unauthorized("malformed token") from None
        if type(claims) is not dict or type(claims.get("sub")) is not str \
                or type(claims.get("exp")) not in (int, float):
            raise Unauthorized("malformed token claims")
        if claims["exp"] <= self._now():
            raise Unauthorized("token expired")
        return claims

    def authenticate(self, request: IAuthRequest) -> Any:
        """The hello's token (auth member or Authorization header) must verify."""
        auth = hello_token(request)
        if not isinstance(auth, str) or not auth:
            raise Unauthorized("a bearer token is required")
        return self.verify(auth)
