"""WebSocket frames as the adapter receives them (issue 9): a cap on frames per message,
frames counted by the rate limit, partial messages held in one buffer, fail-fast UTF-8 for
fragmented text, and 1002/1007 answers to bad close frames. Each runs with the fast path on
and off (``Autobahn*`` subclasses), in memory as tests/test_websocket.py does."""

from __future__ import annotations

import orjson
from twisted.trial.unittest import TestCase

from wsservice import closecodes, errors
from wsservice.config import Settings

from . import live
from .test_websocket import Client, _AdapterTest

PING = orjson.dumps({"type": "ping", "data": "fragmented"})


def fragments(client: Client, chunks: list[bytes], end: bool = True) -> None:
    """Send one text message as one frame per chunk (the last one final if ``end``)."""
    client.beginMessage(isBinary=False)
    for chunk in chunks:
        client.beginMessageFrame(len(chunk))
        client.sendMessageFrameData(chunk)
    if end:
        client.endMessage()  # an empty final continuation frame


class FrameCapTests(_AdapterTest):
    """max_frames: a message in more frames is closed 1009; the partial message is held in one
    buffer, not one bytes object per frame."""

    settings = Settings(max_frames=8, rate=1e6, burst=1000)

    async def test_fragmented_message_within_the_cap(self) -> None:
        """A message in several frames (up to the cap) is one message, answered as such."""
        client = await self.connect()
        await self.hello(client)
        fragments(client, [PING[:5], PING[5:9], PING[9:]])  # 4 frames with the final one
        self.assertEqual(await client.receive(), {"type": "pong", "data": "fragmented"})
        self.assertFalse(client.closed.called)

    async def test_one_byte_fragments_past_the_cap(self) -> None:
        """The attack: a never-finished message in one-byte frames is closed 1009 at the
        cap, before the rest arrives; the server held it as one bytearray."""
        client = await self.connect()
        welcome = await self.hello(client)
        server = self.servers[0]
        fragments(client, [b"{"] + [b" "] * 6, end=False)  # 7 frames: within the cap
        await live.until(lambda: server._frames == 7, "7 frames at the server")
        self.assertEqual(bytes(server._data or b""), b"{      ")
        self.assertIsInstance(server._data, bytearray)  # one buffer, not seven objects
        self.assertFalse(client.closed.called)
        for _ in range(2):
            client.beginMessageFrame(1)
            client.sendMessageFrameData(b" ")
        reason = await self.closed_with(client, closecodes.CLOSE_TOO_BIG)
        self.assertEqual(reason, "a message in more than 8 frames")
        self.assertIsNone(server._data)
        self.assertDetached(welcome)  # the session stays resumable

    async def test_cap_before_hello(self) -> None:
        """Before hello (no session, no rate limit yet) the cap holds too."""
        client = await self.connect()
        fragments(client, [b" "] * 9, end=False)
        await self.closed_with(client, closecodes.CLOSE_TOO_BIG)

    async def test_binary_fragments_past_the_cap(self) -> None:
        """Binary messages are capped alike (and held alike)."""
        client = await self.connect()
        await self.hello(client)
        client.beginMessage(isBinary=True)
        for _ in range(9):
            client.beginMessageFrame(1)
            client.sendMessageFrameData(b"\xff")
        await self.closed_with(client, closecodes.CLOSE_TOO_BIG)


