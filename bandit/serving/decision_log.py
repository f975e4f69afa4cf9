"""The decision log of one service process: every decision it serves, buffered and
group-committed to the experiment's Redis Stream.

A decision costs no Redis round trip for its record: the record (one tab-separated line) joins
an in-memory buffer, and a flusher appends each experiment's records in one script call
(``FLUSH_LOG``) every ``log_flush_interval_s`` (50 ms), or sooner once ``log_flush_records``
(1,000) are waiting. Rewards need no buffer: the reward scripts append what they apply in the
same atomic step (``_LOG_REWARDS`` in ``bandit.store.scripts``), so a reward is in the log
exactly when it counts.

What can be lost, and what is counted:

- A process killed (``kill -9``) loses the records of its buffer and of a flush under way: at
  most the decisions of the last ``log_flush_interval_s``, plus one flush's round trip.
- While Redis is slow or unreachable the buffer keeps at most ``log_buffer_records``; past that
  the oldest records are dropped, counted per experiment (``/metrics``, and the stats' ``log``
  once Redis answers again). Decisions never wait for the log.
- A flush whose answer was lost (a timeout after Redis stored it) is sent again, so the log can
  hold a record twice; ``bandit log export`` keeps each decision id once.

Line format (``d`` entries), tab-separated: time served (ms), decision id, experiment version,
arm index (a slate's, comma-separated), propensity (a slate's, the slate's), position
propensities (slates only, comma-separated), sticky unit, context (JSON, contextual only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, deque
from typing import Any

import orjson

from bandit.errors import StoreUnavailable
from bandit.inputs import AllocateRequest
from bandit.serving.cache import Snapshot
from bandit.serving.changes import cancelling
from bandit.settings import Settings
from bandit.store.redis_store import LogChunk, RedisStore

logger = logging.getLogger(__name__)

#: Experiments whose line middles a process keeps (past this, all are dropped and rebuilt).
MIDDLES_KEPT = 1000


class DecisionLog:
    """Buffers this process's decision records and flushes them to Redis."""

    def __init__(self, store: RedisStore, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self.enabled = settings.decision_log
        #: (experiment id, lines, records), oldest first; ``_size`` records in all.
        self._buffer: deque[tuple[str, str, int]] = deque()
        self._size = 0
        #: Records of a flush under way.
        self._flushing = 0
        #: Records dropped per experiment since they were last reported to Redis.
        self._dropped: defaultdict[str, int] = defaultdict(int)
        #: Process totals, for ``/metrics``.
        self.dropped_total = 0
        self.written_total = 0
        self._wake = asyncio.Event()
        #: Per experiment, its snapshot's line middles per arm (``_middles_of``).
        self._middles: dict[str, tuple[Snapshot, dict[str, str]]] = {}

    @property
    def buffered(self) -> int:
        """Records not stored yet: waiting for a flush, or in one under way."""
        return self._size + self._flushing

    def record(self, snapshot: Snapshot, request: AllocateRequest,
               decisions: list[dict[str, Any]]) -> None:
        """Buffer the records of one request's decisions (all from ``snapshot``)."""
        if not self.enabled:
            return
        experiment = snapshot.experiment
        head = f"{int(time.time() * 1000)}\t"
        unit, context = request.unit or "", self._context(snapshot, request)
        # A contextual request's context goes on its first line only (the export fills the
        # others in): a batch of n decisions stores it once, not n times.
        tail = f"{unit}\t{context}\n" if unit or context else "\t\n"
        rest = f"{unit}\t\n"
        if request.k is None:
            middles = self._middles_of(snapshot)
            if len(decisions) == 1:  # the hot path: a single decision
                decision = decisions[0]
                self._append(experiment.id, head + decision["decision_id"] + (
                    middles.get(decision["arm"]) or self._middle(snapshot, decision)) + tail, 1)
                return
            lines = "".join([head + decision["decision_id"] + (
                middles.get(decision["arm"]) or self._middle(snapshot, decision)) + (
                tail if i == 0 else rest) for i, decision in enumerate(decisions)])
        else:
            indices = experiment.arm_indices
            lines = "".join([
                f"{head}{decision['decision_id']}\t{experiment.version}\t"
                f"{','.join([str(indices[arm]) for arm in decision['arms']])}\t"
                f"{decision['propensity']!r}\t"
                f"{','.join([repr(p) for p in decision['position_propensities']])}\t"
                f"{tail if i == 0 else rest}" for i, decision in enumerate(decisions)])
        self._append(experiment.id, lines, len(decisions))

    def record_unit(self, snapshot: Snapshot, unit: str, decision: dict[str, Any],
                    now: float) -> None:
        """``record_units`` for one unit, served at ``now``."""
        if not self.enabled:
            return
        self._append(snapshot.experiment.id, f"{int(now * 1000)}\t" +
                     decision["decision_id"] + (self._middles_of(snapshot).get(decision["arm"])
                                                or self._middle(snapshot, decision))
                     + unit + "\t\n", 1)

    def record_units(self, snapshot: Snapshot, units: list[str],
                     decisions: list[dict[str, Any]]) -> None:
        """Buffer single decisions of a context-free snapshot, one per unit (a batch assign)."""
        if not self.enabled or not decisions:
            return
        head = f"{int(time.time() * 1000)}\t"
        middles = self._middles_of(snapshot)
        self._append(snapshot.experiment.id, "".join([
            head + decision["decision_id"] + (
                middles.get(decision["arm"]) or self._middle(snapshot, decision)) + unit + "\t\n"
            for unit, decision in zip(units, decisions, strict=True)]), len(decisions))

    @staticmethod
    def _context(snapshot: Snapshot, request: AllocateRequest) -> str:
        """The request's context as JSON, only the features the model reads: what else a
        caller sends would cost Redis memory and tell an evaluation nothing."""
        if snapshot.contextual is None:
            return ""
        context = request.context or {}  # "{}", never empty: the export fills empty ones in
        return orjson.dumps({feature.name: context[feature.name]
                             for feature in snapshot.contextual.model.features
                             if feature.name in context}).decode()

    def _middles_of(self, snapshot: Snapshot) -> dict[str, str]:
        """The part of a single decision's line that only its snapshot and arm decide
        (version, arm index, propensity, no positions), per arm, kept while the snapshot
        serves: formatting a propensity costs more than the rest of the line."""
        cached = self._middles.get(snapshot.experiment.id)
        if cached is None or cached[0] is not snapshot:
            if len(self._middles) >= MIDDLES_KEPT:
                self._middles.clear()
            cached = self._middles[snapshot.experiment.id] = (snapshot, {})
        return cached[1]

    def _middle(self, snapshot: Snapshot, decision: dict[str, Any]) -> str:
        arm = decision["arm"]
        middle = (f"\t{snapshot.experiment.version}\t{snapshot.experiment.arm_indices[arm]}"
                  f"\t{decision['propensity']!r}\t\t")
        if snapshot.contextual is None:  # a contextual one's propensity depends on the context
            self._middles[snapshot.experiment.id][1][arm] = middle
        return middle

    def _append(self, experiment_id: str, lines: str, count: int) -> None:
        self._buffer.append((experiment_id, lines, count))
        self._size += count
        if self._size > self._settings.log_buffer_records:
            self._shed()
        if self._size >= self._settings.log_flush_records:
            self._wake.set()

    def _shed(self) -> None:
        """Drop the oldest records until the buffer is within its bound. The records of a
        flush under way are older, but cannot be dropped until it fails (then they are put
        back in front, and go first): meanwhile the process holds up to twice the bound."""
        shed = 0
        # The newest request's records stay, even when they alone are over the bound: a
        # request is never dropped as it arrives, only once something newer has come.
        while self._size > self._settings.log_buffer_records and len(self._buffer) > 1:
            experiment_id, _, count = self._buffer.popleft()
            self._size -= count
            self._dropped[experiment_id] += count
            shed += count
        self.dropped_total += shed

    async def flush(self) -> None:
        """Append what is buffered to the experiments' logs. Raises StoreUnavailable with the
        records not stored back in the buffer (the oldest dropped past its bound)."""
        if not self._buffer and not self._dropped:
            return
        taken, self._buffer, self._size = self._buffer, deque(), 0
        dropped, self._dropped = self._dropped, defaultdict(int)
        # Per experiment, entries of at most log_flush_records records (a request's records
        # stay together), so that no entry (and no read of the log) grows without bound after
        # an outage.
        # An experiment's drops are reported with its first entry (or an empty one).
        limit = self._settings.log_flush_records
        pending: dict[str, tuple[list[str], int]] = {}
        chunks: list[tuple[str, LogChunk]] = []

        def entry(experiment_id: str, parts: list[str], records: int) -> None:
            chunks.append((experiment_id, LogChunk("".join(parts), records,
                                                   dropped.pop(experiment_id, 0))))

        for experiment_id, lines, count in taken:
            parts, records = pending.get(experiment_id, ([], 0))
            if parts and records + count > limit:
                entry(experiment_id, parts, records)
                parts, records = [], 0
            parts.append(lines)
            pending[experiment_id] = (parts, records + count)
        for experiment_id, (parts, records) in pending.items():
            entry(experiment_id, parts, records)
        for experiment_id in list(dropped):
            entry(experiment_id, [], 0)
        written = self._flushing = sum(count for _, _, count in taken)
        try:
            await self._store.flush_log(chunks, round(self._settings.log_max_age_s * 1000),
                                        self._settings.log_max_records)
        except StoreUnavailable:
            # What was not stored goes back in front of what came meanwhile, oldest first: a
            # request's records whose experiment has an entry not stored (those of its entries
            # that were may be stored twice; the export keeps each decision once).
            unstored = {experiment_id for experiment_id, _ in chunks}
            for experiment_id, chunk in chunks:
                self._dropped[experiment_id] += chunk.dropped
            back = [item for item in taken if item[0] in unstored]
            self._buffer.extendleft(reversed(back))
            self._size += sum(count for _, _, count in back)
            written -= sum(chunk.records for _, chunk in chunks)
            self._shed()
            raise
        finally:
            self.written_total += written
            self._flushing = 0

    async def run(self) -> None:
        """Flush every ``log_flush_interval_s``, or as soon as ``log_flush_records`` wait."""
        interval = self._settings.log_flush_interval_s
        failing = False
        while not cancelling():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                await self.flush()
                if failing:
                    logger.info("decision log: flushing again")
                failing = False
            except StoreUnavailable as error:
                if not failing:
                    logger.warning("decision log: could not flush (%s); buffering up to %d "
                                   "records, then dropping the oldest", error,
                                   self._settings.log_buffer_records)
                failing = True
                await asyncio.sleep(interval)
