"""The in-memory broker: topics and directed delivery among one process's sessions."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from .interfaces import IBroker, IDeliverable


def _nobody(session_id: str) -> IDeliverable | None:
    return None


@implementer(IBroker)
class MemoryBroker:
    """Delivers within this process: a publication reaches every local subscriber."""

    def __init__(self) -> None:
        self.topics: dict[str, set[Any]] = {}
        self._local: Callable[[str], IDeliverable | None] = _nobody

    def bind(self, local: Callable[[str], IDeliverable | None]) -> None:
        """Deliver directed messages through ``local(session_id)``."""
        self._local = local

    def subscribe(self, session: IDeliverable, topic: str) -> None:
        """Deliver ``topic`` to ``session``."""
        subscribers = self.topics.get(topic)
        if subscribers is None:
            self.topics[topic] = subscribers = set()
        subscribers.add(session)

    def unsubscribe(self, session: IDeliverable, topic: str) -> None:
        """Stop delivering ``topic`` to ``session``."""
        subscribers = self.topics.get(topic)
        if subscribers is not None:
            subscribers.discard(session)
            if not subscribers:
                del self.topics[topic]

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
