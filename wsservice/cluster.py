"""Making a node of a cluster: the Redis engine, store and broker that share one Redis."""

from __future__ import annotations

from typing import Any

from . import fastpath
from .clustersession import ClusterSession
from .config import Settings
from .redisengine import RedisEngine
from .redisstore import RedisBroker, RedisSessionStore
from .redisurl import parse_redis_url


def cluster_seams(url: str, node_id: str | None = None, settings: Settings | None = None,
                  reactor: Any = None, prefix: str = "wss:",
                  clock: Any = None) -> tuple[RedisEngine, RedisSessionStore, RedisBroker]:
    """(engine, store, broker) of a node on the Redis at ``url``; the engine is a service to
    start (it connects, and reconnects with backoff) and stop (it leaves the cluster)."""
    settings = settings or Settings()
    engine = RedisEngine(parse_redis_url(url), node_id, prefix, reactor,
                         fast=fastpath.choose_redis(settings.fast_path))
    store = RedisSessionStore(engine, clock or engine.reactor,
                              settings.replay_limit if settings.resume_ttl > 0 else 0,
                              settings.replay_bytes, settings.resume_ttl)
    store.session_class = ClusterSession
    return engine, store, RedisBroker(engine)
