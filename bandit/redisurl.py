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
(``bandit.store.keys``), so each Lua script runs on one shard and experiments spread over all
of them. This module is the grammar (pure, for settings to check a URL at start);
``bandit.store.connection`` makes the clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PLAIN_SCHEMES = ("redis://", "rediss://", "unix://")
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
SENTINEL_SCHEMES = ("redis+sentinel://",)


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
