"""/metrics for operators, scraped over real sockets from a real service (one process, and a
cluster node on a real redis-server), and docs/operations.md: every metric the service
exports is documented there, and its alert rules pass ``promtool check rules``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import FailTest, TestCase

from wsservice import Settings
from wsservice.app import makeService
from wsservice.demo import DemoApp

from . import live, redisserver
from .wsclient import connect, http

KiB = 1024
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPERATIONS = os.path.join(ROOT, "docs", "operations.md")
ALERTS = os.path.join(ROOT, "docs", "alerts.yml")
NO_PROMTOOL = ("promtool is not installed: the alert rules of docs/operations.md are checked "
               "with it; run 'make system-deps' (it installs Debian's prometheus package, "
               "which ships promtool) and run the tests again")


class Scrape:
    """One scrape of /metrics: its families and its samples by (name, labels)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = list(text_string_to_metric_families(text))
        self.samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in self.families:
            for sample in family.samples:
                self.samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        """A sample's value; the test fails if it is not there."""
        key = (name, tuple(sorted(labels.items())))
        if key not in self.samples:
            raise FailTest(f"no sample {name}{labels or ''} in /metrics:\n{self.text}")
        return self.samples[key]

    def names(self) -> set[str]:
        """Every exported name as a query names it: a counter's with _total."""
        return {f"{f.name}_total" if f.type == "counter" else f.name for f in self.families}


async def scrape(address: str) -> Scrape:
    code, headers, body = await http(address, "/metrics")
    if code != 200:
        raise FailTest(f"/metrics answered {code}: {body!r}")
    return Scrape(body.decode())


class SessionMetricsTests(TestCase):
    """One process: resumes, replays, bad messages, rate limits."""

    timeout = 60

    async def test_resumes_and_replays(self) -> None:
        server = await live.serve(self)
        a, welcome = await server.session()
        a.send({"type": "call", "id": 1, "method": "push",
                "params": {"count": 3, "event": "e", "data": "x"}})
        got = [await a.next() for _ in range(4)]  # three events and the result
        self.assertEqual(sorted(m.get("seq", 0) for m in got), [0, 1, 2, 3])
        a.dropConnection(abort=True)
        await a.waitClosed()
        resume = {"session": welcome["session"], "token": welcome["token"], "last_seq": 1}
        b, again = await server.session(resume=resume)
        self.assertTrue(again["resumed"])
        self.assertEqual([(await b.next())["seq"] for _ in range(2)], [2, 3])  # replayed
        _, wrong = await server.session(resume={**resume, "token": "not-the-token"})
        self.assertFalse(wrong["resumed"])  # refused: the wrong token
        _, gap = await server.session(resume={**resume, "last_seq": 99})
        self.assertFalse(gap["resumed"])  # refused: seq 99 was never sent
        m = await scrape(server.address)
        self.assertEqual(m("wsservice_resumes_total", result="resumed"), 1)
        self.assertEqual(m("wsservice_resumes_total", result="refused"), 2)
        self.assertEqual(m("wsservice_sessions_resumed_total"), 1)
        self.assertEqual(m("wsservice_replayed_messages_total"), 2)

    async def test_bad_messages_by_code_and_rate_limited(self) -> None:
        # three messages' worth of tokens, refilled once in 1000 s: then every message is
        # over the rate
        server = await live.serve(self, Settings(rate=0.001, burst=3, max_bad_messages=100))
        c, _ = await server.session()
        c.sendRaw(b"{not json")
        c.send({"type": "nope"})
        c.send({"type": "hello"})
        c.send({"type": "ping"})
        c.send({"type": "ping"})
        codes = [(await c.next())["error"]["code"] for _ in range(5)]
        self.assertEqual(codes, ["bad_json", "bad_message", "already_registered",
                                 "rate_limited", "rate_limited"])
        m = await scrape(server.address)
        for code, count in (("bad_json", 1), ("bad_message", 1), ("already_registered", 1),
                            ("rate_limited", 2)):
            self.assertEqual(m("wsservice_bad_messages_total", code=code), count, code)
        self.assertEqual(m("wsservice_errors_total", code="rate_limited"), 2)


