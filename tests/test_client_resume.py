"""The Python client through network faults (tests/tcpproxy.py between it and the real
service): drops, long outages, stalls, a cluster move. It resumes, every pushed message
reaches the application once and in order, and requests fail or wait as they should."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from wsservice import Settings
from wsservice.client import ClientError

from . import live, pyclient
from .pyclient import FAST, Seen, States
from .tcpproxy import TCPProxy
from .test_client import Tokens
from .wsclient import connect as raw_connect


class _Proxied:
    """A real server, a proxy in front of it, clients through the proxy or straight."""

    settings = Settings()
    authenticator: Any = None

    async def _start(self) -> None:
        self.service = await live.serve(self, self.settings, authenticator=self.authenticator)
        self.sessions = self.service.sessions
        host, port = self.service.address.rsplit(":", 1)
        self.proxy = await TCPProxy(host, int(port)).start(self)

    def setUp(self) -> Deferred:
        return Deferred.fromCoroutine(self._start())

    async def proxied(self, **kwargs: Any) -> Any:
        """A client through the proxy (fast reconnects)."""
        return await pyclient.client(self, self.proxy.address, **{**FAST, **kwargs})

    async def direct(self, **kwargs: Any) -> Any:
        return await pyclient.client(self, self.service.address, **kwargs)

    async def detached(self, session: str) -> None:
        await live.until(lambda: session in self.sessions.sessions
                         and not self.sessions.sessions[session].attached,
                         "the server to see the connection gone")


class ResumeTests(_Proxied, TestCase):
    """Drops shorter than resume_ttl: resumed, replayed, nothing twice."""

    async def test_cut_resume_and_replay(self) -> None:
        """Cut off (and kept off) while another client pushes to it by session id and
        publishes on its topic: it reconnects, resumes the same session, and gets every
        message once, in seq order; the state changes say so."""
        logged = pyclient.Logged(self)
        a, b = await self.proxied(), await self.direct()
        states, notes, news, both = States(a), Seen(), Seen(), Seen()
        a.on("note", notes)
        a.on("note", lambda data, seq: both(("note", data), seq))
        await a.subscribe("news", lambda data, seq: (news(data, seq), both(("news", data), seq)))
        await b.call("tell", {"session": a.session, "event": "note", "data": 0})
        await live.until(lambda: notes.calls, "the first note")
        session = a.session
        self.proxy.refuse(True)
        self.proxy.cut()
        await states.reach("reconnecting")
        self.assertEqual(states.last("reconnecting")["code"], 1006)
        await self.detached(session)
        for n in range(1, 4):
            self.assertTrue(await b.call("tell", {"session": session, "event": "note",
                                                  "data": n}))
            await b.publish("news", n)
        # calls made meanwhile wait for the next welcome
        queued = [a.call("echo", n) for n in range(3)]
        await live.until(lambda: self.proxy.refused >= 1, "a refused reconnect")
        self.proxy.refuse(False)
        info = await states.reach("open")
        self.assertEqual(info, {"session": session, "resumed": True, "replayed": 6})
        self.assertEqual((a.session, a.resumes, a.replayed), (session, 1, 6))
        self.assertEqual([await d for d in queued], [0, 1, 2])
        # once each, in the order pushed, seqs without a gap
        self.assertEqual(both.calls, [(("note", 0), 1), (("note", 1), 2), (("news", 1), 3),
                                      (("note", 2), 4), (("news", 2), 5), (("note", 3), 6),
                                      (("news", 3), 7)])
        # it carries on live
        await b.publish("news", 4)
        await live.until(lambda: len(news.calls) == 4, "a live message after the resume")
        self.assertEqual(news.calls[-1], (4, 8))
        # the secret that resumes the session is never logged (INFO and above)
        self.assertTrue(logged.lines)
        self.assertFalse([line for line in logged.lines if a._token in line])

    async def test_unix_drop_and_resume(self) -> None:
        """Over a unix socket too: the server drops the connection, the client resumes."""
        service = await live.serve(self, unix=True)
        a = await pyclient.client(self, service.address, **FAST)
        states = States(a)
        seen = Seen()
        a.on("echo", seen)
        for connection in list(service.sessions.connections):
            connection.link.abort()
        await states.reach("open")
        self.assertTrue(states.last("open")["resumed"])
        a.emit("echo", "after")
        await live.until(lambda: seen.calls == [("after", 1)], "the echo after resuming")

    async def test_call_in_flight_fails_disconnected(self) -> None:
        """A call in flight when the connection drops fails ``disconnected``; the client
        resumes and calls work again."""
        a = await self.proxied()
        states = States(a)
        d = a.call("sleep", {"seconds": 30})
        await live.until(lambda: self.sessions.sessions[a.session].inflight, "the sleep")
        self.proxy.cut()
        e = await self.assertFailure(d, ClientError)
        self.assertEqual(e.code, "disconnected")
        await states.reach("open")
        self.assertEqual(await a.call("echo", "again"), "again")

    async def test_queue_is_bounded(self) -> None:
        """While reconnecting at most ``max_queued_calls`` requests and events wait; the
        next fails ``too_many_calls`` at once; the waiting ones go out, in order, after
        the welcome."""
        a = await self.proxied(max_queued_calls=3)
        states, echoes = States(a), Seen()
        a.on("echo", echoes)
        self.proxy.refuse(True)
        self.proxy.cut()
        await states.reach("reconnecting")
        first, second = a.call("echo", 1), a.publish("t", 2)
        a.emit("echo", "queued")
        e = await self.assertFailure(a.call("echo", 3), ClientError)
        self.assertEqual(e.code, "too_many_calls")
        e = self.assertRaises(ClientError, a.emit, "echo", "one too many")
        self.assertEqual(e.code, "too_many_calls")
        self.proxy.refuse(False)
        self.assertEqual(await first, 1)
        self.assertIsNone(await second)
        await live.until(lambda: echoes.calls, "the queued event's echo")
        self.assertEqual(echoes.data, ["queued"])

    async def test_reconnect_resumes(self) -> None:
        """reconnect() drops the connection; the client resumes the same session."""
        a = await self.proxied()
        states, session = States(a), a.session
        a.reconnect()
        info = await states.reach("open")
        self.assertEqual(info, {"session": session, "resumed": True, "replayed": 0})
        self.assertEqual(states.last("reconnecting")["code"], 1006)
        self.assertEqual(a.resumes, 1)

    async def test_close_while_reconnecting(self) -> None:
        """close() while reconnecting: no more attempts, queued requests fail ``closed``."""
        a = await self.proxied()
        states = States(a)
        self.proxy.refuse(True)
        self.proxy.cut()
        await states.reach("reconnecting")
        queued = a.call("echo", 1)
        await a.close()
        e = await self.assertFailure(queued, ClientError)
        self.assertEqual(e.code, "closed")
        attempts = self.proxy.accepted + self.proxy.refused
        await live.sleep(0.5)  # several backoff_max: nothing may try again
        self.assertEqual(self.proxy.accepted + self.proxy.refused, attempts)
        self.assertEqual(states.states, ["reconnecting", "closed"])

    async def test_taken_over_elsewhere(self) -> None:
        """Another connection resumes the session: this one is closed 4409 and does not
        reconnect (the session lives on over there)."""
        a = await self.proxied()
        states = States(a)
        other = await raw_connect(self.service.address)
        self.addCleanup(other.dropConnection, True)
        other.send({"type": "hello", "resume": {"session": a.session, "token": a._token,
                                                "last_seq": 0}})
        welcome = await other.next()
        self.assertTrue(welcome["resumed"])
        info = await states.reach("closed")
        self.assertEqual(info["code"], 4409)
        attempts = self.proxy.accepted
        await live.sleep(0.5)
        self.assertEqual(self.proxy.accepted, attempts)


class LostTests(_Proxied, TestCase):
    """A drop longer than resume_ttl: the session is new, the client says so, subscribes
    again."""

    settings = Settings(resume_ttl=1)

    async def test_lost_session_resubscribes(self) -> None:
        a, b = await self.proxied(), await self.direct()
        states, lost, news = States(a), Seen(), Seen()
        a.onLost(lost)
        await a.subscribe("news", news)
        await b.publish("news", "before")
        await live.until(lambda: news.calls, "the first message")
        old = a.session
        self.proxy.refuse(True)
        self.proxy.cut()
        await live.until(lambda: old not in self.sessions.sessions, "the session to expire")
        self.proxy.refuse(False)
        info = await states.reach("open")
        self.assertEqual(info, {"session": a.session, "resumed": False, "lost": True})
        self.assertNotEqual(a.session, old)
        self.assertEqual(lost.calls, [(info,)])
        self.assertEqual(a.topics, {"news"})
        await live.until(lambda: "news" in self.sessions.sessions[a.session].subscriptions,
                         "the new session to be subscribed")
        await b.publish("news", "after")
        await live.until(lambda: len(news.calls) == 2, "the message after the loss")
        self.assertEqual(news.calls, [("before", 1), ("after", 1)])

    async def test_lost_session_resubscribes_with_presence(self) -> None:
        """A topic subscribed with presence is subscribed again with it after a lost
        session: the new session hears joins and leaves; others saw the old session leave
        (when it ended) and the new one join."""
        a = await self.proxied(meta={"public": "a"})
        b = await self.direct(meta={"public": "b"})
        heard_a, heard_b, states = Seen(), Seen(), States(a)
        await a.subscribe("room", Seen(), presence=heard_a)
        await b.subscribe("room", Seen(), presence=heard_b)
        await live.until(lambda: heard_a.calls, "a to hear b join")
        [old_member] = [m for m in await b.presence("room") if m["meta"] == "a"]
        old = a.session
        self.proxy.refuse(True)
        self.proxy.cut()
        await live.until(lambda: old not in self.sessions.sessions, "the session to expire")
        await live.until(lambda: heard_b.calls, "b to hear the old session leave")
        self.assertEqual(heard_b.calls, [("leave", old_member)])
        self.proxy.refuse(False)
        info = await states.reach("open")
        self.assertTrue(info.get("lost"), info)
        await live.until(lambda: len(heard_b.calls) == 2, "b to hear the new session join")
        kind, new_member = heard_b.calls[1]
        self.assertEqual((kind, new_member["meta"]), ("join", "a"))
        self.assertNotEqual(new_member["client"], old_member["client"])
        c = await self.direct(meta={"public": "c"})
        await c.subscribe("room", Seen())
        await live.until(lambda: len(heard_a.calls) == 2, "a's new session to hear c join")
        self.assertEqual([(kind, m["meta"]) for kind, m in heard_a.calls],
                         [("join", "b"), ("join", "c")])
        self.assertEqual(sorted(m["meta"] for m in await a.presence("room")),
                         ["a", "b", "c"])


class StallTests(_Proxied, TestCase):
    """A connection that stops carrying anything is found dead by WebSocket pings."""

    settings = Settings(heartbeat=1)

    async def test_stall_detected_and_resumed(self) -> None:
        a, b = await self.proxied(), await self.direct()
        states, notes, logged = States(a), Seen(), pyclient.Logged(self)
        a.on("note", notes)
        session = a.session
        self.proxy.stall()
        await b.call("tell", {"session": session, "event": "note", "data": "meanwhile"})
        stalled = reactor.seconds()
        await states.reach("reconnecting", timeout=10)
        self.assertLess(reactor.seconds() - stalled, 5)  # ~2 heartbeats, and slack
        self.assertEqual(logged.count("no pong from the server within 1 s"), 1)
        info = await states.reach("open", timeout=10)
        self.assertEqual((info["session"], info["resumed"]), (session, True))
        await live.until(lambda: notes.calls, "the note pushed during the stall")
        self.assertEqual(notes.calls, [("meanwhile", 1)])


class RefusedOnReconnectTests(_Proxied, TestCase):
    """A reconnect the server refuses with 4401 ends the client: no more attempts."""

    authenticator = Tokens("good")

    async def test_4401_is_final(self) -> None:
        a = await self.proxied(auth="good")
        states = States(a)
        self.authenticator.good.clear()
        self.proxy.cut()
        info = await states.reach("closed")
        self.assertEqual(info["code"], 4401)
        self.assertEqual(states.states, ["reconnecting", "closed"])
        attempts = self.proxy.accepted
        await live.sleep(0.5)
        self.assertEqual(self.proxy.accepted, attempts)
        e = await self.assertFailure(a.call("echo"), ClientError)
        self.assertEqual(e.code, "closed")


class ClusterMoveTests(TestCase):
    """Two real nodes on one Redis: the client is moved from node A to node B between a
    cut and its reconnect, and resumes there with the replay."""

    async def test_resume_on_another_node(self) -> None:
        from .clusternodes import Cluster  # its redis-server fails loudly when missing
        cluster = Cluster(self)
        node_a, node_b = await cluster.start("a", "b")
        proxy = await TCPProxy("127.0.0.1", node_a.port).start(self)
        a = await pyclient.client(self, proxy.address, **FAST)
        b = await pyclient.client(self, node_b.address)
        states, notes, news = States(a), Seen(), Seen()
        a.on("note", notes)
        await a.subscribe("news", news)
        session = a.session
        proxy.refuse(True)
        proxy.cut()
        await states.reach("reconnecting")
        for n in range(3):
            self.assertTrue(await b.call("tell", {"session": session, "event": "note",
                                                  "data": n}))
            await b.publish("news", n)
        proxy.retarget("127.0.0.1", node_b.port)
        proxy.refuse(False)
        info = await cluster.until(lambda: states.last("open"), "the resume on node b",
                                   timeout=15)
        self.assertEqual(info, {"session": session, "resumed": True, "replayed": 6})
        self.assertEqual(notes.data, [0, 1, 2])
        self.assertEqual(news.data, [0, 1, 2])
        self.assertEqual(sorted(notes.seqs + news.seqs), list(range(1, 7)))
        await b.publish("news", "live")
        await cluster.until(lambda: len(news.calls) == 4, "a live message on node b")
        cluster.no_tracebacks()