class FrameRateTests(_AdapterTest):
    """Every frame past a message's first costs a rate-limit token as it arrives."""

    settings = Settings(max_frames=100, rate=1.0, burst=10, max_bad_messages=2)

    async def test_frames_take_tokens(self) -> None:
        """A message in 10 frames takes the whole burst of 10 (9 frames + the message): the
        next message is rate-limited; without the frames it would not be."""
        client = await self.connect()
        await self.hello(client)
        chunks = [PING[i:i + 3] for i in range(0, 27, 3)]
        chunks.append(PING[27:])
        self.assertEqual(len(chunks), 10)
        client.beginMessage(isBinary=False)
        for chunk in chunks:
            client.beginMessageFrame(len(chunk))
            client.sendMessageFrameData(chunk)
        client.endMessage()  # one more frame: the 11th (empty, final) takes the 10th token
        reply = await client.receive()
        self.assertEqual(reply["type"], "error", reply)
        self.assertEqual(reply["error"]["code"], errors.RATE_LIMITED)

    async def test_frame_over_the_rate_is_answered(self) -> None:
        """The frame that finds the bucket empty is answered rate_limited at once, saying
        frames count."""
        client = await self.connect()
        await self.hello(client)
        fragments(client, [b" "] * 12, end=False)  # 11 frames past the first: 1 over
        reply = await client.receive()
        self.assertEqual(reply["error"]["code"], errors.RATE_LIMITED)
        self.assertIn("each frame past a message's first counts", reply["error"]["message"])

    async def test_over_the_rate_by_frames_closes_4429(self) -> None:
        """A client over the rate by frames is treated as one over it by messages: answered
        rate_limited, then past max_bad_messages closed 4429, before the message ends."""
        client = await self.connect()
        welcome = await self.hello(client)
        fragments(client, [b" "] * 14, end=False)  # 13 frames past the first: 3 over
        codes = [(await client.receive())["error"]["code"] for _ in range(3)]
        self.assertEqual(codes, [errors.RATE_LIMITED] * 3)
        await self.closed_with(client, closecodes.CLOSE_RATE_LIMITED)
        self.assertDetached(welcome)

    async def test_single_frame_messages_cost_one_token(self) -> None:
        """Unfragmented messages cost what they did: one token each."""
        client = await self.connect()
        await self.hello(client)
        for i in range(10):
            client.send({"type": "ping", "data": i})
        for i in range(10):
            self.assertEqual(await client.receive(), {"type": "pong", "data": i})
        client.send({"type": "ping", "data": 10})
        self.assertEqual((await client.receive())["error"]["code"], errors.RATE_LIMITED)


class FragmentedUTF8Tests(_AdapterTest):
    """A text message in several frames or chunks is checked for UTF-8 as it arrives."""

    async def test_invalid_first_frame_fails_before_the_end(self) -> None:
        """Invalid bytes in the first frame of a fragmented message: 1007 as soon as the next
        frame begins, not when (if ever) the message ends."""
        client = await self.connect()
        welcome = await self.hello(client)
        fragments(client, [b'{"type":"\xff', b'ping"'], end=False)
        reason = await self.closed_with(client, closecodes.CLOSE_INVALID_PAYLOAD)
        self.assertEqual(reason, "text is not valid UTF-8")
        self.assertDetached(welcome)

    async def test_invalid_later_frame(self) -> None:
        """An invalid sequence split over frames (6.4.1's 0x110000) fails at its frame."""
        client = await self.connect()
        await self.hello(client)
        fragments(client, [b'{"a":"\xce\xba\xe1\xbd\xb9', b"\xf4\x90\x80\x80"], end=False)
        await self.closed_with(client, closecodes.CLOSE_INVALID_PAYLOAD)

    async def test_valid_character_split_over_frames(self) -> None:
        """A character whose bytes span two frames is fine."""
        client = await self.connect()
        await self.hello(client)
        text = orjson.dumps({"type": "ping", "data": "κόσμε"})
        cut = text.index("ό".encode()) + 1
        fragments(client, [text[:cut], text[cut:]])
        self.assertEqual(await client.receive(), {"type": "pong", "data": "κόσμε"})

    async def test_invalid_single_frame_still_1007(self) -> None:
        """A single-frame message keeps today's path: orjson finds it, 1007."""
        client = await self.connect()
        await self.hello(client)
        client.sendMessage(b'{"type":"ping","data":"\xff"}', False)
        await self.closed_with(client, closecodes.CLOSE_INVALID_PAYLOAD)