class FlowMetricsTests(TestCase):
    """Bytes waiting in send queues, and the slow consumer closed 4508 for it."""

    timeout = 60

    async def test_send_queue_and_slow_consumer(self) -> None:
        limit = 2048 * KiB  # room for the pushes still in flight when one is seen queued
        server = await live.serve(self, Settings(max_send_queue=limit, rate=1e6,
                                                 burst=100000))
        metrics = server.sessions.metrics
        c, welcome = await server.session()
        session = server.sessions.sessions[welcome["session"]]
        m = await scrape(server.address)
        self.assertEqual(m("wsservice_send_queue_bytes"), 0)
        c.transport.pauseProducing()  # stop reading: the server's writes back up
        payload = "x" * 4000
        calls = 0

        async def push() -> None:
            nonlocal calls
            self.assertLess(calls, 2000, "still attached after 80 MB of pushes asked for")
            c.send({"type": "call", "id": calls, "method": "push",
                    "params": {"count": 10, "event": "e", "data": payload}})
            calls += 1
            await live.sleep(0)
        assert metrics.send_queue is not None
        while session.attached and metrics.send_queue() == 0:
            await push()
        # past the transport's own buffer, below the limit: queued, not yet too much (the
        # pushes still in flight may add to it while the scrape is answered)
        queued = metrics.send_queue()
        m = await scrape(server.address)  # over another connection
        self.assertTrue(queued <= m("wsservice_send_queue_bytes") <= limit, m.text)
        self.assertEqual(m("wsservice_slow_consumer_closes_total"), 0)
        self.assertTrue(session.attached)
        while session.attached:
            await push()
        c.transport.resumeProducing()
        code, _ = await c.waitClosed()
        self.assertEqual(code, 4508)
        await live.until(lambda: not server.sessions.connections, "the connection to go")
        m = await scrape(server.address)
        self.assertEqual(m("wsservice_slow_consumer_closes_total"), 1)
        self.assertEqual(m("wsservice_disconnects_total", reason="slow_consumer"), 1)
        self.assertEqual(m("wsservice_send_queue_bytes"), 0)


class ClusterNode:
    """A whole service (makeService) as a node of a cluster on its own redis-server."""

    def __init__(self, testcase: TestCase) -> None:
        self.redis = redisserver.RedisServer().start()
        testcase.addCleanup(self.redis.stop)
        self.service = makeService([DemoApp()], [live.LOOPBACK], redis=self.redis.url,
                                   node_id="m1")
        self.engine: Any = self.service.sessions.store.engine  # type: ignore[attr-defined]
        self.clients = live.Clients(testcase)
        self.testcase = testcase

    async def start(self) -> ClusterNode:
        self.service.startService()
        self.testcase.addCleanup(lambda: Deferred.fromCoroutine(self.stop()))
        port: Any = await self.service.listeners[0].whenListening
        self.address = f"127.0.0.1:{port.getHost().port}"
        await self.engine.whenUp().addTimeout(10, reactor)
        return self

    async def stop(self) -> None:
        """Drop the clients, drain, then end the sessions left (their expiry timers with
        them), as tests/live.py does."""
        await self.clients.drop_all()
        await self.service.stopService()
        self.service.sessions.endAll()


class RedisMetricsTests(TestCase):
    """A cluster node times its Redis round trips and counts the failed ones."""

    timeout = 60

    async def test_round_trips_and_errors(self) -> None:
        node = await ClusterNode(self).start()
        c = node.clients.add(await connect(node.address))
        await c.hello()
        c.send({"type": "subscribe", "topic": "news", "id": 1})
        await c.next()
        # a script Redis refuses (PX needs a number): an error reply, timed as a round trip
        failed = node.engine.run("heartbeat", "nobody", "not-a-number")
        await self.assertFailure(failed, Exception)
        m = await scrape(node.address)
        self.assertEqual(m("wsservice_redis_up"), 1)
        count = m("wsservice_redis_round_trip_seconds_count")
        self.assertGreater(count, 2)  # start-up's heartbeat, the subscribe's batch, this one
        self.assertEqual(m("wsservice_redis_round_trip_seconds_bucket", le="+Inf"), count)
        self.assertLess(m("wsservice_redis_round_trip_seconds_sum"), count * 5)
        self.assertEqual(m("wsservice_redis_errors_total", cause="reply"), 1)
        self.assertEqual(m("wsservice_redis_errors_total", cause="connection"), 0)
        self.assertEqual(m("wsservice_redis_errors_total", cause="timeout"), 0)


