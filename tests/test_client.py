"""The Python client (wsservice.client) against the real service, over TCP and a unix
socket: hello and welcome, calls both ways, events, topics, acks, close, refusals, TLS."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from wsservice import ApplicationError, IAuthenticator, Settings, Unauthorized, makeService
from wsservice.client import Backoff, ClientError, RemoteError, connect, parse_url
from wsservice.client.inbox import Inbox
from wsservice.client.requests import Request, Requests
from wsservice.demo import DemoApp

from . import certs, live, pyclient
from .principals import ByName, NoSecrets
from .pyclient import Seen, States


class _Basics:
    """The tests; TCPTests and UNIXTests say which listener."""

    unix = False
    settings = Settings()

    async def _start(self) -> None:
        self.server = await live.serve(self, self.settings, unix=self.unix)
        self.sessions = self.server.sessions

    def setUp(self) -> Deferred:
        return Deferred.fromCoroutine(self._start())

    async def client(self, **kwargs: Any) -> Any:
        return await pyclient.client(self, self.server.address, **kwargs)

    def session(self, client: Any) -> Any:
        return self.sessions.sessions[client.session]

    async def test_connect_welcome_state(self) -> None:
        """connect() fires at the welcome: state open, the session's id, meta and auth
        given in the hello."""
        client = await self.client(meta={"app": "tests"}, auth={"who": "me"})
        self.assertEqual((client.state, client.heartbeat), ("open", 25))
        self.assertIsInstance(client.session, str)
        who = await client.call("whoami")
        self.assertEqual(who["session"], client.session)
        self.assertEqual(who["meta"], {"app": "tests"})
        self.assertIn(client.session, self.sessions.sessions)

    async def test_call_result_and_errors(self) -> None:
        """A call settles with the result, or fails RemoteError(code, message, data)."""
        client = await self.client()
        self.assertEqual(await client.call("echo", {"a": [1, 2]}), {"a": [1, 2]})
        self.assertIsNone(await client.call("echo"))
        e = await self.assertFailure(client.call("reject", {"why": 1}), RemoteError)
        self.assertEqual((e.code, e.message, e.data), ("demo.rejected", "rejected, as asked",
                                                        {"why": 1}))
        e = await self.assertFailure(client.call("fail"), RemoteError)
        self.assertEqual(e.code, "internal")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)  # the server's log
        e = await self.assertFailure(client.call("nothing.here"), RemoteError)
        self.assertEqual(e.code, "unknown_method")
        # the session carries on, and no reply was left over
        self.assertEqual(await client.call("echo", 7), 7)
        self.assertEqual(client._requests.inflight, {})

    async def test_call_timeout_cancels_on_the_server(self) -> None:
        """Past its timeout a call fails ``timeout`` and the server is told to cancel it."""
        client = await self.client()
        d = client.call("sleep", {"seconds": 30}, timeout=0.3)
        session = self.session(client)
        await live.until(lambda: session.inflight, "the sleep to run on the server")
        e = await self.assertFailure(d, ClientError)
        self.assertEqual(e.code, "timeout")
        await live.until(lambda: not session.inflight, "the server to cancel the sleep")
        # the server's 'cancelled' reply to the abandoned id is ignored quietly
        self.assertEqual(await client.call("echo", 1), 1)

    async def test_deferred_cancel_sends_cancel(self) -> None:
        """Deferred.cancel() fails the call with CancelledError and cancels it there."""
        client = await self.client()
        d = client.call("sleep", {"seconds": 30})
        session = self.session(client)
        await live.until(lambda: session.inflight, "the sleep to run on the server")
        d.cancel()
        await self.assertFailure(d, CancelledError)
        await live.until(lambda: not session.inflight, "the server to cancel the sleep")

    async def test_server_calls_answered_by_handlers(self) -> None:
        """handle(): the server's calls are answered by the handler's value, Deferred or
        coroutine; an ApplicationError's code comes back; none: unknown_method."""
        client = await self.client()

        async def later(params: Any) -> Any:
            await live.sleep(0.01)
            return {"later": params}

        def refuse(params: Any) -> Any:
            raise ApplicationError("app.no", "not today", {"p": params})

        client.handle("double", lambda params: params * 2)
        client.handle("later", later)
        client.handle("refuse", refuse)
        client.handle("broken", lambda params: 1 / 0)
        self.assertEqual(await client.call("ask", {"method": "double", "params": 21}), 42)
        self.assertEqual(await client.call("ask", {"method": "later", "params": 1}),
                         {"later": 1})
        e = await self.assertFailure(client.call("ask", {"method": "refuse", "params": 3}),
                                     RemoteError)
        self.assertEqual((e.code, e.message, e.data), ("app.no", "not today", {"p": 3}))
        e = await self.assertFailure(client.call("ask", {"method": "unknown"}), RemoteError)
        self.assertEqual(e.code, "unknown_method")
        e = await self.assertFailure(client.call("ask", {"method": "broken"}), RemoteError)
        self.assertEqual(e.code, "internal")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        client.handle("double", None)
        e = await self.assertFailure(client.call("ask", {"method": "double"}), RemoteError)
        self.assertEqual(e.code, "unknown_method")

    async def test_emit_and_on(self) -> None:
        """emit() sends an event; on() listeners get pushed events (data, seq); off()
        stops one; a failing listener is logged and the others still run."""
        client = await self.client()
        first, second, every = Seen(), Seen(), Seen()
        client.on("echo", first)
        client.on("echo", lambda data, seq: 1 / 0)
        client.on("echo", second)
        client.onAnyEvent(every)
        client.emit("echo", {"n": 1})
        await live.until(lambda: second.calls, "the echo event")
        self.assertEqual(first.calls, [({"n": 1}, 1)])
        self.assertEqual(every.calls, [("echo", {"n": 1}, 1)])
        client.off("echo", first)
        client.emit("echo", 2)
        await live.until(lambda: len(second.calls) == 2, "the second echo event")
        self.assertEqual(first.calls, [({"n": 1}, 1)])
        self.assertEqual(second.calls, [({"n": 1}, 1), (2, 2)])
        self.assertEqual(client.last_seq, 2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
        # an event no handler serves: the server's error answers no request: onError
        errors = Seen()
        client.onError(errors)
        client.emit("no.such.event", 1)
        await live.until(lambda: errors.calls, "the error for the unknown event")
        [(error,)] = errors.calls
        self.assertEqual(error.code, "unknown_event")

    async def test_subscribe_publish_between_two_clients(self) -> None:
        """Two clients on one topic: a publication reaches both (the publisher too);
        after unsubscribe it reaches only the other."""
        a, b = await self.client(), await self.client()
        seen_a, seen_b = Seen(), Seen()
        self.assertIsNone(await a.subscribe("room.1", seen_a))
        await b.subscribe("room.1", seen_b)
        self.assertEqual(a.topics, {"room.1"})
        self.assertIsNone(await b.publish("room.1", {"hi": "all"}))
        await live.until(lambda: seen_a.calls and seen_b.calls, "both to get the message")
        self.assertEqual(seen_a.calls, [({"hi": "all"}, 1)])
        self.assertEqual(seen_b.calls, [({"hi": "all"}, 1)])
        self.assertIsNone(await a.unsubscribe("room.1"))
        await b.publish("room.1", 2)
        await live.until(lambda: len(seen_b.calls) == 2, "b to get the second message")
        # a publication reaches subscribers in order: a's echo comes after anything
        a.on("echo", Seen())
        self.assertEqual(await a.call("echo", "sync"), "sync")
        self.assertEqual(seen_a.calls, [({"hi": "all"}, 1)])
        self.assertEqual(a.topics, frozenset())

    async def test_acks_empty_the_replay_buffer(self) -> None:
        """The client acks what it was given: the server's replay buffer empties (at once
        for each 100 messages, the rest within a second)."""
        client = await self.client()
        seen = Seen()
        client.on("tick", seen)
        record = self.sessions.store.get(client.session)
        self.assertEqual(await client.call("push", {"count": 250, "event": "tick"}), 250)
        await live.until(lambda: len(seen.calls) == 250, "250 ticks")
        self.assertEqual(seen.seqs, list(range(1, 251)))
        # the server reads a client's messages in order: the acks of 100 and 200 came first
        self.assertEqual(await client.call("echo", "sync"), "sync")
        self.assertLessEqual(len(record.kept()), 50)
        await live.until(lambda: not record.kept(), "the replay buffer to empty")

    async def test_close(self) -> None:
        """close() says bye: the session ends on the server, the state is closed for good
        and every request fails ``closed``."""
        client = await self.client()
        states = States(client)
        session = client.session
        pending = client.call("sleep", {"seconds": 30})
        await client.close()
        self.assertEqual(client.state, "closed")
        self.assertEqual(states.changes, [("closed", {})])
        e = await self.assertFailure(pending, ClientError)
        self.assertIn(e.code, ("closed", "disconnected"))
        await live.until(lambda: session not in self.sessions.sessions, "the session's end")
        e = await self.assertFailure(client.call("echo"), ClientError)
        self.assertEqual(e.code, "closed")
        self.assertRaises(ClientError, client.emit, "echo")
        await client.close()  # again: nothing happens

    async def test_subscription_refused(self) -> None:
        """A subscribe the server refuses fails with its error; the topic is not kept."""
        client = await self.client()
        for n in range(self.sessions.settings.max_subscriptions):
            await client.subscribe(f"t{n}", Seen())
        e = await self.assertFailure(client.subscribe("one.too.many", Seen()), RemoteError)
        self.assertEqual(e.code, "too_many_subscriptions")
        self.assertNotIn("one.too.many", client.topics)


class TCPTests(_Basics, TestCase):
    """The client over TCP."""

    settings = Settings(max_subscriptions=3)


class UNIXTests(_Basics, TestCase):
    """The client over a unix socket (``unix:PATH``)."""

    unix = True
    settings = Settings(max_subscriptions=3)


@implementer(IAuthenticator)
class Tokens:
    """Accepts the hello's auth, or the Authorization header, when it is in ``good``."""

    def __init__(self, *good: str) -> None:
        self.good = set(good)

    def authenticate(self, request: Any) -> Any:
        given = request.auth if request.auth is not None \
            else request.headers.get("authorization")
        if given not in self.good:
            raise Unauthorized("bad token")
        return given


class ConnectTests(TestCase):
    """What connect() does when the first connection fails, and what it takes."""

    async def test_unauthorized(self) -> None:
        """A hello the authenticator refuses: connect() fails with the server's
        ``unauthorized`` and close code 4401; the client is closed."""
        service = await live.serve(self, authenticator=Tokens("good"))
        e = await self.assertFailure(connect(pyclient.url(service.address), auth="bad"),
                                     ClientError)
        self.assertEqual((e.code, e.close_code), ("unauthorized", 4401))
        ok = await pyclient.client(self, service.address, auth="good")
        self.assertEqual(await ok.call("whoami"), {"session": ok.session, "principal": "good",
                                                   "meta": {}})

    async def test_headers(self) -> None:
        """``headers`` go into the handshake (an Authorization header, here)."""
        service = await live.serve(self, authenticator=Tokens("Bearer xyz"))
        client = await pyclient.client(self, service.address, reactor=reactor,
                                       headers={"Authorization": "Bearer xyz"})
        self.assertEqual((await client.call("whoami"))["principal"], "Bearer xyz")

    async def test_connection_refused(self) -> None:
        """Nothing listening: connect() fails with Twisted's ConnectionRefusedError."""
        service = await live.serve(self)
        address = service.address
        await service.stop()
        await self.assertFailure(connect(pyclient.url(address)), ConnectionRefusedError)

    async def test_handshake_refused(self) -> None:
        """A handshake the server refuses (HTTP 404: wrong path) fails connect()."""
        service = await live.serve(self)
        e = await self.assertFailure(connect(f"ws://{service.address}/nowhere"), ClientError)
        self.assertEqual(e.code, "connect_failed")
        self.assertIn("404", e.message)

    def test_bad_arguments(self) -> None:
        """A bad URL is a ValueError saying which forms work; unknown or bad options are
        TypeError / ValueError, before anything is connected."""
        for bad in ("http://x/ws", "127.0.0.1:8080", "ws://", "ws://h:99999/ws", "", None):
            e = self.assertRaises(ValueError, connect, bad)
            self.assertIn("ws://HOST[:PORT]/PATH", str(e))
        self.assertIn("unix:/PATH", str(self.assertRaises(ValueError, connect, "unix:")))
        self.assertIn("fragment", str(self.assertRaises(ValueError, connect, "wss://h/ws#x")))
        self.assertRaises(TypeError, connect, "ws://127.0.0.1:1/ws", colour="red")
        self.assertRaises(ValueError, connect, "ws://127.0.0.1:1/ws", call_timeout=-1)
        self.assertRaises(ValueError, connect, "ws://127.0.0.1:1/ws", max_queued_calls=0)

    def test_url_forms(self) -> None:
        """ws://, wss:// (default ports, default path /ws) and unix: URLs."""
        t = parse_url("ws://example.com:8080/ws?x=1")
        self.assertEqual((t.host, t.port, t.secure, t.ws_url),
                         ("example.com", 8080, False, "ws://example.com:8080/ws?x=1"))
        t = parse_url("wss://example.com")
        self.assertEqual((t.port, t.secure, t.ws_url), (443, True, "wss://example.com/ws"))
        self.assertEqual(parse_url("ws://[::1]/ws").host, "::1")
        t = parse_url("unix:/run/ws/s.sock")
        self.assertEqual((t.path, t.ws_url), ("/run/ws/s.sock", "ws://localhost/ws"))

    async def test_cancel_connect(self) -> None:
        """Cancelling connect()'s Deferred gives up (CancelledError)."""
        service = await live.serve(self)
        d = connect(pyclient.url(service.address))
        d.cancel()
        await self.assertFailure(d, CancelledError)
        await live.until(lambda: not service.sessions.connections, "the connection to go")


class PresenceTests(TestCase):
    """presence() and subscribe(presence=...) against the real service (protocol.md §7)."""

    async def _start(self) -> None:
        self.service = makeService([DemoApp(), NoSecrets()], [live.LOOPBACK], Settings(),
                                   authenticator=ByName())
        self.service.startService()
        self.addCleanup(self._stop)
        port: Any = await self.service.listeners[0].whenListening
        self.address = f"127.0.0.1:{port.getHost().port}"

    async def _stopping(self) -> None:
        if self.service.running:
            await self.service.stopService()
        self.service.sessions.endAll()

    def _stop(self) -> Deferred:
        return Deferred.fromCoroutine(self._stopping())

    def setUp(self) -> Deferred:
        return Deferred.fromCoroutine(self._start())

    async def client(self, **kwargs: Any) -> Any:
        return await pyclient.client(self, self.address, **kwargs)

    async def test_members_joins_and_leaves(self) -> None:
        """presence() lists each member once (public client id, user, meta.public); a
        presence listener hears others join and leave, never itself; unsubscribe and close
        are leaves; the public id is neither the session id nor the token."""
        a = await self.client(meta={"public": {"name": "Ada"}, "private": 1})
        b = await self.client(meta={"public": {"name": "Bob", "tags": [1, 2]}}, auth="bob")
        c = await self.client()
        heard, messages = Seen(), Seen()
        self.assertIsNone(await a.subscribe("room", messages, presence=heard))
        self.assertEqual(await a.presence("empty"), [])
        [ada] = await a.presence("room")
        self.assertEqual((ada["user"], ada["meta"]), (None, {"name": "Ada"}))
        await b.subscribe("room", Seen())
        await live.until(lambda: heard.calls, "a to hear b join")
        [(kind, bob)] = heard.calls
        self.assertEqual((kind, bob["user"], bob["meta"]), ("join", "bob", {"name": "Bob",
                                                                               "tags": [1, 2]}))
        self.assertNotEqual(bob["client"], ada["client"])
        for client in (a, b):
            members = await client.presence("room")
            self.assertEqual(sorted(members, key=lambda m: m["meta"]["name"]), [ada, bob])
        await c.subscribe("room", Seen())
        await live.until(lambda: len(heard.calls) == 2, "a to hear c join")
        self.assertEqual(heard.calls[1][0], "join")
        carl = heard.calls[1][1]
        self.assertEqual((carl["user"], carl["meta"]), (None, None))  # no meta.public
        secrets = {a.session, b.session, c.session, a._token, b._token, c._token}
        self.assertFalse(secrets & {ada["client"], bob["client"], carl["client"]})
        self.assertEqual(len({ada["client"], bob["client"], carl["client"]}), 3)
        await b.unsubscribe("room")
        await live.until(lambda: len(heard.calls) == 3, "a to hear b leave")
        self.assertEqual(heard.calls[2], ("leave", bob))
        await c.close()
        await live.until(lambda: len(heard.calls) == 4, "a to hear c leave (bye)")
        self.assertEqual(heard.calls[3], ("leave", carl))
        self.assertEqual(await a.presence("room"), [ada])
        # presence events are plain events too, with their seq, and messages still arrive
        self.assertEqual(a.last_seq, 4)
        await a.publish("room", "hi")
        await live.until(lambda: messages.calls, "the message")
        self.assertEqual(messages.calls, [("hi", 5)])

    async def test_on_sees_presence_events(self) -> None:
        """presence.join / presence.leave are ordinary pushes: on() listeners get them,
        with {topic, member}; without presence=, nothing is pushed."""
        a = await self.client(meta={"public": "a"})
        b = await self.client(meta={"public": "b"})
        joins, leaves, heard = Seen(), Seen(), Seen()
        a.on("presence.join", joins)
        a.on("presence.leave", leaves)
        await a.subscribe("quiet", Seen())
        await a.subscribe("loud", Seen(), presence=heard)
        await b.subscribe("quiet", Seen())
        await b.subscribe("loud", Seen())
        await live.until(lambda: joins.calls, "the join on loud")
        [(data, seq)] = joins.calls
        self.assertEqual((data["topic"], data["member"]["meta"], seq), ("loud", "b", 1))
        self.assertEqual(heard.calls, [("join", data["member"])])
        await b.close()
        await live.until(lambda: leaves.calls, "the leave of loud")
        self.assertEqual(await a.call("echo", "sync"), "sync")  # anything pushed came first
        self.assertEqual([d["topic"] for d, _ in leaves.calls], ["loud"])
        self.assertEqual(len(joins.calls), 1)  # nothing of 'quiet'

    async def test_latest_subscribe_decides(self) -> None:
        """Subscribing again without presence turns the presence events off; with it, on
        again (the new listener gets them)."""
        a, b = await self.client(), await self.client()
        first, second, joins = Seen(), Seen(), Seen()
        a.on("presence.join", joins)
        await a.subscribe("room", Seen(), presence=first)
        await b.subscribe("room", Seen())
        await live.until(lambda: first.calls, "the first join")
        await a.subscribe("room", Seen())
        await b.unsubscribe("room")
        await b.subscribe("room", Seen())
        await a.subscribe("room", Seen(), presence=second)  # on again
        await b.unsubscribe("room")
        await live.until(lambda: second.calls, "the leave after presence is on again")
        self.assertEqual([kind for kind, _ in first.calls], ["join"])
        self.assertEqual([kind for kind, _ in second.calls], ["leave"])
        self.assertEqual(len(joins.calls), 1)  # the join while it was off never came

    async def test_forbidden(self) -> None:
        """presence() of a topic one may not subscribe to fails ``forbidden``."""
        a = await self.client()
        e = await self.assertFailure(a.presence("secret.plans"), RemoteError)
        self.assertEqual(e.code, "forbidden")
        e = await self.assertFailure(a.subscribe("secret.plans", Seen(), presence=Seen()),
                                     RemoteError)
        self.assertEqual(e.code, "forbidden")
        self.assertEqual(a.topics, frozenset())
        self.assertRaises(TypeError, a.presence, "")
        self.assertRaises(TypeError, a.subscribe, "room", Seen(), presence="yes")


class TLSTests(TestCase):
    """wss:// to an ssl: listener with a self-signed certificate."""

    def certificate(self) -> tuple[str, str, bytes]:
        return certs.self_signed(self)

    async def test_wss_with_private_ca(self) -> None:
        """With ``tls_options`` trusting the certificate, wss:// works; without them the
        certificate is not trusted and connect() fails."""
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        key, cert, pem = self.certificate()
        service = await live.serve(
            self, listen=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
        port = service.address.rsplit(":", 1)[1]
        url = f"wss://localhost:{port}/ws"
        tls = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(pem))
        client = await pyclient.client(self, url, tls_options=tls)
        self.assertEqual(await client.call("echo", "over tls"), "over tls")
        e = await self.assertFailure(connect(url), ClientError)
        self.assertEqual(e.code, "connect_failed")
        self.assertIn("certificate verify failed", e.message)


class UnitTests(SynchronousTestCase):
    """Backoff and acks on a Clock."""

    def test_backoff_full_jitter(self) -> None:
        """The delay is uniform(0, min(max, initial * factor ** attempt)); reset() starts
        over."""
        bounds: list[float] = []
        backoff = Backoff(0.5, 2, 10, uniform=lambda low, high: bounds.append(high) or high)
        delays = [backoff.next() for _ in range(8)]
        self.assertEqual(delays, [0.5, 1, 2, 4, 8, 10, 10, 10])
        backoff.reset()
        self.assertEqual(backoff.next(), 0.5)
        real = Backoff(0.5, 2, 10)
        for _ in range(2000):  # no overflow, always within the bound
            self.assertTrue(0 <= real.next() <= 10)

    def test_requests_timeout_cancel_and_bound(self) -> None:
        """A request times out after its timeout (a call in flight is cancelled on the
        server, its late answer ignored); cancel() likewise; at most max_waiting wait."""
        clock, sent = Clock(), []
        requests = Requests(clock, lambda payload: sent.append(payload) or True, 2)
        d = requests.add(Request("call", "call 'x'", b'{"type":"call","id":'), 5, True)
        self.assertEqual(sent, [b'{"type":"call","id":1}'])
        clock.advance(5)
        self.assertEqual(self.failureResultOf(d, ClientError).value.code, "timeout")
        self.assertEqual(sent[-1], b'{"type":"cancel","id":1}')
        self.assertTrue(requests.answer(1, True, None))  # late: ignored quietly
        self.assertFalse(requests.answer(99, True, None))  # never asked
        d = requests.add(Request("call", "call 'y'", b'{"type":"call","id":'), 5, True)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(sent[-1], b'{"type":"cancel","id":2}')
        waiting = [requests.add(Request("publish", "publish", b'{"id":'), 5, False)
                   for _ in range(3)]
        self.assertEqual(self.failureResultOf(waiting[2], ClientError).value.code,
                         "too_many_calls")
        waiting[0].cancel()  # never sent: nothing to cancel there
        self.failureResultOf(waiting[0], CancelledError)
        self.assertEqual(len(sent), 4)
        requests.flush()
        self.assertEqual(sent[-1], b'{"id":3}')
        requests.answer(3, True, "done")
        self.assertEqual(self.successResultOf(waiting[1]), "done")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_acks(self) -> None:
        """An ack at once after each 100 deliveries, else within ack_delay of the first
        unacked one; one timer at most; duplicates are not delivered."""
        clock, sent = Clock(), []
        inbox = Inbox(clock, lambda payload: sent.append(payload) or True, 100, 1.0)
        seen = Seen()
        inbox.events["e"] = [seen]
        for seq in range(1, 251):
            inbox.event({"type": "event", "event": "e", "data": seq, "seq": seq})
            self.assertLessEqual(len(clock.getDelayedCalls()), 1)
        self.assertEqual(sent, [b'{"type":"ack","seq":100}', b'{"type":"ack","seq":200}'])
        inbox.event({"type": "event", "event": "e", "data": "again", "seq": 250})
        clock.advance(0.99)
        self.assertEqual(len(sent), 2)
        clock.advance(0.01)
        self.assertEqual(sent[-1], b'{"type":"ack","seq":250}')
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(seen.seqs, list(range(1, 251)))
        self.flushLoggedErrors()

