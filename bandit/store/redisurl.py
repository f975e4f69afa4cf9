"""Redis URLs: one server, a Redis Cluster, or a primary watched by Sentinel.

=============================================================  ==================================
``redis://[user:password@]host:port/db``, ``rediss://``,       one server (redis-py's URL rules)
``unix:///path/redis.sock``
``redis+cluster://[user:password@]host:port[,host:port...]``   a Redis Cluster: any reachable
(``rediss+cluster://`` for TLS)                                startup node finds the rest
``redis+sentinel://[user:password@]host:port[,host:port...]``  the primary the sentinels name
``/SERVICE[/DB][?sentinel_password=...]``                      as ``SERVICE``; follows failovers
=============================================================  ==================================

In a cluster every key of one experiment carries the hash tag ``{<experiment id>}``
(``bandit.store.keys``), so each Lua script runs on one shard and experiments spread over all of
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff

#: What the store talks to: a single-node client (also Sentinel's) or a cluster client.
Client = aioredis.Redis | RedisCluster

PLAIN_SCHEMES = ("redis://", "rediss://", "unix://")
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
SENTINEL_SCHEMES = ("redis+sentinel://",)
SCHEMES = PLAIN_SCHEMES + CLUSTER_SCHEMES + SENTINEL_SCHEMES


class RedisUrlError(ValueError):
    """A Redis URL the service cannot use; the message says what is wrong."""


@dataclass(frozen=True)
class ParsedUrl:
    kind: str  # "plain", "cluster" or "sentinel"
    hosts: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = None
    tls: bool = False
    service: str = ""
    db: int = 0
    sentinel_password: str | None = None


def parse(url: str) -> ParsedUrl:
    """Check a Redis URL; raises ``RedisUrlError`` naming the problem (never the password)."""
    shown = redacted(url)
    if url.startswith(PLAIN_SCHEMES):
        return ParsedUrl("plain")
    if not url.startswith(CLUSTER_SCHEMES + SENTINEL_SCHEMES):
        raise RedisUrlError(f"{shown!r} is not a redis://, rediss://, unix://, redis+cluster:// "
                            "or redis+sentinel:// URL")
    parts = urlsplit(url)
    credentials, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    hosts = tuple(_host(text, shown) for text in hostlist.split(","))
    common: dict[str, Any] = {"hosts": hosts, "username": unquote(username) or None,
                              "password": unquote(password) or None}
    query = parse_qs(parts.query)
    if parts.scheme.endswith("+cluster"):
        if parts.path not in ("", "/"):
            raise RedisUrlError(f"{shown!r}: a Redis Cluster has only database 0; drop the path")
        return ParsedUrl("cluster", tls=parts.scheme == "rediss+cluster", **common)
    path = [segment for segment in parts.path.split("/") if segment]
    if not path or len(path) > 2:
        raise RedisUrlError(f"{shown!r}: name the monitored service, "
                            "redis+sentinel://host:port,.../SERVICE[/DB]")
    db = path[1] if len(path) == 2 else "0"
    if not db.isdigit():
        raise RedisUrlError(f"{shown!r}: database {db!r} is not a number")
    sentinel_password = query.get("sentinel_password", [None])[0]
    return ParsedUrl("sentinel", service=path[0], db=int(db),
                     sentinel_password=sentinel_password, **common)


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs and error messages."""
    scheme, separator, rest = url.partition("://")
    credentials, at, hosts = rest.rpartition("@")
    if not separator or not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hosts}"


def _host(text: str, url: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisUrlError(f"{url!r}: {text!r} is not host:port")
    return host.strip("[]"), int(port)


def connect(url: str, *, timeout_s: float, max_connections: int,
            pool_timeout_s: float) -> Client:
    """A redis-py asyncio client for ``url``, with the service's timeouts and pool bounds.

    Every kind answers with ``decode_responses=True`` and fails within ``timeout_s`` when its
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
