"""The fenced fast path: nothing patched at import, every trick and its fallback."""

from __future__ import annotations

import os
import pprint
import subprocess
import sys
from typing import Any

import autobahn.websocket.protocol as autobahn_protocol
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from wsservice import fastpath
from wsservice.config import Settings
from wsservice.fastpath import SMALL, LazyFormat, SmallMasker, create_xor_masker
from wsservice.service import SessionService
from wsservice.websocket import WebSocketFactory


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference(mask: bytes, data: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


class MaskerTests(SynchronousTestCase):
    """SmallMasker against the definition of RFC 6455 masking."""

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.binary(min_size=4, max_size=4), st.binary(max_size=600),
           st.lists(st.integers(0, 100), max_size=8))
    def test_chunked_equals_reference(self, mask: bytes, data: bytes, cuts: list[int]) -> None:
        masker = SmallMasker(mask)
        out, pos = [], 0
        for cut in cuts:
            out.append(masker.process(data[pos:pos + cut]))
            pos += cut
        out.append(masker.process(data[pos:]))
        self.assertEqual(b"".join(out), reference(mask, data))
        self.assertEqual(masker.pointer(), len(data))
        masker.reset()
        self.assertEqual(masker.pointer(), 0)
        self.assertEqual(masker.process(data), reference(mask, data))

    def test_large_frames_keep_autobahns_masker(self) -> None:
        self.assertIsInstance(create_xor_masker(b"abcd", SMALL), SmallMasker)
        self.assertNotIsInstance(create_xor_masker(b"abcd", SMALL + 1), SmallMasker)
        big: Any = create_xor_masker(b"abcd", 100000)
        self.assertEqual(big.process(b"\x00" * 8), b"abcdabcd")


