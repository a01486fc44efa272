"""The HTTP API for other processes (protocol.md §9): /api/publish, /api/push and
/api/presence on real sockets, seen by real WebSocket clients; the bearer keys and their
file; one node and a real cluster; twistd with the README's curl lines."""

from __future__ import annotations

import functools
import os
import stat
import sys
import tempfile
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import orjson
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from wsservice import APIKeys, ConfigurationError, Settings, WSService, makeService
from wsservice.apikeys import parse_keys
from wsservice.hmactokens import read_secret_file
from wsservice.logflood import HTTP_CLIENT
from wsservice.tap import Options
from wsservice.web import check_resources
from wsservice.wire import MAX_NAME_LENGTH, MAX_TOPIC_LENGTH

from . import docs, live, processes
from .clusternodes import Cluster
from .test_http import raw, response_head
from .wsclient import Client, connect

KEYS = ("k1-Zq0vT3nW8yL5rB2xC7mA4pD9sF6gH1jK", "second-key-of-another-length")
KEY = KEYS[0]
KEY_FILE = f"# keys of the HTTP API\n\n  {KEYS[0]}  \n# {KEYS[1]}-retired\n{KEYS[1]}\r\n"
TWISTD = [sys.executable, processes.TWISTD]


@dataclass
class Answer:
    """An HTTP answer: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, list[str]]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return None if values is None else ", ".join(values)


async def api(address: str, path: str, body: Any = None, key: str | None = KEY,
              method: bytes = b"POST", headers: dict[str, str] | None = None) -> Answer:
    """One request to a TCP ``address`` (host:port); a ``body`` not bytes is sent as JSON."""
    h = Headers()
    if key is not None:
        h.addRawHeader(b"authorization", f"Bearer {key}".encode())
    for name, value in (headers or {}).items():
        h.addRawHeader(name.encode(), value.encode())
    producer = None
    if body is not None:
        producer = FileBodyProducer(BytesIO(body if isinstance(body, bytes)
                                            else orjson.dumps(body)))
    response = await Agent(reactor).request(method, f"http://{address}{path}".encode(), h,
                                            producer)
    data = await readBody(response)
    got = {k.decode().lower(): [v.decode() for v in vs]
           for k, vs in response.headers.getAllRawHeaders()}
    return Answer(response.code, got, data)


async def raw_answer(testcase: TestCase, address: str, request: bytes) -> Answer:
    """Send ``request`` as bytes on a new connection (TCP or unix:); the answer."""
    client = await raw(testcase, address, request)
    status, headers = await response_head(client)
    length = int(headers["content-length"][0])
    start = client.data.find(b"\r\n\r\n") + 4
    await live.until(lambda: len(client.data) >= start + length, "the whole answer")
    return Answer(int(status.split()[1]), headers, client.data[start:start + length])


def request_bytes(method: str, path: str, body: bytes = b"", key: str | None = KEY,
                  extra: str = "") -> bytes:
    """An HTTP/1.1 request with a Content-Length body (and ``extra`` header lines)."""
    auth = "" if key is None else f"Authorization: Bearer {key}\r\n"
    return (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}{extra}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


async def serve(testcase: TestCase, keys: APIKeys | None = None, **kwargs: Any
                ) -> live.LiveServer:
    """live.serve, with the HTTP API on (the keys of KEYS unless ``keys``)."""
    keys = keys or APIKeys(KEYS)
    # live.serve builds its service with these two names: give them the keys
    testcase.patch(live, "makeService", functools.partial(makeService, api_keys=keys))
    testcase.patch(live, "WSService", functools.partial(WSService, api_keys=keys))
    return await live.serve(testcase, **kwargs)


async def subscribed(client: Client, topic: str) -> None:
    client.send({"type": "subscribe", "topic": topic, "id": f"sub-{topic}"})
    assert await client.next() == {"type": "result", "id": f"sub-{topic}", "result": None}


class APITestCase(TestCase):
    timeout = 60

    def assertError(self, answer: Answer, status: int, code: str) -> dict[str, Any]:
        """``answer`` is a JSON error of ``status`` and ``code``; its error object."""
        self.assertEqual((answer.status, answer.header("content-type"),
                          answer.header("cache-control")),
                         (status, "application/json", "no-store"), answer.body)
        body = answer.json
        self.assertEqual(set(body), {"error"}, body)
        self.assertEqual(set(body["error"]), {"code", "message"}, body)
        self.assertEqual(body["error"]["code"], code, body)
        self.assertIsInstance(body["error"]["message"], str)
        self.assertTrue(body["error"]["message"])
        return body["error"]  # type: ignore[no-any-return]

    def assertOK(self, answer: Answer, body: Any) -> None:
        self.assertEqual((answer.status, answer.header("content-type"),
                          answer.header("cache-control"), answer.json),
                         (200, "application/json", "no-store", body), answer.body)
        self.assertTrue(answer.body.endswith(b"}\n"), answer.body)  # one line, for shells


class SuccessTests(APITestCase):
    """Each endpoint does what it says, seen by a real WebSocket client."""

    async def test_publish_reaches_subscribers(self) -> None:
        server = await serve(self)
        client, _ = await server.session()
        await subscribed(client, "board")
        answer = await api(server.address, "/api/publish",
                           {"topic": "board", "data": {"text": "hi", "n": [1, 2.5, None]}})
        self.assertOK(answer, {"ok": True})
        self.assertEqual(await client.next(), {"type": "message", "topic": "board",
                                               "data": {"text": "hi", "n": [1, 2.5, None]},
                                               "seq": 1})
        # data may be left out (null), unknown members are ignored
        self.assertOK(await api(server.address, "/api/publish",
                                {"topic": "board", "extra": 1}), {"ok": True})
        self.assertEqual(await client.next(), {"type": "message", "topic": "board",
                                               "data": None, "seq": 2})
        # a topic nobody subscribes to is fine too
        self.assertOK(await api(server.address, "/api/publish", {"topic": "empty", "data": 1}),
                      {"ok": True})
        await live.caught_up(client)

    async def test_push_to_a_session(self) -> None:
        server = await serve(self)
        client, welcome = await server.session()
        answer = await api(server.address, "/api/push",
                           {"session": welcome["session"], "event": "note", "data": {"k": 1}})
        self.assertOK(answer, {"delivered": True})
        self.assertEqual(await client.next(), {"type": "event", "event": "note",
                                               "data": {"k": 1}, "seq": 1})
        self.assertOK(await api(server.address, "/api/push",
                                {"session": welcome["session"], "event": "bare"}),
                      {"delivered": True})
        self.assertEqual(await client.next(), {"type": "event", "event": "bare",
                                               "data": None, "seq": 2})
        # no such session: false, and nobody gets anything
        self.assertOK(await api(server.address, "/api/push",
                                {"session": "no-such-session", "event": "note", "data": 1}),
                      {"delivered": False})
        await live.caught_up(client)

    async def test_push_to_a_detached_session_waits_for_its_resume(self) -> None:
        server = await serve(self)
        client, welcome = await server.session()
        client.dropConnection(abort=True)
        await client.closed
        await live.until(lambda: not server.sessions.sessions[welcome["session"]].attached,
                         "the session to be detached")
        self.assertOK(await api(server.address, "/api/push",
                                {"session": welcome["session"], "event": "late", "data": 2}),
                      {"delivered": True})
        again = await server.client()
        resumed = await again.hello(resume={"session": welcome["session"],
                                            "token": welcome["token"], "last_seq": 0})
        self.assertTrue(resumed["resumed"])
        self.assertEqual(await again.next(), {"type": "event", "event": "late", "data": 2,
                                              "seq": 1})

    async def test_presence(self) -> None:
        server = await serve(self)
        ann, _ = await server.session(meta={"public": {"name": "Ann"}, "private": "x"})
        bob, _ = await server.session()
        for client in (ann, bob):
            await subscribed(client, "room 1/ü")
        answer = await api(server.address, "/api/presence?topic=room%201%2F%C3%BC", None,
                           method=b"GET")
        self.assertEqual(answer.status, 200, answer.body)
        members = answer.json["members"]
        self.assertEqual(len(members), 2, members)
        # the same list a client's own presence request gets
        ann.send({"type": "presence", "topic": "room 1/ü", "id": 7})
        listed = await ann.next()
        self.assertEqual(listed["id"], 7, listed)
        self.assertCountEqual(members, listed["result"]["members"])
        self.assertCountEqual([m["meta"] for m in members], [{"name": "Ann"}, None])
        self.assertOK(answer, {"members": members})
        self.assertOK(await api(server.address, "/api/presence?topic=nobody", method=b"GET"),
                      {"members": []})

    async def test_every_key_of_the_file_opens_it(self) -> None:
        path = os.path.join(processes.scratch(self, "wsk"), "keys")
        with open(path, "w") as f:
            f.write(KEY_FILE)
        os.chmod(path, 0o600)
        server = await serve(self, APIKeys.fromFile(path))
        for key in KEYS:
            self.assertOK(await api(server.address, "/api/publish", {"topic": "t"}, key=key),
                          {"ok": True})
        # scheme names are case-insensitive (RFC 9110)
        self.assertOK(await api(server.address, "/api/publish", {"topic": "t"}, key=None,
                                headers={"Authorization": f"bearer {KEY}"}), {"ok": True})

    async def test_unix_listener_serves_it_too(self) -> None:
        server = await serve(self, unix=True)
        client, _ = await server.session()
        await subscribed(client, "board")
        answer = await raw_answer(self, server.address, request_bytes(
            "POST", "/api/publish", b'{"topic": "board", "data": "via unix"}'))
        self.assertOK(answer, {"ok": True})
        self.assertEqual((await client.next())["data"], "via unix")

    async def test_off_by_default(self) -> None:
        server = await live.serve(self)
        for path, method in (("/api/publish", b"POST"), ("/api/push", b"POST"),
                             ("/api/presence?topic=t", b"GET")):
            answer = await api(server.address, path, {"topic": "t"}, method=method)
            self.assertEqual(answer.status, 404, (path, answer.body))


class RefusalTests(APITestCase):
    """401, 404, 405 and 503, each before the body is looked at."""

    async def assertUnauthorized(self, server: live.LiveServer, key: str | None,
                                 headers: dict[str, str] | None = None) -> None:
        for path, method in (("/api/publish", b"POST"), ("/api/push", b"POST"),
                             ("/api/presence?topic=board", b"GET")):
            answer = await api(server.address, path, {"topic": "board", "data": "no"}, key=key,
                               method=method, headers=headers)
            self.assertError(answer, 401, "unauthorized")
            self.assertEqual(answer.header("www-authenticate"), "Bearer", (key, headers))

    async def test_no_or_wrong_key(self) -> None:
        server = await serve(self)
        client, _ = await server.session()
        await subscribed(client, "board")
        await self.assertUnauthorized(server, None)
        for wrong in (KEY[:-1] + "x",           # same length, last byte differs
                      KEY[:-1],                 # a prefix
                      KEY + "x",                # longer
                      "short",                  # another length altogether
                      KEYS[0] + KEYS[1],
                      "#", "# keys of the HTTP API",  # the file's comment lines
                      f"# {KEYS[1]}-retired", KEY.upper()):
            await self.assertUnauthorized(server, wrong)
        for header in (f"Basic {KEY}", KEY, "Bearer", "Bearer ", f"Bearer{KEY}",
                       f"Token {KEY}"):
            await self.assertUnauthorized(server, None, {"Authorization": header})
        # the right key twice is two headers: not one to trust
        await self.assertUnauthorized(server, KEY, {"Authorization": f"Bearer {KEY}"})
        # nothing of all that was published
        await live.caught_up(client)

    async def test_refusals_are_logged_bounded_without_the_key(self) -> None:
        clock = Clock()  # the service's LogFlood interval never ends in this test
        server = await serve(self, clock=clock)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        wrong = "wrong-" + KEY
        for _ in range(5):
            self.assertError(await api(server.address, "/api/publish", {"topic": "t"},
                                       key=wrong), 401, "unauthorized")
        self.assertError(await api(server.address, "/api/push", {}, key=None),
                         401, "unauthorized")
        lines = [formatEvent(e) for e in events]
        refused = [line for line in lines if "HTTP API: refused" in line]
        self.assertEqual(refused, ["HTTP API: refused POST /api/publish from 127.0.0.1: not a "
                                   "key of the API key file"], lines)
        self.assertEqual(server.sessions.logs.held[HTTP_CLIENT], 5)
        for event in events:
            self.assertNotIn(wrong, repr(event))
            self.assertNotIn(KEY, repr(event))

    async def test_wrong_method_405(self) -> None:
        server = await serve(self)
        for path, method, allow in (("/api/publish", b"GET", "POST"),
                                    ("/api/push", b"PUT", "POST"),
                                    ("/api/publish", b"DELETE", "POST"),
                                    ("/api/presence?topic=t", b"POST", "GET")):
            for key in (KEY, None):  # told before the key is checked
                answer = await api(server.address, path, {"topic": "t"}, key=key,
                                   method=method)
                self.assertError(answer, 405, "method_not_allowed")
                self.assertEqual(answer.header("allow"), allow)

    async def test_unknown_paths_404(self) -> None:
        server = await serve(self)
        for path in ("/api", "/api/", "/api/publish/", "/api/publish/x", "/api/pub",
                     "/api/PUBLISH"):
            self.assertError(await api(server.address, path, {"topic": "t"}), 404,
                             "not_found")

    async def test_draining_503(self) -> None:
        """While the service drains (SIGTERM), a request already on its way gets 503."""
        server = await serve(self)
        request = request_bytes("POST", "/api/publish", b'{"topic": "t"}')
        client = await raw(self, server.address, request[:-1])
        # accepted by the server (not only in the kernel's backlog): it outlives the port
        await live.until(lambda: server.sessions.peers.total >= 1, "the connection accepted")
        stopped = server.service.stopService()
        self.assertFalse(server.sessions.running)
        client.transport.write(request[-1:])
        status, headers = await response_head(client)
        self.assertIn(" 503 ", status)
        body = await client.lost
        error = orjson.loads(body[body.find(b"\r\n\r\n") + 4:])["error"]
        self.assertEqual(error["code"], "unavailable")
        await stopped


class BodyTests(APITestCase):
    """400 for every bad body, with the code that says why."""

    async def bad(self, server: live.LiveServer, path: str, body: Any, code: str) -> str:
        """POST ``body``: 400 with ``code``; the error's message."""
        return self.assertError(await api(server.address, path, body), 400, code)["message"]

    async def test_not_json_or_not_an_object(self) -> None:
        server = await serve(self)
        client, _ = await server.session()
        await subscribed(client, "t")
        for path in ("/api/publish", "/api/push"):
            for body in (b"", b"{", b"{'topic': 't'}", b'{"topic": "t"} x', b"\xff\xfe",
                         b'{"topic": "\xff"}', b'{"topic": NaN}'):
                await self.bad(server, path, body, "bad_json")
            for body in (b"[]", b"null", b'"t"', b"1", b'[{"topic": "t"}]'):
                message = await self.bad(server, path, body, "bad_json")
                self.assertIn("object", message)
        await live.caught_up(client)

    async def test_too_deep_and_too_long_integers(self) -> None:
        server = await serve(self, settings=Settings(max_depth=4))
        client, _ = await server.session()
        await subscribed(client, "t")
        self.assertOK(await api(server.address, "/api/publish",
                                {"topic": "t", "data": [[{"d": 3}]]}), {"ok": True})
        self.assertEqual((await client.next())["data"], [[{"d": 3}]])
        message = await self.bad(server, "/api/publish", {"topic": "t", "data": [[[[1]]]]},
                                 "bad_json")
        self.assertIn("deeper than 4", message)
        for number in (b"9223372036854775808", b"-9223372036854775809",
                       b"123456789012345678901234567890"):
            await self.bad(server, "/api/publish",
                           b'{"topic": "t", "data": ' + number + b"}", "bad_json")
        # the extremes of 64 bits, and long digit runs inside strings, are fine
        body = b'{"topic": "t", "data": [9223372036854775807, -9223372036854775808, ' \
               b'"12345678901234567890123"]}'
        self.assertOK(await api(server.address, "/api/publish", body), {"ok": True})
        self.assertEqual((await client.next())["data"],
                         [9223372036854775807, -9223372036854775808,
                          "12345678901234567890123"])
        await live.caught_up(client)

    async def test_too_large(self) -> None:
        server = await serve(self, settings=Settings(max_message_size=200))
        client, _ = await server.session()
        await subscribed(client, "t")
        head = b'{"topic": "t", "data": "'
        exact = head + b"x" * (200 - len(head) - 2) + b'"}'
        self.assertEqual(len(exact), 200)
        self.assertOK(await api(server.address, "/api/publish", exact), {"ok": True})
        self.assertEqual((await client.next())["type"], "message")
        over = head + b"x" * (201 - len(head) - 2) + b'"}'
        message = await self.bad(server, "/api/publish", over, "too_large")
        self.assertIn("200 bytes", message)
        await self.bad(server, "/api/push", b" " * 100_000 + b"{}", "too_large")
        # chunked: no Content-Length at all; and a Content-Length that understates nothing
        # twisted.web would not enforce: the body is counted as it arrived
        chunked = (b"POST /api/publish HTTP/1.1\r\nHost: localhost\r\n"
                   b"Authorization: Bearer " + KEY.encode() + b"\r\n"
                   b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                   + b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                              for part in (over[:100], over[100:])) + b"0\r\n\r\n")
        self.assertError(await raw_answer(self, server.address, chunked), 400, "too_large")
        await live.caught_up(client)

    async def test_members(self) -> None:
        server = await serve(self)
        client, _ = await server.session()
        await subscribed(client, "t")
        long_topic = "t" * MAX_TOPIC_LENGTH
        long_name = "e" * MAX_NAME_LENGTH
        for path, body, what in (
                ("/api/publish", {"data": 1}, "'topic' is missing"),
                ("/api/publish", {"topic": None}, "'topic'"),
                ("/api/publish", {"topic": 1}, "'topic'"),
                ("/api/publish", {"topic": ""}, "'topic'"),
                ("/api/publish", {"topic": ["t"]}, "'topic'"),
                ("/api/publish", {"topic": long_topic + "t"}, "'topic'"),
                ("/api/push", {"event": "e"}, "'session' is missing"),
                ("/api/push", {"session": "s"}, "'event' is missing"),
                ("/api/push", {"session": 1, "event": "e"}, "'session'"),
                ("/api/push", {"session": "", "event": "e"}, "'session'"),
                ("/api/push", {"session": {"id": "s"}, "event": "e"}, "'session'"),
                ("/api/push", {"session": "s", "event": 2}, "'event'"),
                ("/api/push", {"session": "s", "event": ""}, "'event'"),
                ("/api/push", {"session": "s", "event": long_name + "e"}, "'event'")):
            message = await self.bad(server, path, body, "bad_message")
            self.assertIn(what, message, body)
        # the longest topic and event name the wire protocol allows are fine
        self.assertOK(await api(server.address, "/api/publish", {"topic": long_topic}),
                      {"ok": True})
        self.assertOK(await api(server.address, "/api/push",
                                {"session": "s", "event": long_name}), {"delivered": False})
        await live.caught_up(client)

    async def test_presence_query(self) -> None:
        server = await serve(self)
        for query in ("", "?", "?topic=", "?room=t", "?topic=a&topic=b", "?topic=%FF",
                      "?topic=" + "t" * (MAX_TOPIC_LENGTH + 1)):
            answer = await api(server.address, "/api/presence" + query, method=b"GET")
            self.assertError(answer, 400, "bad_message")


