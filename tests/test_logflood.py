"""Log lines a client can cause are bounded (wsservice.logflood): the first in full at once,
then one summary line per interval with the counts, on the service's clock."""

from __future__ import annotations

import base64
import os
import struct
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from wsservice import logflood
from wsservice.config import Settings
from wsservice.demo import DemoApp
from wsservice.errors import Unauthorized
from wsservice.interfaces import IAuthenticator
from wsservice.logflood import LogFlood
from wsservice.service import SessionService
from wsservice.testing import ServiceHarness
from wsservice.websocket import AUTOBAHN_NAMESPACE, WebSocketFactory

N = 1000
LOOSE = Settings(rate=1e6, burst=10 ** 6, max_bad_messages=10 ** 6)


class _Logged(SynchronousTestCase):
    """Collects every event written to the global log publisher at INFO or above."""

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []

        def seen(event: dict[str, Any]) -> None:
            if event.get("log_level", LogLevel.info) >= LogLevel.info:
                self.events.append(event)
        globalLogPublisher.addObserver(seen)
        self.addCleanup(globalLogPublisher.removeObserver, seen)

    def lines(self, namespace: str = "") -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("log_namespace", "").startswith(namespace)]

    def summaries(self) -> list[dict[str, Any]]:
        return [e for e in self.events if "held" in e
                and e.get("log_namespace") == "wsservice.logflood.LogFlood"]


class LogFloodTests(_Logged):
    """The counter alone."""

    def test_first_at_once_then_one_summary_per_interval(self) -> None:
        clock = Clock()
        flood = LogFlood(clock, interval=10)
        admitted = [flood.admit(logflood.PROTOCOL_VIOLATION) for _ in range(N)]
        self.assertEqual(admitted, [True] + [False] * (N - 1))
        self.assertEqual(self.summaries(), [])
        clock.advance(10)
        [summary] = self.summaries()
        self.assertEqual(summary["held"], {logflood.PROTOCOL_VIOLATION: N - 1})
        self.assertEqual(summary["log_level"], LogLevel.warn)
        self.assertIn("999 more 'WebSocket protocol violation' in the last 10 s",
                      _text(summary))
        # the flood goes on: again the first in full, the rest counted, one more summary
        admitted = [flood.admit(logflood.PROTOCOL_VIOLATION) for _ in range(5)]
        self.assertEqual(admitted, [True, False, False, False, False])
        clock.advance(10)
        self.assertEqual([s["held"] for s in self.summaries()],
                         [{logflood.PROTOCOL_VIOLATION: N - 1},
                          {logflood.PROTOCOL_VIOLATION: 4}])
        # a quiet interval writes nothing and stops the timer
        clock.advance(10)
        self.assertEqual(len(self.summaries()), 2)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertTrue(flood.admit(logflood.PROTOCOL_VIOLATION))

    def test_kinds_counted_apart_in_one_line(self) -> None:
        clock = Clock()
        flood = LogFlood(clock)
        for _ in range(N):
            flood.admit(logflood.HANDLER_FAILURE)
            flood.admit(logflood.BAD_HANDSHAKE)
        self.assertEqual(flood.shown[logflood.HANDLER_FAILURE], 3)  # tracebacks: a few
        clock.advance(logflood.DEFAULT_INTERVAL)
        [summary] = self.summaries()
        self.assertEqual(summary["held"], {logflood.HANDLER_FAILURE: N - 3,
                                           logflood.BAD_HANDSHAKE: N - 1})

    def test_unknown_kind_is_not_a_new_key(self) -> None:
        flood = LogFlood(Clock())
        for i in range(10):
            flood.admit(f"client data {i}")
        self.assertEqual(set(flood.held), set(logflood.KINDS))
        self.assertEqual(flood.held[logflood.OTHER_AUTOBAHN], 9)

    def test_close_writes_what_is_held_and_stops(self) -> None:
        clock = Clock()
        flood = LogFlood(clock)
        for _ in range(3):
            flood.admit(logflood.SLOW_CONSUMER)
        flood.close()
        self.assertEqual([s["held"] for s in self.summaries()], [{logflood.SLOW_CONSUMER: 2}])
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertTrue(flood.admit(logflood.SLOW_CONSUMER))  # unbounded once closed
        self.assertEqual(clock.getDelayedCalls(), [])
        flood.open()
        self.assertTrue(flood.admit(logflood.SLOW_CONSUMER))
        self.assertFalse(flood.admit(logflood.SLOW_CONSUMER))


