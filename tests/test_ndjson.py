"""NDJSON framing (protocol.md section 8): the session protocol as lines on a plain stream.

1. In memory: the real NDJSONProtocol on a StringTransport, the service on a Clock: lines
   in any chunks, \\r\\n, blank lines, over-long lines, bad UTF-8, a stream ending mid-line,
   half-close, flow control, the close line, limits; and properties over random input.
2. Real sockets: NDJSON listeners (loopback TCP and unix) beside a WebSocket one on the same
   service: topics and resume across the two transports, keepalive, the socket file.
3. twistd itself with --listen-ndjson, and the README's shell transcript run against it.

The conformance checks of tests/test_e2e.py and tests/test_flow.py that make sense for a
stream run over NDJSON in tests/test_ndjson_conformance.py.
"""

from __future__ import annotations

import os
import re
import socket
import stat
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsservice import ApplicationError, Settings, SessionService, fastpath
from wsservice.demo import DemoApp
from wsservice.ndjson import CLOSE_TIMEOUT, NDJSONFactory, close_line, keep_alive, peer_of

from . import certs, docs, live, ndjsonclient, processes, test_properties
from .ndjsonclient import NDJSONClient
from .wsclient import http

SETTINGS = Settings(max_message_size=1000, hello_timeout=1.0, max_bad_messages=3,
                    max_send_queue=10_000, resume_ttl=30)
WELCOME_MEMBERS = {"type", "session", "token", "resumed", "heartbeat", "server"}


# == 1. in memory ================================================================================