class ScopeTests(SynchronousTestCase):
    """Autobahn's module globals are ours only while our own protocol runs, then restored."""

    def test_nothing_patched_at_import(self) -> None:
        # the reproduction, in a fresh interpreter: Timings must still print
        code = ("import wsservice, wsservice.websocket\n"
                "import autobahn.websocket.protocol as p, pprint, autobahn.websocket.xormasker as x\n"
                "from autobahn.websocket.protocol import Timings\n"
                "t = Timings(); t.track('x'); assert isinstance(str(t), str)\n"
                "assert p.pformat is pprint.pformat, p.pformat\n"
                "assert p.create_xor_masker is x.create_xor_masker, p.create_xor_masker\n"
                "print('ok')\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=ROOT)  # this checkout's wsservice, not an installed one
        self.assertEqual((out.returncode, out.stdout, out.stderr), (0, "ok\n", ""))

    class Parser:
        """Stands for Autobahn's protocol: its parser calls ``parse`` with what it got."""

        _small = False  # as before the connection is open: no small-frame reading

        def __init__(self, parse: Any) -> None:
            self._dataReceived = parse

    def test_masker_only_while_receiving(self) -> None:
        seen: list[Any] = []
        original = autobahn_protocol.create_xor_masker
        fastpath.data_received(self.Parser(lambda data: seen.append(
            autobahn_protocol.create_xor_masker)), b"x")
        self.assertEqual(seen, [fastpath.create_xor_masker])
        self.assertIs(autobahn_protocol.create_xor_masker, original)

    def test_restored_when_parsing_raises(self) -> None:
        original = autobahn_protocol.create_xor_masker

        def explode(*args: Any) -> None:
            raise ValueError("boom")
        self.assertRaises(ValueError, fastpath.data_received, self.Parser(explode), b"x")
        self.assertIs(autobahn_protocol.create_xor_masker, original)

        class Base:
            _connectionMade = explode

            def sendText(self, payload: bytes) -> None:
                """Stands for the adapter's own (public-path) sendText."""
        cls = type("Fast", (Base,), {})
        fastpath.install(cls)
        self.assertRaises(ValueError, cls()._connectionMade)  # type: ignore[attr-defined]
        self.assertIs(autobahn_protocol.pformat, pprint.pformat)

    def test_restores_what_was_there_on_entry(self) -> None:
        sentinel = object()
        self.patch(autobahn_protocol, "create_xor_masker", sentinel)
        fastpath.data_received(self.Parser(lambda data: None), b"x")
        self.assertIs(autobahn_protocol.create_xor_masker, sentinel)

    def test_lazy_format_only_while_connecting(self) -> None:
        seen: list[Any] = []

        class Base:
            def _connectionMade(self) -> None:
                seen.append(autobahn_protocol.pformat([1]))

            def sendText(self, payload: bytes) -> None:
                """Stands for the adapter's own (public-path) sendText."""
        cls = type("Fast", (Base,), {})
        fastpath.install(cls)
        cls()._connectionMade()  # type: ignore[attr-defined]
        self.assertIsInstance(seen[0], LazyFormat)
        self.assertIs(autobahn_protocol.pformat, pprint.pformat)

    def test_installed_on_the_factorys_class_only(self) -> None:
        from autobahn.twisted.websocket import WebSocketServerProtocol
        from wsservice.websocket import WebSocketProtocol
        before = {name: vars(WebSocketServerProtocol).get(name)
                  for name in ("dataReceived", "_connectionMade")}
        fast = FactoryTests.factory(self)  # type: ignore[arg-type]
        slow = FactoryTests.factory(self, fast_path=False)  # type: ignore[arg-type]
        self.assertIs(vars(fast.protocol)["dataReceived"], fastpath.data_received)
        # the adapter's own onMessage* hooks hold each message: nothing replaces them
        self.assertNotIn("onMessageEnd", vars(fast.protocol))
        for name in before:
            self.assertNotIn(name, vars(slow.protocol))
            self.assertNotIn(name, vars(WebSocketProtocol))
            self.assertIs(vars(WebSocketServerProtocol).get(name), before[name])

    def test_lazy_format_same_text(self) -> None:
        value = [("maxMessagePayloadSize", 1048576, "WebSocketFactory")] * 3
        lazy = LazyFormat(value)
        self.assertIsInstance(lazy, str)
        self.assertEqual(str(lazy), pprint.pformat(value))
        self.assertEqual(f"\n{lazy}", "\n" + pprint.pformat(value))


class FakeSocket:
    """A socket whose send() takes at most ``take`` bytes, or raises ``error``."""

    def __init__(self, take: int | None = None, error: BaseException | None = None) -> None:
        self.take = take
        self.error = error
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        n = len(data) if self.take is None else min(self.take, len(data))
        self.sent.append(bytes(data[:n]))
        return n


class FakeTransport:
    """The tcp.Connection internals send_now reads, and what went through write()."""

    def __init__(self, socket: FakeSocket, buffered: bytes = b"", temp: int = 0) -> None:
        self.socket = socket
        self.connected = True
        self.disconnecting = False
        self.dataBuffer = buffered
        self.offset = 0
        self._tempDataLen = temp
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


class SendNowTests(SynchronousTestCase):
    """Every branch of the direct send."""

    def test_whole_send(self) -> None:
        t = FakeTransport(FakeSocket())
        fastpath.send_now(t, b"abcdef")
        self.assertEqual((t.socket.sent, t.written), ([b"abcdef"], []))

    def test_partial_send_rest_through_write(self) -> None:
        t = FakeTransport(FakeSocket(take=2))
        fastpath.send_now(t, b"abcdef")
        self.assertEqual((t.socket.sent, t.written), ([b"ab"], [b"cdef"]))

    def test_eagain_all_through_write(self) -> None:
        t = FakeTransport(FakeSocket(error=BlockingIOError()))
        fastpath.send_now(t, b"abcdef")
        self.assertEqual(t.written, [b"abcdef"])

    def test_error_left_to_write(self) -> None:
        t = FakeTransport(FakeSocket(error=ConnectionResetError()))
        fastpath.send_now(t, b"abcdef")
        self.assertEqual(t.written, [b"abcdef"])

    def test_buffered_data_keeps_order(self) -> None:
        # Twisted still holds bytes for this socket (a paused or slow peer): behind them
        for t in (FakeTransport(FakeSocket(), buffered=b"old"),
                  FakeTransport(FakeSocket(), temp=3)):
            fastpath.send_now(t, b"new")
            self.assertEqual((t.socket.sent, t.written), ([], [b"new"]))

    def test_closed_transport_gets_nothing(self) -> None:
        for attr in ("connected", "disconnecting"):
            t = FakeTransport(FakeSocket())
            setattr(t, attr, attr == "disconnecting")
            fastpath.send_now(t, b"x")
            self.assertEqual((t.socket.sent, t.written), ([], []))

    def test_only_real_sockets_are_sent_to_directly(self) -> None:
        self.assertFalse(fastpath.can_send_directly(FakeTransport(FakeSocket())))

    def test_text_frame_headers(self) -> None:
        for n, header in ((0, b"\x81\x00"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"),
                          (65535, b"\x81\x7e\xff\xff"),
                          (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00")):
            frame = fastpath.text_frame(b"x" * n)
            self.assertEqual((frame[:len(header)], len(frame)), (header, len(header) + n))


class ChoiceTests(SynchronousTestCase):
    """The probe decides, the setting can refuse, and the choice is logged once at INFO."""

    def setUp(self) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.patch(fastpath, "_told", set())

    def lines(self) -> list[str]:
        return [e["log_format"].format(**e) for e in self.events
                if e.get("log_namespace") == "wsservice.fastpath"
                and e["log_level"] == LogLevel.info]

    def test_this_autobahn_and_twisted_pass_the_probe(self) -> None:
        self.assertEqual(fastpath.missing(), [])
        self.assertTrue(fastpath.choose(True))
        self.assertTrue(fastpath.choose(True))
        self.assertEqual(self.lines(), ["WebSocket fast path on"])

    def test_setting_off(self) -> None:
        self.assertFalse(fastpath.choose(False))
        self.assertEqual(self.lines(), ["WebSocket fast path off (--no-fast-path)"])

    def test_missing_private_falls_back(self) -> None:
        self.patch(fastpath, "_probes", lambda: [("twisted.internet.tcp.Connection.socket",
                                                  False), ("other", True)])
        self.assertFalse(fastpath.choose(True))
        self.assertEqual(self.lines(), ["WebSocket fast path off: this Autobahn/Twisted "
                                        "lacks twisted.internet.tcp.Connection.socket"])

    def test_probe_sees_new_work_in_what_is_replaced(self) -> None:
        # a newer Autobahn doing more in dataReceived: replacing it would skip that
        from autobahn.twisted.websocket import WebSocketServerProtocol

        def dataReceived(self: Any, data: bytes) -> None:
            self._dataReceived(data), self.audit(data)
        self.patch(WebSocketServerProtocol, "dataReceived", dataReceived)
        self.assertIn("WebSocketProtocol.dataReceived/_connectionMade", fastpath.missing())

    def test_probe_sees_a_renamed_internal(self) -> None:
        # what a newer Autobahn would look like: the parser no longer names the masker
        self.patch(autobahn_protocol.WebSocketProtocol, "processData", lambda self: None)
        self.assertIn("autobahn.websocket.protocol.create_xor_masker", fastpath.missing())


class SmallReadProbeTests(SynchronousTestCase):
    """The small-frame reader and the smaller send queue are probed like every other trick."""

    def test_probe_sees_new_work_after_a_frame(self) -> None:
        # a newer Autobahn whose frame end no longer restarts the ping timer where we look
        self.patch(autobahn_protocol.WebSocketProtocol, "onFrameEnd", lambda self: None)
        self.assertIn("WebSocketProtocol.data/current_frame/inside_message/"
                      "_cancelAutoPingTimeoutCall", fastpath.missing())

    def test_probe_sees_another_send_queue(self) -> None:
        self.patch(autobahn_protocol.WebSocketProtocol, "_send", lambda self: None)
        self.assertIn("WebSocketProtocol.send_queue (append/popleft/len)", fastpath.missing())

    def test_send_queue(self) -> None:
        queue = fastpath.SendQueue()
        self.assertFalse(queue)
        queue.append(1)
        queue.append(2)
        self.assertEqual((len(queue), queue.popleft(), list(queue)), (2, 1, [2]))

    def test_send_queue_replaces_a_fresh_deque_only(self) -> None:
        from collections import deque

        class Base:
            def _connectionMade(self) -> None:
                self.send_queue: Any = deque([b"queued"]) if self.busy else deque()

            def sendText(self, payload: bytes) -> None:
                """Stands for the adapter's own sendText."""
        cls = type("Fast", (Base,), {})
        fastpath.install(cls)
        fresh, busy = cls(), cls()
        fresh.busy, busy.busy = False, True  # type: ignore[attr-defined]
        fresh._connectionMade()  # type: ignore[attr-defined]
        busy._connectionMade()  # type: ignore[attr-defined]
        self.assertIs(type(fresh.send_queue), fastpath.SendQueue)  # type: ignore[attr-defined]
        self.assertIs(type(busy.send_queue), deque)  # type: ignore[attr-defined]


class FactoryTests(SynchronousTestCase):
    """The factory switches the fast path on or off; options set later still apply."""

    def factory(self, **settings: Any) -> WebSocketFactory:
        clock = Clock()
        service = SessionService([], Settings(**settings), clock=clock)
        return WebSocketFactory(service, "test", reactor=clock)

    def test_fast_path_setting(self) -> None:
        self.assertTrue(self.factory().fast)
        self.assertFalse(self.factory(fast_path=False).fast)

    def test_set_protocol_options_after_construction(self) -> None:
        factory = self.factory()
        factory.setProtocolOptions(autoPingInterval=7, maxMessagePayloadSize=99)
        proto: Any = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        self.assertEqual((proto.autoPingInterval, proto.maxMessagePayloadSize), (7, 99))
        # per factory: another factory's connections keep their own options
        other: Any = self.factory().buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        self.assertEqual(other.maxMessagePayloadSize, Settings().max_message_size)

    def test_replaced_protocol_class_raises(self) -> None:
        factory = self.factory()
        factory.protocol = type("Other", (factory.protocol,), {})
        self.assertRaises(TypeError, factory.setProtocolOptions, autoPingInterval=3)


class DirectSendTests(SynchronousTestCase):
    """The adapter's direct send: corked per turn, behind Twisted's buffer when paused."""

    def protocol(self) -> tuple[Any, FakeTransport, Clock]:
        from collections import deque
        clock = Clock()
        service = SessionService([], Settings(), clock=clock)
        factory = WebSocketFactory(service, "test", reactor=clock)
        proto: Any = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = FakeTransport(FakeSocket())
        # an open connection without permessage-deflate, as onOpen leaves it
        proto.transport = transport
        proto.state = proto.STATE_OPEN
        proto.send_state = proto.SEND_STATE_GROUND
        proto.send_queue = deque()
        proto._plain = proto._direct = True
        return proto, transport, clock

    def test_one_send_per_turn(self) -> None:
        proto, transport, clock = self.protocol()
        proto.sendText(b"a")
        proto.sendText(b"bc")
        self.assertEqual(transport.socket.sent, [])
        clock.advance(0)
        self.assertEqual((transport.socket.sent, transport.written),
                         ([b"\x81\x01a\x81\x02bc"], []))

    def test_large_batch_goes_at_once(self) -> None:
        proto, transport, clock = self.protocol()
        big = b"x" * (fastpath.MAX_BATCH // 2 + 1)
        proto.sendText(big)
        self.assertEqual(transport.socket.sent, [])
        proto.sendText(big)
        self.assertEqual(len(transport.socket.sent), 1)
        self.assertEqual(len(transport.socket.sent[0]), 2 * (len(big) + 4))

    def test_paused_transport_gets_write_and_counts_backlog(self) -> None:
        proto, transport, clock = self.protocol()
        proto.sendText(b"a")  # corked this turn
        proto.pauseProducing()
        proto.sendText(b"b")  # what was corked goes first, then this, through write()
        self.assertEqual(transport.socket.sent, [b"\x81\x01a"])
        self.assertEqual(transport.written, [b"\x81\x01b"])
        self.assertEqual(proto._backlog, 3)
        proto.resumeProducing()
        self.assertEqual(proto._backlog, 0)
        clock.advance(0)  # the corker finds nothing left to send
        self.assertEqual(transport.socket.sent, [b"\x81\x01a"])

    def test_no_direct_send_writes_through_the_transport(self) -> None:
        proto, transport, clock = self.protocol()
        proto._direct = False
        proto.sendText(b"a")
        self.assertEqual((transport.socket.sent, transport.written), ([], [b"\x81\x01a"]))


class RedisCommandTests(SynchronousTestCase):
    """The cluster's Redis commands: the same bytes as txredisapi's own encoder, faster."""

    def protocols(self) -> tuple[Any, Any]:
        import txredisapi  # type: ignore[import-untyped]
        fast_class = fastpath.redis_protocol(txredisapi.RedisProtocol)
        own, fast = txredisapi.RedisProtocol(charset=None), fast_class(charset=None)
        return own, fast

    def test_same_bytes(self) -> None:
        own, fast = self.protocols()
        samples = [("EVALSHA", "ab" * 20, 0, "wss:", "n1", 1000, 1048576, "P", "sid",
                    "event", b'{"type":"event","data":"\xc5\xbe"}'),
                   ("PING",), ("SET", "k", ""), ("X", -5, 2 ** 70, 1.5, True, bytearray(b"z"),
                                                   "ž🐴", b"\r\n\x00")]
        for args in samples:
            self.assertEqual(fast._build_command(*args), own._build_command(*args), args)

    def test_on_by_the_setting_and_the_probe(self) -> None:
        self.assertTrue(fastpath.choose_redis(True))
        self.assertFalse(fastpath.choose_redis(False))
        import txredisapi
        self.patch(txredisapi.BaseRedisProtocol, "execute_command", lambda self, *a: None)
        self.patch(fastpath, "_told", set())
        self.assertFalse(fastpath.choose_redis(True))

    def test_engine_uses_it_for_commands_only(self) -> None:
        from wsservice.redisengine import RedisEngine, _Factory
        from wsservice.redisurl import parse_redis_url
        address = parse_redis_url("redis://127.0.0.1:1/0")
        fast = RedisEngine(address, "n1", fast=True)
        slow = RedisEngine(address, "n1", fast=False)
        self.assertIs(vars(_Factory(fast, "command", address).protocol)["_build_command"],
                      fastpath.build_command)
        self.assertNotIn("_build_command", vars(_Factory(slow, "command", address).protocol))
        self.assertNotIn("_build_command",
                         vars(_Factory(fast, "subscriber", address).protocol))
