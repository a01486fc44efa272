"""The start-up and drain summaries: what an operator reads once the service listens, and
once it has drained.

Each is a few INFO lines under the namespace ``wsservice.summary``, every one carrying
its facts as structured fields too (``summary``: ``startup`` or ``drain``, ``item``: what
the line is about), so a log shipper can pick them out (docs/operations.md). Nothing in
them is secret: an authenticator is named by its kind, a Redis URL without its password.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Iterable, Protocol

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime

from ._version import __version__
from .config import Settings
from .interfaces import (
    ICallHandler,
    IEventHandler,
    IResourceProvider,
    ISessionObserver,
    ITopicAuthorizer,
)
from .log import logger

__all__ = ["Drain", "Line", "announce", "announceWorkers", "authenticatorKind",
           "changedSettings", "handlerName", "serves", "startup", "workers"]

_log = logger("wsservice.summary")


@dataclass(frozen=True)
class Line:
    """One line of a summary: its item, its text's format and its fields."""

    item: str
    format: str
    fields: dict[str, Any]


def _log_lines(summary: str, lines: Iterable[Line]) -> None:
    for line in lines:
        _log.info(line.format, summary=summary, item=line.item, **line.fields)


# -- start-up ---------------------------------------------------------------------------------


def changedSettings(settings: Settings) -> dict[str, tuple[Any, Any]]:
    """The settings that differ from the defaults: name -> (value, default)."""
    defaults = Settings()
    changed = {}
    for spec in fields(Settings):
        value, default = getattr(settings, spec.name), getattr(defaults, spec.name)
        if value != default:
            changed[spec.name] = (value, default)
    return changed


def authenticatorKind(authenticator: Any) -> str:
    """``anonymous``, ``hmac``, ``jwt`` (wsservice's own, by their class names), or
    ``custom package.module.Class``; never anything the authenticator holds."""
    cls = type(authenticator)
    name = cls.__name__
    if cls.__module__.startswith("wsservice.") and name.endswith("Authenticator") \
            and name != "Authenticator":
        return name[:-len("Authenticator")].lower()
    return f"custom {cls.__module__}.{cls.__qualname__}"


def handlerName(handler: Any) -> str:
    """A handler object's name when no ``--handler`` spec names it: ``module:Class``."""
    cls = type(handler)
    return f"{cls.__module__}:{cls.__qualname__}"


def serves(handler: Any) -> dict[str, Any]:
    """What a handler object serves: its calls, events and resources (sorted), and whether
    it observes sessions and authorizes topics."""
    resources = sorted(handler.resources) if IResourceProvider.providedBy(handler) else []
    return {
        "calls": sorted(handler.calls) if ICallHandler.providedBy(handler) else [],
        "events": sorted(handler.events) if IEventHandler.providedBy(handler) else [],
        "resources": ["/" + (r.decode() if isinstance(r, bytes) else str(r))
                      for r in resources],
        "observes_sessions": ISessionObserver.providedBy(handler),
        "guards_topics": ITopicAuthorizer.providedBy(handler),
    }


def _served_text(served: dict[str, Any]) -> str:
    parts = [f"{kind} {', '.join(served[kind])}" for kind in ("calls", "events", "resources")
             if served[kind]]
    if served["observes_sessions"]:
        parts.append("observes sessions")
    if served["guards_topics"]:
        parts.append("authorizes topics")
    return "; ".join(parts) or "nothing"


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


class _Service(Protocol):
    """What the start-up summary reads of a WSService (app.py)."""

    sessions: Any
    listeners: list[Any]
    handlers: list[tuple[str, Any]]
    api_keys: Any


def _listener_line(listener: Any) -> Line:
    # a listener that does not say where it listens is named by its endpoint string
    where = getattr(listener, "url", None) or listener.description
    kind = getattr(listener, "kind", "")
    # the URL ends at whitespace (bench/run.py reads ws://\S+); a note may follow it
    return Line("listener", "listening " + (f"({kind}) " if kind else "") +
                "on {description}: {where}",
                {"description": listener.description, "where": where,
                 "url": where.split(" ", 1)[0], "kind": kind or "websocket"})


def startup(service: _Service) -> list[Line]:
    """The start-up summary of a WSService whose listeners listen."""
    sessions = service.sessions
    listeners = list(service.listeners)
    lines = [Line("version", "wsservice {version} started (pid {pid})",
                  {"version": __version__, "pid": os.getpid()})]
    lines += [_listener_line(listener) for listener in listeners]
    if service.handlers:
        for name, handler in service.handlers:
            served = serves(handler)
            lines.append(Line("handler", "handler {name}: {serves}",
                              {"name": name, "serves": _served_text(served), **served}))
    else:  # handlers given as a ready Registry: what they serve, without their names
        registry = sessions.registry
        served = {"calls": sorted(registry.calls), "events": sorted(registry.events),
                  "resources": ["/" + str(r) for r in sorted(registry.resources)],
                  "observes_sessions": bool(registry.observers),
                  "guards_topics": bool(registry.authorizers)}
        lines.append(Line("handler", "handlers: {serves}",
                          {"name": None, "serves": _served_text(served), **served}))
    changed = changedSettings(sessions.settings)
    if changed:
        text = "; ".join(f"{name} {_shown(value)} (default {_shown(default)})"
                         for name, (value, default) in changed.items())
        lines.append(Line("settings", "settings that differ from the defaults: {changed}",
                          {"changed": text,
                           "settings": {name: value for name, (value, _) in changed.items()}}))
    else:
        lines.append(Line("settings", "settings: all defaults", {"settings": {}}))
    if service.api_keys is not None:
        lines.append(Line("api", "HTTP API: on (/api/publish, /api/push, /api/presence, "
                          "with a bearer key)", {"api": True}))
    else:
        lines.append(Line("api", "HTTP API: off (no --api-key-file)", {"api": False}))
    authenticator = sessions.authenticator
    kind = authenticatorKind(authenticator)
    # what a JWT authenticator checks (its algorithm, audience, issuer) is no secret
    checks = {name: getattr(authenticator, name) for name in ("algorithm", "audience", "issuer")
              if kind == "jwt" and isinstance(getattr(authenticator, name, None), str)}
    shown = "; ".join(f"{name} {{{name}}}" for name in checks)
    lines.append(Line("auth", "authentication: {kind}" + (f" ({shown})" if shown else ""),
                      {"kind": kind, **checks}))
    engine = getattr(sessions.store, "engine", None)
    if engine is not None:
        # RedisAddress's str() leaves the user name and password out
        lines.append(Line("cluster", "cluster: node {node} on Redis {redis}",
                          {"cluster": True, "node": engine.node, "redis": str(engine.address)}))
    else:
        lines.append(Line("cluster", "cluster: off (one process; its sessions live in its "
                          "memory)", {"cluster": False}))
    return lines


def announce(service: _Service) -> Deferred[None]:
    """Log the start-up summary once every listener of ``service`` listens (a listener
    that cannot listen stops start-up instead: then nothing is logged)."""
    waiting = [listener.whenListening for listener in service.listeners]

    def log(_: Any) -> None:
        _log_lines("startup", startup(service))
    # each whenListening keeps its own result (the port) for whoever else waits on it
    return DeferredList(waiting).addCallback(log)


def workers(listeners: Iterable[Any], nodes: list[str], redis: str) -> list[Line]:
    """The start-up summary of a ``--workers`` parent once every worker serves: its
    listeners (which the workers accept on) and its workers' node ids (each worker logs its
    own summary too)."""
    lines = [Line("version", "wsservice {version} started (pid {pid}): {workers} workers",
                  {"version": __version__, "pid": os.getpid(), "workers": len(nodes)})]
    lines += [_listener_line(listener) for listener in listeners]
    lines.append(Line("workers", "workers: {workers} processes, cluster nodes {nodes} on "
                      "Redis {redis}", {"workers": len(nodes), "nodes": ", ".join(nodes),
                                        "redis": redis}))
    return lines


def announceWorkers(listeners: Iterable[Any], nodes: list[str], redis: str) -> None:
    """Log the start-up summary of a ``--workers`` parent (``workers``)."""
    _log_lines("startup", workers(listeners, nodes, redis))


# -- drain ------------------------------------------------------------------------------------


class _Draining(Protocol):
    """What the drain summary reads of a SessionService (service.py)."""

    clock: IReactorTime
    connections: Any
    sessions: Any
    settings: Settings
    metrics: Any
    store: Any

    def unavailable(self) -> str | None:
        """Why the shared store is away, or None."""


class Drain:
    """One drain of a SessionService: logs its start, then one summary line (connections
    closed and dropped, sessions kept or ended, how long it took)."""

    def __init__(self, service: _Draining) -> None:
        self._service = service
        self.started = service.clock.seconds()
        self.connections = len(service.connections)
        self.dropped = 0
        self._ended_before = sum(service.metrics.sessions_closed.values())
        if self.connections:
            _log.info("draining {connections} connections (at most {timeout:g} s)",
                      summary="drain", item="start", connections=self.connections,
                      timeout=service.settings.drain_timeout)

    def timedOut(self, dropped: int) -> None:
        """The drain timeout passed: ``dropped`` connections are dropped unclosed."""
        self.dropped = dropped
        _log.warn("drain timeout: dropping {dropped} connections", summary="drain",
                  item="timeout", dropped=dropped)

    def line(self) -> Line:
        """The summary line, as things stand now."""
        service = self._service
        shared = service.unavailable() is None and hasattr(service.store, "engine")
        facts = {
            "sessions": len(service.sessions),
            "kept": "redis" if shared else "memory",
            "connections": self.connections,
            "closed": self.connections - self.dropped,
            "dropped": self.dropped,
            "ended": sum(service.metrics.sessions_closed.values()) - self._ended_before,
            "seconds": round(service.clock.seconds() - self.started, 3),
        }
        if shared:
            kept = "{sessions} sessions stay resumable on the other nodes (kept in Redis)"
        else:
            # Truthful for one process: its sessions live in its memory only, so they end
            # with it (a shared store is what lets another process resume them).
            kept = ("{sessions} sessions end with this process (they are kept in its memory "
                    "only: a restarted server cannot resume them)")
        if self.connections:
            closed = ("{closed} of {connections} connections closed, {dropped} dropped at "
                      "the timeout")
        else:
            closed = "no connections were open"
        return Line("done", f"drained; {kept}; {closed}; {{ended}} sessions ended during the "
                    "drain; took {seconds:g} s", facts)

    def done(self) -> None:
        """Log the summary line."""
        _log_lines("drain", [self.line()])
