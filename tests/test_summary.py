"""The start-up and drain summaries (wsservice/summary.py), logged by a real service on real
sockets: what they say, as text and as fields, and that nothing else says where it listens."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from wsservice import AnonymousAuthenticator, HMACAuthenticator, IAuthenticator, Settings
from wsservice.apikeys import APIKeys
from wsservice.app import makeService
from wsservice.demo import DemoApp
from wsservice.jwtauth import JWTAuthenticator
from wsservice.summary import authenticatorKind, changedSettings

from . import live, redisserver
from .wsclient import socket_path


@implementer(IAuthenticator)
class Custom:
    """An application's own authenticator."""

    secret = "custom-SECRET"

    def authenticate(self, request: Any) -> Any:
        return None


class Captured:
    """Every log event published while a test runs."""

    def __init__(self, testcase: Any) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def summary(self, kind: str) -> list[dict[str, Any]]:
        """The events of one summary (startup or drain), in order."""
        return [e for e in self.events if e.get("summary") == kind]

    def texts(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def item(self, kind: str, item: str) -> dict[str, Any]:
        [event] = [e for e in self.summary(kind) if e["item"] == item]
        return event


class StartupTests(TestCase):
    """The start-up summary of services started in this process."""

    timeout = 60

    async def start(self, **kwargs: Any) -> tuple[Any, Captured]:
        captured = Captured(self)
        service = makeService(**{"handlers": [DemoApp()],
                                 "listen": [live.LOOPBACK], **kwargs})
        service.startService()
        self.addCleanup(service.stopService)
        for listener in service.listeners:
            await listener.whenListening
        await live.until(lambda: captured.summary("startup"), "the start-up summary")
        return service, captured

    async def test_listeners_handlers_settings_auth(self) -> None:
        path = socket_path(self)
        secret = b"hmac-SECRET-" + b"x" * 32
        service, captured = await self.start(
            listen=[live.LOOPBACK, f"unix:{path}"],
            settings=Settings(max_sessions=50, rate=20.5, allowed_origins=("https://a.example",)),
            authenticator=HMACAuthenticator(secret))
        port = service.listeners[0].port.getHost().port
        lines = [formatEvent(e) for e in captured.summary("startup")]
        self.assertEqual(lines[1:], [
            f"listening on {live.LOOPBACK}: ws://127.0.0.1:{port}/ws (page "
            f"http://127.0.0.1:{port}/)",
            f"listening on unix:{path}: ws+unix:{path}:/ws (page at / on the same socket)",
            "handler wsservice.demo:DemoApp: calls ask, echo, fail, push, reject, sleep, tell, "
            "whoami; events echo, fail; resources /, /favicon.ico; observes sessions",
            "settings that differ from the defaults: allowed_origins [https://a.example] "
            "(default []); max_sessions 50 (default 10000); rate 20.5 (default 200)",
            "HTTP API: off (no --api-key-file)",
            "authentication: hmac",
            "cluster: off (one process; its sessions live in its memory)",
        ])
        self.assertRegex(lines[0], r"^wsservice \S+ started \(pid \d+\)$")
        # the one place that says where the service listens: no other line does
        self.assertEqual(sum("listening on" in text for text in captured.texts()), 2)
        tcp, unix = [e for e in captured.summary("startup") if e["item"] == "listener"]
        self.assertEqual((tcp["url"], unix["url"]),
                         (f"ws://127.0.0.1:{port}/ws", f"ws+unix:{path}:/ws"))
        handler = captured.item("startup", "handler")
        self.assertEqual((handler["name"], handler["events"], handler["resources"]),
                         ("wsservice.demo:DemoApp", ["echo", "fail"], ["/", "/favicon.ico"]))
        self.assertEqual(captured.item("startup", "settings")["settings"],
                         {"allowed_origins": ("https://a.example",), "max_sessions": 50,
                          "rate": 20.5})
        self.assertNotIn(b"SECRET", repr(captured.summary("startup")).encode())

    async def test_api_on_and_a_custom_authenticator(self) -> None:
        _, captured = await self.start(api_keys=APIKeys(["key-SECRET"]),
                                       authenticator=Custom())
        self.assertEqual(formatEvent(captured.item("startup", "api")),
                         "HTTP API: on (/api/publish, /api/push, /api/presence, with a "
                         "bearer key)")
        self.assertEqual(formatEvent(captured.item("startup", "auth")),
                         "authentication: custom tests.test_summary.Custom")
        self.assertEqual(formatEvent(captured.item("startup", "settings")),
                         "settings: all defaults")
        self.assertNotIn("SECRET", " ".join(formatEvent(e) for e in captured.summary("startup")))

    async def test_cluster_node_and_redis_without_password(self) -> None:
        """A node names its id and its Redis, never the password in the URL (this Redis is
        not there: the summary does not wait for it)."""
        port = redisserver.free_port()
        _, captured = await self.start(redis=f"redis://ann:hunter2@127.0.0.1:{port}/3",
                                       node_id="n7")
        cluster = captured.item("startup", "cluster")
        self.assertEqual(formatEvent(cluster), f"cluster: node n7 on Redis "
                                               f"redis://127.0.0.1:{port}/3")
        self.assertEqual((cluster["node"], cluster["cluster"]), ("n7", True))
        for text in captured.texts():
            self.assertNotIn("hunter2", text)

    async def test_registry_without_names(self) -> None:
        """Handlers given as a ready Registry: what they serve, unnamed."""
        from wsservice.registry import Registry
        _, captured = await self.start(handlers=Registry([DemoApp()]))
        self.assertTrue(formatEvent(captured.item("startup", "handler")).startswith(
            "handlers: calls ask, echo,"))


class PartsTests(SynchronousTestCase):
    """The summary's parts."""

    def test_authenticator_kinds(self) -> None:
        self.assertEqual(authenticatorKind(AnonymousAuthenticator()), "anonymous")
        self.assertEqual(authenticatorKind(HMACAuthenticator(b"s" * 32)), "hmac")
        self.assertEqual(authenticatorKind(JWTAuthenticator(b"s" * 32)), "jwt")
        self.assertEqual(authenticatorKind(Custom()), "custom tests.test_summary.Custom")

    def test_changed_settings(self) -> None:
        self.assertEqual(changedSettings(Settings()), {})
        self.assertEqual(changedSettings(Settings(burst=5, fast_path=False)),
                         {"burst": (5, 400), "fast_path": (False, True)})


class DrainTests(TestCase):
    """The drain summary of a real service: connections closed or dropped, sessions kept."""

    timeout = 60

    async def test_closed_and_dropped(self) -> None:
        """Two connections: one closes at the 1001, one never answers and is dropped when
        ``drain_timeout`` passes (on the service's clock)."""
        clock = Clock()
        captured = Captured(self)
        server = await live.serve(self, Settings(drain_timeout=7), clock=clock)
        quick, _ = await server.session()
        stuck, _ = await server.session()
        stuck.transport.pauseProducing()  # reads nothing more: never answers the close
        sessions = server.sessions
        stopping = sessions.stopService()
        await quick.waitClosed()
        await live.until(lambda: len(sessions.connections) == 1, "the quick one to go")
        clock.advance(7)
        await stopping
        self.assertEqual([formatEvent(e) for e in captured.summary("drain")], [
            "draining 2 connections (at most 7 s)",
            "drain timeout: dropping 1 connections",
            "drained; 2 sessions end with this process (they are kept in its memory only: a "
            "restarted server cannot resume them); 1 of 2 connections closed, 1 dropped at "
            "the timeout; 0 sessions ended during the drain; took 7 s"])
        done = captured.item("drain", "done")
        self.assertEqual({k: done[k] for k in ("connections", "closed", "dropped", "sessions",
                                               "kept", "ended", "seconds")},
                         {"connections": 2, "closed": 1, "dropped": 1, "sessions": 2,
                          "kept": "memory", "ended": 0, "seconds": 7})
        stuck.transport.resumeProducing()

    async def test_sessions_ended_and_no_connection(self) -> None:
        """Sessions that end while draining are counted; with no connection open the
        summary says so."""
        clock = Clock()
        captured = Captured(self)
        server = await live.serve(self, Settings(resume_ttl=5), clock=clock)
        c, _ = await server.session()
        c.dropConnection(abort=True)
        await c.waitClosed()
        await live.until(lambda: not server.sessions.connections, "the connection to go")
        server.sessions.stopService()
        done = captured.item("drain", "done")
        self.assertEqual((done["connections"], done["sessions"], done["ended"]), (0, 1, 0))
        self.assertIn("no connections were open", formatEvent(done))
        self.assertEqual(len(captured.summary("drain")), 1)  # no "draining" line

    async def test_ended_during_the_drain(self) -> None:
        clock = Clock()
        captured = Captured(self)
        server = await live.serve(self, Settings(drain_timeout=3, resume_ttl=1), clock=clock)
        kept, _ = await server.session()
        stuck, _ = await server.session()
        stuck.transport.pauseProducing()
        sessions = server.sessions
        stopping = sessions.stopService()
        await kept.waitClosed()
        await live.until(lambda: len(sessions.connections) == 1, "the first one to go")
        clock.advance(1)  # the sessions' resume_ttl ends while draining
        self.assertEqual(sessions.metrics.sessions_closed["expired"], 2)
        clock.advance(2)
        await stopping
        done = captured.item("drain", "done")
        # closed by the server, both sessions were resumable from the drain's start
        self.assertEqual((done["ended"], done["sessions"], done["dropped"]), (2, 0, 1))
        stuck.transport.resumeProducing()
