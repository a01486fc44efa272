"""In-memory helpers for testing handlers with trial: a SessionService, a Clock, fake clients.

    harness = ServiceHarness([MyHandler()])
    client = harness.connect()
    client.hello()
    client.send({"type": "call", "id": 1, "method": "add", "params": [1, 2]})
    assert client.next() == {"type": "result", "id": 1, "result": 3}
    harness.clock.advance(30)   # drive timers
"""

from __future__ import annotations

from typing import Any, Iterable

import orjson
from twisted.internet.task import Clock

from .closecodes import code_of
from .config import Settings
from .connection import Connection
from .reasons import Close
from .service import SessionService

ABORTED = 1006  # what a WebSocket client sees of a dropped connection


class FakeLink:
    """A Link that records what the service sends and how it closes (as protocol.md's codes)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed_for: Close | int | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None

    def sendText(self, payload: bytes) -> None:
        """Record one sent text message (ignored once closed, as a WebSocket would)."""
        if self.close_code is None:
            self.frames.append(payload)

    def close(self, reason: Close | int, text: str) -> None:
        """Record the first close: its reason, its close code and its text."""
        if self.close_code is None:
            self.closed_for = reason
            self.close_code, self.close_reason = code_of(reason), text

    def abort(self) -> None:
        """Record an abrupt drop (as close code 1006)."""
        if self.close_code is None:
            self.close_code, self.close_reason = ABORTED, "aborted"


class FakeClient:
    """A client connection driven by a test: send dicts or raw bytes, read decoded replies."""

    def __init__(self, service: SessionService, headers: dict[str, str] | None = None,
                 peer: str = "test", listener: str = "test") -> None:
        self.link = FakeLink()
        self.connection: Connection = service.connect(self.link, headers, peer, listener)
        self._read = 0
        self._unread: list[dict[str, Any]] = []

    @property
    def closed(self) -> int | None:
        """The close code the server chose, or None while open."""
        return self.link.close_code

    def send(self, message: dict[str, Any]) -> None:
        """Send one message object."""
        self.sendRaw(orjson.dumps(message))

    def sendRaw(self, payload: bytes) -> None:
        """Send one text message as raw bytes (for malformed input)."""
        self.connection.received(payload)

    def sendBinary(self) -> None:
        """Send a binary message."""
        self.connection.binaryReceived()

    def drop(self) -> None:
        """Lose the connection abruptly (the session stays resumable for resume_ttl)."""
        self.connection.lost()

    def closeNormally(self) -> None:
        """Close the connection as a client closing with 1000 does (ends the session)."""
        self.connection.lost(ended=True)

    def resume(self, welcome: dict[str, Any], last_seq: int) -> dict[str, Any]:
        """Say hello with ``resume`` for the session of ``welcome``; return the new welcome."""
        self.send({"type": "hello", "resume": {"session": welcome["session"],
                                               "token": welcome["token"],
                                               "last_seq": last_seq}})
        reply = self.next()
        if reply.get("type") != "welcome":
            raise AssertionError(f"expected welcome, got {reply!r}")
        return reply

    def _inbox(self) -> list[dict[str, Any]]:
        frames = self.link.frames
        if self._read < len(frames):
            self._unread.extend(orjson.loads(f) for f in frames[self._read:])
            self._read = len(frames)
        return self._unread

    def received(self) -> list[dict[str, Any]]:
        """Every unread message, decoded, in order; marks them read."""
        inbox = self._inbox()
        messages = inbox[:]
        inbox.clear()
        return messages

    def next(self) -> dict[str, Any]:
        """The next unread message; AssertionError if there is none."""
        inbox = self._inbox()
        if not inbox:
            raise AssertionError("no message was received")
        return inbox.pop(0)

    def hello(self, auth: Any = None, meta: dict | None = None) -> dict[str, Any]:
        """Say hello and return the ``welcome``; AssertionError on anything else."""
        message: dict[str, Any] = {"type": "hello"}
        if auth is not None:
            message["auth"] = auth
        if meta is not None:
            message["meta"] = meta
        self.send(message)
        welcome = self.next()
        if welcome.get("type") != "welcome":
            raise AssertionError(f"expected welcome, got {welcome!r}")
        return welcome

    def call(self, method: str, params: Any = None, id: Any = 1) -> dict[str, Any] | None:
        """Send a call; return its reply if it came at once, else None (read it later).

        Other messages (pushes, server calls) stay unread for ``next()``/``received()``.
        """
        self.send({"type": "call", "id": id, "method": method, "params": params})
        inbox = self._inbox()
        for i, message in enumerate(inbox):
            if message.get("id") == id and message["type"] in ("result", "error"):
                return inbox.pop(i)
        return None


class ServiceHarness:
    """A started SessionService on a ``Clock``, for fast tests of handlers and the service."""

    def __init__(self, handlers: Iterable[Any] = (), settings: Settings | None = None,
                 authenticator: Any = None, clock: Clock | None = None,
                 store: Any = None, broker: Any = None) -> None:
        self.clock = clock or Clock()
        self.service = SessionService(handlers, settings, authenticator, clock=self.clock,
                                      store=store, broker=broker)
        self.service.startService()

    def connect(self, headers: dict[str, str] | None = None, peer: str = "test") -> FakeClient:
        """Open a new client connection."""
        return FakeClient(self.service, headers, peer)

    def stop(self) -> Any:
        """Stop the service (drain: connections closed 1001), then end every session."""
        d = self.service.stopService()
        for client_connection in list(self.service.connections):
            client_connection.lost()
        self.service.endAll()
        return d
