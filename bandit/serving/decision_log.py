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
from collections.abc import Callable
from typing import Any

import orjson

from bandit.errors import StoreUnavailable
from bandit.inputs import AllocateRequest
from bandit.serving.cache import Snapshot
from bandit.serving.changes import cancelling
from bandit.settings import Settings
from bandit.store.redis_store import LogChunk, RedisStore

logger = logging.getLogger(__name__)


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
        #: Called with the number of records dropped, each time some are (a metric).
        self.on_drop: Callable[[int], None] | None = None

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
        served_ms = int(time.time() * 1000)
        unit = request.unit or ""
        context = "" if request.context is None or snapshot.contextual is None else (
            orjson.dumps(request.context).decode())
        head = f"{served_ms}\t"
        tail = f"\t{unit}\t{context}\n"
        indices = experiment.arm_indices
        version = experiment.version
        if request.k is None:
            middles: dict[str, str] = {}
            parts = []
            for decision in decisions:
                arm = decision["arm"]
                middle = middles.get(arm)
                if middle is None:
                    middle = middles[arm] = (
                        f"\t{version}\t{indices[arm]}\t{decision['propensity']!r}\t")
                parts.append(head + decision["decision_id"] + middle + tail)
            lines = "".join(parts)
        else:
            lines = "".join(
                f"{head}{decision['decision_id']}\t{version}\t"
                f"{','.join(str(indices[arm]) for arm in decision['arms'])}\t"
                f"{decision['propensity']!r}\t"
                f"{','.join(repr(p) for p in decision['position_propensities'])}{tail}"
                for decision in decisions)
        self._append(experiment.id, lines, len(decisions))

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
        while self._size > self._settings.log_buffer_records and self._buffer:
            experiment_id, _, count = self._buffer.popleft()
            self._size -= count
            self._dropped[experiment_id] += count
            shed += count
        self.dropped_total += shed
        if shed and self.on_drop is not None:
            self.on_drop(shed)

    async def flush(self) -> None:
        """Append what is buffered to the experiments' logs. Raises StoreUnavailable with the
        records not stored back in the buffer (the oldest dropped past its bound)."""
        if not self._buffer and not self._dropped:
            return
        taken, self._buffer, self._size = self._buffer, deque(), 0
        dropped, self._dropped = self._dropped, defaultdict(int)
        grouped: dict[str, tuple[list[str], int]] = {}
        for experiment_id, lines, count in taken:
            entry = grouped.get(experiment_id)
            if entry is None:
                grouped[experiment_id] = ([lines], count)
            else:
                entry[0].append(lines)
                grouped[experiment_id] = (entry[0], entry[1] + count)
        for experiment_id in dropped:
            grouped.setdefault(experiment_id, ([], 0))
        chunks = {experiment_id: LogChunk("".join(lines), count, dropped.get(experiment_id, 0))
                  for experiment_id, (lines, count) in grouped.items()}
        written = self._flushing = sum(chunk.records for chunk in chunks.values())
        try:
            await self._store.flush_log(chunks, round(self._settings.log_max_age_s * 1000),
                                        self._settings.log_max_records)
        except StoreUnavailable:
            # What was not stored goes back in front of what came meanwhile, oldest first.
            for experiment_id, chunk in chunks.items():
                self._dropped[experiment_id] += chunk.dropped
            back = [item for item in taken if item[0] in chunks]
            self._buffer.extendleft(reversed(back))
            self._size += sum(chunk.records for chunk in chunks.values())
            written -= sum(chunk.records for chunk in chunks.values())
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
