"""Service metrics: plain integer counters on the hot path, exported to Prometheus on scrape.

Every metric exported here is listed in docs/operations.md with what an alert on it means
(tests/test_operations.py checks that none is missing).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from typing import Callable, Iterator, Mapping, NamedTuple

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0)
# a Redis script's round trip on a healthy network is well under a millisecond; the top
# buckets reach the engine's reply timeout (5 s)
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """Observations counted into fixed buckets, with their sum: cheap to update, read on scrape."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        """The Prometheus histogram of what was observed (cumulative buckets)."""
        buckets, running = [], 0
        for bound, n in zip(self.bounds + (float("inf"),), self.counts):
            running += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        h = HistogramMetricFamily(name, documentation)
        h.add_metric([], buckets, self.sum)
        return h


class ClusterStats(NamedTuple):
    """What a cluster node's Redis engine tells /metrics (RedisEngine.stats)."""

    up: int  # 1 while in step with Redis, else 0
    batches: int  # batch scripts sent
    outages: int  # times Redis was lost
    adopted: int  # sessions adopted from dead nodes
    round_trips: Histogram  # seconds from sending a script to its answer
    errors: Mapping[str, int]  # scripts that failed, by cause


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    c = CounterMetricFamily(name, documentation)
    c.add_metric([], value)
    return c


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, documentation)
    g.add_metric([], value)
    return g


def _labelled(name: str, documentation: str, label: str,
              counts: Mapping[str, int]) -> CounterMetricFamily:
    c = CounterMetricFamily(name, documentation, labels=[label])
    for key, n in sorted(counts.items()):
        c.add_metric([key], n)
    return c


