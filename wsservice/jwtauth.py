"""JSON Web Tokens (RFC 7519) checked with PyJWT: the authenticator of ``--auth jwt:KEYFILE``.

The key file (mode 0600, like every key file) holds an HS256 secret of at least 32 bytes or
a PEM public key: RSA (RS256) or P-256 EC (ES256). The key decides the one algorithm
accepted, so a token never chooses ``none`` or another algorithm (an HS256 token "signed"
with the public key is refused). ``exp`` is required; ``nbf`` and ``iat`` are checked when
present, with a clock skew allowance; ``aud`` and ``iss`` must match when configured, and a
token naming an audience is refused when none is configured. Each refusal says which check
failed, never the token. See docs/configuration.md.
"""
from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Union

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_private_key,
    load_der_public_key,
    load_pem_public_key,
)
from zope.interface import implementer

from .auth import hello_token
from .errors import ConfigurationError, Unauthorized
from .hmactokens import read_secret_file
from .interfaces import IAuthenticator, IAuthRequest

MIN_SECRET_BYTES = 32  # RFC 7518 section 3.2: an HS256 key at least as long as its hash
MIN_RSA_BITS = 2048
MAX_TOKEN_LENGTH = 8192  # far above any sensible token; decoding is not free
DEFAULT_LEEWAY = 30.0
WHAT = "JWT key file"
HINT = ("give an HS256 secret of at least 32 bytes (head -c 32 /dev/urandom | base64 > FILE; "
        "chmod 600 FILE) or a PEM public key (RSA for RS256, P-256 EC for ES256)")

Key = Union[bytes, rsa.RSAPublicKey, ec.EllipticCurvePublicKey]


class JWTPrincipal(dict[str, Any]):
    """A verified token's claims (a dict, so a cluster keeps it as JSON); ``publicName`` is
    its ``sub``."""

    @property
    def publicName(self) -> str | None:
        """The token's subject, the name presence shows (None without a ``sub``)."""
        sub = self.get("sub")
        return sub if isinstance(sub, str) else None

    @property
    def claims(self) -> dict[str, Any]:
        """The verified claims (this dict itself)."""
        return self

    def __repr__(self) -> str:
        return f"JWTPrincipal({dict.__repr__(self)})"


def parse_key(data: bytes, source: str = "the JWT key") -> tuple[str, Key]:
    """The algorithm and key of a key file's content: a PEM public key gives RS256 or ES256,
    anything else is an HS256 secret; ConfigurationError naming ``source`` otherwise."""
    data = data.strip()
    if b"-----BEGIN" in data:
        if b"PRIVATE KEY-----" in data:
            raise ConfigurationError(
                f"{source} holds a private key: give the public key only "
                "(openssl pkey -in PRIVATE.pem -pubout -out PUBLIC.pem)")
        if b"CERTIFICATE-----" in data:
            raise ConfigurationError(
                f"{source} holds a certificate: give its public key "
                "(openssl x509 -in CERT.pem -pubkey -noout > PUBLIC.pem)")
        try:
            key = load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            raise ConfigurationError(f"{source} is not a readable PEM public key; {HINT}") \
                from None
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < MIN_RSA_BITS:
                raise ConfigurationError(f"{source} is a {key.key_size}-bit RSA key; RS256 "
                                         f"needs at least {MIN_RSA_BITS} bits")
            return "RS256", key
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            return "ES256", key
        kind = f"EC {key.curve.name}" if isinstance(key, ec.EllipticCurvePublicKey) \
            else type(key).__name__.removeprefix("_")
        raise ConfigurationError(f"{source} is a {kind} public key; give an RSA one (RS256) "
                                 "or a P-256 EC one (ES256)")
    if data.startswith((b"ssh-", b"ecdsa-sha2-")):
        raise ConfigurationError(f"{source} is an OpenSSH public key; give it as PEM "
                                 "(ssh-keygen -e -m PKCS8 -f KEY.pub > PUBLIC.pem)")
    if data.startswith((b"{", b"[")):
        raise ConfigurationError(f"{source} looks like a JWK (JSON); give the key as PEM")
    # A public key that is not PEM must never become an HS256 secret: anyone holding the
    # public key could then sign tokens with it.
    for der in (data, _base64(data)):
        if der is not None and _is_der_key(der):
            raise ConfigurationError(f"{source} holds a key in DER form (or PEM without its "
                                     "BEGIN/END lines); give it as PEM (openssl pkey -pubin "
                                     "-inform DER -in KEY.der -out PUBLIC.pem)")
    if len(data) < MIN_SECRET_BYTES:
        raise ConfigurationError(f"{source} is an HS256 secret of {len(data)} bytes; it needs "
                                 f"at least {MIN_SECRET_BYTES} (head -c 32 /dev/urandom | base64)")
    return "HS256", data


