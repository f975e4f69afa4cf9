"""The Redis store: experiments, posterior statistics, sticky units, event dedup.

All writes go through the Lua scripts in ``bandit.store.scripts`` (registered once, called by SHA),
so that concurrent processes never lose an update: no count is ever read into Python, changed
and written back. Connection and timeout errors become ``StoreUnavailable`` here, so callers
see one exception for "Redis cannot be reached".
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt
import orjson
from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.commands.core import AsyncScript

from bandit.errors import Conflict, NotFound, StoreUnavailable
from bandit.model import Experiment
from bandit.settings import Settings, SettingsError
from bandit.store import redisurl, scripts
from bandit.store.keys import Keys, changes, dedup_window, legacy_registry, registry, signing_key
from bandit.store.redisurl import Client
from bandit.tokens import decision_key

T = TypeVar("T")
logger = logging.getLogger(__name__)
#: A script, its keys and its arguments.
ScriptCall = tuple[AsyncScript, list[str], list[Any]]

#: Statuses of the APPLY_EVENTS script (``bandit.store.scripts``), one per event.
APPLIED, DUPLICATE, UNKNOWN_DECISION, WRONG_ARM, REWARDED = 1, 0, 2, 3, 4


@dataclass(frozen=True)
class StoredState:
    """What one consistent read of an experiment returns."""

    experiment: Experiment
    #: (3, K): bernoulli successes, failures, 0; gaussian weight, mean, m2 (decayed to ``t``).
    stats: npt.NDArray[np.float64]
    #: (K,) raw observation counts.
    counts: npt.NDArray[np.float64]
    #: (K,) server time each arm's statistics were last decayed to (0 = never updated).
    updated_at: npt.NDArray[np.float64]
    revision: int
    server_time: float


class EncodedEvent(NamedTuple):
    """A reward event checked against its experiment, ready for the APPLY_EVENTS script."""

    event_id: str
    arm_index: int
    reward: float
    ts: float | None
    decision_id: str | None


class RedisStore:
    def __init__(self, client: Client, prefix: str, *, wait_replicas: int = 0,
                 wait_timeout_ms: int = 1000) -> None:
        self._client = client
        self._prefix = prefix
        self._cluster = isinstance(client, RedisCluster)
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._apply_events = client.register_script(scripts.APPLY_EVENTS)
        self._record_provisional = client.register_script(scripts.RECORD_PROVISIONAL)
        self._create = client.register_script(scripts.CREATE)
        self._update = client.register_script(scripts.UPDATE)
        self._read = client.register_script(scripts.READ)
        self._sticky = client.register_script(scripts.STICKY)
        self._history_append = client.register_script(scripts.HISTORY_APPEND)

    @classmethod
    def from_url(cls, url: str, prefix: str, *, timeout_s: float, max_connections: int,
                 pool_timeout_s: float = 0.5, wait_replicas: int = 0,
                 wait_timeout_ms: int = 1000) -> RedisStore:
        """A store on any URL ``bandit.store.redisurl`` accepts (one server, cluster, sentinel).

        ``wait_replicas`` > 0: every write batch is acknowledged only once that many replicas
        have it (Redis ``WAIT``, at most ``wait_timeout_ms``); otherwise the caller gets
        ``StoreUnavailable`` (the write reached the primary and may survive: retrying an
        event or a sticky unit is safe, dedup makes the retry count once).
        """
        client = redisurl.connect(url, timeout_s=timeout_s, max_connections=max_connections,
                                  pool_timeout_s=pool_timeout_s)
        return cls(client, prefix, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisStore:
        assert settings.redis_url is not None
        return cls.from_url(settings.redis_url, settings.key_prefix,
                            timeout_s=settings.redis_timeout_s,
                            max_connections=settings.redis_max_connections,
                            pool_timeout_s=settings.redis_pool_timeout_s,
                            wait_replicas=settings.redis_wait_replicas,
                            wait_timeout_ms=settings.redis_wait_timeout_ms)

    @property
    def client(self) -> Client:
        """The underlying redis-py client (streams, tooling); writes to experiment keys go
        through this class's scripts."""
        return self._client

    async def close(self) -> None:
        if isinstance(self._client, RedisCluster):
            await self._client.aclose()
            return
        await self._client.aclose(close_connection_pool=True)
        if isinstance(self._client.connection_pool, SentinelConnectionPool):
            # The pool asks these sentinel clients for the primary; they hold connections too.
            await self._client.connection_pool.sentinel_manager.aclose()

    def keys(self, experiment_id: str) -> Keys:
        return Keys(self._prefix, experiment_id)

    async def ping(self) -> bool:
        return bool(await _call(self._client.ping))

    async def signing_key(self) -> bytes:
        """The decision-signing secret every process shares; the first caller creates it."""
        name = signing_key(self._prefix)
        await _call(self._client.set, name, secrets.token_hex(32), nx=True)
        return bytes.fromhex(await _call(self._client.get, name))

    async def agree_dedup_window(self, window_s: float) -> float:
        """Record this deployment's dedup window if none is, and return the recorded one.

        Dedup sets are named after the window's buckets: processes with different windows
        would not see each other's event ids and would count a resent event twice.
        """
        name = dedup_window(self._prefix)
        await _call(self._client.set, name, repr(float(window_s)), nx=True)
        return float(await _call(self._client.get, name))

    async def create(self, experiment: Experiment, audit_entry: dict[str, Any]) -> None:
        keys = self.keys(experiment.id)
        created = await self._write(
            self._create, [keys.meta, keys.stats, keys.audit],
            [_config_json(experiment), experiment.reward, _half_life(experiment),
             orjson.dumps(audit_entry)])
        # The registry is not in the experiment's slot, so it cannot join the script. A crash
        # between the two leaves an experiment that is not listed; the next create attempt of
        # the same id (refused) adds it, since ZADD is idempotent.
        await _call(self._client.zadd, registry(self._prefix), {experiment.id: 0})
        if not created:
            raise Conflict(f"experiment {experiment.id!r} already exists")

    async def update(self, experiment: Experiment, expected_version: int,
                     audit_entry: dict[str, Any]) -> int:
        """Store a changed configuration and its audit entry; ``experiment.version`` must be
        expected + 1."""
        keys = self.keys(experiment.id)
        result = await self._write(
            self._update, [keys.meta, keys.stats, keys.audit],
            [str(expected_version), _config_json(experiment), _half_life(experiment),
             "1" if experiment.archived else "0", orjson.dumps(audit_entry)])
        if result[0] == -1:
            raise NotFound(f"experiment {experiment.id!r} does not exist")
        if result[0] == 0:
            raise Conflict(
                f"experiment {experiment.id!r} is at version {result[1]}, not "
                f"{expected_version}: reload it and apply your change again"
            )
        return int(result[1])

    async def audit(self, experiment_id: str) -> list[dict[str, Any]] | None:
        """The audit log, oldest first (None when the experiment does not exist)."""
        entries = await self._experiment_list(experiment_id, self.keys(experiment_id).audit, 0)
        return None if entries is None else [orjson.loads(entry) for entry in entries]

    async def _experiment_list(self, experiment_id: str, key: str,
                               start: int) -> list[str] | None:
        """``LRANGE key start -1`` of an experiment's list, None when the experiment is gone."""
        with _failures():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.exists(self.keys(experiment_id).meta)
                pipe.lrange(key, start, -1)
                exists, entries = await _call(pipe.execute)
        return list(entries) if exists else None

    async def append_history(self, samples: dict[str, dict[str, Any]], interval_s: float,
                             max_samples: int) -> dict[str, int]:
        """Offer one sample per experiment; each lands only if its interval has passed."""
        order = list(samples)
        calls: list[ScriptCall] = []
        for experiment_id in order:
            keys = self.keys(experiment_id)
            calls.append((self._history_append, [keys.history, keys.meta],
                          [repr(interval_s), str(max_samples),
                           orjson.dumps(samples[experiment_id])]))
        # Samples are for plots: they never wait for replicas.
        results = await self._run_scripts(calls, wait=False)
        return {experiment_id: int(result) for experiment_id, result in zip(order, results,
                                                                             strict=True)}

    async def history(self, experiment_id: str, since: float,
                      limit: int) -> list[dict[str, Any]] | None:
        """Samples newer than ``since``, oldest first, at most the newest ``limit`` of them."""
        entries = await self._experiment_list(experiment_id, self.keys(experiment_id).history,
                                              -limit)
        if entries is None:
            return None
        samples = []
        for entry in entries:
            at, _, document = entry.partition("|")
            if float(at) > since:
                samples.append({"t": float(at), **orjson.loads(document)})
        return samples

    async def served(self, experiment_ids: Sequence[str]) -> list[dict[int, int]]:
        """Decisions served per arm index, as flushed by every process (one round trip).

        Snapshots are rebuilt when posteriors change; these counters change without that, so
        readers that report them fetch them fresh.
        """
        with _failures():
            async with self._client.pipeline(transaction=False) as pipe:
                for experiment_id in experiment_ids:
                    pipe.hgetall(self.keys(experiment_id).served)
                results = await _call(pipe.execute)
        return [{int(k): int(v) for k, v in result.items()} for result in results]

    async def list_ids(self, after: str | None = None, limit: int = 1000) -> list[str]:
        """Experiment ids in id order, after ``after`` (exclusive), at most ``limit``."""
        start = "-" if after is None else f"({after}"
        return list(await _call(self._client.zrange, registry(self._prefix), start, "+",
                                bylex=True, offset=0, num=limit))

    async def merge_legacy_registry(self) -> int:
        """Fold the id set of earlier versions into the ordered index (at every start: an
        older process of a rolling upgrade may still add to it); returns how many were new."""
        added = 0
        with _failures():
            async for chunk in _chunks(self._client.sscan_iter(legacy_registry(self._prefix),
                                                                count=1000), 1000):
                added += int(await self._client.zadd(  # type: ignore[arg-type]
                    registry(self._prefix), dict.fromkeys(chunk, 0)))  # (ZADD: an integer)
        return added

    @property
    def is_cluster(self) -> bool:
        return self._cluster

    @property
    def changes_channel(self) -> str:
        return changes(self._prefix)

    def subscriber(self) -> Any:
        """A pub/sub connection for the change feed (``bandit.serving.changes``); on a cluster, to
        one node, which hears what every node publishes."""
        return self._client.pubsub()

    async def read(self, experiment_id: str) -> StoredState | None:
        keys = self.keys(experiment_id)
        # Through the pipeline path like every script call: redis-py's cluster client routes a
        # direct EVALSHA by command policy, not by its keys (a MOVED storm on Redis 6.2).
        (result,) = await self._run_scripts([(self._read, [keys.meta, keys.stats], [])],
                                            wait=False)
        if not result:
            return None
        return _decode_state(result)

    async def read_many(self, experiment_ids: Sequence[str]) -> list[StoredState | None]:
        calls: list[ScriptCall] = []
        for experiment_id in experiment_ids:
            keys = self.keys(experiment_id)
            calls.append((self._read, [keys.meta, keys.stats], []))
        results = await self._run_scripts(calls, wait=False)
        return [_decode_state(result) if result else None for result in results]

    async def revisions(self, experiment_ids: Sequence[str]) -> list[int | None]:
        """The change counter of each experiment (None when it no longer exists)."""
        with _failures():
            async with self._client.pipeline(transaction=False) as pipe:
                for experiment_id in experiment_ids:
                    pipe.hget(self.keys(experiment_id).stats, "rev")
                results = await _call(pipe.execute)
        return [None if value is None else int(value) for value in results]

    async def apply_events(
        self, batches: dict[str, list[EncodedEvent]], dedup_window_s: float
    ) -> dict[str, list[int] | None]:
        """Apply each experiment's events in one script call, all in one round trip.

        Returns per experiment the status of each event (APPLIED, DUPLICATE, ...), or None when
        the experiment was archived or deleted meanwhile.
        """
        window_ms = str(max(1, math.ceil(dedup_window_s * 1000)))
        order = list(batches)
        results: list[Any] = []
        for start in range(0, len(order), 200):  # a round trip (and a loop turn) per 200
            calls: list[ScriptCall] = []
            for experiment_id in order[start:start + 200]:
                keys = self.keys(experiment_id)
                calls.append((self._apply_events, [keys.meta, keys.stats],
                              [keys.prefix_with_tag, window_ms,
                               _encode_events(batches[experiment_id])]))
            results += await self._run_scripts(calls, wait=True)
        return {
            experiment_id: None if result[0] < 0 else [int(s) for s in result[1]]
            for experiment_id, result in zip(order, results, strict=True)
        }

    async def record_provisional(self, experiment_id: str, decision_ids: Sequence[str],
                                 arm_indices: Sequence[int], window_s: float) -> bool:
        keys = self.keys(experiment_id)
        result = await self._write(
            self._record_provisional,
            [keys.meta, keys.stats, *(keys.decision(d) for d in decision_ids)],
            [str(math.ceil(window_s * 1000)), *(str(i) for i in arm_indices)])
        return bool(result[0] == 1)

    async def sticky_assignment(self, experiment_id: str, unit_field: str, proposed: str) -> str:
        return str(await self._write(self._sticky, [self.keys(experiment_id).units],
                                     [unit_field, proposed]))

    async def add_served(self, served: dict[str, dict[int, int]]) -> None:
        """Add served-decision counts; a pipeline per 500 experiments, so that a second of
        decisions spread over many experiments never holds the event loop for long. Raises
        StoreUnavailable with the counts of the chunks not stored yet left in ``served``."""
        order = list(served)
        for start in range(0, len(order), 500):
            chunk = order[start:start + 500]
            with _failures():
                async with self._client.pipeline(transaction=False) as pipe:
                    for experiment_id in chunk:
                        key = self.keys(experiment_id).served
                        for arm_index, count in served[experiment_id].items():
                            pipe.hincrby(key, str(arm_index), count)
                    await _call(pipe.execute)
            for experiment_id in chunk:
                del served[experiment_id]

    async def _write(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """One script call that changes state, acknowledged by replicas when configured."""
        return (await self._run_scripts([(script, keys, args)], wait=True))[0]

    async def _run_scripts(self, calls: Sequence[ScriptCall], *, wait: bool) -> list[Any]:
        """Script calls in one round trip (one per shard in a cluster), by SHA.

        With ``wait`` and replica acknowledgement configured, ``WAIT`` follows the writes on
        the same connection (Redis counts a client's own writes), per shard in a cluster.
        Scripts a server does not know (restarted, or a replica promoted since) are loaded
        and only those calls run again, so nothing runs twice.
        """
        wait = wait and self._wait_replicas > 0
        results = await self._pipeline(calls, wait)
        missing = [i for i, result in enumerate(results)
                   if isinstance(result, redis_errors.NoScriptError)]
        if missing:
            for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
                await _call(self._client.script_load, script.script)
            retried = await self._pipeline([calls[i] for i in missing], wait)
            for i, result in zip(missing, retried, strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, Exception):
                if _on_replica(result) and not isinstance(self._client, RedisCluster):
                    # A script write on a node that is a replica now (a primary demoted by a
                    # failover): drop the pool's connections, so the next ones go to the
                    # primary Sentinel names (a fixed redis:// URL gets the same node again).
                    await self._client.connection_pool.disconnect(inuse_connections=False)
                raise _translate(result) from result
        return results

    async def _pipeline(self, calls: Sequence[ScriptCall], wait: bool) -> list[Any]:
        targets = await self._shards([keys[0] for _, keys, _ in calls]) if wait else []
        with _failures():
            async with self._client.pipeline(transaction=False) as pipe:
                for script, keys, args in calls:
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                for node, marker in targets:
                    # WAIT covers what this connection wrote. A call that wrote nothing (a resent
                    # duplicate) would leave an older offset to wait for; the marker write moves
                    # it past every write the shard has applied, the earlier attempt's included.
                    pipe.execute_command("SET", marker, "1")
                    pipe.execute_command("WAIT", self._wait_replicas, self._wait_timeout_ms,
                                         **({"target_nodes": node} if self._cluster else {}))
                results = list(await _call(pipe.execute, raise_on_error=False))
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
        await _call(cluster.initialize)
        nodes: dict[str, tuple[Any, str]] = {}
        for key in keys:
            node = cluster.get_node_from_key(key)
            if node is None:
                raise StoreUnavailable(f"no Redis Cluster node serves {key!r}; retry shortly")
            nodes.setdefault(node.name, (node, _ack_marker(key)))
        return list(nodes.values())

    async def delete_all(self, experiment_id: str) -> None:
        """Remove every key of an experiment (tests and tooling; archive is the API's delete)."""
        keys = self.keys(experiment_id)
        batch: list[str] = []
        async for key in self._client.scan_iter(match=keys.pattern, count=1000):
            batch.append(key)
        if batch:
            await _call(self._client.delete, *batch)
        await _call(self._client.zrem, registry(self._prefix), experiment_id)


_RETRYABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError,
              redis_errors.BusyLoadingError, redis_errors.ClusterError,
              redis_errors.TryAgainError, redis_errors.ClusterDownError,
              redis_errors.MasterDownError)