def _text(event: dict[str, Any]) -> str:
    from twisted.logger import formatEvent
    return formatEvent(event)


class ServiceFloodTests(_Logged):
    """wsservice's own client-caused lines, through a started service."""

    def test_handler_failures_tracebacks_bounded_each_answered(self) -> None:
        harness = ServiceHarness([DemoApp()], LOOSE)
        self.addCleanup(harness.stop)
        client = harness.connect()
        client.hello()
        for i in range(N):
            reply = client.call("fail", None, id=i)
            assert reply is not None
            self.assertEqual(reply["error"]["code"], "internal")
        failures = [e for e in self.lines("wsservice") if "log_failure" in e]
        self.assertEqual(len(failures), 3)  # in full, with their tracebacks
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)
        harness.clock.advance(logflood.DEFAULT_INTERVAL)
        [summary] = self.summaries()
        self.assertEqual(summary["held"], {logflood.HANDLER_FAILURE: N - 3})
        self.assertEqual(len(self.lines("wsservice")), 4)

    def test_too_many_bad_messages_bounded(self) -> None:
        harness = ServiceHarness([DemoApp()], Settings(max_bad_messages=0))
        self.addCleanup(harness.stop)
        for _ in range(N):
            client = harness.connect()
            client.hello()
            client.sendRaw(b"nope")
            self.assertEqual(client.closed, 4400)
        self.assertEqual(len(self.lines("wsservice")), 1)
        harness.clock.advance(logflood.DEFAULT_INTERVAL)
        self.assertEqual(self.summaries()[0]["held"], {logflood.TOO_MANY_BAD: N - 1})
        self.assertEqual(len(self.lines("wsservice")), 2)

    def test_refused_hellos_bounded(self) -> None:
        @implementer(IAuthenticator)
        class No:
            def authenticate(self, request: Any) -> Any:
                raise Unauthorized("no")

        harness = ServiceHarness([DemoApp()], authenticator=No())
        self.addCleanup(harness.stop)
        for _ in range(N):
            client = harness.connect()
            client.send({"type": "hello"})
            self.assertEqual(client.closed, 4401)
        [first] = self.lines("wsservice")
        self.assertIn("hello from test refused: no", _text(first))
        harness.clock.advance(logflood.DEFAULT_INTERVAL)
        self.assertEqual(self.summaries()[0]["held"], {logflood.HELLO_REFUSED: N - 1})

    def test_stop_writes_the_summary_and_leaves_no_timer(self) -> None:
        harness = ServiceHarness([DemoApp()], LOOSE)
        client = harness.connect()
        client.hello()
        for i in range(5):
            client.call("fail", None, id=i)
        self.flushLoggedErrors(RuntimeError)
        harness.stop()
        self.assertEqual(self.summaries()[0]["held"], {logflood.HANDLER_FAILURE: 2})
        self.assertEqual(harness.clock.getDelayedCalls(), [])


def _handshake() -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key
            + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")