class HalfCloseableTransport(StringTransport):
    """A StringTransport that can close its writing half, as TCP and unix ones can."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


class Stream:
    """One NDJSON connection in memory: the real protocol, a StringTransport, a test's eye
    on every line written."""

    def __init__(self, factory: NDJSONFactory, peer: Any = None) -> None:
        self.proto = factory.buildProtocol(peer)
        self.transport = HalfCloseableTransport(peerAddress=peer)
        self.proto.makeConnection(self.transport)
        self._seen = 0
        self._unread: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def send(self, message: dict[str, Any]) -> None:
        self.write(orjson.dumps(message) + b"\n")

    def lines(self) -> list[bytes]:
        """The lines written since the last call (every one must end with a newline)."""
        out = self.transport.value()
        assert out.endswith(b"\n") or not out, out
        new = out[self._seen:]
        self._seen = len(out)
        return new.split(b"\n")[:-1]

    def messages(self) -> list[dict[str, Any]]:
        """The messages not read yet, decoded."""
        unread, self._unread = self._unread, []
        return unread + [orjson.loads(line) for line in self.lines()]

    def hello(self, **members: Any) -> dict[str, Any]:
        """Say hello; the welcome (what came after it stays unread)."""
        self.send({"type": "hello", **members})
        welcome, *self._unread = self.messages()
        assert welcome["type"] == "welcome", welcome
        return welcome

    @property
    def closing(self) -> bool:
        """Whether the server closes the stream (or its half of it)."""
        return bool(self.transport.disconnecting or self.transport.write_closed)

    def lose(self) -> None:
        """The stream is gone (the client vanished)."""
        self.proto.connectionLost(Failure(ConnectionDone()))


class _InMemory(SynchronousTestCase):
    settings = SETTINGS

    def setUp(self) -> None:
        self.clock = Clock()
        self.authenticator: Any = None
        self.start()

    def start(self, settings: Settings | None = None) -> None:
        self.service = SessionService([DemoApp(self.clock)], settings or self.settings,
                                      self.authenticator, clock=self.clock)
        self.service.startService()
        # the factory's own timer (the close line's) on the same Clock
        self.factory = NDJSONFactory(self.service, "unix:/run/ws.sock", reactor=self.clock)

    def stream(self, peer: Any = None) -> Stream:
        return Stream(self.factory, peer)

    def session(self, stream: Stream, welcome: dict[str, Any]) -> Any:
        return self.service.sessions[welcome["session"]]

    def assertClosed(self, stream: Stream, code: int) -> dict[str, Any]:
        """The last line written is the close line with ``code``; the stream is closing."""
        last = orjson.loads(stream.transport.value().split(b"\n")[-2])
        self.assertEqual((last["type"], last["code"]), ("close", code), last)
        self.assertEqual(set(last), {"type", "code", "reason"})
        self.assertTrue(stream.closing)
        return last


class FramingTests(_InMemory):
    """Lines in, lines out."""

    def test_welcome_says_heartbeat_0(self) -> None:
        s = self.stream()
        s.write(b'{"type":"hello"}\n')
        [line] = s.lines()
        welcome = orjson.loads(line)
        self.assertEqual(set(welcome), WELCOME_MEMBERS)
        self.assertEqual(welcome["heartbeat"], 0)  # Settings' heartbeat is 25
        self.assertEqual(self.service.settings.heartbeat, 25)
        # and no timer runs for a welcomed stream: nothing pings it, nothing times it out
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_resumed_welcome_says_heartbeat_0(self) -> None:
        s = self.stream()
        welcome = s.hello()
        s.lose()
        again = self.stream().hello(resume={"session": welcome["session"],
                                            "token": welcome["token"], "last_seq": 0})
        self.assertEqual((again["resumed"], again["heartbeat"]), (True, 0))

    def test_call_event_ping(self) -> None:
        s = self.stream()
        s.hello()
        s.send({"type": "call", "id": 1, "method": "echo", "params": {"a": [1, 2]}})
        s.send({"type": "event", "event": "echo", "data": "x"})
        s.send({"type": "ping", "data": 7})
        self.assertEqual(s.messages(), [
            {"type": "result", "id": 1, "result": {"a": [1, 2]}},
            {"type": "event", "event": "echo", "data": "x", "seq": 1},
            {"type": "pong", "data": 7}])

    def test_several_lines_in_one_chunk_and_one_line_in_many(self) -> None:
        s = self.stream()
        s.write(b'{"type":"hello"}\n{"type":"call","id":1,"method":"echo","params":1}\n{"ty')
        self.assertEqual([m["type"] for m in s.messages()], ["welcome", "result"])
        for byte in b'pe":"call","id":2,"method":"echo","params":"\xc3\xa9"}':
            s.write(bytes([byte]))  # é split between its two bytes, too
        self.assertEqual(s.messages(), [])
        s.write(b"\n")
        self.assertEqual(s.messages(), [{"type": "result", "id": 2, "result": "é"}])

    def test_crlf(self) -> None:
        s = self.stream()
        s.write(b'{"type":"hello"}\r\n')
        s.write(b'{"type":"call","id":1,"method":"echo","params":"crlf"}\r')
        s.write(b"\n")
        messages = s.messages()
        self.assertEqual(messages[1], {"type": "result", "id": 1, "result": "crlf"})

    def test_blank_lines_ignored(self) -> None:
        """A shell user pressing Enter is not punished: blank and whitespace-only lines are
        no message, before hello (no 4400) and after (no bad_json, no bad-message count)."""
        s = self.stream()
        s.write(b"\n\r\n  \n\t \r\n")
        self.assertEqual((s.lines(), s.closing), ([], False))
        welcome = s.hello()
        s.write(b"\n" * 10 + b" \r\n")
        self.assertEqual((s.lines(), s.closing), ([], False))
        self.assertEqual(self.session(s, welcome).bad_messages, 0)
        self.assertEqual(self.service.metrics.errors["bad_json"], 0)

    def test_bad_json_line_answered_and_stream_stays(self) -> None:
        s = self.stream()
        s.hello()
        for line in (b"{nope", b"[1]", b'"text"'):  # (a 4th would pass max_bad_messages)
            s.write(line + b"\n")
            [reply] = s.messages()
            self.assertEqual(reply["error"]["code"], "bad_json", line)
        self.assertFalse(s.closing)
        s.send({"type": "call", "id": 1, "method": "echo", "params": 1})
        self.assertEqual(s.messages(), [{"type": "result", "id": 1, "result": 1}])

    def test_bad_message_budget_closes_4400(self) -> None:
        s = self.stream()
        welcome = s.hello()
        for _ in range(4):
            s.write(b"{\n")
        self.assertEqual([m.get("error", {}).get("code") for m in s.messages()[:-1]],
                         ["bad_json"] * 4)
        self.assertClosed(s, 4400)
        self.assertFalse(self.session(s, welcome).attached)  # resumable
        self.assertIn(welcome["session"], self.service.sessions)

    def test_first_line_not_hello_closes_4400(self) -> None:
        s = self.stream()
        s.write(b'{"type":"ping"}\n{"type":"hello"}\n')
        [error, close] = s.messages()
        self.assertEqual(error["error"]["code"], "not_registered")
        self.assertEqual(close["code"], 4400)
        self.assertEqual(self.service.sessions, {})

    def test_server_lines_hold_no_raw_newline(self) -> None:
        s = self.stream()
        s.hello()
        tricky = "line\nbreak\r\u2028\u2029\x00\t\x1b end"
        s.send({"type": "call", "id": "a\nb", "method": "echo", "params": {tricky: tricky}})
        s.send({"type": "event", "event": "echo", "data": [tricky]})
        self.assertEqual(s.messages(), [
            {"type": "result", "id": "a\nb", "result": {tricky: tricky}},
            {"type": "event", "event": "echo", "data": [tricky], "seq": 1}])

    def test_close_line_escapes_its_reason(self) -> None:
        line = close_line(4000, "two\nlines")
        self.assertEqual(line.count(b"\n"), 1)
        self.assertEqual(orjson.loads(line), {"type": "close", "code": 4000,
                                              "reason": "two\nlines"})


class WriteBatchingTests(_InMemory):
    """What one read is answered with goes out in one write; large answers do not wait."""

    def writes(self, s: Stream) -> list[bytes]:
        written: list[bytes] = []
        write = s.transport.write

        def counting(data: bytes) -> None:
            written.append(data)
            write(data)
        s.transport.write = counting  # type: ignore[method-assign]
        return written

    def test_one_write_per_read(self) -> None:
        s = self.stream()
        s.hello()
        written = self.writes(s)
        s.write(b"".join(orjson.dumps({"type": "call", "id": i, "method": "echo",
                                       "params": i}) + b"\n" for i in range(5)))
        self.assertEqual(len(written), 1)
        self.assertEqual([m["result"] for m in s.messages()], list(range(5)))

    def test_answers_after_the_read_go_at_once(self) -> None:
        s = self.stream()
        s.hello()
        written = self.writes(s)
        s.send({"type": "call", "id": 1, "method": "sleep", "params": {"seconds": 1}})
        self.assertEqual(written, [])
        self.clock.advance(1)
        self.assertEqual(len(written), 1)
        self.assertEqual(s.messages()[0]["id"], 1)

    def test_large_answers_are_not_held(self) -> None:
        s = self.stream()
        s.hello()
        written = self.writes(s)
        big = "x" * 900  # SETTINGS allow 1000-byte messages
        s.write(b"".join(orjson.dumps({"type": "call", "id": i, "method": "echo",
                                       "params": big}) + b"\n" for i in range(80)))
        self.assertGreaterEqual(len(written), 2)  # flushed past fastpath.MAX_BATCH
        self.assertTrue(all(len(w) <= fastpath.MAX_BATCH + 1000 for w in written))
        self.assertEqual([m["id"] for m in s.messages()], list(range(80)))

    def test_close_line_comes_after_the_answers_before_it(self) -> None:
        s = self.stream()
        s.hello()
        s.write(orjson.dumps({"type": "call", "id": 1, "method": "echo", "params": 1})
                + b"\n" + b"x" * (self.service.settings.max_message_size + 2) + b"\n")
        got = s.messages()
        self.assertEqual((got[0]["id"], got[-1]["type"]), (1, "close"))


class LineLimitTests(_InMemory):
    """max_message_size (here 1000 bytes) bounds a line, and what is kept of one arriving."""

    def line(self, size: int) -> bytes:
        """An event line of exactly ``size`` bytes (without its newline)."""
        head, tail = b'{"type":"event","event":"echo","data":"', b'"}'
        return head + b"x" * (size - len(head) - len(tail)) + tail

    def test_longest_line_accepted_with_lf_or_crlf(self) -> None:
        s = self.stream()
        s.hello()
        s.write(self.line(1000) + b"\n")
        s.write(self.line(1000) + b"\r")  # its \r comes before its \n: kept, 1001 bytes
        self.assertEqual(len(s.proto._partial or b""), 1001)
        s.write(b"\n")
        self.assertEqual([m["seq"] for m in s.messages()], [1, 2])
        self.assertFalse(s.closing)

    def test_line_completed_across_chunks(self) -> None:
        """A line whose end comes in a later chunk is held to the same limit."""
        s = self.stream()
        s.hello()
        line = self.line(1000)
        s.write(line[:600])
        s.write(line[600:] + b"\r\n" + line[:10])  # exactly 1000 bytes and a \r\n
        self.assertEqual([m["seq"] for m in s.messages()], [1])
        s.write(line[10:] + b"y\n")  # 1001 bytes
        self.assertClosed(s, 1009)
        self.assertEqual(self.service.metrics.messages_in["event"], 1)

    def test_overlong_line_closes_1009_and_session_resumable(self) -> None:
        s = self.stream()
        welcome = s.hello()
        s.write(self.line(1001) + b"\n")
        close = self.assertClosed(s, 1009)
        self.assertIn("1000 bytes", close["reason"])
        self.assertEqual(self.service.metrics.messages_in["event"], 0)
        self.assertFalse(self.session(s, welcome).attached)
        self.assertIn(welcome["session"], self.service.sessions)

    def test_overlong_line_refused_before_its_end_and_never_buffered(self) -> None:
        """Arriving in small chunks, a line is refused as soon as it is too long: at most
        max_message_size + 1 bytes are ever kept."""
        s = self.stream()
        s.hello()
        line = self.line(5000)
        for i in range(0, len(line), 7):
            s.write(line[i:i + 7])
            self.assertLessEqual(len(s.proto._partial or b""), 1001)
            if s.closing:
                break
        self.assertLess(i, 1001)
        self.assertClosed(s, 1009)
        s.write(b"\n" + self.line(100) + b"\n")  # nothing more is read
        self.assertEqual(self.service.metrics.messages_in["event"], 0)

    def test_1001_bytes_not_ending_in_cr_is_too_long(self) -> None:
        s = self.stream()
        s.hello()
        s.write(self.line(1000) + b"x")
        self.assertClosed(s, 1009)

    def test_overlong_first_line_closes_1009(self) -> None:
        s = self.stream()
        s.write(b" " * 2000)
        self.assertClosed(s, 1009)
        self.assertEqual(self.service.sessions, {})


class BadUTF8Tests(_InMemory):
    """A line that is not UTF-8 is treated as a WebSocket text message that is not: 1007."""

    def test_after_hello_1007_session_resumable(self) -> None:
        s = self.stream()
        welcome = s.hello()
        s.write(b'{"type":"event","event":"echo","data":"\xff\xfe"}\n')
        self.assertClosed(s, 1007)
        self.assertFalse(self.session(s, welcome).attached)
        self.assertIn(welcome["session"], self.service.sessions)

    def test_before_hello_1007(self) -> None:
        s = self.stream()
        s.write(b'{"type":"hello","meta":{"a":"\xc3"}}\n')
        self.assertClosed(s, 1007)
        self.assertEqual(self.service.sessions, {})

    def test_not_json_either_1007(self) -> None:
        s = self.stream()
        s.hello()
        s.write(b"\x80 not json\n")
        self.assertClosed(s, 1007)


class StreamEndTests(_InMemory):
    """How a stream ends: mid-line, half-closed, by bye, by the server, by a silent peer."""

    def test_closed_mid_line_partial_dropped_session_resumable(self) -> None:
        s = self.stream()
        welcome = s.hello()
        s.write(b'{"type":"call","id":1,"method":"echo","params":1}')  # no newline
        s.lose()
        self.assertEqual(self.service.metrics.messages_in["call"], 0)
        self.assertEqual(self.service.connections, set())
        session = self.session(s, welcome)
        self.assertFalse(session.attached or session.closed)
        again = self.stream()
        resumed = again.hello(resume={"session": welcome["session"],
                                      "token": welcome["token"], "last_seq": 0})
        self.assertTrue(resumed["resumed"])

    def test_half_close_flushes_and_closes_without_a_close_line(self) -> None:
        s = self.stream()
        welcome = s.hello()
        s.write(b'{"type":"call","id":1,"method":"echo","params":1}\n{"type":"call"')
        s.proto.readConnectionLost()
        self.assertEqual(s.messages(), [{"type": "result", "id": 1, "result": 1}])
        # no close line: what was written goes out, then the whole stream closes
        self.assertEqual((s.transport.disconnecting, s.transport.write_closed), (True, False))
        self.assertEqual(self.service.metrics.messages_in["call"], 1)
        self.assertIsNone(s.transport.producer)
        s.lose()
        session = self.session(s, welcome)
        self.assertFalse(session.attached or session.closed)

    def test_half_closed_client_waits_for_answers_still_due(self) -> None:
        """Input ended while its hello was being authenticated and a call was running (as
        ``printf ... | socat`` against a cluster node): the answers come, then the stream
        closes; a client that never gets them is closed after hello_timeout + call_timeout."""
        from twisted.internet.defer import Deferred

        from wsservice import IAuthenticator
        from zope.interface import implementer
        answers: list[Deferred] = []

        @implementer(IAuthenticator)
        class Later:
            def authenticate(self, request: Any) -> Deferred:
                answers.append(Deferred())
                return answers[-1]

        self.authenticator = Later()
        self.start()
        s = self.stream()
        s.write(b'{"type":"hello"}\n{"type":"call","id":1,"method":"sleep","params":{"seconds":2}}\n')
        s.proto.readConnectionLost()
        self.clock.advance(0.5)
        self.assertFalse(s.closing)
        answers[0].callback("ann")
        self.assertEqual(s.messages()[0]["type"], "welcome")
        self.clock.advance(1.0)
        self.assertFalse(s.closing)  # the call is still running
        self.clock.advance(1.0)
        [result] = s.messages()
        self.assertEqual((result["type"], result["id"]), ("result", 1))
        self.clock.advance(0.1)
        self.assertEqual((s.transport.disconnecting, s.transport.write_closed), (True, False))
        s.lose()
        self.assertIsNone(s.proto._idle_check)
        # an answer that never comes: closed at the deadline, no timer left behind
        s = self.stream()
        s.write(b'{"type":"hello"}\n')
        s.proto.readConnectionLost()
        self.clock.advance(SETTINGS.hello_timeout + SETTINGS.call_timeout - 0.2)
        self.assertFalse(s.transport.disconnecting)
        self.clock.advance(0.3)
        self.assertTrue(s.closing)
        s.lose()

    def test_bye_close_line_1000_session_ended(self) -> None:
        s = self.stream()
        welcome = s.hello()
        s.send({"type": "bye"})
        self.assertEqual(self.assertClosed(s, 1000)["reason"], "bye")
        self.assertNotIn(welcome["session"], self.service.sessions)
        s.lose()

    def test_application_close_code(self) -> None:
        s = self.stream()
        welcome = s.hello()
        self.session(s, welcome).close(4321, "done with you")
        self.assertEqual(self.assertClosed(s, 4321)["reason"], "done with you")

    def test_hello_timeout_4408(self) -> None:
        s = self.stream()
        self.clock.advance(0.99)
        self.assertFalse(s.closing)
        self.clock.advance(0.01)
        self.assertClosed(s, 4408)

    def test_server_close_lingers_until_the_client_closes(self) -> None:
        """After its close line the server closes its half only and drops what still comes
        (unread bytes would turn the close into a reset, losing the close line), until
        the client closes its own half."""
        s = self.stream()
        s.hello()
        s.send({"type": "bye"})
        self.assertEqual((s.transport.write_closed, s.transport.disconnecting), (True, False))
        self.assertEqual(s.messages(), [{"type": "close", "code": 1000, "reason": "bye"}])
        s.send({"type": "ping"})
        self.assertEqual((s.lines(), self.service.metrics.messages_in["ping"]), ([], 0))
        s.proto.readConnectionLost()
        self.assertTrue(s.transport.disconnecting)
        s.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_close_timer_drops_a_peer_that_does_not_read(self) -> None:
        s = self.stream()
        s.hello()
        s.send({"type": "bye"})
        self.assertTrue(s.closing)
        self.clock.advance(CLOSE_TIMEOUT - 0.01)
        self.assertFalse(s.transport.disconnected)
        self.clock.advance(0.01)
        self.assertTrue(s.transport.disconnected)  # aborted
        s.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_close_timer_cancelled_when_the_stream_goes(self) -> None:
        s = self.stream()
        s.hello()
        s.send({"type": "bye"})
        s.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_drain_1001_session_resumable(self) -> None:
        s = self.stream()
        welcome = s.hello()
        waiting = self.stream()
        stopping = self.service.stopService()
        self.assertClosed(s, 1001)
        self.assertClosed(waiting, 1001)
        late = self.stream()  # a connection while draining
        self.assertClosed(late, 1001)
        for stream in (s, waiting, late):
            stream.lose()
        self.assertTrue(stopping.called)
        session = self.session(s, welcome)
        self.assertFalse(session.attached or session.closed)

    def test_handling_failure_closes_1011(self) -> None:
        s = self.stream()
        s.hello()

        def broken(session: Any, payload: bytes) -> None:
            raise RuntimeError("a bug below the adapter")
        self.patch(self.service, "receive", broken)
        s.write(b'{"type":"ping"}\n')
        self.assertClosed(s, 1011)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class FlowControlTests(_InMemory):
    """The same max_send_queue bound (here 10 000 bytes) as on WebSocket."""

    def test_slow_consumer_4508_close_line_last_session_resumable(self) -> None:
        self.start(Settings(max_send_queue=10_000, rate=1e6, burst=10 ** 6))
        s = self.stream()
        welcome = s.hello()
        self.assertIs(s.transport.producer, s.proto)
        s.proto.pauseProducing()  # the transport's buffer is full
        s.send({"type": "call", "id": 1, "method": "push",
                "params": {"count": 30, "event": "e", "data": "y" * 500}})
        messages = s.messages()
        pushed = [m for m in messages if m["type"] == "event"]
        # closed once more than 10 000 bytes were written on a full buffer: at the 19th
        # push of ~540 bytes; the rest wait in the session's replay buffer
        self.assertEqual(len(pushed), 19)
        self.assertEqual(messages[-1], {"type": "close", "code": 4508,
                                        "reason": "slow consumer"})
        self.assertTrue(s.closing)
        session = self.session(s, welcome)
        self.assertFalse(session.attached or session.closed)
        self.assertEqual(session.seq, 30)
        self.assertEqual(self.service.metrics.slow_consumers, 1)
        self.assertGreater(s.proto.queued(), 10_000)
        s.lose()
        again = self.stream()
        again.hello(resume={"session": welcome["session"], "token": welcome["token"],
                            "last_seq": 19})
        self.assertEqual([m["seq"] for m in again.messages()], list(range(20, 31)))

    def test_resumed_transport_clears_the_backlog(self) -> None:
        s = self.stream()
        s.hello()
        for _ in range(3):
            s.proto.pauseProducing()
            s.send({"type": "call", "id": 1, "method": "push",
                    "params": {"count": 15, "event": "e", "data": "y" * 500}})
            s.proto.resumeProducing()
        self.assertFalse(s.closing)


class LimitTests(_InMemory):
    """Per-peer limits, authentication."""

    def test_peer_limit_close_line_1013(self) -> None:
        self.start(Settings(max_peer_connections=1))
        unix = UNIXAddress(None)
        first = self.stream(unix)
        second = self.stream(unix)
        self.assertEqual(self.assertClosed(second, 1013)["reason"],
                         "too many connections from your address, try again later")
        self.assertEqual(len(self.service.connections), 1)
        self.assertEqual(self.service.peers.refused["peer_connections"], 1)
        second.lose()
        first.lose()
        self.assertEqual(self.service.peers.total, 0)
        self.stream(unix).hello()

    def test_max_sessions_1013(self) -> None:
        self.start(Settings(max_sessions=1))
        self.stream().hello()
        s = self.stream()
        s.send({"type": "hello"})
        self.assertClosed(s, 1013)

    def test_rate_limited_then_4429(self) -> None:
        self.start(Settings(rate=1, burst=5, max_bad_messages=3))
        s = self.stream()
        s.hello()
        s.write(b'{"type":"ping"}\n' * 10)
        messages = s.messages()
        self.assertEqual([m["type"] for m in messages[:5]], ["pong"] * 5)
        self.assertEqual({m["error"]["code"] for m in messages[5:9]}, {"rate_limited"})
        self.assertEqual(messages[9]["code"], 4429)

    def test_authenticator_sees_auth_peer_and_listener_no_headers(self) -> None:
        seen: list[Any] = []

        class Recorder:
            def authenticate(self, request: Any) -> Any:
                seen.append(request)
                if request.auth != "open sesame":
                    raise ApplicationError("unauthorized", "wrong word")
                return "ali"
        from zope.interface import classImplements

        from wsservice import IAuthenticator
        classImplements(Recorder, IAuthenticator)
        self.authenticator = Recorder()
        self.start()
        s = self.stream(IPv4Address("TCP", "192.0.2.9", 4242))
        s.hello(auth="open sesame")
        self.assertEqual((seen[0].auth, seen[0].headers, seen[0].peer, seen[0].listener),
                         ("open sesame", {}, "tcp4:192.0.2.9:4242", "unix:/run/ws.sock"))
        refused = self.stream(UNIXAddress(None))
        refused.send({"type": "hello", "auth": "nope"})
        error = refused.messages()[0]
        self.assertEqual((error["error"]["code"], seen[1].peer), ("unauthorized", "unix"))
        self.assertClosed(refused, 4401)

    def test_peer_strings(self) -> None:
        from twisted.internet.address import IPv6Address
        self.assertEqual(peer_of(IPv6Address("TCP", "::1", 80)), "tcp6:::1:80")
        self.assertEqual(peer_of(UNIXAddress(b"/tmp/c.sock")), "unix:/tmp/c.sock")


class OptionsTests(SynchronousTestCase):
    """``--listen-ndjson`` on the command line: checked like ``--listen``, then served."""

    def test_each_endpoint_checked(self) -> None:
        from wsservice.tap import OptionError, Options
        options = Options()
        with self.assertRaises(OptionError) as caught:
            options.parseOptions(["--listen-ndjson", "tcp:8181:interface=127.0.0.1",
                                  "--listen-ndjson", "unix:/no/such/dir/ws.sock"])
        self.assertEqual(str(caught.exception),
                         "--listen-ndjson unix:/no/such/dir/ws.sock: directory /no/such/dir "
                         "does not exist; create it or choose another socket path")

    def test_make_service_listens_on_each(self) -> None:
        from wsservice import NDJSONListener
        from wsservice.tap import Options, makeService
        options = Options()
        options.parseOptions(["--listen-ndjson", "tcp:0:interface=127.0.0.1",
                              "--listen-ndjson", "unix:/tmp/x.sock"])
        service: Any = makeService(options)
        kinds = [(type(listener).__name__, listener.description)
                 for listener in service.listeners]
        self.assertEqual(kinds, [("ListenerService", "tcp:8080:interface=127.0.0.1"),
                                 ("NDJSONListener", "tcp:0:interface=127.0.0.1"),
                                 ("NDJSONListener", "unix:/tmp/x.sock")])
        self.assertIsInstance(service.listeners[2], NDJSONListener)


# -- properties ---------------------------------------------------------------------------------

PROPERTY = settings(max_examples=100, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))
SCRIPT = [b'{"type":"hello"}', b'{"type":"call","id":1,"method":"echo","params":"\xc3\xa9"}',
          b"", b'{"type":"event","event":"echo","data":[1,2]}\r', b"{bad", b"  ",
          b'{"type":"ping","data":{"x":"\\n"}}', b'{"type":"call","id":2,"method":"nope"}']


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:])]


class PropertyTests(_InMemory):
    """Whatever the chunks, the same lines; whatever the bytes, only well-formed lines out."""

    @PROPERTY
    @given(st.lists(st.integers(0, 10 ** 6), max_size=40))
    def test_any_chunking_same_answers(self, cuts: list[int]) -> None:
        data = b"\n".join(SCRIPT) + b"\n"
        whole = self.stream()
        whole.write(data)
        chunked = self.stream()
        for chunk in _chunks(data, cuts):
            chunked.write(chunk)
        a, b = whole.messages(), chunked.messages()
        for welcome in (a[0], b[0]):  # each its own session
            welcome.pop("session"), welcome.pop("token")
        self.assertEqual(a, b)
        self.assertEqual([m["type"] for m in a],
                         ["welcome", "result", "event", "error", "pong", "error"])

    @PROPERTY
    @given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(SCRIPT),
                              st.sampled_from([b"\n", b"\r\n", b" " * 1200])), max_size=30),
           st.lists(st.integers(0, 10 ** 6), max_size=20))
    def test_garbage_stream(self, pieces: list[bytes], cuts: list[int]) -> None:
        """Random bytes in random chunks: nothing raises; every line out is a well-formed
        v1 server message but the last, which may be the close line."""
        self.start(Settings(max_message_size=1000, max_bad_messages=10 ** 6, rate=1e6,
                            burst=10 ** 6))
        s = self.stream()
        checker = test_properties.FrameChecker(self)
        data = b'{"type":"hello"}\n' + b"".join(pieces)
        for chunk in _chunks(data, cuts):
            s.write(chunk)
        self.clock.advance(61)
        lines = s.lines()
        if s.closing:
            close = orjson.loads(lines.pop())
            self.assertEqual(set(close), {"type", "code", "reason"})
            self.assertIn(close["code"], {1000, 1007, 1009})
        for line in lines:
            checker.check(line)
        s.lose()
        self.flushLoggedErrors(RuntimeError)  # the demo's own
        self.assertEqual(self.flushLoggedErrors(), [])


# == 2. real sockets ============================================================================

class _Live:
    """The demo app under the real service (its time a Clock), a WebSocket listener and an
    NDJSON listener of the same kind (loopback TCP, or unix sockets when ``unix``)."""

    unix = False
    settings = Settings(hello_timeout=1.0, resume_ttl=30)

    async def _start(self) -> None:
        self.clock = Clock()
        self.server = await live.serve(self, self.settings, unix=self.unix, clock=self.clock)
        self.service = self.server.service
        self.ndjson = await ndjsonclient.listen(self.server, self.unix)

    def setUp(self) -> Deferred:
        return Deferred.fromCoroutine(self._start())

    async def client(self) -> NDJSONClient:
        return await ndjsonclient.admitted(self.server, self.ndjson)

    async def session(self, **hello: Any) -> tuple[NDJSONClient, dict[str, Any]]:
        c = await self.client()
        return c, await c.hello(**hello)

    async def detached(self, session_id: str) -> None:
        session = self.service.sessions.sessions[session_id]
        await live.until(lambda: not session.attached, "the server to see the stream go")


class LiveTCPTests(_Live, TestCase):
    """NDJSON and WebSocket side by side on loopback TCP."""

    async def test_hello_call_bye(self) -> None:
        c, welcome = await self.session()
        self.assertEqual(welcome["heartbeat"], 0)
        self.assertEqual(await c.call("echo", "hi"), {"type": "result", "id": 1, "result": "hi"})
        c.send({"type": "bye"})
        self.assertEqual(await c.waitClosed(), (1000, "bye"))
        self.assertEqual(self.service.sessions.sessions, {})

    async def test_topics_between_ndjson_and_websocket(self) -> None:
        line, _ = await self.session()
        ws, _ = await self.server.session()
        for c in (line, ws):
            c.send({"type": "subscribe", "topic": "room", "id": "s"})
            self.assertEqual(await c.next(), {"type": "result", "id": "s", "result": None})
        line.send({"type": "publish", "topic": "room", "data": "from a shell"})
        ws.send({"type": "publish", "topic": "room", "data": "from a browser"})
        for c in (line, ws):
            got = [await c.next(), await c.next()]
            self.assertEqual({m["data"] for m in got}, {"from a shell", "from a browser"})
            self.assertEqual([(m["type"], m["topic"], m["seq"]) for m in got],
                             [("message", "room", 1), ("message", "room", 2)])
        await live.caught_up(line)  # type: ignore[arg-type]

    async def test_resume_ndjson_on_websocket_and_back(self) -> None:
        """Sessions are the service's, not a transport's: a session begun on NDJSON resumes
        on WebSocket with the replay, then again on NDJSON."""
        c, welcome = await self.session()
        c.send({"type": "subscribe", "topic": "news", "id": "s"})
        await c.next()
        c.dropConnection(abort=True)
        await c.closed
        await self.detached(welcome["session"])
        self.service.sessions.publish("news", 1)
        ws = await self.server.client()
        again = await ws.hello(resume={"session": welcome["session"], "token": welcome["token"],
                                       "last_seq": 0})
        self.assertTrue(again["resumed"])
        self.assertEqual(again["heartbeat"], 25)  # a WebSocket is pinged
        self.assertEqual(await ws.next(), {"type": "message", "topic": "news", "data": 1,
                                           "seq": 1})
        ws.dropConnection(abort=True)
        await ws.closed
        await self.detached(welcome["session"])
        self.service.sessions.publish("news", 2)
        back = await self.client()
        resumed = await back.hello(resume={"session": welcome["session"],
                                           "token": welcome["token"], "last_seq": 1})
        self.assertEqual((resumed["resumed"], resumed["heartbeat"]), (True, 0))
        self.assertEqual(await back.next(), {"type": "message", "topic": "news", "data": 2,
                                             "seq": 2})

    async def test_websocket_resume_takes_over_an_ndjson_stream_4409(self) -> None:
        c, welcome = await self.session()
        ws = await self.server.client()
        await ws.hello(resume={"session": welcome["session"], "token": welcome["token"],
                               "last_seq": 0})
        self.assertEqual((await c.waitClosed())[0], 4409)

    async def test_mid_line_drop_keeps_session_resumable(self) -> None:
        c, welcome = await self.session()
        c.write(b'{"type":"call","id":9,"method":"echo","params":"never"')
        c.dropConnection(abort=True)
        await c.closed
        await self.detached(welcome["session"])
        again = await self.client()
        resumed = await again.hello(resume={"session": welcome["session"],
                                            "token": welcome["token"], "last_seq": 0})
        self.assertTrue(resumed["resumed"])
        await live.caught_up(again)  # type: ignore[arg-type]
        self.assertEqual(self.service.sessions.metrics.messages_in["call"], 0)

    async def test_half_closed_client_still_gets_its_answers(self) -> None:
        """As from ``printf '...' | socat - UNIX-CONNECT:...``: the client's input ends."""
        c = await self.client()
        c.write(b'{"type":"hello"}\n{"type":"call","id":1,"method":"echo","params":"hi"}\n')
        c.transport.loseWriteConnection()
        self.assertEqual((await c.next())["type"], "welcome")
        self.assertEqual(await c.next(), {"type": "result", "id": 1, "result": "hi"})
        code, _ = await c.waitClosed()
        self.assertIsNone(code)  # the client closed: no close line
        [session] = self.service.sessions.sessions.values()
        await live.until(lambda: not session.attached, "the session detached")
        self.assertFalse(session.closed)

    async def test_over_long_line_1009(self) -> None:
        c, _ = await self.session()
        c.write(b"x" * (1024 * 1024 + 2))
        self.assertEqual(await c.waitClosed(),
                         (1009, f"a line longer than {1024 * 1024} bytes"))

    async def test_tcp_keepalive_on(self) -> None:
        await self.session()
        [connection] = self.service.sessions.connections
        handle = connection.link.transport.getHandle()
        self.assertEqual(handle.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), 25)
            self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL), 8)

    async def test_authenticator_peer_is_tcp4(self) -> None:
        await self.session()
        [connection] = self.service.sessions.connections
        port = connection.link.transport.getPeer().port
        self.assertEqual(connection.peer, "127.0.0.1")
        self.assertEqual(peer_of(connection.link.transport.getPeer()), f"tcp4:127.0.0.1:{port}")