async def check_deployment(settings: Settings) -> None:
    """Before a process starts serving: refuse a dedup window that differs from the one the
    deployment's other processes use (``SettingsError``). When Redis cannot be reached the
    check is skipped (the process starts and answers 503 until Redis is back)."""
    store = RedisStore.from_settings(settings)
    try:
        agreed = await store.agree_dedup_window(settings.dedup_window_s)
        moved = await store.merge_legacy_registry()
        if moved:
            logger.info("merged %d experiment ids of an earlier version into the index", moved)
    except StoreUnavailable as error:
        logger.warning("could not check the shared dedup window: %s", error)
        return
    finally:
        await store.close()
    if agreed != float(settings.dedup_window_s):
        raise SettingsError(
            f"dedup_window_s: {settings.dedup_window_s:g} s, but this deployment's processes "
            f"use {agreed:g} s (recorded in Redis under {dedup_window(settings.key_prefix)!r}): "
            "processes with different windows would count a resent event twice. Use "
            f"{agreed:g}, or stop every process and delete that key to change it (the event "
            "ids remembered so far are then forgotten).")


async def _chunks(items: AsyncIterator[str], size: int) -> AsyncIterator[list[str]]:
    chunk: list[str] = []
    async for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _call(function: Callable[..., Awaitable[T]] | AsyncScript, *args: Any,
                **kwargs: Any) -> Any:
    with _failures():
        return await function(*args, **kwargs)


