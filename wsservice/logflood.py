"""Log lines a remote client can cause, bounded: the first of a kind at once, then a count.

Any client can fail a handshake, break the framing or make a handler fail as often as it
can connect; one WARN (or traceback) per time would let it fill the disk and bury every
other line. A LogFlood keeps, per interval and per kind, the first ``burst`` lines in full
and counts the rest into one summary line at the end of the interval. The kinds are a
fixed set named in this module, never anything a client sent, so its memory is bounded.
"""

from __future__ import annotations

from typing import Any, Callable, cast

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher

from .log import logger

# The kinds, each with how many of it an interval shows in full. Handler failures show a
# few: their tracebacks are what a developer needs, and they may differ.
HANDLER_FAILURE = "handler failure"
UNSERIALIZABLE_RESULT = "result not JSON-serializable"
OBSERVER_FAILURE = "session observer failure"
AUTHENTICATOR_FAILURE = "authenticator failure"
HELLO_REFUSED = "hello refused"
TOO_MANY_BAD = "too many bad messages"
RESUME_GAP = "resume past a gap"
SLOW_CONSUMER = "slow consumer"
ADAPTER_FAILURE = "failure handling a message"
PROTOCOL_VIOLATION = "WebSocket protocol violation"
UNCLEAN_DROP = "connection dropped uncleanly"
BAD_HANDSHAKE = "bad opening handshake"
UNSOLICITED_PONG = "unsolicited pong"
TLS_ERROR = "TLS error"
OTHER_AUTOBAHN = "other Autobahn warning"
HTTP_CLIENT = "slow or bad HTTP client"  # twisted.web's lines about one connection
CONNECTION_REFUSED = "connection refused by a limit"
STORE_FAILURE = "session store unavailable"

BURST: dict[str, int] = {
    HANDLER_FAILURE: 3, UNSERIALIZABLE_RESULT: 3, OBSERVER_FAILURE: 3,
    AUTHENTICATOR_FAILURE: 3, HELLO_REFUSED: 1, TOO_MANY_BAD: 1, RESUME_GAP: 1,
    SLOW_CONSUMER: 1,
    ADAPTER_FAILURE: 3, PROTOCOL_VIOLATION: 1, UNCLEAN_DROP: 1, BAD_HANDSHAKE: 1,
    UNSOLICITED_PONG: 1, TLS_ERROR: 1, OTHER_AUTOBAHN: 1, HTTP_CLIENT: 1,
    CONNECTION_REFUSED: 1, STORE_FAILURE: 1,
}
KINDS = tuple(BURST)

DEFAULT_INTERVAL = 10.0

class LogFlood:
    """Per-kind counters deciding which client-caused log lines are written, on ``clock``.

    ``admit(kind)`` says whether to write this line: True for the first ``BURST[kind]`` of
    the kind in an interval, then False (counted). An interval that held lines back ends
    with one summary line of every kind's count.
    """

    _log = logger()

    def __init__(self, clock: IReactorTime, interval: float = DEFAULT_INTERVAL) -> None:
        self.clock = clock
        self.interval = interval
        self.shown = dict.fromkeys(KINDS, 0)
        self.held = dict.fromkeys(KINDS, 0)
        self._timer: IDelayedCall | None = None
        self._closed = False

    def admit(self, kind: str) -> bool:
        """Whether to write a line of ``kind`` now (False: it is counted instead)."""
        if self._closed:
            return True
        if kind not in self.shown:
            kind = OTHER_AUTOBAHN  # not expected: the kinds are this module's constants
        if self._timer is None:
            self._timer = self.clock.callLater(self.interval, self._flush)
        if self.shown[kind] < BURST[kind]:
            self.shown[kind] += 1
            return True
        self.held[kind] += 1
        return False

    def _flush(self) -> None:
        self._timer = None
        held = {kind: n for kind, n in self.held.items() if n}
        self.shown = dict.fromkeys(KINDS, 0)
        self.held = dict.fromkeys(KINDS, 0)
        if held:
            self._summary(held)
            # a flood usually goes on: keep counting for another interval
            self._timer = self.clock.callLater(self.interval, self._flush)

    def _summary(self, held: dict[str, int]) -> None:
        counts = ", ".join(f"{n} more {kind!r}" for kind, n in held.items())
        self._log.warn("client-caused log lines held back: {counts} in the last "
                       "{interval:g} s", interval=self.interval, counts=counts, held=held)

    def open(self) -> None:
        """Bound the lines again (after ``close``), counting from zero."""
        self.shown = dict.fromkeys(KINDS, 0)
        self.held = dict.fromkeys(KINDS, 0)
        self._closed = False

    def close(self) -> None:
        """Write what is held, stop the timer; from now on every line is written."""
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        held = {kind: n for kind, n in self.held.items() if n}
        self.held = dict.fromkeys(KINDS, 0)
        if held:
            self._summary(held)
        self._closed = True

    def observer(self, kind_of: Callable[[dict[str, Any]], str | None],
                 namespace: str) -> ILogObserver:
        """An ILogObserver for a library's logger: each event is put in ``namespace`` and
        passed on to the global log publisher, those ``kind_of`` names a kind through
        ``admit`` (an adapter knows which of its library's lines a client causes)."""
        def observe(event: dict[str, Any]) -> None:
            event["log_namespace"] = namespace
            kind = kind_of(event)
            if kind is None or self.admit(kind):
                globalLogPublisher(event)
        return cast(ILogObserver, observe)

    def logger(self, kind: str, namespace: str) -> Logger:
        """A twisted.logger Logger in ``namespace`` whose every line is of ``kind`` and goes
        through ``admit`` (for a protocol whose lines are all about one client)."""
        def observe(event: dict[str, Any]) -> None:
            if event.get("log_level") is not LogLevel.debug and self.admit(kind):
                globalLogPublisher(event)
        return Logger(namespace=namespace, observer=cast(ILogObserver, observe))