class LiveUNIXTests(_Live, TestCase):
    """NDJSON and WebSocket side by side on unix sockets."""

    unix = True

    async def test_hello_call_bye(self) -> None:
        c, welcome = await self.session()
        self.assertEqual(welcome["heartbeat"], 0)
        self.assertEqual(await c.call("echo", [1]), {"type": "result", "id": 1, "result": [1]})
        c.send({"type": "bye"})
        self.assertEqual(await c.waitClosed(), (1000, "bye"))

    async def test_socket_mode_0600_and_removed_at_stop(self) -> None:
        path = self.ndjson[len("unix:"):]
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertFalse(keep_alive(self.service.listeners[1].port, 25))  # not TCP
        await self.service.stopService()
        self.assertFalse(os.path.exists(path))

    async def test_unix_clients_are_one_peer_with_websocket_ones(self) -> None:
        self.service.sessions.peers.per_peer = 2
        await self.client()
        await self.server.client()
        code, _, _ = await http(self.server.address, "/healthz")
        self.assertEqual(code, 503)
        refused = await ndjsonclient.connect(self.ndjson)
        self.assertEqual((await refused.waitClosed())[0], 1013)
        self.assertEqual(self.service.sessions.peers.connections("unix"), 2)


class LiveTLSTests(TestCase):
    """An ssl: NDJSON listener (self-signed certificate made here)."""

    async def test_hello_call_bye_over_tls(self) -> None:
        from twisted.internet import reactor, ssl
        from twisted.internet.endpoints import SSL4ClientEndpoint
        from twisted.internet.protocol import Factory

        key, cert, _ = certs.self_signed(self)
        server = await live.serve(self, Settings())
        listener = server.service.listenNDJSON(
            f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
        port: Any = await listener.whenListening
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port,
                                      ssl.CertificateOptions(verify=False))
        c = server.clients.add(await endpoint.connect(Factory.forProtocol(NDJSONClient)))
        welcome = await c.hello()
        self.assertEqual(welcome["heartbeat"], 0)
        [connection] = server.sessions.connections
        tcp = connection.link.transport.transport  # below TLS
        self.assertEqual(tcp.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)
        self.assertEqual(await c.call("echo", "over tls"),
                         {"type": "result", "id": 1, "result": "over tls"})
        c.send({"type": "bye"})
        self.assertEqual(await c.waitClosed(), (1000, "bye"))


