"""``--log-format json``: one JSON object per log event and line, for log shippers.

Each line holds ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``namespace``,
``message`` (the event formatted as the text log shows it), ``fields`` (the event's own
structured fields, as JSON) and, for a failure, ``traceback``. A field whose name suggests a
secret (token, secret, password, key, auth, cookie, ...) is left out, at any depth, and is
shown as ``[redacted]`` should the message's format name it.

Under twistd the observer writes where twistd's text log would go (stdout with ``-n``, the
``--logfile``, ``twistd.log`` for a daemon): ``CommandLineService`` (tap.py) sets it as its
application's ``ILogObserver``, which twistd's AppLogger then uses instead of its own.
"""

from __future__ import annotations

import math
import re
import signal
import sys
from datetime import datetime, timezone
from typing import IO, Any, Mapping

import orjson
from twisted.logger import ILogObserver, LogLevel, formatEvent
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile
from zope.interface import implementer

__all__ = ["JSONLogObserver", "eventAsJSON", "isSecret", "safeFields", "twistdLogFile"]

# a field named so is never written: its value could open something
_SECRET = re.compile(r"token|secret|passw|key|auth|cookie|credential|jwt|bearer|session_id",
                     re.IGNORECASE)
# what twisted.python.log (the legacy log) puts on every event it sees or makes
_LEGACY = frozenset({"message", "time", "system", "isError", "format", "failure", "why",
                     "logLevel", "printed"})
_REDACTED = "[redacted]"
_DEPTH = 8  # nesting kept in a field's value; deeper is shown as text


def isSecret(name: str) -> bool:
    """Whether a field's name suggests a secret (then it is never written)."""
    return _SECRET.search(name) is not None


def _safe(value: Any, depth: int) -> Any:
    """``value`` as JSON can hold it: numbers, strings, booleans, null, lists and objects
    as they are (objects without their secret-named keys), anything else as its str()."""
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return value if -(1 << 63) <= value < (1 << 64) else str(value)
    if kind is float:
        return value if math.isfinite(value) else str(value)
    if depth > 0:
        if isinstance(value, (list, tuple, set, frozenset)):
            return [_safe(item, depth - 1) for item in value]
        if isinstance(value, Mapping):
            return {str(key): _safe(item, depth - 1) for key, item in value.items()
                    if not isSecret(str(key))}
    try:
        return str(value)
    except Exception:
        return f"<{kind.__name__} that cannot be shown>"


def safeFields(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event's own structured fields as JSON values: no ``log_*`` key of Twisted's,
    none of the legacy log's, none whose name suggests a secret."""
    return {key: _safe(value, _DEPTH) for key, value in event.items()
            if not key.startswith("log_") and key not in _LEGACY and not isSecret(key)}


def _time(event: Mapping[str, Any]) -> str:
    when = event.get("log_time")
    if not isinstance(when, (int, float)):
        when = datetime.now(timezone.utc).timestamp()
    stamp = datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _message(event: Mapping[str, Any]) -> str:
    """The event formatted, with any secret-named field it names shown as [redacted]."""
    if any(isSecret(key) for key in event if not key.startswith("log_")):
        event = {key: _REDACTED if not key.startswith("log_") and isSecret(key) else value
                 for key, value in event.items()}
    return formatEvent(dict(event) if not isinstance(event, dict) else event)


def eventAsJSON(event: Mapping[str, Any]) -> str:
    """One log event as one line of JSON (no newline)."""
    level = event.get("log_level")
    failure = event.get("log_failure")
    message: str | None = None
    if failure is None and isinstance(event.get("failure"), Failure) and event.get("isError"):
        # twisted.python.log.err(): the failure and why, without the traceback in the text
        failure = event["failure"]
        message = str(event.get("why") or "Unhandled Error")
    record: dict[str, Any] = {
        "time": _time(event),
        "level": level.name if isinstance(level, type(LogLevel.info)) else "info",
        "namespace": str(event.get("log_namespace") or "-"),
        "message": message if message is not None else _message(event),
        "fields": safeFields(event),
    }
    if isinstance(failure, Failure):
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:
            record["traceback"] = f"{failure.type.__name__}: (no traceback)"
    try:
        return orjson.dumps(record).decode("utf-8")
    except (TypeError, orjson.JSONEncodeError):  # not expected: every value was made safe
        record["fields"] = {key: str(value) for key, value in record["fields"].items()}
        return orjson.dumps(record).decode("utf-8")


@implementer(ILogObserver)
class JSONLogObserver:
    """Writes each log event to a text stream as one line of JSON (``eventAsJSON``)."""

    def __init__(self, out: IO[str] | LogFile) -> None:
        self._out = out

    def __call__(self, event: Mapping[str, Any]) -> None:
        """Write one event and flush (a log line should not wait in a buffer)."""
        self._out.write(eventAsJSON(event) + "\n")
        self._out.flush()


def twistdLogFile(options: Mapping[str, Any]) -> IO[str] | LogFile:
    """Where twistd writes its text log for these twistd options: stdout with ``-n`` (or
    ``--logfile -``), else the ``--logfile`` (default ``twistd.log``), rotated on SIGUSR1
    as twistd rotates its own (twisted/scripts/_twistd_unix.py)."""
    name = options.get("logfile") or ""
    if name == "-" or (options.get("nodaemon") and not name):
        return sys.stdout
    logfile = LogFile.fromFullPath(name or "twistd.log")
    if hasattr(signal, "SIGUSR1") and not signal.getsignal(signal.SIGUSR1):
        def rotate(signum: int, frame: Any) -> None:
            from twisted.internet import reactor
            reactor.callFromThread(logfile.rotate)  # type: ignore[attr-defined]
        signal.signal(signal.SIGUSR1, rotate)
    return logfile