class KeyFileTests(SynchronousTestCase):
    """The key file: what counts as a key, and what start-up refuses."""

    def key_file(self, text: str = KEY_FILE, mode: int = 0o600) -> str:
        fd, path = tempfile.mkstemp(prefix="wsservice-keys-")
        os.write(fd, text.encode())
        os.close(fd)
        os.chmod(path, mode)
        self.addCleanup(os.remove, path)
        return path

    def test_parse_keys(self) -> None:
        self.assertEqual(parse_keys(KEY_FILE.encode()), [k.encode() for k in KEYS])
        self.assertEqual(parse_keys(b"\n \t\n# a\n  #b\n"), [])
        self.assertEqual(parse_keys(b"a b\n"), [b"a b"])  # inner spaces are the key's

    def test_check(self) -> None:
        keys = APIKeys.fromFile(self.key_file())
        self.assertEqual(len(keys), 2)
        for key in KEYS:
            self.assertTrue(keys.check(key.encode()))
        for wrong in (b"", KEY[:-1].encode(), (KEY + " ").encode(), b"# keys of the HTTP API",
                      f"# {KEYS[1]}-retired".encode(), b"x" * 1000):
            self.assertFalse(keys.check(wrong), wrong)
        self.assertTrue(APIKeys(["ünïcode"]).check("ünïcode".encode()))
        self.assertRaises(ConfigurationError, APIKeys, [])

    def test_refused_files(self) -> None:
        where = tempfile.mkdtemp(prefix="wsservice-keys-")
        self.addCleanup(os.rmdir, where)
        missing = os.path.join(where, "nope")
        for path, problem in (
                (missing, f"cannot read the API key file {missing}: No such file or "
                          "directory; make one with"),
                (where, f"cannot read the API key file {where}: Is a directory"),
                (self.key_file(mode=0o644), "is open to group or others (mode 0644); run "
                                            "'chmod 600 "),
                (self.key_file(mode=0o640), "(mode 0640)"),
                (self.key_file(mode=0o604), "(mode 0604)"),
                (self.key_file(mode=0o620), "(mode 0620)"),
                (self.key_file(""), "holds no key"),
                (self.key_file("# only a comment\n\n   \n"), "holds no key")):
            with self.assertRaises(ConfigurationError) as caught:
                APIKeys.fromFile(path)
            message = str(caught.exception)
            self.assertIn(problem, message)
            self.assertIn(path, message)
            self.assertEqual(len(message.splitlines()), 1)
        self.assertEqual(len(APIKeys.fromFile(self.key_file(mode=0o400))), 2)

    def test_secret_file_reader_shared_with_hmac(self) -> None:
        path = self.key_file("s3cret\n", mode=0o644)
        self.assertRaises(ConfigurationError, read_secret_file, path, "the file", "fix it")
        # --auth hmac: has always accepted such a file, with a warning
        self.assertEqual(read_secret_file(path, "the file", "fix it", private=False),
                         b"s3cret\n")

    def test_options(self) -> None:
        options = Options()
        options.parseOptions(["--api-key-file", self.key_file()])
        keys = options["api-keys"]
        self.assertIsInstance(keys, APIKeys)
        self.assertTrue(keys.check(KEY.encode()))
        plain = Options()
        plain.parseOptions([])
        self.assertIsNone(plain["api-keys"])
        open_file = self.key_file(mode=0o664)
        with self.assertRaises(UsageError) as caught:
            Options().parseOptions(["--api-key-file", open_file])
        self.assertEqual(str(caught.exception),
                         f"--api-key-file {open_file}: the API key file {open_file} is open to "
                         f"group or others (mode 0664); run 'chmod 600 {open_file}' so that "
                         "only the service's user can read it")
        with self.assertRaises(UsageError) as caught:
            Options().parseOptions(["--api-key-file", self.key_file(), "--path", "/api/ws"])
        self.assertEqual(str(caught.exception), "--path /api/ws: the HTTP API (--api-key-file) "
                                                "is served at /api; choose another --path")

    def test_api_path_is_reserved_when_on(self) -> None:
        check_resources(["/api/mine"], "/ws")
        self.assertRaises(ConfigurationError, check_resources, ["/api/mine"], "/ws", api=True)
        self.assertRaises(ConfigurationError, check_resources, ["/api"], "/ws", api=True)
        self.assertRaises(ConfigurationError, check_resources, [], "/api/ws", api=True)
        check_resources(["/apis"], "/ws", api=True)