class AutobahnFloodTests(_Logged):
    """Autobahn's own per-connection lines, through a real WebSocketFactory's protocols."""

    def setUp(self) -> None:
        super().setUp()
        self.reactor = MemoryReactorClock()
        self.service = SessionService([DemoApp()], clock=self.reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.factory = WebSocketFactory(self.service, reactor=self.reactor)

    def connection(self, data: bytes) -> StringTransport:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        transport.registerProducer(object(), True)  # as twisted.web's channel would have
        proto.makeConnection(transport)
        proto.dataReceived(data)
        proto.connectionLost(Failure(ConnectionDone()))  # as the transport would
        return transport

    def test_protocol_violations_bounded(self) -> None:
        unmasked = bytes([0x81, 2]) + b"{}"
        bad_close = bytes([0x88, 0x82]) + b"\x00\x00\x00\x00" + struct.pack(">H", 999)
        for _ in range(N):
            self.connection(_handshake() + unmasked)
            self.connection(_handshake() + bad_close)
        lines = self.lines("autobahn")
        self.assertEqual(len(lines), 1, [_text(e) for e in lines])
        self.assertIn('failing WebSocket connection (code=1002): "unmasked', _text(lines[0]))
        self.reactor.advance(logflood.DEFAULT_INTERVAL)
        [summary] = self.summaries()
        # the bad close frames are answered 1002 by the adapter itself, without a line
        self.assertEqual(summary["held"], {logflood.PROTOCOL_VIOLATION: N - 1})

    def test_bad_handshakes_bounded(self) -> None:
        for _ in range(N):
            self.connection(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
        lines = self.lines("autobahn")
        self.assertEqual(len(lines), 2, [_text(e) for e in lines])  # the first of each kind
        self.reactor.advance(logflood.DEFAULT_INTERVAL)
        self.assertEqual(self.summaries()[0]["held"], {logflood.BAD_HANDSHAKE: N - 1,
                                                       logflood.UNCLEAN_DROP: N - 1})

    def test_debug_lines_and_namespace_unchanged(self) -> None:
        seen: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        self.factory.protocol.log.info("hello {x}", x=1)
        [event] = [e for e in seen if e.get("x") == 1]
        self.assertEqual(event["log_namespace"], AUTOBAHN_NAMESPACE)
        self.assertEqual(self.summaries(), [])

    def test_other_autobahn_warnings_and_tls_errors_bounded(self) -> None:
        log = self.factory.protocol.log  # what Autobahn's code calls as self.log
        for _ in range(N):
            log.error("TLS failure: bad certificate")  # as in connectionLost
            log.warn("odd {n}", n=1)
        lines = self.lines("autobahn")
        self.assertEqual([_text(e) for e in lines], ["TLS failure: bad certificate", "odd 1"])
        self.reactor.advance(logflood.DEFAULT_INTERVAL)
        self.assertEqual(self.summaries()[0]["held"], {logflood.TLS_ERROR: N - 1,
                                                       logflood.OTHER_AUTOBAHN: N - 1})

    def test_nothing_patched_only_the_factory_class_routed(self) -> None:
        from autobahn.twisted.websocket import WebSocketServerProtocol

        from wsservice.websocket import WebSocketProtocol
        # Autobahn's classes and wsservice's own protocol class keep their loggers: only the
        # class each factory makes for itself routes through its service's LogFlood
        self.assertNotIn("log", WebSocketProtocol.__dict__)
        self.assertIsNot(self.factory.protocol.log, WebSocketServerProtocol.log)
        self.assertIn("log", self.factory.protocol.__dict__)


class HTTPFloodTests(_Logged):
    """twisted.web's lines about one connection, and refusals at accept, through a real Site."""

    def setUp(self) -> None:
        super().setUp()
        from wsservice.web import makeSite
        self.reactor = MemoryReactorClock()
        self.service = SessionService([DemoApp()], Settings(hello_timeout=1.0,
                                                            max_peer_connections=N),
                                      clock=self.reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.site = makeSite(self.service, reactor=self.reactor)

    def connection(self, host: str = "192.0.2.1") -> StringTransport:
        address = IPv4Address("TCP", host, 40000)
        channel = self.site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        channel.makeConnection(transport)
        channel.dataReceived(b"GET /healthz HTTP/1.1\r\nHo")  # and then nothing
        return transport

    def test_slow_requests_bounded(self) -> None:
        """N requests that never finish are all dropped at the deadline; one line is written
        for them, and the summary counts the rest."""
        transports = [self.connection() for _ in range(N)]
        self.reactor.advance(1.0)
        self.assertTrue(all(t.disconnecting for t in transports))
        lines = self.lines("wsservice.channel")
        self.assertEqual(len(lines), 1, [e.get("log_format") for e in lines])
        self.assertIn("Timing out client", lines[0]["log_format"])
        self.reactor.advance(logflood.DEFAULT_INTERVAL)
        self.assertEqual(self.summaries()[0]["held"], {logflood.HTTP_CLIENT: N - 1})

    def test_refused_connections_bounded(self) -> None:
        """Connections past a limit get 503; one line says so, the summary counts them."""
        for _ in range(N):
            self.connection()
        refused = [self.connection() for _ in range(N)]
        self.assertTrue(all(t.value().startswith(b"HTTP/1.1 503 ") for t in refused))
        lines = [e for e in self.lines("wsservice.channel")
                 if "refused a connection" in e["log_format"]]
        self.assertEqual(len(lines), 1)
        self.reactor.advance(0.5)
        self.reactor.advance(logflood.DEFAULT_INTERVAL)
        self.assertEqual(self.summaries()[0]["held"][logflood.CONNECTION_REFUSED], N - 1)
