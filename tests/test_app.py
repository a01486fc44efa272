"""WSService composes: sessions drain, then listeners stop, then every other child."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from wsservice import makeService


class Recording(Service):
    """A child service that records when it starts and stops, in a shared list."""

    def __init__(self, name: str, events: list[str]) -> None:
        self.setName(name)
        self.events = events

    def startService(self) -> None:
        super().startService()
        self.events.append(f"start {self.name}")

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self.events.append(f"stop {self.name}")
        return None


class ComposeTests(TestCase):
    """A user's own child services live and die with the WSService."""

    async def test_other_children_stopped_after_listeners(self) -> None:
        events: list[str] = []
        service = makeService(listen=["tcp:0:interface=127.0.0.1"])
        Recording("first", events).setServiceParent(service)
        Recording("second", events).setServiceParent(service)
        sessions_stop = service.sessions.stopService
        listener_stop = service.listeners[0].stopService

        def sessions() -> Any:
            events.append("drain")
            return sessions_stop()

        def listener() -> Any:
            events.append("stop listener")
            return listener_stop()
        self.patch(service.sessions, "stopService", sessions)
        self.patch(service.listeners[0], "stopService", listener)
        service.startService()
        self.assertEqual(events, ["start first", "start second"])
        await service.stopService()
        self.assertEqual(events, ["start first", "start second", "drain", "stop listener",
                                  "stop second", "stop first"])
        self.assertFalse(service.running)
        self.assertFalse(any(child.running for child in service))
