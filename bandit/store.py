"""The Redis store: experiments, posterior statistics, sticky units, event dedup.

All writes go through the Lua scripts in ``bandit.scripts`` (registered once, called by SHA),
so that concurrent processes never lose an update: no count is ever read into Python, changed
and written back. Connection and timeout errors become ``StoreUnavailable`` here, so callers
see one exception for "Redis cannot be reached".
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt
import orjson
import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.commands.core import AsyncScript

from bandit import scripts
from bandit.errors import Conflict, NotFound, StoreUnavailable
from bandit.keys import Keys, registry, signing_key
from bandit.model import Experiment

T = TypeVar("T")

APPLIED, DUPLICATE, UNKNOWN_DECISION, WRONG_ARM = 1, 0, 2, 3


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
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._apply_events = client.register_script(scripts.APPLY_EVENTS)
        self._record_provisional = client.register_script(scripts.RECORD_PROVISIONAL)
        self._create = client.register_script(scripts.CREATE)
        self._update = client.register_script(scripts.UPDATE)
        self._read = client.register_script(scripts.READ)
        self._sticky = client.register_script(scripts.STICKY)
        self._history_append = client.register_script(scripts.HISTORY_APPEND)

    @classmethod
    def from_url(cls, url: str, prefix: str, *, timeout_s: float, max_connections: int,
                 pool_timeout_s: float = 0.5) -> RedisStore:
        # A blocking pool with a short wait: a burst beyond the pool (or a stuck Redis holding
        # every connection) waits briefly for a free one, then fails with a clear 503,
        # instead of opening unbounded connections or queueing requests without end.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            decode_responses=True,
            health_check_interval=30,
        )
        return cls(aioredis.Redis(connection_pool=pool), prefix)

    @property
    def client(self) -> aioredis.Redis:
        """The underlying redis-py client (streams, tooling); writes to experiment keys go
        through this class's scripts."""
        return self._client

    async def close(self) -> None:
        await self._client.aclose(close_connection_pool=True)

    def keys(self, experiment_id: str) -> Keys:
        return Keys(self._prefix, experiment_id)

    async def ping(self) -> bool:
        return bool(await _call(self._client.ping))

    async def signing_key(self) -> bytes:
        """The decision-signing secret every process shares; the first caller creates it."""
        name = signing_key(self._prefix)
        await _call(self._client.set, name, secrets.token_hex(32), nx=True)
        return bytes.fromhex(await _call(self._client.get, name))

    async def create(self, experiment: Experiment, audit_entry: dict[str, Any]) -> None:
        keys = self.keys(experiment.id)
        created = await _call(
            self._create,
            keys=[keys.meta, keys.stats, keys.audit],
            args=[_config_json(experiment), experiment.reward, _half_life(experiment),
                  orjson.dumps(audit_entry)],
        )
        # The registry is not in the experiment's slot, so it cannot join the script. A crash
        # between the two leaves an experiment that is not listed; the next create attempt of
        # the same id (refused) adds it, since SADD is idempotent.
        await _call(self._client.sadd, registry(self._prefix), experiment.id)
        if not created:
            raise Conflict(f"experiment {experiment.id!r} already exists")

    async def update(self, experiment: Experiment, expected_version: int,
                     audit_entry: dict[str, Any]) -> int:
        """Store a changed configuration and its audit entry; ``experiment.version`` must be
        expected + 1."""
        keys = self.keys(experiment.id)
        result = await _call(
            self._update,
            keys=[keys.meta, keys.stats, keys.audit],
            args=[str(expected_version), _config_json(experiment), _half_life(experiment),
                  "1" if experiment.archived else "0", orjson.dumps(audit_entry)],
        )
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
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.exists(self.keys(experiment_id).meta)
            pipe.lrange(key, start, -1)
            exists, entries = await _call(pipe.execute)
        return list(entries) if exists else None

    async def append_history(self, samples: dict[str, dict[str, Any]], interval_s: float,
                             max_samples: int) -> dict[str, int]:
        """Offer one sample per experiment; each lands only if its interval has passed."""
        order = list(samples)
        async with self._client.pipeline(transaction=False) as pipe:
            for experiment_id in order:
                keys = self.keys(experiment_id)
                await self._history_append(
                    keys=[keys.history, keys.meta],
                    args=[repr(interval_s), str(max_samples), orjson.dumps(samples[experiment_id])],
                    client=pipe)
            results = await _call(pipe.execute)
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
        async with self._client.pipeline(transaction=False) as pipe:
            for experiment_id in experiment_ids:
                pipe.hgetall(self.keys(experiment_id).served)
            results = await _call(pipe.execute)
        return [{int(k): int(v) for k, v in result.items()} for result in results]

    async def list_ids(self) -> list[str]:
        return sorted(await _call(self._client.smembers, registry(self._prefix)))

    async def read(self, experiment_id: str) -> StoredState | None:
        keys = self.keys(experiment_id)
        result = await _call(self._read, keys=[keys.meta, keys.stats])
        if not result:
            return None
        return _decode_state(result)

    async def read_many(self, experiment_ids: Sequence[str]) -> list[StoredState | None]:
        async with self._client.pipeline(transaction=False) as pipe:
            for experiment_id in experiment_ids:
                keys = self.keys(experiment_id)
                await self._read(keys=[keys.meta, keys.stats], client=pipe)
            results = await _call(pipe.execute)
        return [_decode_state(result) if result else None for result in results]

    async def revisions(self, experiment_ids: Sequence[str]) -> list[int | None]:
        """The change counter of each experiment (None when it no longer exists)."""
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
        async with self._client.pipeline(transaction=False) as pipe:
            for experiment_id in order:
                keys = self.keys(experiment_id)
                await self._apply_events(
                    keys=[keys.meta, keys.stats],
                    args=[keys.prefix_with_tag, window_ms, _encode_events(batches[experiment_id])],
                    client=pipe,
                )
            results = await _call(pipe.execute)
        return {
            experiment_id: None if result[0] < 0 else [int(s) for s in result[1]]
            for experiment_id, result in zip(order, results, strict=True)
        }

    async def record_provisional(self, experiment_id: str, decision_ids: Sequence[str],
                                 arm_indices: Sequence[int], window_s: float) -> bool:
        keys = self.keys(experiment_id)
        result = await _call(
            self._record_provisional,
            keys=[keys.meta, keys.stats, *(keys.decision(d) for d in decision_ids)],
            args=[str(math.ceil(window_s * 1000)), *(str(i) for i in arm_indices)],
        )
        return bool(result[0] == 1)

    async def sticky_assignment(self, experiment_id: str, unit_field: str, proposed: str) -> str:
        return str(await _call(self._sticky, keys=[self.keys(experiment_id).units],
                               args=[unit_field, proposed]))

    async def add_served(self, served: dict[str, dict[int, int]]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for experiment_id, per_arm in served.items():
                key = self.keys(experiment_id).served
                for arm_index, count in per_arm.items():
                    pipe.hincrby(key, str(arm_index), count)
            await _call(pipe.execute)

    async def delete_all(self, experiment_id: str) -> None:
        """Remove every key of an experiment (tests and tooling; archive is the API's delete)."""
        keys = self.keys(experiment_id)
        batch: list[str] = []
        async for key in self._client.scan_iter(match=keys.pattern, count=1000):
            batch.append(key)
        if batch:
            await _call(self._client.delete, *batch)
        await _call(self._client.srem, registry(self._prefix), experiment_id)


async def _call(function: Callable[..., Awaitable[T]] | AsyncScript, *args: Any,
                **kwargs: Any) -> Any:
    try:
        return await function(*args, **kwargs)
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as error:
        if isinstance(error.__cause__, TimeoutError) and "No connection available" in str(error):
            raise StoreUnavailable("every Redis connection of this process is busy (Redis is "
                                   "slow or unreachable, or the load is over capacity); retry "
                                   "shortly") from error
        raise StoreUnavailable(f"Redis is unreachable: {error}") from error
    except redis_errors.BusyLoadingError as error:
        raise StoreUnavailable("Redis is loading its data set; retry shortly") from error


def _config_json(experiment: Experiment) -> str:
    return orjson.dumps(experiment.to_json()).decode()


def _half_life(experiment: Experiment) -> str:
    half_life = experiment.exploration.half_life_s
    return "" if half_life is None else repr(half_life)


def _encode_events(events: list[EncodedEvent]) -> str:
    return "".join(
        f"{e.event_id}\t{e.arm_index}\t{e.reward!r}\t{'-' if e.ts is None else repr(e.ts)}\t"
        f"{e.decision_id or '-'}\n"
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