# == 3. twistd ===================================================================================

# the start-up summary's line for each NDJSON listener: its endpoint string and URL
NDJSON_LINE = re.compile(r"listening \(NDJSON\) on (\S+): (\S+) ")


class TwistdTests(TestCase):
    """``twistd -n wsservice --listen-ndjson ...`` as a user runs it."""

    timeout = 90

    async def start(self, *extra: str) -> processes.Child:
        self.cwd = processes.scratch(self, "wsn")
        self.sock = os.path.join(self.cwd, "ws.sock")
        child = await processes.start(
            self, [processes.TWISTD, "-n", "--pidfile=", "--logfile=-", "wsservice",
                   "--listen", "tcp:0:interface=127.0.0.1",
                   "--listen-ndjson", f"unix:{self.sock}",
                   "--listen-ndjson", "tcp:0:interface=127.0.0.1", *extra], self.cwd)
        await live.until(lambda: len(NDJSON_LINE.findall(child.text)) == 2,
                         lambda: f"two NDJSON listeners in:\n{child.text}")
        return child

    async def test_serves_unix_and_tcp_then_drains_1001(self) -> None:
        child = await self.start()
        found = dict(NDJSON_LINE.findall(child.text))
        self.assertEqual(found[f"unix:{self.sock}"], f"unix:{self.sock}")
        self.assertIn(f"(socat - UNIX-CONNECT:{self.sock})", child.text)
        self.assertEqual(stat.S_IMODE(os.stat(self.sock).st_mode), 0o600)
        url = found["tcp:0:interface=127.0.0.1"]
        self.assertRegex(url, r"^tcp://127\.0\.0\.1:\d+$")
        self.assertIn(f"(nc 127.0.0.1 {url.rsplit(':', 1)[1]})", child.text)
        tcp = await ndjsonclient.connect(url[len("tcp://"):])
        unix = await ndjsonclient.connect(f"unix:{self.sock}")
        secrets = []
        for c in (tcp, unix):
            welcome = await c.hello()
            self.assertEqual(welcome["heartbeat"], 0)
            secrets += [welcome["session"], welcome["token"]]
            self.assertEqual((await c.call("echo", {"via": "twistd"}))["result"],
                             {"via": "twistd"})
        tcp.send({"type": "bye"})
        self.assertEqual(await tcp.waitClosed(), (1000, "bye"))
        text = await processes.stop_cleanly(self, child)
        self.assertEqual(await unix.waitClosed(), (1001, "server shutting down"))
        self.assertFalse(os.path.exists(self.sock))
        for secret in secrets:
            self.assertNotIn(secret, text)

    async def test_bad_endpoint_is_a_usage_error(self) -> None:
        cwd = processes.scratch(self, "wsn")
        out, err, code = await processes.run(
            [processes.TWISTD, "-n", "wsservice", "--listen-ndjson", "bogus:1"], cwd)
        self.assertEqual(code, 2, out + err)
        self.assertIn("wsservice: --listen-ndjson bogus:1: unknown endpoint type 'bogus'", err)
        self.assertNotIn("Traceback", out + err)

    async def test_address_in_use_names_the_option(self) -> None:
        cwd = processes.scratch(self, "wsn")
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out, err, code = await processes.run(
            [processes.TWISTD, "-n", "--pidfile=", "wsservice", "--listen",
             "tcp:0:interface=127.0.0.1", "--listen-ndjson",
             f"tcp:{port}:interface=127.0.0.1"], cwd)
        self.assertEqual(code, 1, out + err)
        self.assertIn(f"wsservice: --listen-ndjson tcp:{port}:interface=127.0.0.1: address "
                      "already in use", err)

    async def test_documented_shell_transcripts(self) -> None:
        """README's "From a shell" (its command's listener, then its transcript) and
        docs/protocol.md's NDJSON transcript, line by line ("→" what the user types, "←"
        what the server answers; "…" any text)."""
        command = docs.command(docs.README, 'make run ARGS="--listen-ndjson')
        self.assertIn("--listen-ndjson unix:/tmp/ws.sock", command)
        self.assertIn("socat - UNIX-CONNECT:/tmp/ws.sock", docs.commands(docs.README))
        await self.start()
        for path in (docs.README, os.path.join(docs.ROOT, "docs", "protocol.md")):
            [transcript] = [body for lang, body in docs.blocks(path)
                            if lang == "" and '"heartbeat":0' in body]
            await self.transcript(transcript)

    async def transcript(self, transcript: str) -> None:
        c = await ndjsonclient.connect(f"unix:{self.sock}")
        for line in transcript.splitlines():
            arrow, text = line[0], line[2:]
            message = orjson.loads(text)
            if arrow == "→":
                c.write(text.encode() + b"\n")
            elif message["type"] == "close":
                self.assertEqual(await c.waitClosed(), (message["code"], message["reason"]))
            else:
                got = await c.next()
                self.assertTrue(_matches(message, got), f"README shows {line}, got {got}")
        self.assertTrue(c.closed.called, "the transcript ends with the close line")
        self.assertFalse(c.queue.pending)


def _matches(expected: Any, got: Any) -> bool:
    """``got`` is ``expected``, where "…" (also inside a string) stands for any text."""
    if isinstance(expected, str) and "…" in expected:
        pattern = ".*".join(re.escape(part) for part in expected.split("…"))
        return isinstance(got, str) and re.fullmatch(pattern, got) is not None
    if isinstance(expected, dict):
        return isinstance(got, dict) and expected.keys() == got.keys() and all(
            _matches(v, got[k]) for k, v in expected.items())
    return bool(expected == got)

