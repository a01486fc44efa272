"""Helpers for tests of the Python client (wsservice.client) against real servers: URLs,
clients closed on cleanup, recorders of what the application is given."""

from __future__ import annotations

from typing import Any

from twisted.logger import LogLevel, globalLogPublisher, formatEvent

from wsservice.client import Client, connect

from . import live

# fast reconnects: tests wait on them
FAST = {"backoff_initial": 0.05, "backoff_max": 0.2}


def url(address: str) -> str:
    """The client URL of a LiveServer address (``127.0.0.1:PORT`` or ``unix:PATH``)."""
    return address if address.startswith("unix:") else f"ws://{address}/ws"


async def client(testcase: Any, address: str, **kwargs: Any) -> Client:
    """A connected client of ``address`` (a URL or a LiveServer address), closed on
    cleanup."""
    c = await connect(address if "://" in address else url(address), **kwargs)
    testcase.addCleanup(c.close)
    return c


class Seen:
    """A listener ``(data, seq)`` (or ``(event, data, seq)``) that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> None:
        self.calls.append(args)

    @property
    def data(self) -> list[Any]:
        return [call[-2] for call in self.calls]

    @property
    def seqs(self) -> list[int]:
        return [call[-1] for call in self.calls]


class States:
    """Records a client's state changes: (state, info)."""

    def __init__(self, client: Client) -> None:
        self.changes: list[tuple[str, dict[str, Any]]] = []
        client.onStateChange(lambda state, info: self.changes.append((state, info)))

    @property
    def states(self) -> list[str]:
        return [state for state, _ in self.changes]

    def last(self, state: str) -> dict[str, Any] | None:
        """The info of the last change to ``state``, if any."""
        found = [info for s, info in self.changes if s == state]
        return found[-1] if found else None

    async def reach(self, state: str, count: int = 1, timeout: float = 10) -> dict[str, Any]:
        """Wait until ``state`` has been entered ``count`` times; its last info."""
        await live.until(lambda: self.states.count(state) >= count,
                         lambda: f"state {state!r} x{count}, got {self.changes}", timeout)
        info = self.last(state)
        assert info is not None
        return info


class Logged:
    """Every log event at INFO or above while the test runs, formatted."""

    def __init__(self, testcase: Any) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self._seen)
        testcase.addCleanup(globalLogPublisher.removeObserver, self._seen)

    def _seen(self, event: dict[str, Any]) -> None:
        if event.get("log_level") in (LogLevel.info, LogLevel.warn, LogLevel.error,
                                       LogLevel.critical):
            self.events.append(event)

    @property
    def lines(self) -> list[str]:
        return [formatEvent(e) or "" for e in self.events]

    def count(self, text: str, level: LogLevel | None = None) -> int:
        """How many events (at ``level``, if given) contain ``text``."""
        return sum(text in (formatEvent(e) or "") for e in self.events
                   if level is None or e.get("log_level") == level)
