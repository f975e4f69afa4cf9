"""The Redis store: experiments, posterior statistics, sticky units, event dedup.

All writes go through the Lua scripts in ``bandit.store.scripts`` (registered once, called by
SHA through ``bandit.store.runner``), so that concurrent processes never lose an update: no
count is ever read into Python, changed and written back. Connection and timeout errors become
``StoreUnavailable`` (``bandit.store.failures``), so callers see one exception for "Redis
cannot be reached".
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt
import orjson
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from bandit.errors import Conflict, NotFound, stale
from bandit.layers import Layer, layer_from_json
from bandit.model import Experiment
from bandit.settings import Settings
from bandit.store import connection, scripts
from bandit.store.codec import (
    SEGMENT_SEPARATOR,
    Draws,
    EncodedEvent,
    HistoryRings,
    StoredState,
    Traffic,
    arm_sums,
    config_json,
    decode_draws,
    decode_segments,
    decode_state,
    encode_draws,
    encode_events,
    encode_row,
    half_life,
    text,
)
from bandit.store.connection import Client
from bandit.store.failures import call, failures
from bandit.store.keys import (
    Keys,
    LayerKeys,
    changes,
    dedup_window,
    legacy_registry,
    registry,
    signing_key,
)
from bandit.store.runner import ScriptCall, ScriptRunner

T = TypeVar("T")
logger = logging.getLogger(__name__)

#: Log entries read per round trip (each holds up to ``log_flush_records`` records).
LOG_READ_ENTRIES = 100


class LogChunk(NamedTuple):
    """One experiment's decision records of one flush: their lines, how many, and how many
    records the process's buffer dropped for the experiment since its last flush."""

    lines: str
    records: int
    dropped: int


class LogStats(NamedTuple):
    records: int
    trimmed: int
    dropped: int
    #: When the oldest entry kept was stored (POSIX seconds), None when the log is empty.
    oldest: float | None
    max_age_s: float | None
    max_records: int | None


#: Statuses of the APPLY_EVENTS script (``bandit.store.scripts``), one per event.
APPLIED, DUPLICATE, UNKNOWN_DECISION, WRONG_ARM, REWARDED = 1, 0, 2, 3, 4