@contextmanager
def _failures() -> Iterator[None]:
    """Redis being unreachable (or a cluster shard failing over), inside the block, becomes
    ``StoreUnavailable``: a cluster pipeline already talks to Redis when it is entered."""
    try:
        yield
    except _RETRYABLE as error:
        raise _translate(error) from error


def _on_replica(error: Exception) -> bool:
    """A write refused because the node is a replica. Inside a script Redis reports it as a
    script error (a plain ResponseError naming READONLY), not as redis-py's ReadOnlyError."""
    return isinstance(error, redis_errors.ReadOnlyError) or (
        isinstance(error, redis_errors.ResponseError) and "-READONLY " in str(error))


def _translate(error: Exception) -> Exception:
    """Redis failures the caller should retry become ``StoreUnavailable``; others stay."""
    if _on_replica(error):
        return StoreUnavailable("Redis refused a write: the node is a replica (a failover in "
                                "progress, or a URL that names a replica); retry shortly")
    if isinstance(error, redis_errors.BusyLoadingError):
        return StoreUnavailable("Redis is loading its data set; retry shortly")
    if isinstance(error, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)):
        if isinstance(error.__cause__, TimeoutError) and "No connection available" in str(error):
            return StoreUnavailable("every Redis connection of this process is busy (Redis is "
                                    "slow or unreachable, or the load is over capacity); "
                                    "retry shortly")
        return StoreUnavailable(f"Redis is unreachable: {error}")
    if isinstance(error, (redis_errors.ClusterError, redis_errors.TryAgainError,
                          redis_errors.ClusterDownError, redis_errors.MasterDownError)):
        return StoreUnavailable(f"the Redis Cluster is not serving this experiment's shard "
                                f"(a failover in progress?): {error}; retry shortly")
    return error


