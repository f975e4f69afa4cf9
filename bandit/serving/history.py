"""Experiment history: allocation shares, posteriors and traffic sampled over time, for plots
and for the serving-health checks (``bandit.serving.health``).

Every service process offers a sample of each experiment it serves twice per fine interval;
the ``HISTORY_APPEND`` script keeps the first one of each interval (by server time) in each of
two lists, so the number of processes does not change the sampling rate: a coarse list (one
per ``history_interval_s``, the newest ``history_max_samples``: a day at 60 s) and a fine one
(one per ``history_fine_interval_s``, kept for ``history_fine_window_s``: an hour at 10 s).
Reads merge them: the fine samples, after the coarse ones older than the fine list. Samples
are column-oriented per arm. Memory: about 95 bytes per arm per sample (nine numbers and the
arm id); the fine list adds a quarter to the coarse list's samples at the defaults.

Besides the plots' columns, a sample carries the cumulative sums of the sample-ratio test
(``drawn``, ``expected``, ``variance``: ``bandit.serving.decisions.DrawTally``), so that the
test over any stretch of history is the difference of two samples.

A contextual experiment's sample differs in two ways (``bandit.serving.overview``): its
``share`` is the average propensity each arm was drawn with so far (null before the first
draw), and it carries ``segments``, the cumulative decisions served per segment
(``feature=value``) and arm, so that allocation by segment over any interval is the
difference of two samples. A context-free sample has no ``segments``.

A sample of an experiment with guardrails also carries, per arm, ``p_violates`` (P(breaks
any guardrail), null for the control and paused arms, as in the stats) and ``held`` (the
hard gate holds it): about 13 bytes more per arm. Without guardrails they are left out.

Only experiments where something happened are offered: this process served them decisions,
or their posteriors or settings changed since it first saw or last offered them. An idle
experiment's last sample holds until then, so an idle service with many experiments cached
costs nothing here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from bandit.errors import StoreUnavailable
from bandit.policy import Guarded, PosteriorSummary
from bandit.serving import overview
from bandit.serving.cache import ExperimentCache, Snapshot, summaries_of
from bandit.serving.changes import cancelling
from bandit.settings import Settings
from bandit.store.codec import Draws, HistoryRings, Traffic
from bandit.store.redis_store import RedisStore

logger = logging.getLogger(__name__)

MAX_LIMIT = 10_000
#: Experiments sampled per round trip (and per turn of the event loop).
OFFER_CHUNK = 200


def sample(snapshot: Snapshot, summary: PosteriorSummary, traffic: Traffic) -> dict[str, Any]:
    """One history sample of a snapshot (without its time, which the server adds)."""
    out = {
        "version": snapshot.experiment.version,
        "arms": list(snapshot.experiment.arms),
        "share": overview.served_shares(snapshot, traffic),
        "mean": [overview.finite(value) for value in summary.mean.tolist()],
        "ci_low": [overview.finite(value) for value in summary.ci_low.tolist()],
        "ci_high": [overview.finite(value) for value in summary.ci_high.tolist()],
        "n": snapshot.counts.tolist(),
        **traffic_columns(traffic, len(snapshot.experiment.arms)),
    }
    if snapshot.contextual is not None:
        out["segments"] = overview.segment_columns(snapshot, traffic)
    if snapshot.guarded is not None:
        out.update(guardrail_columns(snapshot, snapshot.guarded))
    return out


def guardrail_columns(snapshot: Snapshot, guarded: Guarded) -> dict[str, list[Any]]:
    """With guardrails: per arm P(violates any guardrail), as the stats report it (null for
    the control and paused arms; rounded to 1e-4, which no plot sees), and whether the hard
    gate holds it. Feasibility is judged on untempered evidence, so the snapshot's own
    computation is the stats' one."""
    return {"p_violates": [None if p is None else round(p, 4)
                           for p in overview.violations(snapshot, guarded)],
            "held": [bool(held) for held in guarded.held.tolist()]}


def traffic_columns(traffic: Traffic, arms: int) -> dict[str, list[Any]]:
    """A sample's cumulative traffic columns: ``served``, and the sample-ratio sums (rounded
    to 1e-3: the test's differences of thousands of draws do not see that)."""
    none = Draws(0.0, 0.0, 0.0)
    draws = [traffic.draws.get(i, none) for i in range(arms)]
    return {"served": [traffic.served.get(i, 0) for i in range(arms)],
            "drawn": [int(d.observed) for d in draws],
            "expected": [round(d.expected, 3) for d in draws],
            "variance": [round(d.variance, 3) for d in draws]}



class HistorySampler:
    def __init__(self, store: RedisStore, cache: ExperimentCache, settings: Settings,
                 served_recently: Callable[[], set[str]]) -> None:
        """``served_recently()``: the experiments this process served decisions since the
        last call."""
        self._store = store
        self._cache = cache
        self._rings = HistoryRings.of(settings)
        self._served_recently = served_recently
        #: Experiment id -> the revision and version this process last offered a sample of.
        self._offered: dict[str, tuple[int, int]] = {}
        #: Experiments served decisions whose sample has not landed yet.
        self._active: set[str] = set()

    async def offer(self) -> dict[str, int]:
        """Offer a sample of every experiment where something happened (one round trip)."""
        self._active |= self._served_recently()
        snapshots = []
        for snapshot in self._cache.snapshots():
            experiment = snapshot.experiment
            state = (snapshot.revision, experiment.version)
            # One first seen is sampled when something happens to it, not for being cached:
            # a process that starts (or loads 100,000 experiments) samples nothing at once.
            last = self._offered.setdefault(experiment.id, state)
            if not experiment.archived and (experiment.id in self._active or last != state):
                snapshots.append(snapshot)
        landed: dict[str, int] = {}
        # In chunks: a thousand experiments' samples at once would hold the event loop (and
        # the decisions waiting on it) for tens of milliseconds.
        for start in range(0, len(snapshots), OFFER_CHUNK):
            landed.update(await self._offer(snapshots[start:start + OFFER_CHUNK]))
        for snapshot in snapshots:
            # One that came too soon for the coarse list (another sample of the interval
            # landed) is offered again, so the coarse list holds the change once the fine
            # list has dropped it.
            if landed.get(snapshot.experiment.id) not in (0, 1):
                self._offered[snapshot.experiment.id] = (snapshot.revision,
                                                         snapshot.experiment.version)
                self._active.discard(snapshot.experiment.id)
        if len(self._offered) > 2 * len(self._cache.snapshots()) + 1000:
            cached = {s.experiment.id for s in self._cache.snapshots()}
            self._offered = {k: v for k, v in self._offered.items() if k in cached}
            self._active &= cached
        return landed

    async def _offer(self, snapshots: list[Snapshot]) -> dict[str, int]:
        traffic = await self._store.traffic([s.experiment.id for s in snapshots])
        summaries = await summaries_of(snapshots)
        samples = {snapshot.experiment.id: sample(snapshot, summary, counts)
                   for snapshot, summary, counts in zip(snapshots, summaries, traffic,
                                                        strict=True)}
        return await self._store.append_history(samples, self._rings)

    async def run(self) -> None:
        # Offering twice per interval bounds the gap between samples to 1.5 intervals even when
        # processes' timers drift; the script drops the offers that come too soon.
        while not cancelling():
            await asyncio.sleep(self._rings.interval_s / 2)
            try:
                await self.offer()
            except StoreUnavailable as error:
                logger.warning("history sample not stored: %s", error)