def _base64(data: bytes) -> bytes | None:
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _is_der_key(data: bytes) -> bool:
    """Whether ``data`` is a DER public or private key."""
    try:
        load_der_public_key(data)
        return True
    except (ValueError, UnsupportedAlgorithm):
        pass
    try:
        load_der_private_key(data, None)
        return True
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False


# PyJWT's refusals and what the client is told (the first that matches, so subclasses first).
_REASONS: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.InvalidIssuedAtError, "malformed token: iat is not a number"),
    (jwt.exceptions.InvalidSubjectError, "malformed token: sub is not a string"),
    (jwt.exceptions.InvalidJTIError, "malformed token: jti is not a string"),
]


def _reason(e: jwt.InvalidTokenError) -> str:
    if isinstance(e, jwt.MissingRequiredClaimError):
        return f"missing {e.claim} claim"
    for kind, reason in _REASONS:
        if isinstance(e, kind):
            return reason
    return "malformed token"


def bearer_token(request: IAuthRequest) -> str:
    """The token of a hello: its ``auth`` (``{"token": ...}`` or the string), else the
    handshake's ``Authorization: Bearer`` header; Unauthorized without one."""
    token = hello_token(request)
    if token is None or token == "":
        raise Unauthorized("no token")
    if not isinstance(token, str):
        raise Unauthorized("malformed token")
    return token


@implementer(IAuthenticator)
class JWTAuthenticator:
    """Accepts JWTs signed with one key, unexpired, for the configured audience and issuer;
    the principal is a JWTPrincipal of their claims."""

    def __init__(self, key: Key, audience: str | None = None, issuer: str | None = None,
                 leeway: float = DEFAULT_LEEWAY) -> None:
        if isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            # one set of checks (key size, curve) whichever way the key comes
            key = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        if not isinstance(key, bytes):
            raise ConfigurationError(f"a JWT key is bytes or an RSA/EC public key, not "
                                     f"{type(key).__name__}")
        self.algorithm, self._key = parse_key(key)
        if not (isinstance(leeway, int | float) and math.isfinite(leeway) and leeway >= 0):
            raise ConfigurationError(
                f"the JWT leeway must be a finite number >= 0, got {leeway!r}")
        if audience == "" or issuer == "":
            raise ConfigurationError("a JWT audience or issuer, when given, is not empty")
        self.audience = audience
        self.issuer = issuer
        self.leeway = float(leeway)
        self._decoder = jwt.PyJWT()

    @classmethod
    def fromFile(cls, path: str, audience: str | None = None, issuer: str | None = None,
                 leeway: float = DEFAULT_LEEWAY) -> JWTAuthenticator:
        """The authenticator of a key file (an HS256 secret or a PEM public key), refused like
        every key file when missing, unreadable, empty, or open to group or others."""
        if not path:
            raise ConfigurationError(f"no {WHAT} named; {HINT}")
        data = read_secret_file(path, f"the {WHAT}", HINT)
        if not data.strip():
            raise ConfigurationError(f"the {WHAT} {path} is empty; {HINT}")
        parse_key(data, f"the {WHAT} {path}")  # to name the file in what is wrong with it
        return cls(data, audience, issuer, leeway)

    def verify(self, token: str) -> JWTPrincipal:
        """The claims of a valid token; Unauthorized saying which check failed otherwise."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("malformed token: too long")
        try:
            claims = self._decoder.decode(
                token, self._key, algorithms=[self.algorithm], audience=self.audience,
                issuer=self.issuer, leeway=self.leeway, options={"require": ["exp"]})
        except jwt.InvalidTokenError as e:
            raise Unauthorized(_reason(e)) from None  # PyJWT's text may quote the token
        except jwt.PyJWTError:  # e.g. a key PyJWT will not use: nothing the client did
            raise Unauthorized("token not accepted") from None
        return JWTPrincipal(claims)

    def authenticate(self, request: IAuthRequest) -> JWTPrincipal:
        """The hello's token (its auth, else the Authorization header) must verify."""
        return self.verify(bearer_token(request))

    def __repr__(self) -> str:
        return (f"<JWTAuthenticator {self.algorithm} audience={self.audience!r} "
                f"issuer={self.issuer!r} leeway={self.leeway:g}>")

