"""Reward events from a Redis Stream, applied by a consumer group (run by ``bandit worker``).

Entry format: one stream entry carries either

- ``event``: the JSON of one reward event, exactly an item of ``POST /v1/events``
  (``{"id", "experiment", "arm", "reward", "decision_id"?, "unit"?, "ts"?}``), or
- ``events``: a JSON list of such events (at most 10,000), for producers that batch.

Events go through ``BanditService.apply_events``, the HTTP path's validation, decision-id checks
and Lua dedup. An entry is acknowledged (XACK) only after its events were applied, so a consumer
that dies before acking gets its entries re-delivered (to itself on restart, or to another
consumer by XAUTOCLAIM once idle), and the event-id dedup turns the second apply into
duplicates. That makes the effect exactly-once as long as a re-delivery comes within the dedup
window; an entry re-delivered later than that is dead-lettered instead of risking a double count.

What cannot be applied goes to the dead-letter stream with fields ``event`` (the original
payload), ``reason``, ``stream``, ``id`` (the original entry id), ``deliveries`` and, for one
event of an ``events`` list, ``index`` (its position in the list):

- an entry that is not JSON, or has neither field: the whole entry;
- an event the HTTP path would reject (invalid, unknown arm, archived experiment, a decision
  id already rewarded...): that event only; the rest of its entry is applied;
- an entry delivered ``max_deliveries`` times without being applied (a consumer died on it
  each time, or its experiment still does not exist): the whole entry, with the last failure.

Events of an experiment that does not exist (yet) are not rejected at once, unlike over HTTP: a
producer may write to the stream before the experiment is created. Their entry stays pending and
is retried (re-claimed once ``claim_idle_ms`` idle) until its last allowed delivery, where the
HTTP path's "does not exist" rejection applies. A Redis outage is never the entry's fault: the
batch is retried in place, with backoff, until Redis answers.

Keys: besides the stream itself, a hash ``<stream>:failures`` (entry id -> last failure, for
pending entries only) and the dead-letter stream; both default to the stream's hash slot
(``{rewards}:dead`` for a stream ``rewards``; ``{x}:rewards:dead`` for ``{x}:rewards``), so on a
Redis Cluster a dead-letter XADD and its XACK run in one MULTI.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import orjson
from redis import exceptions as redis_errors
from redis.crc import key_slot

from bandit.errors import NotFound
from bandit.inputs import MAX_EVENT_EXPERIMENTS, MAX_EVENTS
from bandit.model import ID_PATTERN
from bandit.ops.stream_entries import (
    Entry,
    Lag,
    MalformedEntry,
    StreamConfig,
    entry_order,
    experiment_of,
    measure_lag,
    parse_entry,
    payload,
    redis_call,
    server_millis,
    stream_millis,
)
from bandit.serving.service import BanditService
from bandit.store.connection import Client

logger = logging.getLogger(__name__)

T = TypeVar("T")

@dataclass
class Outcome:
    """What one batch did (the metrics add these up)."""

    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    deferred: int = 0
    acked: int = 0
    #: Dead letters written, by kind: malformed, rejected, max_deliveries, expired.
    dead: dict[str, int] = field(default_factory=dict)


class _DeadLetter(NamedTuple):
    entry: Entry
    kind: str
    payload: str
    reason: str
    position: int | None


class StreamConsumer:
    """One consumer of the group: read, claim, apply, acknowledge, dead-letter."""

    def __init__(self, service: BanditService, config: StreamConfig) -> None:
        self.service = service
        self.config = config
        self.client: Client = service.store.client
        # MULTI across the dead-letter stream and the source only when one slot holds both.
        self._atomic = key_slot(config.dead_letter.encode()) == key_slot(
            config.stream.encode()) == key_slot(config.failures.encode())

    async def ensure_group(self) -> None:
        """Create the group (and stream) reading from the start: producers may have written
        before the first worker ran. An existing group keeps its position."""
        try:
            await redis_call(self.client.xgroup_create(
                self.config.stream, self.config.group, id="0", mkstream=True))
            logger.info("created consumer group %r on stream %r", self.config.group,
                        self.config.stream)
        except redis_errors.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def read_own(self, after: str) -> list[Entry]:
        """Entries already delivered to this consumer name (a restart after a crash)."""
        reply: Any = await redis_call(self.client.xreadgroup(
            self.config.group, self.config.consumer, {self.config.stream: after},
            count=self.config.batch))
        rows = reply[0][1] if reply else []
        return await self._with_deliveries(rows)

    async def read_new(self) -> list[Entry]:
        reply: Any = await redis_call(self.client.xreadgroup(
            self.config.group, self.config.consumer, {self.config.stream: ">"},
            count=self.config.batch, block=self.config.block_ms))
        return [Entry(entry_id, fields, 1) for entry_id, fields in reply[0][1]] if reply else []

    async def claim(self, cursor: str) -> tuple[list[Entry], str]:
        """One XAUTOCLAIM page of entries idle over ``claim_idle_ms`` (a dead consumer's, or
        this one's deferred ones), and the cursor of the next page ("0-0" at the end)."""
        reply: Any = await redis_call(self.client.xautoclaim(
            self.config.stream, self.config.group, self.config.consumer,
            self.config.claim_idle_ms, cursor, count=self.config.batch))
        next_cursor, rows = reply[0], reply[1]
        present = [(i, f) for i, f in rows if i is not None]
        entries = await self._with_deliveries(present)
        if len(present) < len(rows):
            # Redis 6.2 claims entries deleted from the stream (trimmed) without naming them;
            # they are now this consumer's, and a history read shows them with no fields (it
            # also counts one more delivery of this consumer's other pending entries).
            entries += [e for e in await self.read_own("0") if not e.fields]
        return entries, next_cursor

    async def _with_deliveries(self, rows: Sequence[Any]) -> list[Entry]:
        if not rows:
            return []
        ids = [entry_id for entry_id, _ in rows]
        low, high = min(ids, key=entry_order), max(ids, key=entry_order)
        found = {row["message_id"]: int(row["times_delivered"]) for row in await redis_call(
            self.client.xpending_range(self.config.stream, self.config.group, low, high,
                                       count=2 * len(ids) + 100,
                                       consumername=self.config.consumer))}
        # Not found: claimed away by another consumer meanwhile; at least twice delivered.
        return [Entry(entry_id, fields or {}, found.get(entry_id, 2)) for entry_id, fields in rows]

    async def handle(self, entries: list[Entry]) -> Outcome:
        """Apply a batch and acknowledge what is done. Raises StoreUnavailable with nothing
        acknowledged; calling again with the same entries is safe (dedup)."""
        config = self.config
        outcome = Outcome()
        dead: list[_DeadLetter] = []
        done: list[Entry] = []
        parsed: list[tuple[Entry, list[object], bool]] = []
        old = [e for e in entries if e.deliveries > 1]
        now_ms = await server_millis(self.client) if old else 0
        last_failures = await self._last_failures(
            [e for e in entries if e.deliveries > config.max_deliveries])
        window_ms = self.service.settings.dedup_window_s * 1000
        for entry in entries:
            if not entry.fields:
                done.append(entry)  # trimmed from the stream before it was applied
                continue
            if entry.deliveries > config.max_deliveries:
                last = last_failures.get(entry.entry_id) or (
                    "none recorded (a consumer stopped while handling it)")
                dead.append(_DeadLetter(entry, "max_deliveries", payload(entry), (
                    f"delivered {entry.deliveries} times, over --max-deliveries "
                    f"{config.max_deliveries}; last failure: {last}"), None))
                continue
            if entry.deliveries > 1 and now_ms - stream_millis(entry.entry_id) > window_ms:
                dead.append(_DeadLetter(entry, "expired", payload(entry), (
                    "re-delivered after the dedup window "
                    f"({self.service.settings.dedup_window_s:g} s): it may have been applied "
                    "already, and applying it again could count it twice"), None))
                continue
            try:
                events, listed = parse_entry(entry.fields)
            except MalformedEntry as error:
                dead.append(_DeadLetter(entry, "malformed", payload(entry), str(error), None))
                continue
            parsed.append((entry, events, listed))
        missing = await self._missing_experiments(
            {experiment_of(event) for _, events, _ in parsed for event in events})
        deferred: dict[str, str] = {}
        chunk: list[tuple[Entry, list[object], bool]] = []
        chunk_events = 0
        chunk_experiments: set[str | None] = set()
        for entry, events, listed in parsed:
            absent = next((experiment_of(e) for e in events if experiment_of(e) in missing),
                          None)
            if absent is not None and entry.deliveries < config.max_deliveries:
                deferred[entry.entry_id] = (f"experiment {absent!r} does not exist (deferred "
                                            f"at delivery {entry.deliveries})")
                continue
            experiments = {experiment_of(event) for event in events}
            if len(experiments) > MAX_EVENT_EXPERIMENTS:
                dead.append(_DeadLetter(entry, "malformed", payload(entry), (
                    f"events: name at most {MAX_EVENT_EXPERIMENTS} distinct experiments per "
                    f"entry, got {len(experiments)}"), None))
                continue
            if chunk_events + len(events) > MAX_EVENTS or len(
                    chunk_experiments | experiments) > MAX_EVENT_EXPERIMENTS:
                await self._apply(chunk, outcome, dead)
                chunk, chunk_events, chunk_experiments = [], 0, set()
            chunk.append((entry, events, listed))
            chunk_events += len(events)
            chunk_experiments |= experiments
            done.append(entry)
        if chunk:
            await self._apply(chunk, outcome, dead)
        outcome.deferred = len(deferred)
        await self._finish(done, dead, deferred)
        outcome.acked = len(done) + len({d.entry.entry_id for d in dead})
        for letter in dead:
            outcome.dead[letter.kind] = outcome.dead.get(letter.kind, 0) + 1
        return outcome

    async def _apply(self, chunk: list[tuple[Entry, list[object], bool]], outcome: Outcome,
                     dead: list[_DeadLetter]) -> None:
        events = [event for _, entry_events, _ in chunk for event in entry_events]
        result = await self.service.apply_events({"events": events})
        outcome.applied += result["accepted"]
        outcome.duplicates += result["duplicates"]
        outcome.rejected += len(result["rejected"])
        if not result["rejected"]:
            return
        origin: list[tuple[Entry, int, bool]] = [
            (entry, index, listed) for entry, entry_events, listed in chunk
            for index in range(len(entry_events))]
        for rejection in result["rejected"]:
            entry, index, listed = origin[rejection["index"]]
            payload = (orjson.dumps(events[rejection["index"]]).decode() if listed
                       else entry.fields["event"])
            dead.append(_DeadLetter(entry, "rejected", payload, rejection["error"],
                                    index if listed else None))

    async def _missing_experiments(self, experiment_ids: set[str | None]) -> set[str]:
        """The well-formed experiment ids that do not exist (invalid ones the HTTP path
        rejects)."""
        missing = set()
        for experiment_id in experiment_ids:
            if isinstance(experiment_id, str) and ID_PATTERN.fullmatch(experiment_id):
                try:
                    await self.service.cache.get(experiment_id)
                except NotFound:
                    missing.add(experiment_id)
        return missing

    async def _finish(self, done: list[Entry], dead: list[_DeadLetter],
                      deferred: dict[str, str]) -> None:
        config = self.config
        acked = [e.entry_id for e in done] + list(dict.fromkeys(d.entry.entry_id for d in dead))
        retried = [e.entry_id for e in done if e.deliveries > 1] + [
            d.entry.entry_id for d in dead if d.entry.deliveries > 1]
        # Dead letters first, acknowledgement after: a crash in between re-delivers the entry
        # (a second dead letter at worst), never loses it; in one MULTI when one slot holds
        # every key. (MULTI does not roll back: an XADD failing at run time would still let the
        # XACK through, so the worker checks the dead-letter key's type when it starts.)
        if dead and not self._atomic:
            async with self.client.pipeline(transaction=False) as pipe:
                self._dead_letters(pipe, dead)
                await redis_call(pipe.execute())
        async with self.client.pipeline(transaction=self._atomic) as pipe:
            if self._atomic:
                self._dead_letters(pipe, dead)
            if acked:
                pipe.xack(config.stream, config.group, *acked)
            if retried:
                pipe.hdel(config.failures, *retried)
            if deferred:
                pipe.hset(config.failures, mapping=deferred)  # type: ignore[arg-type]
            if dead or acked or deferred:
                await redis_call(pipe.execute())
        if dead:  # one line per batch: a producer bug may send thousands of bad events
            logger.warning("dead-lettered %d item(s) to %r; first: entry %s (%s): %s",
                           len(dead), config.dead_letter, dead[0].entry.entry_id,
                           dead[0].kind, dead[0].reason)

    def _dead_letters(self, pipe: Any, dead: list[_DeadLetter]) -> None:
        for letter in dead:
            fields = {"event": letter.payload, "reason": letter.reason,
                      "stream": self.config.stream, "id": letter.entry.entry_id,
                      "deliveries": str(letter.entry.deliveries)}
            if letter.position is not None:
                fields["index"] = str(letter.position)
            pipe.xadd(self.config.dead_letter, fields)

    async def record_failure(self, entries: list[Entry], reason: str) -> None:
        """Remember why a batch failed, for the dead letter of an entry that keeps failing."""
        if entries:
            await redis_call(self.client.hset(
                self.config.failures, mapping={e.entry_id: reason for e in entries}))

    async def _last_failures(self, entries: list[Entry]) -> dict[str, str]:
        if not entries:
            return {}
        values: list[Any] = await redis_call(self.client.hmget(self.config.failures,
                                                    [e.entry_id for e in entries]))
        return {e.entry_id: v for e, v in zip(entries, values, strict=True) if v}

    async def lag(self) -> Lag:
        return await measure_lag(self.client, self.config.stream, self.config.group)