class TwistdTests(APITestCase):
    """``twistd wsservice --api-key-file``, as a user runs it."""

    timeout = 90

    async def test_key_file_mistakes_are_one_line(self) -> None:
        cwd = processes.scratch(self, "wsk")
        path = os.path.join(cwd, "api-keys")
        with open(path, "w") as f:
            f.write(KEY + "\n")
        os.chmod(path, 0o644)
        for file, line in ((path, f"--api-key-file {path}: the API key file {path} is open to "
                                  f"group or others (mode 0644); run 'chmod 600 {path}' so "
                                  "that only the service's user can read it"),
                           ("missing", "--api-key-file missing: cannot read the API key file "
                                       "missing: No such file or directory; make one with "
                                       "'python3 -c \"import secrets; print(secrets.token_"
                                       "urlsafe(32))\" > missing; chmod 600 missing'")):
            out, err, code = await processes.run(
                TWISTD + ["-n", "--pidfile=", "wsservice", "--api-key-file", file], cwd)
            self.assertEqual((code, err), (2, f"wsservice: {line}\n"), out)
            self.assertNotIn("Traceback", out)

    async def test_readme_curl_examples(self) -> None:
        """README's "From other processes" section, run literally: the key file, twistd,
        the curl lines (on a free port, with a real session id), the answers it shows."""
        sections = [body for lang, body in docs.blocks(docs.README)
                    if lang == "sh" and "--api-key-file" in body]
        self.assertEqual(len(sections), 1)
        make, start = [line for line in sections[0].splitlines() if line]
        script = next(body for lang, body in docs.blocks(docs.README)
                      if lang == "sh" and "curl" in body)
        shown = next(body for lang, body in docs.blocks(docs.README)
                     if lang == "text" and body.startswith('{"ok"')).splitlines()
        cwd = docs.scratch(self, {})
        out, err, code = await processes.run(["/bin/sh", "-c", make], cwd)
        self.assertEqual(code, 0, out + err)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(cwd, "api-keys")).st_mode), 0o600)
        argv, env = processes.shell(start + " --listen tcp:0:interface=127.0.0.1")
        child = await processes.start(self, argv, cwd, env=env)
        address = f"127.0.0.1:{child.port()}"
        clients = live.Clients(self)
        client = clients.add(await connect(address))
        welcome = await client.hello()
        await subscribed(client, "board")
        self.assertIn("127.0.0.1:8080", script)
        self.assertIn('"SESSION"', script)
        script = script.replace("127.0.0.1:8080", address).replace(
            '"SESSION"', f'"{welcome["session"]}"')
        out, err, code = await processes.run(["/bin/sh", "-e", "-c", script], cwd)
        self.assertEqual((code, err), (0, ""), out)
        answers = [orjson.loads(line) for line in out.splitlines()]
        self.assertEqual(len(answers), len(shown), out)
        self.assertEqual(answers[:2], [orjson.loads(line) for line in shown[:2]])
        [member] = answers[2]["members"]
        [documented] = orjson.loads(shown[2])["members"]
        self.assertEqual(documented["client"], "…")
        self.assertEqual({**member, "client": "…"}, documented)
        # what the client saw: the publication, then the push
        self.assertEqual(await client.next(), {"type": "message", "topic": "board",
                                               "data": {"text": "hi from curl"}, "seq": 1})
        self.assertEqual(await client.next(), {"type": "event", "event": "note",
                                               "data": {"text": "just for you"}, "seq": 2})
        client.send({"type": "presence", "topic": "board", "id": 1})
        self.assertEqual(await client.next(), {"type": "result", "id": 1,
                                               "result": {"members": [member]}})
        # a wrong key: 401 and curl --fail-with-body exits 22 with the JSON error
        out, err, code = await processes.run(
            ["curl", "-sS", "--fail-with-body", "-H", "Authorization: Bearer nope",
             f"http://{address}/api/presence?topic=board"], cwd)
        self.assertEqual(code, 22, out + err)
        self.assertEqual(orjson.loads(out)["error"]["code"], "unauthorized")
        await processes.stop_cleanly(self, child)
        self.assertNotIn(open(os.path.join(cwd, "api-keys")).read().strip(), child.text)


