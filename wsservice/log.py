"""wsservice's loggers: their DEBUG events are dropped before anything formats them.

twistd writes every event it is given, whatever its level, so a DEBUG line per session
would be formatted and written at thousands of sessions a second. Set WSSERVICE_DEBUG=1
in the environment (or call ``setDebug(True)``) to see them.
"""

from __future__ import annotations

import os

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_observer = FilteringLogObserver(globalLogPublisher, [_predicate])


def setDebug(on: bool) -> None:
    """Let wsservice's DEBUG events through (True) or drop them (False, the default)."""
    _predicate.setLogLevelForNamespace("wsservice", LogLevel.debug if on else LogLevel.info)


def logger(namespace: str | None = None) -> Logger:
    """A Logger (use it as a class attribute named ``_log``, or give a module's
    ``namespace``) behind the DEBUG filter."""
    return Logger(namespace=namespace, observer=_observer)


setDebug(os.environ.get("WSSERVICE_DEBUG", "") not in ("", "0"))