# -- docs/operations.md -------------------------------------------------------------------------


def operations() -> str:
    with open(OPERATIONS) as f:
        return f.read()


def documented() -> set[str]:
    """The metric names docs/operations.md's metric tables name (a row starts with one)."""
    return set(re.findall(r"^\| `(wsservice_[a-z_]+)`", operations(), re.MULTILINE))


def yaml_block(text: str) -> str:
    """The doc's sample alert rule file: its one ```yaml block."""
    blocks = re.findall(r"^```yaml\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    if len(blocks) != 1:
        raise FailTest(f"docs/operations.md should hold one ```yaml block, not {len(blocks)}")
    return blocks[0]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        raise FailTest(NO_PROMTOOL)
    return found


class OperationsDocTests(TestCase):
    """docs/operations.md against the real service and the real promtool."""

    timeout = 60

    async def traffic(self, address: str, clients: live.Clients) -> set[str]:
        """A session subscribed with presence, a call, a drop and a resume; then what
        /metrics exports."""
        c = clients.add(await connect(address))
        welcome = await c.hello()
        c.send({"type": "subscribe", "topic": "room", "presence": True, "id": 1})
        await c.next()
        await c.call("echo", 1, id=2)
        c.dropConnection(abort=True)
        await c.waitClosed()
        again = clients.add(await connect(address))
        await again.hello(resume={"session": welcome["session"], "token": welcome["token"],
                                  "last_seq": 0})
        return (await scrape(address)).names()

    async def test_every_exported_metric_is_documented(self) -> None:
        """One process and a cluster node, presence on, after some traffic: every name
        either exports has its row, and every row names something one of them exports."""
        node = await ClusterNode(self).start()
        server = await live.serve(self)
        exported = (await self.traffic(node.address, node.clients)
                    | await self.traffic(server.address, server.clients))
        for name in ("wsservice_presence_members", "wsservice_redis_up",
                     "wsservice_replay_bytes"):
            self.assertIn(name, exported)
        rows = documented()
        self.assertEqual(exported - rows, set(), "exported but not in docs/operations.md")
        self.assertEqual(rows - exported, set(), "in docs/operations.md but not exported")

    def test_alert_file_is_the_docs_block(self) -> None:
        with open(ALERTS) as f:
            self.assertEqual(f.read(), yaml_block(operations()))

    def test_alerts_use_exported_metrics(self) -> None:
        """Every metric an alert rule reads is one of the documented ones (a typo would
        make an alert that never fires)."""
        rows = documented()
        with open(ALERTS) as f:
            used = set(re.findall(r"\bwsservice_[a-z_]+", f.read()))
        self.assertTrue(used)
        for name in used:
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            self.assertTrue(name in rows or base in rows, f"{name} is not a documented metric")

    def test_promtool_accepts_the_rules(self) -> None:
        result = subprocess.run([promtool(), "check", "rules", ALERTS], capture_output=True,
                                text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("SUCCESS", result.stdout + result.stderr)

    def test_alerts_fire_as_described(self) -> None:
        """promtool's own unit tests of the rules (tests/alerts_test.yml): an alert fires on
        the sample series that should raise it, with the annotations the doc shows, and
        not before."""
        tests = os.path.join(ROOT, "tests", "alerts_test.yml")
        result = subprocess.run([promtool(), "test", "rules", tests], capture_output=True,
                                text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("SUCCESS", result.stdout + result.stderr)

    def test_promtool_rejects_a_broken_rule(self) -> None:
        """The check is real: promtool fails a rule file with a bad expression."""
        path = self.mktemp()
        with open(ALERTS) as f, open(path, "w") as out:
            out.write(f.read().replace("expr: ", "expr: rate(", 1))
        result = subprocess.run([promtool(), "check", "rules", path], capture_output=True,
                                text=True, timeout=60)
        self.assertNotEqual(result.returncode, 0, result.stdout)