class ClusterTests(APITestCase):
    """Two real nodes on a real redis-server: the API of one reaches the other's clients."""

    timeout = 90

    async def start(self) -> tuple[Cluster, Any, Any]:
        self.cluster = c = Cluster(self)
        path = os.path.join(c.cwd, "api-keys")
        with open(path, "w") as f:
            f.write(KEY_FILE)
        os.chmod(path, 0o600)
        a, b = await c.start("a", "b", args=("--api-key-file", path))
        return c, a, b

    async def test_publish_and_push_across_nodes(self) -> None:
        c, a, b = await self.start()
        client, welcome = await b.session()
        await c.subscribe(client, "news")
        self.assertOK(await api(a.address, "/api/publish",
                                {"topic": "news", "data": {"from": "a"}}), {"ok": True})
        self.assertEqual(await c.next(client, "the publication"),
                         {"type": "message", "topic": "news", "data": {"from": "a"}, "seq": 1})
        self.assertOK(await api(a.address, "/api/push", {"session": welcome["session"],
                                                         "event": "note", "data": [1]}),
                      {"delivered": True})
        self.assertEqual(await c.next(client, "the push"),
                         {"type": "event", "event": "note", "data": [1], "seq": 2})
        self.assertOK(await api(a.address, "/api/push", {"session": "no-such-session-id",
                                                         "event": "note"}),
                      {"delivered": False})
        self.assertError(await api(a.address, "/api/push", {"session": welcome["session"],
                                                            "event": "note"}, key="wrong"),
                         401, "unauthorized")
        await c.caught_up(client, "the API's messages")
        c.no_tracebacks()

    async def test_redis_away_503(self) -> None:
        c, a, b = await self.start()
        c.redis.kill()
        await a.wait_health(503)
        answer = await api(a.address, "/api/push", {"session": "no-such-session-id",
                                                    "event": "note"})
        self.assertError(answer, 503, "unavailable")
        await a.wait_log("HTTP API: /api/push failed (answered 503)")
        c.no_tracebacks()

    async def test_presence_across_nodes(self) -> None:
        c, a, b = await self.start()
        on_b, _ = await b.session(meta={"public": {"name": "Bea"}})
        on_a, _ = await a.session()
        await c.subscribe(on_b, "room")
        await c.subscribe(on_a, "room")

        async def listed() -> Any:
            answer = await api(a.address, "/api/presence?topic=room", method=b"GET")
            return answer.status == 200 and len(answer.json["members"]) == 2 and answer
        answer = await c.until(listed, "both members listed by node a")
        self.assertCountEqual([m["meta"] for m in answer.json["members"]],
                              [{"name": "Bea"}, None])
        # node b lists the same members
        other = await api(b.address, "/api/presence?topic=room", method=b"GET")
        self.assertCountEqual(other.json["members"], answer.json["members"])
        c.no_tracebacks()
