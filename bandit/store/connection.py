"""Clients for every kind of Redis URL (``bandit.redisurl``): one server, a Redis Cluster, or a
primary watched by Sentinel, with the service's timeouts and pool bounds."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff

from bandit.redisurl import parse

#: What the store talks to: a single-node client (also Sentinel's) or a cluster client.
Client = aioredis.Redis | RedisCluster


def connect(url: str, *, timeout_s: float, max_connections: int,
            pool_timeout_s: float) -> Client:
    """A redis-py asyncio client for ``url``, with the service's timeouts and pool bounds.

    Every kind answers with ``decode_responses=True`` (a call may ask for bytes, see
    ``ScriptRunner.run``) and fails within ``timeout_s`` when its
    server does not answer, so the service can fall back to cached posteriors and 503.
    """
    parsed = parse(url)
    options: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
                               "decode_responses": True}
    if parsed.kind == "plain":
        # A blocking pool with a short wait: a burst beyond the pool (or a stuck Redis holding
        # every connection) waits briefly for a free one, then fails with a clear 503,
        # instead of opening unbounded connections or queueing requests without end.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout_s,
            health_check_interval=30, **options)
        return aioredis.Redis(connection_pool=pool)
    credentials: dict[str, Any] = {"username": parsed.username, "password": parsed.password}
    if parsed.kind == "cluster":
        # A few quick retries ride over a MOVED storm or a node restart; a failover (the
        # replica is promoted after cluster-node-timeout) outlasts them, and the request
        # answers 503 (decisions keep coming from cached posteriors) until it is over.
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in parsed.hosts],
            max_connections=max_connections, ssl=parsed.tls, require_full_coverage=False,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=3),
            **credentials, **options)
    sentinel = Sentinel(
        list(parsed.hosts), min_other_sentinels=0,
        sentinel_kwargs={"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
                         "password": parsed.sentinel_password},
        **options)
    client: aioredis.Redis = sentinel.master_for(
        parsed.service, db=parsed.db, max_connections=max_connections, **credentials)
    return client