def _ack_marker(key: str) -> str:
    """``P:{E}:ack`` for any key ``P:{E}:...`` of experiment E: same slot, same shard."""
    return f"{key[: key.index('}') + 1]}:ack"


def _config_json(experiment: Experiment) -> str:
    return orjson.dumps(experiment.to_json()).decode()


def _half_life(experiment: Experiment) -> str:
    half_life = experiment.exploration.half_life_s
    return "" if half_life is None else repr(half_life)


def _encode_events(events: list[EncodedEvent]) -> str:
    # A slate's reward marker holds its unique head, not its (up to 3,000-digit) arm list.
    return "".join(
        f"{e.event_id}\t{e.arm_index}\t{e.reward!r}\t{'-' if e.ts is None else repr(e.ts)}\t"
        f"{'-' if e.decision_id is None else decision_key(e.decision_id)}\n"
        for e in events
    )


def _decode_state(result: list[Any]) -> StoredState:
    config, flat_stats, server_time = result
    experiment = Experiment.from_json(orjson.loads(config))
    arms = len(experiment.arms)
    gaussian = experiment.reward == "gaussian"
    stats = np.zeros((3, arms))
    counts = np.zeros(arms)
    updated_at = np.zeros(arms)
    rows = {"w": 0, "m": 1, "q": 2} if gaussian else {"s": 0, "f": 1}
    revision = 0
    for position in range(0, len(flat_stats), 2):
        name, value = flat_stats[position], flat_stats[position + 1]
        if name == "rev":
            revision = int(value)
            continue
        index_text, _, kind = name.partition(":")
        index = int(index_text)
        if index >= arms:
            continue  # written for an arm of a newer configuration than this snapshot read
        if kind == "n":
            counts[index] = float(value)
        elif kind == "t":
            updated_at[index] = float(value)
        elif kind in rows:
            stats[rows[kind], index] = float(value)
    return StoredState(experiment, stats, counts, updated_at, revision,
                       float(server_time))