class Metrics:
    """Counters the service bumps per message; a prometheus_client collector reads them on scrape.

    Plain dict increments cost far less than prometheus_client's locked children on every
    message, and a scrape is rare. Gauges are read on scrape through the callables the
    service sets (None: not exported).
    """

    def __init__(self, sessions: Callable[[], int]) -> None:
        self.messages_in: defaultdict[str, int] = defaultdict(int)
        self.messages_out: defaultdict[str, int] = defaultdict(int)
        self.errors: defaultdict[str, int] = defaultdict(int)
        self.sessions_opened = 0
        self.sessions_resumed = 0
        # resuming hellos answered with a new session (gone, wrong token, or a gap)
        self.resumes_refused = 0
        # frames sent again to resumed sessions
        self.replayed = 0
        self.sessions_closed: defaultdict[str, int] = defaultdict(int)
        # connections the server closed with their session kept resumable, by reason
        self.disconnects: defaultdict[str, int] = defaultdict(int)
        # connections closed 4508 because they did not read (with or without a session)
        self.slow_consumers = 0
        # bad input answered with an error, by code (errors.BAD_INPUT_CODES)
        self.bad_messages: defaultdict[str, int] = defaultdict(int)
        self.call_durations = Histogram(CALL_BUCKETS)  # client calls; the service observes it
        self._sessions = sessions
        # set by the service: open connections, connections refused by kind, and the
        # store's (bytes kept, frames trimmed, bytes trimmed) when it tells them
        self.connections: Callable[[], int] | None = None
        self.refused: Mapping[str, int] = {}
        self.replay: Callable[[], tuple[int, int, int]] | None = None
        # bytes waiting in the connections' send queues
        self.send_queue: Callable[[], int] | None = None
        # (session, topic) presence memberships known here (the broker)
        self.presence: Callable[[], int] | None = None
        # a cluster node's Redis engine (RedisEngine.stats)
        self.cluster: Callable[[], ClusterStats] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def observe_call(self, seconds: float) -> None:
        """Record one client call's duration."""
        self.call_durations.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        """prometheus_client collector protocol."""
        yield _gauge("wsservice_sessions", "Sessions now open.", self._sessions())
        if self.connections is not None:
            yield _gauge("wsservice_connections",
                         "Connections now open, counted from TCP accept.", self.connections())
        yield _labelled("wsservice_connections_refused",
                        "Connections refused at accept, by limit (connections: "
                        "max_connections; peer_connections: max_peer_connections; "
                        "rate: peer_connect_rate).", "limit", self.refused)
        if self.send_queue is not None:
            yield _gauge("wsservice_send_queue_bytes",
                         "Bytes waiting to be written past the transports' own buffers, all "
                         "connections (each is closed 4508 past max_send_queue).",
                         self.send_queue())
        if self.presence is not None:
            yield _gauge("wsservice_presence_members",
                         "Presence memberships (session in a topic) this node holds.",
                         self.presence())
        if self.replay is not None:
            kept, trimmed, trimmed_bytes = self.replay()
            yield _gauge("wsservice_replay_bytes",
                         "Bytes kept in replay buffers, all sessions.", kept)
            yield _counter("wsservice_replay_trimmed_messages",
                           "Replay-buffer messages dropped to stay within max_replay_memory.",
                           trimmed)
            yield _counter("wsservice_replay_trimmed_bytes",
                           "Replay-buffer bytes dropped to stay within max_replay_memory.",
                           trimmed_bytes)
        if self.cluster is not None:
            stats = self.cluster()
            yield _gauge("wsservice_redis_up",
                         "1 while this node is in step with its Redis, else 0.", stats.up)
            yield _counter("wsservice_redis_batches",
                           "Batch scripts sent to Redis (one per reactor turn with work).",
                           stats.batches)
            yield _counter("wsservice_redis_outages", "Times this node lost its Redis.",
                           stats.outages)
            yield _counter("wsservice_sessions_adopted", "Sessions taken over from nodes "
                           "that stopped announcing themselves.", stats.adopted)
            yield stats.round_trips.family(
                "wsservice_redis_round_trip_seconds",
                "Time from sending a script to Redis (a batch, heartbeat, claim, ...) to its "
                "answer.")
            yield _labelled("wsservice_redis_errors",
                            "Scripts sent to Redis that failed, by cause (connection: the "
                            "connection was lost or absent; timeout: no answer in time; "
                            "reply: Redis answered with an error).", "cause", stats.errors)
        yield _counter("wsservice_sessions_opened", "Sessions opened.", self.sessions_opened)
        yield _counter("wsservice_sessions_resumed", "Sessions resumed.", self.sessions_resumed)
        yield _labelled("wsservice_resumes",
                        "Hellos that asked to resume, by result (resumed; refused: answered "
                        "with a new session because the session was gone, the token wrong "
                        "or messages missing).", "result",
                        {"resumed": self.sessions_resumed, "refused": self.resumes_refused})
        yield _counter("wsservice_replayed_messages",
                       "Messages sent again to resumed sessions.", self.replayed)
        yield _labelled("wsservice_sessions_closed", "Sessions ended, by reason.", "reason",
                        self.sessions_closed)
        yield _labelled("wsservice_disconnects",
                        "Connections the server closed, their session kept resumable, by "
                        "reason (slow_consumer, rate_limited, ...).", "reason",
                        self.disconnects)
        yield _counter("wsservice_slow_consumer_closes",
                       "Connections closed 4508 because more than max_send_queue bytes were "
                       "waiting to be written to them.", self.slow_consumers)
        yield _labelled("wsservice_messages_received", "Client messages received, by type.",
                        "type", self.messages_in)
        yield _labelled("wsservice_messages_sent", "Server messages sent, by type.", "type",
                        self.messages_out)
        yield _labelled("wsservice_errors", "Error messages sent, by code.", "code",
                        self.errors)
        yield _labelled("wsservice_bad_messages",
                        "Bad client messages answered with an error, by code (bad_json, "
                        "bad_message, already_registered, rate_limited: a message over the "
                        "rate).", "code", self.bad_messages)
        yield self.call_durations.family("wsservice_call_duration_seconds",
                                 "Time from a client call to its reply.")
