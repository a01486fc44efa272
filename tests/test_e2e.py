"""End to end: the real service on a real TCP port and a real unix socket, real WebSocket clients.

Every test runs on both transports (TCPTests, UNIXTests). The service's time (timeouts, the
demo's sleep) is a Clock the tests advance: nothing waits on, or races, the wall clock.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import orjson
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from wsservice import Settings

from . import live
from .wsclient import Client, handshake_headers, http

SETTINGS = Settings(hello_timeout=1.0, max_bad_messages=3, call_timeout=1.0,
                    max_inflight_calls=4, max_message_size=64 * 1024, max_depth=8)


class _EndToEnd:
    """The tests; subclasses say which listener to use."""

    settings = SETTINGS
    unix = False

    async def _start(self) -> None:
        self.clock = Clock()
        self.server = await live.serve(self, self.settings, unix=self.unix, clock=self.clock)
        self.service = self.server.service
        self.address = self.server.address

    def setUp(self) -> Deferred:
        return Deferred.fromCoroutine(self._start())

    async def client(self, **kwargs: Any) -> Client:
        return await self.server.client(**kwargs)

    async def session(self, **hello: Any) -> tuple[Client, dict[str, Any]]:
        return await self.server.session(**hello)

    async def expect_error(self, c: Client, code: str, id: Any = None) -> dict[str, Any]:
        message = await c.next()
        self.assertEqual(message["type"], "error", message)
        self.assertEqual(message["error"]["code"], code, message)
        if id is None:
            self.assertNotIn("id", message)
        else:
            self.assertEqual(message["id"], id)
        return message

    async def expect_close(self, c: Client, code: int) -> None:
        got, reason = await c.waitClosed()
        self.assertEqual(got, code, reason)

    async def in_flight(self, c: Client) -> None:
        """Once this returns the server has read every message ``c`` sent before (an echo's
        reply comes after them: a client's messages are handled in order)."""
        self.assertEqual(await c.call("echo", "sync", id="sync"),
                         {"type": "result", "id": "sync", "result": "sync"})

    # -- session lifecycle ---------------------------------------------------------------------

    async def test_hello_welcome(self) -> None:
        c, welcome = await self.session(meta={"app": "e2e"})
        self.assertEqual(set(welcome), {"type", "session", "token", "resumed", "heartbeat",
                                        "server"})
        self.assertFalse(welcome["resumed"])
        self.assertEqual(welcome["heartbeat"], 25)
        self.assertTrue(welcome["server"].startswith("wsservice/"))
        self.assertNotEqual(welcome["session"], welcome["token"])
        reply = await c.call("whoami")
        self.assertEqual(reply["result"], {"session": welcome["session"],
                                           "principal": "anonymous", "meta": {"app": "e2e"}})
        self.assertEqual(c.websocket_protocol_in_use, "wsservice.v1")

    async def test_bye_closes_1000_and_ends_session(self) -> None:
        c, _ = await self.session()
        self.assertEqual(len(self.service.sessions.sessions), 1)
        c.send({"type": "bye"})
        await self.expect_close(c, 1000)
        self.assertEqual(self.service.sessions.sessions, {})

    async def wait_detached(self, session_id: str) -> None:
        session = self.service.sessions.sessions[session_id]
        await live.until(lambda: not session.attached, "the server to see the connection go")

    async def test_client_drop_keeps_session_resumable(self) -> None:
        c, welcome = await self.session()
        c.dropConnection(abort=True)
        await c.closed
        await self.wait_detached(welcome["session"])
        self.assertIn(welcome["session"], self.service.sessions.sessions)

    async def test_client_close_1000_ends_session(self) -> None:
        c, welcome = await self.session()
        c.sendClose(1000)
        await c.closed
        await live.until(lambda: welcome["session"] not in self.service.sessions.sessions,
                         "the session to end")

    async def test_resume_replays_missed_pushes(self) -> None:
        c, welcome = await self.session()
        c.send({"type": "subscribe", "topic": "news", "id": "s"})
        self.assertEqual(await c.next(), {"type": "result", "id": "s", "result": None})
        self.assertEqual((await c.call("push", {"count": 2, "event": "tick"}))["seq"], 1)
        self.assertEqual((await c.next())["seq"], 2)
        await c.next()  # the result
        c.dropConnection(abort=True)
        await c.closed
        await self.wait_detached(welcome["session"])
        # while the client is away, things happen to its session
        self.assertIsNone(self.successResultOf(self.service.sessions.publish("news", {"n": 1})))
        self.service.sessions.sessions[welcome["session"]].push("missed", 2)

        c2 = await self.client()
        again = await c2.hello(resume={"session": welcome["session"],
                                       "token": welcome["token"], "last_seq": 1})
        self.assertEqual((again["session"], again["token"], again["resumed"]),
                         (welcome["session"], welcome["token"], True))
        replayed = [await c2.next() for _ in range(3)]
        self.assertEqual([m["seq"] for m in replayed], [2, 3, 4])
        self.assertEqual(replayed[1], {"type": "message", "topic": "news", "data": {"n": 1},
                                       "seq": 3})
        self.assertEqual(replayed[2], {"type": "event", "event": "missed", "data": 2, "seq": 4})
        # subscriptions and meta survived; seq carries on
        c2.send({"type": "publish", "topic": "news", "data": "self"})
        self.assertEqual(await c2.next(), {"type": "message", "topic": "news", "data": "self",
                                           "seq": 5})

    async def test_resume_with_wrong_token_is_a_new_session(self) -> None:
        c, welcome = await self.session()
        c2 = await self.client()
        fresh = await c2.hello(resume={"session": welcome["session"], "token": "x" * 24,
                                       "last_seq": 0})
        self.assertFalse(fresh["resumed"])
        self.assertNotEqual(fresh["session"], welcome["session"])
        # and the real owner is untouched
        self.assertEqual((await c.call("echo", 1))["result"], 1)

    async def test_resume_takes_over_a_live_connection(self) -> None:
        c, welcome = await self.session()
        c2 = await self.client()
        again = await c2.hello(resume={"session": welcome["session"],
                                       "token": welcome["token"], "last_seq": 0})
        self.assertTrue(again["resumed"])
        await self.expect_close(c, 4409)
        self.assertEqual((await c2.call("echo", 2))["result"], 2)

    async def test_second_hello_already_registered(self) -> None:
        c, _ = await self.session()
        c.send({"type": "hello"})
        await self.expect_error(c, "already_registered")
        self.assertEqual((await c.call("echo", 1))["result"], 1)

    async def test_message_before_hello_closes_4400(self) -> None:
        c = await self.client()
        c.send({"type": "call", "id": 1, "method": "echo"})
        await self.expect_error(c, "not_registered")
        await self.expect_close(c, 4400)

    async def test_invalid_json_before_hello_closes_4400(self) -> None:
        c = await self.client()
        c.sendRaw(b"{nope")
        await self.expect_error(c, "not_registered")
        await self.expect_close(c, 4400)

    async def test_malformed_hello_bad_message_4400(self) -> None:
        c = await self.client()
        c.send({"type": "hello", "meta": [1]})
        await self.expect_error(c, "bad_message")
        await self.expect_close(c, 4400)

    async def test_no_hello_closes_4408(self) -> None:
        c = await self.client()
        # the server registered the connection (and armed its hello timer) before it
        # answered the handshake
        self.assertEqual(len(self.service.sessions.connections), 1)
        self.clock.advance(SETTINGS.hello_timeout)
        await self.expect_close(c, 4408)

    # -- events and calls ------------------------------------------------------------------------

    async def test_event_echo_pushes_with_seq(self) -> None:
        c, _ = await self.session()
        for i in range(3):
            c.send({"type": "event", "event": "echo", "data": {"n": i}})
        for i in range(3):
            self.assertEqual(await c.next(), {"type": "event", "event": "echo",
                                              "data": {"n": i}, "seq": i + 1})

    async def test_unknown_event(self) -> None:
        c, _ = await self.session()
        c.send({"type": "event", "event": "nope"})
        await self.expect_error(c, "unknown_event")

    async def test_call_echo(self) -> None:
        c, _ = await self.session()
        params = {"text": "héllo", "list": [1, 2.5, None, True]}
        self.assertEqual(await c.call("echo", params, id="a"),
                         {"type": "result", "id": "a", "result": params})

    async def test_integers_exact_or_bad_json(self) -> None:
        c, _ = await self.session()
        # never silently a float: out of the signed 64-bit range is bad_json (the call's id
        # kept, so that the call is answered)
        c.sendRaw(b'{"type":"call","id":1,"method":"echo","params":100000000000000000000000000000}')
        reply = await self.expect_error(c, "bad_json", 1)
        self.assertEqual(reply["error"]["message"], "integer out of range")
        c.sendRaw(b'{"type":"call","id":2,"method":"echo","params":[9223372036854775808]}')
        await self.expect_error(c, "bad_json", 2)
        bounds = [2 ** 63 - 1, -(2 ** 63)]
        self.assertEqual(await c.call("echo", bounds, id=3),
                         {"type": "result", "id": 3, "result": bounds})
        digits = "1234567890123456789012345"
        self.assertEqual(await c.call("echo", {digits: digits}, id=4),
                         {"type": "result", "id": 4, "result": {digits: digits}})

    async def test_resume_past_the_last_seq_is_a_new_session(self) -> None:
        for last_seq in (2 ** 70, 2):  # 2 is the session's seq + 1
            c, welcome = await self.session()
            self.assertEqual((await c.call("push", {"count": 1, "event": "tick"}))["seq"], 1)
            c.dropConnection(abort=True)
            await c.closed
            await self.wait_detached(welcome["session"])
            c2 = await self.client()
            resume = {"session": welcome["session"], "token": welcome["token"],
                      "last_seq": last_seq}
            c2.sendRaw(b'{"type":"hello","resume":%s}' % json.dumps(resume).encode())
            fresh = await c2.next()
            self.assertEqual(fresh["type"], "welcome", fresh)
            self.assertFalse(fresh["resumed"])
            self.assertNotEqual(fresh["session"], welcome["session"])
            self.assertEqual((await c2.call("echo", 1))["result"], 1)

    async def test_call_fail_is_internal_without_traceback(self) -> None:
        c, _ = await self.session()
        reply = await self.expect_error_after(c, "fail", "internal")
        self.assertNotIn("Traceback", orjson.dumps(reply).decode())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual((await c.call("echo", 2, id=2))["result"], 2)

    async def expect_error_after(self, c: Client, method: str, code: str,
                                 params: Any = None) -> dict[str, Any]:
        c.send({"type": "call", "id": 1, "method": method, "params": params})
        return await self.expect_error(c, code, 1)

    async def test_call_reject_application_error(self) -> None:
        c, _ = await self.session()
        reply = await self.expect_error_after(c, "reject", "demo.rejected", {"why": "test"})
        self.assertEqual(reply["error"]["data"], {"why": "test"})

    async def test_unknown_method(self) -> None:
        c, _ = await self.session()
        await self.expect_error_after(c, "nope", "unknown_method")

    async def test_invalid_params(self) -> None:
        c, _ = await self.session()
        await self.expect_error_after(c, "sleep", "invalid_params", {"seconds": 61})

    async def test_sleep_and_out_of_order_replies(self) -> None:
        """Each call is answered when it is done, not in the order the calls came."""
        c, _ = await self.session()
        c.send({"type": "call", "id": "slow", "method": "sleep", "params": {"seconds": 0.5}})
        c.send({"type": "call", "id": "fast", "method": "sleep", "params": {"seconds": 0.25}})
        c.send({"type": "call", "id": "now", "method": "echo", "params": 1})
        self.assertEqual(await c.next(), {"type": "result", "id": "now", "result": 1})
        self.clock.advance(0.25)
        self.assertEqual(await c.next(), {"type": "result", "id": "fast", "result": None})
        await live.caught_up(c)  # the slow one is still sleeping
        self.clock.advance(0.25)
        self.assertEqual(await c.next(), {"type": "result", "id": "slow", "result": None})

    async def test_cancel(self) -> None:
        c, _ = await self.session()
        c.send({"type": "call", "id": 7, "method": "sleep", "params": {"seconds": 30}})
        c.send({"type": "cancel", "id": 7})
        await self.expect_error(c, "cancelled", 7)
        c.send({"type": "cancel", "id": 99})  # not in flight: ignored
        self.assertEqual((await c.call("echo", 3))["result"], 3)

    async def test_call_timeout(self) -> None:
        """call_timeout (1 s) ends a call that would take 5 s."""
        c, _ = await self.session()
        c.send({"type": "call", "id": 1, "method": "sleep", "params": {"seconds": 5}})
        await self.in_flight(c)
        self.clock.advance(SETTINGS.call_timeout - 0.01)
        await live.caught_up(c)
        self.clock.advance(0.01)
        await self.expect_error(c, "timeout", 1)

    async def test_duplicate_id(self) -> None:
        c, _ = await self.session()
        c.send({"type": "call", "id": 1, "method": "sleep", "params": {"seconds": 0.5}})
        c.send({"type": "call", "id": 1, "method": "echo", "params": 1})
        await self.expect_error(c, "duplicate_id", 1)
        self.clock.advance(0.5)
        self.assertEqual(await c.next(), {"type": "result", "id": 1, "result": None})

    async def test_too_many_calls(self) -> None:
        c, _ = await self.session()
        for i in range(4):
            c.send({"type": "call", "id": i, "method": "sleep", "params": {"seconds": 0.5}})
        c.send({"type": "call", "id": 4, "method": "echo", "params": 1})
        await self.expect_error(c, "too_many_calls", 4)
        self.clock.advance(0.5)
        replies = sorted([(await c.next())["id"] for _ in range(4)])
        self.assertEqual(replies, [0, 1, 2, 3])

    async def test_server_call_answered(self) -> None:
        c, _ = await self.session()
        c.send({"type": "call", "id": "q", "method": "ask",
                "params": {"method": "add", "params": [1, 2]}})
        call = await c.next()
        self.assertEqual({k: call[k] for k in ("type", "method", "params", "seq")},
                         {"type": "call", "method": "add", "params": [1, 2], "seq": 1})
        self.assertEqual(set(call), {"type", "id", "method", "params", "seq"})
        c.send({"type": "result", "id": call["id"], "result": 3})
        self.assertEqual(await c.next(), {"type": "result", "id": "q", "result": 3})

    async def test_server_call_error_passed_on(self) -> None:
        c, _ = await self.session()
        c.send({"type": "call", "id": "q", "method": "ask", "params": {"method": "x"}})
        call = await c.next()
        c.send({"type": "error", "id": call["id"],
                "error": {"code": "client.no", "message": "no", "data": [1]}})
        reply = await self.expect_error(c, "client.no", "q")
        self.assertEqual(reply["error"], {"code": "client.no", "message": "no", "data": [1]})

    async def test_server_call_timeout(self) -> None:
        c, _ = await self.session()
        # session.call's own timeout (0.2 s), well before the ask call's (call_timeout, 1 s)
        c.send({"type": "call", "id": "q", "method": "ask",
                "params": {"method": "x", "timeout": 0.2}})
        await c.next()  # the server's call, left unanswered
        self.clock.advance(0.2)
        reply = await self.expect_error(c, "timeout", "q")
        self.assertIn("did not answer", reply["error"]["message"])

    async def test_event_handler_failure_is_internal(self) -> None:
        c, _ = await self.session()
        c.send({"type": "event", "event": "fail"})
        await self.expect_error(c, "internal")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual((await c.call("echo", 1))["result"], 1)

    async def test_reply_to_unknown_server_call(self) -> None:
        c, _ = await self.session()
        c.send({"type": "result", "id": 12345, "result": 1})
        await self.expect_error(c, "bad_message")
        c.send({"type": "error", "id": "zz", "error": {"code": "x", "message": "y"}})
        await self.expect_error(c, "bad_message")

    async def test_push_count(self) -> None:
        c, _ = await self.session()
        reply = await c.call("push", {"count": 50, "event": "tick", "data": "d"})
        # pushes come before the result, in seq order
        self.assertEqual(reply["type"], "event")
        seqs = [reply["seq"]] + [(await c.next())["seq"] for _ in range(49)]
        self.assertEqual(seqs, list(range(1, 51)))
        self.assertEqual(await c.next(), {"type": "result", "id": 1, "result": 50})

    async def test_ping_pong(self) -> None:
        c, _ = await self.session()
        c.send({"type": "ping", "data": {"t": 1}})
        self.assertEqual(await c.next(), {"type": "pong", "data": {"t": 1}})

    # -- bad input ------------------------------------------------------------------------------

    async def test_bad_inputs_answered_and_connection_stays(self) -> None:
        c, _ = await self.session()
        cases = [
            (b"not json", "bad_json"),
            (b"[1, 2]", "bad_json"),
            (b'"text"', "bad_json"),
        ]
        for payload, code in cases:
            c.sendRaw(payload)
            await self.expect_error(c, code)
        self.assertEqual((await c.call("echo", 1))["result"], 1)

    async def test_bad_messages_answered(self) -> None:
        c, _ = await self.session()
        for payload in [b'{"type": "nope"}', b'{"type": 5}', b'{"event": "echo"}']:
            c.sendRaw(payload)
            await self.expect_error(c, "bad_message")
        self.assertEqual((await c.call("echo", 1))["result"], 1)

    async def test_bad_call_keeps_its_id(self) -> None:
        c, _ = await self.session()
        c.send({"type": "call", "id": 9, "method": ""})
        await self.expect_error(c, "bad_message", 9)

    async def test_too_deep(self) -> None:
        c, _ = await self.session()
        deep: Any = 1
        for _ in range(8):
            deep = [deep]
        c.send({"type": "event", "event": "echo", "data": deep})  # depth 9 > 8
        await self.expect_error(c, "bad_json")
        c.send({"type": "event", "event": "echo", "data": deep[0]})  # depth 8: fine
        self.assertEqual((await c.next())["data"], deep[0])

    async def test_bad_message_budget_closes_4400(self) -> None:
        c, _ = await self.session()
        for _ in range(3):
            c.sendRaw(b"{")
            await self.expect_error(c, "bad_json")
        c.send({"type": "call", "id": 1, "method": "nope"})  # application errors don't count
        await self.expect_error(c, "unknown_method", 1)
        c.sendRaw(b"{")
        await self.expect_error(c, "bad_json")
        await self.expect_close(c, 4400)

    async def test_largest_message_in_and_a_larger_push_out(self) -> None:
        c, _ = await self.session()
        envelope = len(b'{"type":"event","event":"echo","data":""}')
        data = "x" * (64 * 1024 - envelope)
        c.sendRaw(b'{"type":"event","event":"echo","data":"' + data.encode() + b'"}')
        pushed = await c.next()  # a few bytes over the limit: the limit is for receiving only
        self.assertEqual(pushed["data"], data)
        self.assertGreater(len(c.raw[-1]), 64 * 1024)

    async def test_ill_typed_members(self) -> None:
        c, _ = await self.session()
        for message in ({"type": "call", "id": True, "method": "echo"},
                        {"type": "event", "event": 5},
                        {"type": "ack", "seq": "1"}):
            c.send(message)
            await self.expect_error(c, "bad_message")
        self.assertEqual((await c.call("echo", 1))["result"], 1)

    async def test_ack(self) -> None:
        c, _ = await self.session()
        await c.call("push", {"count": 3, "event": "e"})
        for _ in range(3):
            await c.next()
        c.send({"type": "ack", "seq": 3})
        c.send({"type": "ack", "seq": 4})  # beyond the last seq
        await self.expect_error(c, "bad_message")

    async def test_binary_closes_1003(self) -> None:
        c, _ = await self.session()
        c.sendRaw(b"\x00\x01", binary=True)
        await self.expect_close(c, 1003)

    async def test_oversize_closes_1009(self) -> None:
        c, _ = await self.session()
        c.send({"type": "event", "event": "echo", "data": "x" * (64 * 1024)})
        await self.expect_close(c, 1009)

    async def test_bad_client_does_not_disturb_others(self) -> None:
        good, _ = await self.session()
        bad, _ = await self.session()
        good.send({"type": "call", "id": 1, "method": "sleep", "params": {"seconds": 0.1}})
        await self.in_flight(good)
        bad.sendRaw(b"\xff\xfe", binary=True)
        await self.expect_close(bad, 1003)
        self.clock.advance(0.1)
        self.assertEqual(await good.next(), {"type": "result", "id": 1, "result": None})

    # -- handshake policy and HTTP -------------------------------------------------------------

    async def test_wrong_subprotocol_400(self) -> None:
        code, _, _ = await http(self.address, "/ws", handshake_headers(protocol="other.v2"))
        self.assertEqual(code, 400)

    async def test_foreign_origin_403(self) -> None:
        code, _, _ = await http(self.address, "/ws",
                                handshake_headers(origin="http://evil.example"))
        self.assertEqual(code, 403)

    async def test_same_origin_and_no_subprotocol_accepted(self) -> None:
        c = await self.client(protocols=[], origin="http://localhost")
        self.assertIsNone(c.websocket_protocol_in_use)
        await c.hello()

    async def test_permessage_deflate(self) -> None:
        c = await self.client(deflate=True)
        self.assertEqual(len(c.websocket_extensions_in_use), 1)
        await c.hello()
        self.assertEqual((await c.call("echo", "z" * 1000))["result"], "z" * 1000)

    async def test_healthz(self) -> None:
        await self.session()
        code, headers, body = await http(self.address, "/healthz")
        self.assertEqual(code, 200)
        self.assertEqual(headers["content-type"], ["application/json"])
        self.assertEqual(orjson.loads(body)["sessions"], 1)

    async def test_metrics(self) -> None:
        c, _ = await self.session()
        await c.call("echo", 1)
        c.send({"type": "call", "id": 2, "method": "nope"})
        await c.next()
        code, _, body = await http(self.address, "/metrics")
        self.assertEqual(code, 200)
        text = body.decode()
        self.assertIn("wsservice_sessions 1.0", text)
        self.assertIn('wsservice_messages_received_total{type="call"} 2.0', text)
        self.assertIn('wsservice_messages_sent_total{type="result"} 1.0', text)
        self.assertIn('wsservice_errors_total{code="unknown_method"} 1.0', text)
        self.assertIn("wsservice_call_duration_seconds_count 1.0", text)

    async def test_demo_page(self) -> None:
        code, headers, body = await http(self.address, "/")
        self.assertEqual(code, 200)
        self.assertIn("text/html", headers["content-type"][0])
        self.assertIn(b'import { Client } from "/wsservice.js";', body)  # built on the client
        self.assertIn(b'<link rel="icon" href="favicon.ico"', body)

    async def test_demo_favicon(self) -> None:
        """Browsers fetch it for every page; a 404 would be noise in their console."""
        code, headers, body = await http(self.address, "/favicon.ico")
        self.assertEqual(code, 200)
        self.assertIn(headers["content-type"][0], ("image/vnd.microsoft.icon", "image/x-icon"))
        self.assertEqual(body[:4], b"\x00\x00\x01\x00")  # an ICO header: one image
        self.assertEqual(body[22:26], b"\x89PNG")  # stored as PNG

    async def test_unknown_path_404(self) -> None:
        code, _, _ = await http(self.address, "/nope")
        self.assertEqual(code, 404)

    async def test_shutdown_drains_1001_and_keeps_sessions(self) -> None:
        c, welcome = await self.session()
        waiting = await self.client()
        stopping = self.service.stopService()
        await self.expect_close(c, 1001)
        await self.expect_close(waiting, 1001)
        await stopping
        # resumable for the rest of its TTL, in process memory
        self.assertFalse(self.service.sessions.sessions[welcome["session"]].attached)


class TCPTests(_EndToEnd, TestCase):
    """Over a TCP listener on loopback."""


class UNIXTests(_EndToEnd, TestCase):
    """Over a unix socket listener."""

    unix = True

    async def test_socket_mode_0600_and_removed_on_stop(self) -> None:
        path = self.server.path
        assert path is not None
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        await self.service.stopService()
        self.assertFalse(os.path.exists(path))