class RedisStore:
    def __init__(self, client: Client, prefix: str, *, wait_replicas: int = 0,
                 wait_timeout_ms: int = 1000, decision_log: bool = True) -> None:
        self._client = client
        #: Reward scripts append what they apply to the decision log ('1') or not ('0').
        self._log_flag = "1" if decision_log else "0"
        self._prefix = prefix
        self._cluster = isinstance(client, RedisCluster)
        self._scripts = ScriptRunner(client, wait_replicas=wait_replicas,
                                     wait_timeout_ms=wait_timeout_ms)
        self._apply_events = client.register_script(scripts.APPLY_EVENTS)
        self._apply_contextual = client.register_script(scripts.APPLY_CONTEXTUAL)
        self._record_provisional = client.register_script(scripts.RECORD_PROVISIONAL)
        self._create = client.register_script(scripts.CREATE)
        self._update = client.register_script(scripts.UPDATE)
        self._read = client.register_script(scripts.READ)
        self._sticky = client.register_script(scripts.STICKY)
        self._history_append = client.register_script(scripts.HISTORY_APPEND)
        self._add_draws = client.register_script(scripts.ADD_DRAWS)
        self._flush_log = client.register_script(scripts.FLUSH_LOG)
        self._save_layer = client.register_script(scripts.SAVE_LAYER)
        self._set_held = client.register_script(scripts.SET_HELD)

    @classmethod
    def from_url(cls, url: str, prefix: str, *, timeout_s: float, max_connections: int,
                 pool_timeout_s: float = 0.5, wait_replicas: int = 0,
                 wait_timeout_ms: int = 1000, decision_log: bool = True) -> RedisStore:
        """A store on any URL ``bandit.redisurl`` accepts (one server, cluster, sentinel).

        ``wait_replicas`` > 0: every write batch is acknowledged only once that many replicas
        have it (Redis ``WAIT``, at most ``wait_timeout_ms``); otherwise the caller gets
        ``StoreUnavailable`` (the write reached the primary and may survive: retrying an
        event or a sticky unit is safe, dedup makes the retry count once).
        """
        client = connection.connect(url, timeout_s=timeout_s, max_connections=max_connections,
                                  pool_timeout_s=pool_timeout_s)
        return cls(client, prefix, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms,
                   decision_log=decision_log)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisStore:
        assert settings.redis_url is not None
        return cls.from_url(settings.redis_url, settings.key_prefix,
                            timeout_s=settings.redis_timeout_s,
                            max_connections=settings.redis_max_connections,
                            pool_timeout_s=settings.redis_pool_timeout_s,
                            wait_replicas=settings.redis_wait_replicas,
                            wait_timeout_ms=settings.redis_wait_timeout_ms,
                            decision_log=settings.decision_log)

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
        return bool(await call(self._client.ping))

    async def signing_key(self) -> bytes:
        """The decision-signing secret every process shares; the first caller creates it."""
        name = signing_key(self._prefix)
        await call(self._client.set, name, secrets.token_hex(32), nx=True)
        return bytes.fromhex(await call(self._client.get, name))

    async def agree_dedup_window(self, window_s: float) -> float:
        """Record this deployment's dedup window if none is, and return the recorded one.

        Dedup sets are named after the window's buckets: processes with different windows
        would not see each other's event ids and would count a resent event twice.
        """
        name = dedup_window(self._prefix)
        await call(self._client.set, name, repr(float(window_s)), nx=True)
        return float(await call(self._client.get, name))

    async def create(self, experiment: Experiment, audit_entry: dict[str, Any]) -> None:
        keys = self.keys(experiment.id)
        created = await self._scripts.write(
            self._create, [keys.meta, keys.stats, keys.audit],
            [config_json(experiment), experiment.reward, half_life(experiment),
             orjson.dumps(audit_entry)])
        # The registry is not in the experiment's slot, so it cannot join the script. A crash
        # between the two leaves an experiment that is not listed; the next create attempt of
        # the same id (refused) adds it, since ZADD is idempotent.
        await call(self._client.zadd, registry(self._prefix), {experiment.id: 0})
        if not created:
            raise Conflict(f"experiment {experiment.id!r} already exists")

    async def update(self, experiment: Experiment, expected_version: int,
                     audit_entry: dict[str, Any]) -> int:
        """Store a changed configuration and its audit entry; ``experiment.version`` must be
        expected + 1."""
        keys = self.keys(experiment.id)
        result = await self._scripts.write(
            self._update, [keys.meta, keys.stats, keys.audit],
            [str(expected_version), config_json(experiment), half_life(experiment),
             "1" if experiment.archived else "0", orjson.dumps(audit_entry)])
        if result[0] == -1:
            raise NotFound(f"experiment {experiment.id!r} does not exist")
        if result[0] == 0:
            raise stale(f"experiment {experiment.id!r}", result[1], expected_version)
        return int(result[1])

    async def set_held(self, experiment_id: str, revision: int, held: Iterable[int],
                       audit_entry: dict[str, Any]) -> bool:
        """Record the arms the hard gate holds, computed from stats ``revision``, with its
        audit entry (``SET_HELD``); False when already recorded or computed from old stats."""
        keys = self.keys(experiment_id)
        result = await self._scripts.write(
            self._set_held, [keys.meta, keys.stats, keys.audit],
            [str(revision), ",".join(str(i) for i in sorted(held)), orjson.dumps(audit_entry)])
        return bool(result)

    async def audit(self, experiment_id: str) -> list[dict[str, Any]] | None:
        """The audit log, oldest first (None when the experiment does not exist)."""
        entries = await self._experiment_list(experiment_id, self.keys(experiment_id).audit, 0)
        return None if entries is None else [orjson.loads(entry) for entry in entries]

    async def _experiment_list(self, experiment_id: str, key: str,
                               start: int) -> list[str] | None:
        """``LRANGE key start -1`` of an experiment's list, None when the experiment is gone."""
        with failures():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.exists(self.keys(experiment_id).meta)
                pipe.lrange(key, start, -1)
                exists, entries = await call(pipe.execute)
        return list(entries) if exists else None

    async def append_history(self, samples: dict[str, dict[str, Any]],
                             rings: HistoryRings) -> dict[str, int]:
        """Offer one sample per experiment to both lists; each lands in a list only if that
        list's interval has passed (2: in the coarse list, 1: only in the fine one, 0: in
        neither, -1: the experiment is gone)."""
        order = list(samples)
        calls: list[ScriptCall] = []
        for experiment_id in order:
            keys = self.keys(experiment_id)
            calls.append((self._history_append, [keys.history, keys.meta, keys.history_fine],
                          [repr(rings.coarse_interval_s), str(rings.coarse_samples),
                           orjson.dumps(samples[experiment_id]), repr(rings.fine_interval_s),
                           str(rings.fine_samples)]))
        # Samples are for plots: they never wait for replicas.
        results = await self._scripts.run(calls, wait=False)
        return {experiment_id: int(result) for experiment_id, result in zip(order, results,
                                                                             strict=True)}

    async def history(self, experiment_id: str, since: float,
                      limit: int) -> list[dict[str, Any]] | None:
        """Samples newer than ``since``, oldest first, at most the newest ``limit`` of them:
        the fine list's samples, after the coarse list's older than the fine list's first."""
        keys = self.keys(experiment_id)
        with failures():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.exists(keys.meta)
                pipe.lrange(keys.history, -limit, -1)
                pipe.lrange(keys.history_fine, -limit, -1)
                exists, coarse, fine = await call(pipe.execute)
        if not exists:
            return None
        # The coarse list's samples outside the fine list's span: before it, and after it
        # when the fine list was turned off and stopped growing.
        first, last = (_time(fine[0]), _time(fine[-1])) if fine else (math.inf, math.inf)
        coarse_samples = _samples(coarse, since)
        merged = ([s for s in coarse_samples if s["t"] < first] + _samples(fine, since)
                  + [s for s in coarse_samples if s["t"] > last])
        return merged[-limit:]

    async def served(self, experiment_ids: Sequence[str]) -> list[dict[int, int]]:
        """Decisions served per arm index, as flushed by every process (one round trip).

        Snapshots are rebuilt when posteriors change; these counters change without that, so
        readers that report them fetch them fresh.
        """
        with failures():
            async with self._client.pipeline(transaction=False) as pipe:
                for experiment_id in experiment_ids:
                    pipe.hgetall(self.keys(experiment_id).served)
                results = await call(pipe.execute)
        return [{int(k): int(v) for k, v in result.items()} for result in results]

    async def traffic(self, experiment_ids: Sequence[str]) -> list[Traffic]:
        """Served counts and sample-ratio sums of each experiment (one round trip)."""
        with failures():
            async with self._client.pipeline(transaction=False) as pipe:
                for experiment_id in experiment_ids:
                    keys = self.keys(experiment_id)
                    pipe.hgetall(keys.served)
                    pipe.hgetall(keys.draws)
                    pipe.hgetall(keys.segments)
                results = await call(pipe.execute)
        return [Traffic({int(k): int(v) for k, v in served.items()}, decode_draws(draws),
                        decode_segments(segments))
                for served, draws, segments in zip(results[::3], results[1::3], results[2::3],
                                                   strict=True)]

    async def list_ids(self, after: str | None = None, limit: int = 1000) -> list[str]:
        """Experiment ids in id order, after ``after`` (exclusive), at most ``limit``."""
        start = "-" if after is None else f"({after}"
        return list(await call(self._client.zrange, registry(self._prefix), start, "+",
                                bylex=True, offset=0, num=limit))

    async def merge_legacy_registry(self) -> int:
        """Fold the id set of earlier versions into the ordered index (at every start: an
        older process of a rolling upgrade may still add to it); returns how many were new."""
        added = 0
        with failures():
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
        # Undecoded: a contextual experiment's rows are binary (bandit.store.codec.encode_row).
        (result,) = await self._scripts.run([(self._read, [keys.meta, keys.stats], [])],
                                            wait=False, raw=True)
        if not result:
            return None
        return decode_state(result)

    async def read_many(self, experiment_ids: Sequence[str]) -> list[StoredState | None]:
        calls: list[ScriptCall] = []
        for experiment_id in experiment_ids:
            keys = self.keys(experiment_id)
            calls.append((self._read, [keys.meta, keys.stats], []))
        results = await self._scripts.run(calls, wait=False, raw=True)
        return [decode_state(result) if result else None for result in results]

    async def revisions(self, experiment_ids: Sequence[str]) -> list[int | None]:
        """The change counter of each experiment (None when it no longer exists)."""
        with failures():
            async with self._client.pipeline(transaction=False) as pipe:
                for experiment_id in experiment_ids:
                    pipe.hget(self.keys(experiment_id).stats, "rev")
                results = await call(pipe.execute)
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
                               encode_events(batches[experiment_id]), self._log_flag]))
            results += await self._scripts.run(calls, wait=True)
        return {
            experiment_id: None if result[0] < 0 else [int(s) for s in result[1]]
            for experiment_id, result in zip(order, results, strict=True)
        }

    async def apply_contextual(
        self, experiment_id: str, events: list[EncodedEvent], features: npt.NDArray[np.float64],
        weights: npt.NDArray[np.float64], weighed_at: float, dedup_window_s: float,
    ) -> list[int] | None:
        """Apply a contextual experiment's events (one feature row and weight each, weighted
        at ``weighed_at``): dedup as ``apply_events``, then the statistics rows.

        First the rows summed per arm over every event, which the script adds if every event
        turns out applicable (the usual case: one row per arm, not d^2 work per event in Lua);
        otherwise, in a second call, the events one by one, summed by the script over those
        applicable then. Returns the statuses, or None when the experiment is missing or
        archived."""
        keys = self.keys(experiment_id)
        head = [keys.prefix_with_tag, str(max(1, math.ceil(dedup_window_s * 1000))),
                encode_events(events), self._log_flag]
        arguments: list[str | bytes] = [*head, "1" * len(events), repr(weighed_at)]
        for arm, (row, count) in arm_sums(events, features, weights).items():
            arguments += [str(arm), encode_row(row), str(count)]
        (result,) = await self._scripts.run(
            [(self._apply_contextual, [keys.meta, keys.stats], arguments)], wait=True)
        if result[0] == 3:
            rows = encode_row(np.column_stack([weights, features]))
            (result,) = await self._scripts.run(
                [(self._apply_contextual, [keys.meta, keys.stats],
                  [*head, "*", repr(weighed_at), rows, str(features.shape[1])])], wait=True)
        if result[0] < 0:
            return None
        return [int(s) for s in result[1]]

    async def record_provisional(self, experiment_id: str, decision_ids: Sequence[str],
                                 arm_indices: Sequence[int], window_s: float) -> bool:
        keys = self.keys(experiment_id)
        result = await self._scripts.write(
            self._record_provisional,
            [keys.meta, keys.stats, *(keys.decision(d) for d in decision_ids)],
            [str(math.ceil(window_s * 1000)), *(str(i) for i in arm_indices)])
        return bool(result[0] == 1)

    async def sticky_assignment(self, experiment_id: str, unit_field: str,
                                proposed: str) -> tuple[str, bool]:
        """The unit's assignment in force, and whether it is ``proposed``, stored now."""
        assignment, created = await self._scripts.write(
            self._sticky, [self.keys(experiment_id).units], [unit_field, proposed])
        return str(assignment), bool(created)

    async def add_served(self, served: dict[str, dict[int, int]]) -> None:
        """Add served-decision counts; a pipeline per 500 experiments, so that a second of
        decisions spread over many experiments never holds the event loop for long. Raises
        StoreUnavailable with the counts of the chunks not stored yet left in ``served``."""
        order = list(served)
        for start in range(0, len(order), 500):
            chunk = order[start:start + 500]
            with failures():
                async with self._client.pipeline(transaction=False) as pipe:
                    for experiment_id in chunk:
                        key = self.keys(experiment_id).served
                        for arm_index, count in served[experiment_id].items():
                            pipe.hincrby(key, str(arm_index), count)
                    await call(pipe.execute)
            for experiment_id in chunk:
                del served[experiment_id]

    async def add_segments(self, segments: dict[str, dict[tuple[str, int], int]]) -> None:
        """Add contextual decisions served per segment and arm (one round trip)."""
        if not segments:
            return
        with failures():
            async with self._client.pipeline(transaction=False) as pipe:
                for experiment_id, counts in segments.items():
                    key = self.keys(experiment_id).segments
                    for (segment, arm_index), count in counts.items():
                        pipe.hincrby(key, f"{segment}{SEGMENT_SEPARATOR}{arm_index}", count)
                await call(pipe.execute)

    async def add_draws(self, draws: dict[str, dict[int, Draws]]) -> None:
        """Add fresh draws to the sample-ratio sums, one script call per experiment (each
        experiment's draws in one atomic step), a round trip per 500 experiments. Raises
        StoreUnavailable with the draws of the chunks not stored yet left in ``draws``."""
        order = list(draws)
        for start in range(0, len(order), 500):
            chunk = order[start:start + 500]
            await self._scripts.run([(self._add_draws, [self.keys(experiment_id).draws],
                                      encode_draws(draws[experiment_id]))
                                     for experiment_id in chunk], wait=False)
            for experiment_id in chunk:
                del draws[experiment_id]

    async def flush_log(self, chunks: list[tuple[str, LogChunk]], max_age_ms: int,
                        max_records: int) -> None:
        """Append each chunk of decision records to its experiment's log, in order (one script
        call each, a round trip per 200), trimmed to the retention given. Raises
        StoreUnavailable with the chunks not stored yet left in ``chunks``."""
        while chunks:
            part = chunks[:200]
            calls: list[ScriptCall] = []
            for experiment_id, chunk in part:
                keys = self.keys(experiment_id)
                calls.append((self._flush_log, [keys.meta],
                              [keys.prefix_with_tag, str(max_age_ms), str(max_records),
                               str(chunk.dropped), chunk.lines, str(chunk.records)]))
            await self._scripts.run(calls, wait=False)
            del chunks[:len(part)]

    async def read_log(self, experiment_id: str, start_ms: int,
                       end_ms: int | None) -> AsyncIterator[tuple[str, str]]:
        """The log entries stored from ``start_ms`` to ``end_ms`` (None: the newest), oldest
        first: the kind (``d`` decisions, ``r`` rewards) and the records' lines of each."""
        key = self.keys(experiment_id).log
        low, high = str(max(0, start_ms)), "+" if end_ms is None else str(end_ms)
        while True:
            entries = await call(self._client.xrange, key, low, high, LOG_READ_ENTRIES)
            for _, fields in entries:
                for kind in ("d", "r"):
                    lines = fields.get(kind)
                    if lines is not None:
                        yield kind, lines
            if len(entries) < LOG_READ_ENTRIES:
                return
            low = "(" + entries[-1][0]

    async def log_stats(self, experiment_id: str) -> LogStats:
        """The log's size, what retention and process buffers removed, and its oldest entry."""
        keys = self.keys(experiment_id)
        with failures():
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hmget(keys.log_stats, "records", "trimmed", "dropped", "max_age_ms",
                           "max_records")
                pipe.lindex(keys.log_index, 0)
                stats, head = await call(pipe.execute)
        oldest = None if head is None else int(head.partition("-")[0]) / 1000
        records, trimmed, dropped, max_age_ms, max_records = (
            None if value is None else int(value) for value in stats)
        return LogStats(records or 0, trimmed or 0, dropped or 0, oldest,
                        None if max_age_ms is None else max_age_ms / 1000, max_records)

    async def save_layer(self, layer: Layer, expected_version: int,
                         audit_entry: dict[str, Any]) -> int:
        """Create (``expected_version`` 0) or change a layer with its audit entry; the new
        version. Conflict when it exists (create), is stale, names an experiment another
        layer holds, or (create) another layer has its salt; NotFound when it does not exist
        (change)."""
        keys = LayerKeys(self._prefix, layer.id)
        result = await self._scripts.write(
            self._save_layer, [keys.config, keys.owners, keys.members, keys.audit, keys.index,
                               keys.revision, keys.salts],
            [str(expected_version), orjson.dumps(layer.to_json()), orjson.dumps(audit_entry),
             layer.id, self.changes_channel, layer.salt, *sorted(layer.ranges)])
        if result[0] == -1:
            raise NotFound(f"layer {layer.id!r} does not exist")
        if result[0] == -3:
            raise Conflict(f"salt: layer {result[1]!r} has the salt {layer.salt!r}: two layers "
                           "of one salt put every unit in the same bucket of both, so their "
                           "experiments would share their units; choose another salt")
        if result[0] == -2:
            raise Conflict(f"experiment {result[1]!r} is in layer {result[2]!r}: an experiment "
                           "is in at most one layer (remove it there first)")
        if result[0] == 0:
            if expected_version == 0:
                raise Conflict(f"layer {layer.id!r} already exists")
            raise stale(f"layer {layer.id!r}", result[1], expected_version)
        return int(result[1])

    async def layer(self, layer_id: str) -> Layer | None:
        raw = await call(self._client.hget, LayerKeys(self._prefix, layer_id).config, "config")
        return None if raw is None else layer_from_json(orjson.loads(raw))

    async def layers(self) -> tuple[int, list[Layer]]:
        """The layers' change counter and every layer, in id order."""
        keys = LayerKeys(self._prefix, "")
        with failures():
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(keys.revision)
                pipe.zrange(keys.index, 0, -1)
                revision, ids = await call(pipe.execute)
            if not ids:
                return int(revision or 0), []
            async with self._client.pipeline(transaction=False) as pipe:
                for layer_id in ids:
                    pipe.hget(LayerKeys(self._prefix, text(layer_id)).config, "config")
                configs = await call(pipe.execute)
        return int(revision or 0), [layer_from_json(orjson.loads(raw)) for raw in configs
                                    if raw is not None]

    async def layers_revision(self) -> int:
        return int(await call(self._client.get, LayerKeys(self._prefix, "").revision) or 0)

    async def layer_owner(self, experiment_id: str) -> str | None:
        """The layer that holds an experiment, if any."""
        owner = await call(self._client.hget, LayerKeys(self._prefix, "").owners, experiment_id)
        return None if owner is None else text(owner)

    async def layer_audit(self, layer_id: str) -> list[dict[str, Any]]:
        entries = await call(self._client.lrange, LayerKeys(self._prefix, layer_id).audit, 0,
                             -1)
        return [orjson.loads(entry) for entry in entries]

    async def delete_all(self, experiment_id: str) -> None:
        """Remove every key of an experiment (tests and tooling; archive is the API's delete)."""
        keys = self.keys(experiment_id)
        batch: list[str] = []
        async for key in self._client.scan_iter(match=keys.pattern, count=1000):
            batch.append(key)
        if batch:
            await call(self._client.delete, *batch)
        await call(self._client.zrem, registry(self._prefix), experiment_id)


def _samples(entries: list[str], since: float) -> list[dict[str, Any]]:
    """History entries (``time|sample JSON``) newer than ``since``, as samples with ``t``."""
    samples = []
    for entry in entries:
        at, _, document = entry.partition("|")
        if float(at) > since:
            samples.append({"t": float(at), **orjson.loads(document)})
    return samples


def _time(entry: str) -> float:
    return float(entry.partition("|")[0])


async def _chunks(items: AsyncIterator[str], size: int) -> AsyncIterator[list[str]]:
    chunk: list[str] = []
    async for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk




