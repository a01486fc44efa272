"""The in-memory broker: topics and directed delivery among one process's sessions."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from .interfaces import IBroker, IDeliverable
from .store import memberships
from .wire import presence_prefix


def _nobody(session_id: str) -> IDeliverable | None:
    return None


@implementer(IBroker)
class MemoryBroker:
    """Delivers within this process: a publication reaches every local subscriber."""

    def __init__(self) -> None:
        self.topics: dict[str, set[Any]] = {}
        # the subscribers of a topic who hear its presence.join / presence.leave
        self.watchers: dict[str, set[Any]] = {}
        self._local: Callable[[str], IDeliverable | None] = _nobody

    def bind(self, local: Callable[[str], IDeliverable | None]) -> None:
        """Deliver directed messages through ``local(session_id)``."""
        self._local = local

    def subscribe(self, session: IDeliverable, topic: str) -> None:
        """Deliver ``topic`` to ``session``."""
        subscribers = self.topics.get(topic)
        if subscribers is None:
            self.topics[topic] = subscribers = set()
        elif session in subscribers:
            return
        subscribers.add(session)
        self._announce(session, topic, "presence.join")

    def unsubscribe(self, session: IDeliverable, topic: str) -> None:
        """Stop delivering ``topic`` to ``session``."""
        subscribers = self.topics.get(topic)
        if subscribers is not None and session in subscribers:
            subscribers.discard(session)
            if not subscribers:
                del self.topics[topic]
            self.watch(session, topic, False)
            self._announce(session, topic, "presence.leave")

    def watch(self, session: IDeliverable, topic: str, on: bool) -> None:
        """Push ``topic``'s joins and leaves to ``session`` (on), or stop."""
        watchers = self.watchers.get(topic)
        if on:
            if watchers is None:
                self.watchers[topic] = watchers = set()
            watchers.add(session)
        elif watchers is not None:
            watchers.discard(session)
            if not watchers:
                del self.watchers[topic]

    def _announce(self, session: IDeliverable, topic: str, event: str) -> None:
        watchers = self.watchers.get(topic)
        if not watchers:
            return
        member = getattr(session, "member", None)
        if member is None:  # a plain deliverable is no member
            return
        prefix = presence_prefix(event, topic, member)
        for watcher in tuple(watchers):
            if watcher is not session:
                watcher.deliver(prefix, "event")

    def presence(self, topic: str) -> Deferred[list]:
        """The sessions subscribed to ``topic``, as members."""
        return succeed([member for member in (getattr(s, "member", None)
                                              for s in self.topics.get(topic, ()))
                        if member is not None])

    def members(self) -> int:
        """Topic memberships held here."""
        return memberships(self.topics)

    def publish(self, topic: str, prefix: bytes) -> Deferred[None]:
        """Deliver to every subscriber now; each copy gets only its own seq stamped."""
        subscribers = self.topics.get(topic)
        if subscribers:
            # a copy: delivering may close a connection, which may change the set
            for session in tuple(subscribers):
                session.deliver(prefix, "message")
        return succeed(None)

    def send(self, session_id: str, prefix: bytes, kind: str) -> Deferred[bool]:
        """Deliver to one session of this process, if it exists."""
        session = self._local(session_id)
        if session is None:
            return succeed(False)
        session.deliver(prefix, kind)
        return succeed(True)
