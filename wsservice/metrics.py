"""Service metrics: plain integer counters on the hot path, exported to Prometheus on scrape."""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from typing import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0)


class Metrics:
    """Counters the service bumps per message; a prometheus_client collector reads them on scrape.

    Plain dict increments cost far less than prometheus_client's locked children on every
    message, and a scrape is rare.
    """

    def __init__(self, sessions: Callable[[], int]) -> None:
        self.messages_in: defaultdict[str, int] = defaultdict(int)
        self.messages_out: defaultdict[str, int] = defaultdict(int)
        self.errors: defaultdict[str, int] = defaultdict(int)
        self.sessions_opened = 0
        self.sessions_resumed = 0
        self.sessions_closed: defaultdict[str, int] = defaultdict(int)
        # connections the server closed with their session kept resumable, by reason
        self.disconnects: defaultdict[str, int] = defaultdict(int)
        self._call_buckets = [0] * (len(CALL_BUCKETS) + 1)
        self._call_sum = 0.0
        self._sessions = sessions
        # set by the service: open connections, connections refused by kind, and the
        # store's (bytes kept, frames trimmed, bytes trimmed) when it tells them
        self.connections: Callable[[], int] | None = None
        self.refused: Mapping[str, int] = {}
        self.replay: Callable[[], tuple[int, int, int]] | None = None
        # a cluster node's (Redis usable: 0/1, batches sent, outages, sessions adopted)
        self.cluster: Callable[[], tuple[int, int, int, int]] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def observe_call(self, seconds: float) -> None:
        """Record one client call's duration."""
        self._call_buckets[bisect_left(CALL_BUCKETS, seconds)] += 1
        self._call_sum += seconds

    def collect(self) -> Iterator[Metric]:
        """prometheus_client collector protocol."""
        g = GaugeMetricFamily("wsservice_sessions", "Sessions now open.")
        g.add_metric([], self._sessions())
        yield g
        if self.connections is not None:
            g = GaugeMetricFamily("wsservice_connections",
                                  "Connections now open, counted from TCP accept.")
            g.add_metric([], self.connections())
            yield g
        c = CounterMetricFamily("wsservice_connections_refused",
                                "Connections refused at accept, by limit (connections: "
                                "max_connections; peer_connections: max_peer_connections; "
                                "rate: peer_connect_rate).", labels=["limit"])
        for limit, n in sorted(self.refused.items()):
            c.add_metric([limit], n)
        yield c
        if self.replay is not None:
            kept, trimmed, trimmed_bytes = self.replay()
            g = GaugeMetricFamily("wsservice_replay_bytes",
                                  "Bytes kept in replay buffers, all sessions.")
            g.add_metric([], kept)
            yield g
            c = CounterMetricFamily("wsservice_replay_trimmed_messages",
                                    "Replay-buffer messages dropped to stay within "
                                    "max_replay_memory.")
            c.add_metric([], trimmed)
            yield c
            c = CounterMetricFamily("wsservice_replay_trimmed_bytes",
                                    "Replay-buffer bytes dropped to stay within "
                                    "max_replay_memory.")
            c.add_metric([], trimmed_bytes)
            yield c
        if self.cluster is not None:
            up, batches, outages, adopted = self.cluster()
            g = GaugeMetricFamily("wsservice_redis_up",
                                  "1 while this node is in step with its Redis, else 0.")
            g.add_metric([], up)
            yield g
            for name, doc, value in (
                    ("wsservice_redis_batches", "Batch scripts sent to Redis (one per "
                     "reactor turn with work).", batches),
                    ("wsservice_redis_outages", "Times this node lost its Redis.", outages),
                    ("wsservice_sessions_adopted", "Sessions taken over from nodes that "
                     "stopped announcing themselves.", adopted)):
                c = CounterMetricFamily(name, doc)
                c.add_metric([], value)
                yield c
        c = CounterMetricFamily("wsservice_sessions_opened", "Sessions opened.")
        c.add_metric([], self.sessions_opened)
        yield c
        c = CounterMetricFamily("wsservice_sessions_resumed", "Sessions resumed.")
        c.add_metric([], self.sessions_resumed)
        yield c
        c = CounterMetricFamily("wsservice_sessions_closed", "Sessions ended, by reason.",
                                labels=["reason"])
        for reason, n in sorted(self.sessions_closed.items()):
            c.add_metric([reason], n)
        yield c
        c = CounterMetricFamily("wsservice_disconnects",
                                "Connections the server closed, their session kept resumable, "
                                "by reason (slow_consumer, rate_limited, ...).",
                                labels=["reason"])
        for reason, n in sorted(self.disconnects.items()):
            c.add_metric([reason], n)
        yield c
        for name, doc, counts in (
            ("wsservice_messages_received", "Client messages received, by type.", self.messages_in),
            ("wsservice_messages_sent", "Server messages sent, by type.", self.messages_out),
        ):
            c = CounterMetricFamily(name, doc, labels=["type"])
            for kind, n in sorted(counts.items()):
                c.add_metric([kind], n)
            yield c
        c = CounterMetricFamily("wsservice_errors", "Error messages sent, by code.", labels=["code"])
        for code, n in sorted(self.errors.items()):
            c.add_metric([code], n)
        yield c
        buckets, running = [], 0
        for bound, n in zip(CALL_BUCKETS + (float("inf"),), self._call_buckets):
            running += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        h = HistogramMetricFamily("wsservice_call_duration_seconds",
                                  "Time from a client call to its reply.")
        h.add_metric([], buckets, self._call_sum)
        yield h
