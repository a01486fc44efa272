"""twistd glue: ``Options`` for ``twistd wsservice`` and ``makeService(options)``."""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import IService
from twisted.python import usage

from . import registry
from .app import DEFAULT_LISTEN
from .app import makeService as _makeService
from .config import Settings
from .errors import ConfigurationError

DEFAULT_HANDLER = "wsservice.demo:DemoApp"
_DEFAULTS = Settings()


def _number(kind: Callable[[str], Any], zero: bool = False) -> Callable[[str], Any]:
    """A coerce function: a finite ``kind`` (int or float) > 0, or >= 0 when ``zero``."""
    noun = "number" if kind is float else "whole number"

    def coerce(text: str) -> Any:
        value = kind(text)
        if not (0 <= value if zero else 0 < value) or value == float("inf"):
            raise ValueError(f"must be a finite {noun} {'>=' if zero else '>'} 0, got {text}")
        return value
    coerce.coerceDoc = f"A {noun} {'>=' if zero else '>'} 0."  # type: ignore[attr-defined]
    return coerce


class Options(usage.Options):
    """Command-line options of ``twistd wsservice``."""

    synopsis = "[options]"
    longdesc = ("Serve the wsservice JSON session protocol over WebSocket on one or more "
                "Twisted endpoints, with /healthz and /metrics on the same listeners.")

    optParameters = [
        ["path", None, _DEFAULTS.path, "HTTP path of the WebSocket endpoint."],
        ["auth", None, None,
         "Authenticator: hmac:SECRET_FILE (HMAC-signed tokens with expiry, see "
         "python -m wsservice.tokens) or package.module:attribute providing "
         "IAuthenticator (default: everyone is anonymous)."],
        ["hello-timeout", None, _DEFAULTS.hello_timeout,
         "Seconds a client has to send hello after the handshake (else close 4408).",
         _number(float)],
        ["max-message-size", None, _DEFAULTS.max_message_size,
         "Largest message accepted, in bytes (else close 1009).", _number(int)],
        ["max-depth", None, _DEFAULTS.max_depth,
         "Deepest JSON nesting accepted (the top-level object is 1).", _number(int)],
        ["max-inflight-calls", None, _DEFAULTS.max_inflight_calls,
         "Client calls a session may have in flight at once.", _number(int)],
        ["call-timeout", None, _DEFAULTS.call_timeout,
         "Seconds a call may take, either direction (else error 'timeout').", _number(float)],
        ["max-bad-messages", None, _DEFAULTS.max_bad_messages,
         "Bad messages answered per session before the connection is closed 4400.",
         _number(int, zero=True)],
        ["max-sessions", None, _DEFAULTS.max_sessions,
         "Sessions at once; past it new connections are closed 1013.", _number(int)],
        ["max-subscriptions", None, _DEFAULTS.max_subscriptions,
         "Topics one session may subscribe to.", _number(int)],
        ["resume-ttl", None, _DEFAULTS.resume_ttl,
         "Seconds a session whose connection was lost stays resumable (0: resume off).",
         _number(float, zero=True)],
        ["replay-limit", None, _DEFAULTS.replay_limit,
         "Pushed messages kept per session for replay on resume.", _number(int)],
        ["replay-bytes", None, _DEFAULTS.replay_bytes,
         "Bytes of pushed messages kept per session for replay on resume.", _number(int)],
        ["rate", None, _DEFAULTS.rate,
         "Messages per second a session may send (token bucket refill).", _number(float)],
        ["burst", None, _DEFAULTS.burst,
         "Messages a session may send at once (token bucket size).", _number(int)],
        ["heartbeat", None, _DEFAULTS.heartbeat,
         "Seconds between WebSocket pings; no pong within as long again drops the "
         "connection (the session stays resumable).", _number(float)],
        ["max-send-queue", None, _DEFAULTS.max_send_queue,
         "Bytes that may wait to be written to one connection; past it close 4508.",
         _number(int)],
        ["drain-timeout", None, _DEFAULTS.drain_timeout,
         "Seconds a graceful shutdown waits for connections to close.", _number(float)],
    ]

    optFlags = [
        ["conformance-echo", None,
         "Also serve /echo, echoing text and binary messages on the same WebSocket stack, "
         "for the Autobahn Testsuite. For conformance runs only."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["handler"] = []
        self["allowed-origin"] = []

    def opt_listen(self, description: str) -> None:
        """Listen on a Twisted server endpoint string (repeatable; default """ \
            """tcp:8080:interface=127.0.0.1). unix: sockets get mode 0600 unless mode= is given."""
        self["listen"].append(description)

    def opt_handler(self, name: str) -> None:
        """Load handlers from package.module:attribute, an object or a zero-argument """ \
            """factory (repeatable; default wsservice.demo:DemoApp, the demo app)."""
        self["handler"].append(name)

    def opt_allowed_origin(self, pattern: str) -> None:
        """Also allow browser Origins matching this pattern, e.g. https://*.example.com; """ \
            """'*' allows all (repeatable; default: only the Host the client connected to)."""
        self["allowed-origin"].append(pattern)

    def postOptions(self) -> None:
        """Fill defaults, check endpoint strings and build the Settings."""
        from twisted.internet import reactor
        from twisted.internet.endpoints import serverFromString

        from .listener import private_unix

        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if not self["handler"]:
            self["handler"] = [DEFAULT_HANDLER]
        for description in self["listen"]:
            try:
                serverFromString(reactor, private_unix(description))
            except Exception as e:  # Twisted raises ValueError/KeyError/TypeError variously
                raise usage.UsageError(f"--listen {description!r}: {e}") from e
        try:
            self["settings"] = Settings(
                path=self["path"],
                allowed_origins=tuple(self["allowed-origin"]),
                hello_timeout=self["hello-timeout"],
                max_message_size=self["max-message-size"],
                max_depth=self["max-depth"],
                max_inflight_calls=self["max-inflight-calls"],
                call_timeout=self["call-timeout"],
                max_bad_messages=self["max-bad-messages"],
                max_sessions=self["max-sessions"],
                max_subscriptions=self["max-subscriptions"],
                resume_ttl=self["resume-ttl"],
                replay_limit=self["replay-limit"],
                replay_bytes=self["replay-bytes"],
                rate=self["rate"],
                burst=self["burst"],
                heartbeat=self["heartbeat"],
                max_send_queue=self["max-send-queue"],
                drain_timeout=self["drain-timeout"],
                conformance_echo=bool(self["conformance-echo"]),
            )
        except ValueError as e:
            raise usage.UsageError(str(e)) from e
        # Load handlers here, not in makeService: twistd reports a UsageError raised while
        # parsing as a clean message, but one from makeService as a traceback.
        try:
            handlers = registry.Registry()
            for name in self["handler"]:
                handlers.add(registry.load(name), name)
            self["handlers"] = handlers
            self["authenticator"] = (registry.load_authenticator(self["auth"])
                                     if self["auth"] else None)
        except ConfigurationError as e:
            raise usage.UsageError(str(e)) from e


def makeService(options: Options) -> IService:
    """Build the service twistd runs from parsed options."""
    return _makeService(options["handlers"], options["listen"], options["settings"],
                        options["authenticator"])