class BadCloseFrameTests(_AdapterTest):
    """A client close frame that breaks RFC 6455 is answered with a close frame, no reset."""

    async def bad_close(self, code: int, reason: bytes | None = None) -> tuple[int | None, str]:
        client = await self.connect()
        welcome = await self.hello(client)
        client.sendCloseFrame(code, reason, isReply=False)
        wasClean, got, text = await client.closed
        await self.server_closed[self.clients.index(client)]
        self.assertTrue(wasClean, text)
        # not the client's normal close: the session stays resumable
        session = self.service.sessions[welcome["session"]]
        self.assertEqual((session.attached, session.closed), (False, False))
        return got, text

    async def test_invalid_codes_get_1002(self) -> None:
        """999, 1004-1006, 1015, 1016-2999 and 5000 and up: 1002."""
        for code in (999, 1005, 5000, 1004, 1006, 1015, 1016, 2999, 0):
            got, text = await self.bad_close(code)
            self.assertEqual((got, text), (closecodes.CLOSE_PROTOCOL_ERROR,
                                           f"invalid close code {code}"))

    async def test_non_utf8_reason_gets_1007(self) -> None:
        got, text = await self.bad_close(1000, b"bye \xff\xfe")
        self.assertEqual((got, text), (closecodes.CLOSE_INVALID_PAYLOAD,
                                       "close reason is not valid UTF-8"))

    async def test_valid_codes_echoed_as_before(self) -> None:
        """Valid codes (1012-1014, 3000-4999 included) get Autobahn's usual answer."""
        for code in (1001, 1012, 1014, 3000, 4999):
            client = await self.connect()
            await self.hello(client)
            client.sendCloseFrame(code, "fine".encode(), isReply=False)
            wasClean, got, _ = await client.closed
            self.assertTrue(wasClean)
            self.assertEqual(got, closecodes.CLOSE_NORMAL)

    def test_peer_codes(self) -> None:
        """closecodes.peer_may_send follows RFC 6455 7.4 and the IANA registry."""
        ok = [c for c in range(0, 6000) if closecodes.peer_may_send(c)]
        self.assertEqual(ok, [1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)])


class LiveBadCloseFrameTests(TestCase):
    """The same over real TCP, where Autobahn's own answer was a reset: its close frame was
    thrown away unsent when it aborted the connection."""

    settings = Settings()

    async def test_bad_close_frames_answered_over_tcp(self) -> None:
        server = await live.serve(self, self.settings)
        for code, reason, expected in ((999, None, closecodes.CLOSE_PROTOCOL_ERROR),
                                       (1005, None, closecodes.CLOSE_PROTOCOL_ERROR),
                                       (5000, None, closecodes.CLOSE_PROTOCOL_ERROR),
                                       (1000, b"\xc3\x28", closecodes.CLOSE_INVALID_PAYLOAD)):
            client = await server.client()
            await client.hello()
            client.sendCloseFrame(code, reason, isReply=False)
            got, text = await client.waitClosed()
            self.assertEqual(got, expected, f"close code {code}: {text}")


class AutobahnPathLiveBadCloseFrameTests(LiveBadCloseFrameTests):
    """The same with the fast path off."""

    settings = Settings(fast_path=False)


class AutobahnPathFrameCapTests(FrameCapTests):
    """The same with the fast path off."""

    settings = Settings(max_frames=8, rate=1e6, burst=1000, fast_path=False)


class AutobahnPathFrameRateTests(FrameRateTests):
    """The same with the fast path off."""

    settings = Settings(max_frames=100, rate=1.0, burst=10, max_bad_messages=2, fast_path=False)


class AutobahnPathFragmentedUTF8Tests(FragmentedUTF8Tests):
    """The same with the fast path off."""

    settings = Settings(fast_path=False)


class AutobahnPathBadCloseFrameTests(BadCloseFrameTests):
    """The same with the fast path off."""

    settings = Settings(fast_path=False)
