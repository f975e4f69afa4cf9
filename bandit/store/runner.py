"""Every script call of the store goes through here: by SHA, one round trip per call batch
(one per shard in a cluster), acknowledged by replicas when configured, and scripts a server
does not know (restarted, or a replica promoted since) loaded and only those calls run again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster
from redis.client import NEVER_DECODE
from redis.commands.core import AsyncScript

from bandit.errors import StoreUnavailable
from bandit.store.connection import Client
from bandit.store.failures import call, failures, on_replica, translate

#: A script, its keys and its arguments.
ScriptCall = tuple[AsyncScript, list[str], list[Any]]


class ScriptRunner:
    """``wait_replicas`` > 0: every write batch is acknowledged only once that many replicas
    have it (Redis ``WAIT``, at most ``wait_timeout_ms``); otherwise the caller gets
    ``StoreUnavailable`` (the write reached the primary and may survive: retrying an event or
    a sticky unit is safe, dedup makes the retry count once)."""

    def __init__(self, client: Client, *, wait_replicas: int, wait_timeout_ms: int) -> None:
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms

    async def write(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """One script call that changes state, acknowledged by replicas when configured."""
        return (await self.run([(script, keys, args)], wait=True))[0]

    async def run(self, calls: Sequence[ScriptCall], *, wait: bool,
                  raw: bool = False) -> list[Any]:
        """Script calls in one round trip (one per shard in a cluster), by SHA.

        With ``wait`` and replica acknowledgement configured, ``WAIT`` follows the writes on
        the same connection (Redis counts a client's own writes), per shard in a cluster.
        Scripts a server does not know (restarted, or a replica promoted since) are loaded
        and only those calls run again, so nothing runs twice. ``raw``: the replies as bytes,
        not decoded (binary values in them).
        """
        wait = wait and self._wait_replicas > 0
        results = await self._pipeline(calls, wait, raw)
        missing = [i for i, result in enumerate(results)
                   if isinstance(result, redis_errors.NoScriptError)]
        if missing:
            for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
                await call(self._client.script_load, script.script)
            retried = await self._pipeline([calls[i] for i in missing], wait, raw)
            for i, result in zip(missing, retried, strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, Exception):
                if on_replica(result) and not isinstance(self._client, RedisCluster):
                    # A script write on a node that is a replica now (a primary demoted by a
                    # failover): drop the pool's connections, so the next ones go to the
                    # primary Sentinel names (a fixed redis:// URL gets the same node again).
                    await self._client.connection_pool.disconnect(inuse_connections=False)
                raise translate(result) from result
        return results

    async def _pipeline(self, calls: Sequence[ScriptCall], wait: bool,
                        raw: bool = False) -> list[Any]:
        targets = await self._shards([keys[0] for _, keys, _ in calls]) if wait else []
        with failures():
            async with self._client.pipeline(transaction=False) as pipe:
                for script, keys, args in calls:
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args,
                                         **({NEVER_DECODE: True} if raw else {}))
                for node, marker in targets:
                    # WAIT covers what this connection wrote. A call that wrote nothing (a resent
                    # duplicate) would leave an older offset to wait for; the marker write moves
                    # it past every write the shard has applied, the earlier attempt's included.
                    pipe.execute_command("SET", marker, "1")
                    pipe.execute_command("WAIT", self._wait_replicas, self._wait_timeout_ms,
                                         **({"target_nodes": node} if self._cluster else {}))
                results = list(await call(pipe.execute, raise_on_error=False))
        for acknowledged in results[len(calls) + 1::2]:
            if isinstance(acknowledged, int) and acknowledged < self._wait_replicas:
                raise StoreUnavailable(
                    f"the write reached the primary but only {acknowledged} of "
                    f"{self._wait_replicas} replicas acknowledged it within "
                    f"{self._wait_timeout_ms} ms (wait_replicas); retrying is safe: events "
                    "and sticky units are deduplicated")
        return results[: len(calls)]

    async def _shards(self, keys: list[str]) -> list[tuple[Any, str]]:
        """Where ``WAIT`` goes (once on a single server, once per written shard in a
        cluster), each with a key of that shard for the marker write."""
        if not self._cluster:
            return [(None, _ack_marker(keys[0]))]
        cluster = self._client
        assert isinstance(cluster, RedisCluster)
        await call(cluster.initialize)
        nodes: dict[str, tuple[Any, str]] = {}
        for key in keys:
            node = cluster.get_node_from_key(key)
            if node is None:
                raise StoreUnavailable(f"no Redis Cluster node serves {key!r}; retry shortly")
            nodes.setdefault(node.name, (node, _ack_marker(key)))
        return list(nodes.values())


def _ack_marker(key: str) -> str:
    """``P:{E}:ack`` for any key ``P:{E}:...`` of experiment E: same slot, same shard."""
    return f"{key[: key.index('}') + 1]}:ack"
