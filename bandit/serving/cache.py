"""The in-process tier: each service process serves decisions from memory.

A ``Snapshot`` holds an experiment's configuration, its posterior statistics decayed to the
time of reading, and the allocation probabilities computed from them, so a decision is a
uniform draw and a binary search: no Redis round trip.

Keeping snapshots fresh costs what changes, not what is cached. Every refresh interval the
cache re-reads the experiments its change feed (``bandit.serving.changes``) named since the last
refresh, in one pipelined round trip, and rebuilds their snapshots; a reward accepted by any
process moves the allocations of every process within about one interval. Two slower loops
cover the rest: on a Redis Cluster, a sweep of the change counters, every cached experiment
once per ``RECONCILE_S``, catches a change whose message was lost on the cluster's bus (on one
server or with Sentinel a message is delivered or the subscription drops, which the feed
notices); and with forgetting on, a snapshot is recomputed locally (no read) as its evidence
decays. While the
feed is not subscribed (Redis unreachable, or just restarted), every refresh polls the change
counters of everything cached, as a fallback.

Recomputing runs in a worker thread: the numba kernels release the GIL, so the event loop
keeps answering while a 1000-arm experiment is recomputed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bandit import policy
from bandit.errors import NotFound, StoreUnavailable
from bandit.model import BERNOULLI_PRIOR, GAUSSIAN_PRIOR, Experiment, Exploration
from bandit.patches import audit_entry
from bandit.serving.changes import ChangeFeed, cancelling
from bandit.store.codec import StoredState
from bandit.store.redis_store import RedisStore

logger = logging.getLogger(__name__)

#: The audit log's actor for the guardrails' hard gate.
GATE_ACTOR = "guardrail-gate"
#: Allocations per contextual snapshot kept for repeated contexts (cleared when full).
MAX_CHOICES = 4096
#: Experiments read (and decoded) per round trip: a turn of the event loop each.
READ_CHUNK = 200
#: Experiments not asked for in this long are dropped from memory.
IDLE_EVICTION_S = 600.0
#: How often the cache looks for idle experiments to drop.
EVICTION_CHECK_S = 10.0
#: On a Redis Cluster, every cached experiment's change counter is checked once in this long.
RECONCILE_S = 60.0
#: With forgetting on, probabilities drift with time alone: a snapshot is recomputed when its
#: evidence has lost this share of its weight since the last computation (h * log2(1/0.99):
#: every 52 s for a one-hour half-life), but not more often than ``MIN_RECOMPUTE_S``.
FORGETTING_DRIFT = 0.01
MIN_RECOMPUTE_S = 1.0


@dataclass(frozen=True)
class Snapshot:
    experiment: Experiment
    family: int
    prior: npt.NDArray[np.float64]
    active: npt.NDArray[np.bool_]
    #: Sufficient statistics decayed to ``server_time`` (forgetting applied, no tempering).
    stats: npt.NDArray[np.float64]
    counts: npt.NDArray[np.float64]
    probabilities: npt.NDArray[np.float64]
    cumulative: npt.NDArray[np.float64]
    #: The same as Python lists: a single decision is cheaper in pure Python than a numba call.
    cumulative_list: list[float]
    probability_list: list[float]
    revision: int
    server_time: float
    #: Arms with a positive allocation probability (the largest slate that can be served).
    servable: int
    summary_cache: dict[str, Any] = field(default_factory=dict)
    #: A contextual experiment's factorised posteriors (None: context-free). Its
    #: ``probabilities`` above are then the allocation of the arms' context-free marginals
    #: (their mean reward over the contexts they were served in), for the views that need one
    #: vector; every decision computes its own for its context (``policy.ContextualPosterior``).
    contextual: policy.ContextualPosterior | None = None
    #: With guardrails: P(best feasible), P(violates) and the gate (None: no guardrails, or a
    #: fixed experiment).
    guarded: policy.Guarded | None = None
    #: Each guardrail metric's statistics, as the allocation took them.
    guards: tuple[policy.Guard, ...] = ()
    #: The gate as stored when this snapshot was read (``guarded.held`` may differ: then the
    #: cache records the change).
    held_stored: frozenset[int] = frozenset()
    #: A contextual snapshot's allocations already computed, by feature vector (bytes): the
    #: same context under the same posteriors gets the same exact vector without the
    #: quadrature (segment-only contexts repeat a lot). Bounded by ``MAX_CHOICES``.
    choices: dict[bytes, Any] = field(default_factory=dict)

    @property
    def arms(self) -> tuple[str, ...]:
        return self.experiment.arms


def policy_settings(experiment: Experiment) -> policy.PolicySettings:
    """The kernel's settings for an experiment: shares are made relative to the bandit's part.

    The kernel runs the bandit over the non-control arms and then scales them to
    ``1 - control share``; floors and caps are absolute probabilities, so they are divided by
    that part here.
    """
    exploration: Exploration = experiment.exploration
    control_index = None
    free = 1.0
    if exploration.control is not None:
        control_index = experiment.arm_index(exploration.control.arm)
        free = 1.0 - exploration.control.share
    return policy.PolicySettings(
        epsilon=exploration.epsilon,
        min_share=min(1.0, exploration.min_share / free),
        max_share=min(1.0, exploration.max_share / free),
        temperature=exploration.temperature,
        warmup=exploration.warmup,
        top_two=exploration.top_two,
        control_index=control_index,
        control_share=0.0 if exploration.control is None else exploration.control.share,
    )


def family_of(experiment: Experiment) -> int:
    return policy.BERNOULLI if experiment.reward == "bernoulli" else policy.GAUSSIAN


def prior_vector(kind: str, prior: Mapping[str, float]) -> npt.NDArray[np.float64]:
    """A prior as the kernels take it (``bandit.policy.layout``), from its named parameters
    (``bandit.model``'s ``BERNOULLI_PRIOR`` / ``GAUSSIAN_PRIOR`` form); ``kind``: the reward
    kind, bernoulli or gaussian."""
    if kind == "bernoulli":
        return np.array([prior["alpha"], prior["beta"], 0.0, 0.0])
    return np.array([prior["mean"], prior["kappa"], prior["alpha"], prior["beta"]])


def prior_array(experiment: Experiment) -> npt.NDArray[np.float64]:
    return prior_vector(experiment.reward, experiment.prior)


def _decayed(family: int, stats: npt.NDArray[np.float64], updated_at: npt.NDArray[np.float64],
             now: float, half_life: float | None) -> npt.NDArray[np.float64]:
    """Statistics last decayed at ``updated_at`` (0: never updated), decayed to ``now``."""
    if half_life is None:
        return stats
    return policy.forget(family, stats, _elapsed(updated_at, now), half_life)


def _elapsed(updated_at: npt.NDArray[np.float64], now: float) -> npt.NDArray[np.float64]:
    return np.maximum(np.where(updated_at > 0, now - updated_at, 0.0), 0.0)


def guards_of(experiment: Experiment, state: StoredState, now: float) -> list[policy.Guard]:
    """The kernel's view of each guardrail metric: its statistics decayed to ``now``."""
    guards = []
    half_life = experiment.exploration.half_life_s
    n_arms = len(experiment.arms)
    for guardrail in experiment.guardrails:
        family = policy.BERNOULLI if guardrail.kind == "bernoulli" else policy.GAUSSIAN
        stored = state.guards.get(guardrail.key)
        stats = np.zeros((3, n_arms)) if stored is None else _decayed(
            family, stored.stats, stored.updated_at, now, half_life)
        counts = np.zeros(n_arms) if stored is None else stored.counts
        prior = prior_vector(guardrail.kind, BERNOULLI_PRIOR if family == policy.BERNOULLI
                             else GAUSSIAN_PRIOR)
        guards.append(policy.Guard(family, stats, counts, prior, guardrail.direction == "higher",
                                   guardrail.threshold, guardrail.relative))
    return guards


def recompute_interval(half_life_s: float) -> float:
    """Seconds after which forgetting has moved evidence weights by ``FORGETTING_DRIFT``."""
    return max(MIN_RECOMPUTE_S, half_life_s * math.log2(1 / (1 - FORGETTING_DRIFT)))


def build_snapshot(state: StoredState, at: float | None = None) -> Snapshot:
    """Decay the statistics to server time ``at`` (default: the read time) and compute the
    allocation probabilities."""
    experiment = state.experiment
    family = family_of(experiment)
    stats = state.stats
    now = state.server_time if at is None else at
    half_life = experiment.exploration.half_life_s
    stats = _decayed(family, stats, state.updated_at, now, half_life)
    active = np.array([arm not in experiment.paused for arm in experiment.arms])
    prior = prior_array(experiment)
    contextual = None
    if experiment.model is not None and state.rows is not None:
        rows = state.rows
        if half_life is not None:
            rows = policy.forget_rows(rows, _elapsed(state.updated_at, now), half_life)
        contextual = policy.ContextualPosterior.build(
            experiment.model, rows, state.counts, policy_settings(experiment), active)
        stats = policy.marginal_stats(family, rows)
    guarded = None
    guards = tuple(guards_of(experiment, state, now))
    if experiment.weights is not None:  # a fixed experiment: its weights, over active arms
        weights = np.where(active, np.asarray(experiment.weights), 0.0)
        probabilities = weights / weights.sum()
    elif experiment.guardrails:
        guarded = policy.guarded_allocation(
            family, stats, state.counts, prior, policy_settings(experiment), active,
            list(guards), experiment.control_index, experiment.exploration.gate_min_samples,
            np.isin(np.arange(len(experiment.arms)), list(state.held)))
        probabilities = guarded.probabilities
        if contextual is not None:
            contextual = dataclasses.replace(contextual, feasible=1.0 - guarded.p_violates_any,
                                             held=guarded.held)
    else:
        probabilities = policy.allocation_probabilities(
            family, stats, state.counts, prior, policy_settings(experiment), active
        )
    cumulative = policy.cumulative(probabilities)
    return Snapshot(
        experiment=experiment,
        family=family,
        prior=prior,
        active=active,
        stats=stats,
        counts=state.counts,
        probabilities=probabilities,
        cumulative=cumulative,
        cumulative_list=cumulative.tolist(),
        probability_list=probabilities.tolist(),
        revision=state.revision,
        server_time=now,
        servable=(int(np.count_nonzero(active)) if contextual is not None
                  else int(np.count_nonzero(probabilities > 0))),
        contextual=contextual,
        guarded=guarded,
        guards=guards,
        held_stored=state.held,
    )


async def summary_of(snapshot: Snapshot) -> policy.PosteriorSummary:
    """The snapshot's posterior summary (means, intervals, P(best)), computed once, in a thread."""
    [summary] = await summaries_of([snapshot])
    return summary


def untempered_guarded(snapshot: Snapshot) -> policy.Guarded | None:
    """The snapshot's guardrail computation without tempering (what the stats and the winner
    call report), computed once."""
    if snapshot.guarded is None:
        return None
    if snapshot.experiment.exploration.temperature == 1.0:
        return snapshot.guarded
    cached = snapshot.summary_cache.get("guarded")
    if cached is None:
        experiment = snapshot.experiment
        cached = snapshot.summary_cache["guarded"] = policy.guarded_allocation(
            snapshot.family, snapshot.stats, snapshot.counts, snapshot.prior,
            dataclasses.replace(policy_settings(experiment), temperature=1.0),
            snapshot.active, list(snapshot.guards), experiment.control_index)
    assert isinstance(cached, policy.Guarded)
    return cached


def _gate_reason(snapshot: Snapshot, held: frozenset[int]) -> str:
    """Why each arm the gate holds or releases changed: its P(violates), or what released it
    otherwise (paused, made the control, the gate or the guardrails removed)."""
    experiment = snapshot.experiment
    guarded = snapshot.guarded
    arms = experiment.arms
    if guarded is None:
        return "the experiment has no guardrails now"
    if experiment.exploration.gate_min_samples is None:
        return "the gate is off now (exploration.gate_min_samples null)"
    reasons = []
    for i in sorted(held ^ snapshot.held_stored):
        if i >= len(arms):
            continue
        if arms[i] in experiment.paused:
            reasons.append(f"{arms[i]} paused")
        elif arms[i] == experiment.control_arm:
            reasons.append(f"{arms[i]} is the control now")
        elif i not in held and (few := _too_few(snapshot, i)) is not None:
            reasons.append(f"{arms[i]} released: {few}")
        else:
            reasons.append(f"{arms[i]} P(violates a guardrail) "
                           f"{guarded.p_violates_any[i]:.3f}")
    return "; ".join(reasons)


def _too_few(snapshot: Snapshot, index: int) -> str | None:
    """Why the gate may not judge arm ``index`` (too few observations of a guardrail metric,
    its own or, for a relative threshold, the control's), or None."""
    experiment = snapshot.experiment
    gate = experiment.exploration.gate_min_samples
    if gate is None or not snapshot.guards:
        return None
    own = min(float(g.counts[index]) for g in snapshot.guards)
    if own < gate:
        return (f"{own:g} observations of a guardrail metric, fewer than gate_min_samples "
                f"({gate})")
    control = experiment.control_index
    relative = [g for g in snapshot.guards if g.relative]
    if control is not None and relative:
        theirs = min(float(g.counts[control]) for g in relative)
        if theirs < gate:
            return (f"the control has {theirs:g} observations of a guardrail metric, fewer "
                    f"than gate_min_samples ({gate})")
    return None


def observed(snapshot: Snapshot) -> bool:
    """Whether every active arm has observations of the primary and of every guardrail
    metric (what a winner call with guardrails needs, ``health.winner``)."""
    active = snapshot.active
    return bool(np.all(snapshot.counts[active] > 0) and all(
        np.all(guard.counts[active] > 0) for guard in snapshot.guards))


async def guarded_summary(snapshot: Snapshot) -> policy.Guarded | None:
    """``untempered_guarded``, computed in a worker thread when it takes a computation."""
    if snapshot.guarded is None or snapshot.experiment.exploration.temperature == 1.0 \
            or "guarded" in snapshot.summary_cache:
        return untempered_guarded(snapshot)
    return await asyncio.to_thread(untempered_guarded, snapshot)


async def summaries_of(snapshots: Sequence[Snapshot]) -> list[policy.PosteriorSummary]:
    """``summary_of`` for many snapshots, those not computed yet in one worker-thread call."""
    missing = [s for s in snapshots if "summary" not in s.summary_cache]
    if missing:
        def compute() -> None:
            for snapshot in missing:
                snapshot.summary_cache["summary"] = policy.posterior_summary(
                    snapshot.family, snapshot.stats, snapshot.prior, snapshot.active)
        await asyncio.to_thread(compute)
    return [s.summary_cache["summary"] for s in snapshots]


class _Rotation:
    """Goes through every cached experiment once per ``period`` seconds, a slice each
    refresh."""

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._pending: list[str] = []

    def next(self, entries: dict[str, _Entry], period_s: float) -> list[str]:
        """The next slice: ids still in ``entries``."""
        if not self._pending:
            self._pending = list(entries)
        count = math.ceil(len(entries) * self._interval / period_s)
        taken, self._pending = self._pending[-count:], self._pending[:-count]
        return [i for i in taken if i in entries]


@dataclass
class _Entry:
    snapshot: Snapshot
    #: What was read (kept for forgetting: recomputed from it as time passes).
    state: StoredState
    #: When it was read, on this process's clock.
    read_at: float
    used_at: float
    #: When forgetting next calls for a recomputation (inf: no forgetting).
    due: float = math.inf


class ExperimentCache:
    def __init__(self, store: RedisStore, refresh_interval_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 feed: ChangeFeed | None = None) -> None:
        self._store = store
        self._interval = refresh_interval_s
        self._clock = clock
        self._feed = feed
        self._entries: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Future[Snapshot]] = {}
        #: (due, id): experiments with forgetting, by when they need recomputing.
        self._due: list[tuple[float, str]] = []
        # Checked a slice per refresh, not all at once: 100,000 entries would hold the event
        # loop for milliseconds.
        self._sweep = _Rotation(refresh_interval_s)
        self._eviction = _Rotation(refresh_interval_s)
        #: When the cache last confirmed its contents with Redis (for the stale flag).
        self.last_success = clock()
        #: Called at every refresh with what the change feed named (``everything``: the feed
        #: could not say, so anything may have changed): for what else a process keeps in
        #: memory (``bandit.serving.layers``).
        self.watchers: list[Callable[[bool, set[str]], Awaitable[None]]] = []

    @property
    def age(self) -> float:
        """Seconds since the cache last confirmed its contents with Redis."""
        return self._clock() - self.last_success

    def peek(self, experiment_id: str, now: float | None = None) -> Snapshot | None:
        """The cached snapshot, without waiting: the decision hot path (``now``: the clock
        read once for many peeks)."""
        entry = self._entries.get(experiment_id)
        if entry is None:
            return None
        entry.used_at = self._clock() if now is None else now
        return entry.snapshot

    def now(self) -> float:
        """The cache's clock (for ``peek``)."""
        return self._clock()

    async def get(self, experiment_id: str) -> Snapshot:
        snapshot = self.peek(experiment_id)
        return snapshot if snapshot is not None else await self.load(experiment_id)

    async def load(self, experiment_id: str) -> Snapshot:
        """Read from Redis now (one loader per experiment, however many requests wait)."""
        pending = self._loading.get(experiment_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Snapshot] = asyncio.get_running_loop().create_future()
        self._loading[experiment_id] = future
        try:
            state = await self._store.read(experiment_id)
            if state is None:
                raise NotFound(f"experiment {experiment_id!r} does not exist")
            [snapshot] = await self._install([state], self._clock())
            future.set_result(snapshot)
            return snapshot
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved here, so waiters-less failures are not logged
            raise
        finally:
            del self._loading[experiment_id]

    async def load_many(self, experiment_ids: Sequence[str]) -> None:
        """Bring every experiment of ``experiment_ids`` that is not cached into the cache, in
        one round trip (those that do not exist are left out)."""
        missing = [i for i in dict.fromkeys(experiment_ids)
                   if i not in self._entries and i not in self._loading]
        for start in range(0, len(missing), READ_CHUNK):
            read_at = self._clock()
            states = await self._store.read_many(missing[start:start + READ_CHUNK])
            await self._install([s for s in states if s is not None], read_at)

    async def _record_gates(self, snapshots: Sequence[Snapshot]) -> None:
        """Record the hard gate's changes these snapshots made (``SET_HELD``, audited): the
        gate's memory, shared by every process (each computes the same from the same
        statistics; the first to record wins, the others change nothing)."""
        for snapshot in snapshots:
            guarded = snapshot.guarded
            # Without guardrails (removed, or the experiment made fixed) nothing is held.
            held = frozenset() if guarded is None else frozenset(
                np.flatnonzero(guarded.held).tolist())
            if held == snapshot.held_stored:
                continue
            arms = snapshot.experiment.arms
            entry = audit_entry(snapshot.experiment.version, GATE_ACTOR, "gate", {"held": {
                "old": [arms[i] for i in sorted(snapshot.held_stored) if i < len(arms)],
                "new": [arms[i] for i in sorted(held)]}},
                _gate_reason(snapshot, held))
            try:
                await self._store.set_held(snapshot.experiment.id, snapshot.revision, held,
                                           entry)
            except StoreUnavailable as error:
                logger.warning("could not record the guardrail gate of %r: %s",
                               snapshot.experiment.id, error)

    async def _install(self, states: list[StoredState], read_at: float) -> list[Snapshot]:
        snapshots = await asyncio.to_thread(lambda: [build_snapshot(s) for s in states])
        await self._record_gates(snapshots)
        for state, snapshot in zip(states, snapshots, strict=True):
            entry = self._entries.get(state.experiment.id)
            if entry is None:
                entry = self._entries[state.experiment.id] = _Entry(snapshot, state, read_at,
                                                                   read_at)
            entry.snapshot, entry.state, entry.read_at = snapshot, state, read_at
            half_life = state.experiment.exploration.half_life_s
            entry.due = math.inf if half_life is None else read_at + recompute_interval(
                half_life)
            if half_life is not None:
                heapq.heappush(self._due, (entry.due, state.experiment.id))
        return snapshots

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot this process holds (the experiments it serves)."""
        return [entry.snapshot for entry in self._entries.values()]

    def forget(self, experiment_id: str) -> None:
        self._entries.pop(experiment_id, None)

    async def refresh(self) -> None:
        """One refresh: read what changed, recompute what forgetting moved."""
        started = self._clock()
        for experiment_id in self._eviction.next(self._entries, EVICTION_CHECK_S):
            if started - self._entries[experiment_id].used_at > IDLE_EVICTION_S:
                del self._entries[experiment_id]
        feed = self._feed
        if feed is None or not feed.subscribed:
            await self._reread(await self._changed(list(self._entries)), started)
            await self._recompute_due(started)
            self.last_success = started
            for watcher in self.watchers:
                await watcher(True, set())
            return
        confirmed = feed.confirmed_at
        everything, named = feed.take(started)
        # Sent before the reads, so that a Redis which stopped answering is noticed even
        # while every read fails.
        await feed.ping()
        if everything:
            stale = list(self._entries)
        else:
            stale = [i for i in named if i in self._entries]
            if self._store.is_cluster:  # only there can a message go missing unnoticed
                stale += await self._changed(self._sweep.next(self._entries, RECONCILE_S))
        await self._reread(stale, started)
        await self._recompute_due(started)
        # Every change made before `confirmed` was named before `take`, and is read now.
        self.last_success = max(self.last_success, confirmed)
        for watcher in self.watchers:
            await watcher(everything, named)

    async def _changed(self, experiment_ids: list[str]) -> list[str]:
        """Those of ``experiment_ids`` whose change counter moved (gone ones are dropped)."""
        if not experiment_ids:
            return []
        revisions = await self._store.revisions(experiment_ids)
        changed = []
        for experiment_id, revision in zip(experiment_ids, revisions, strict=True):
            entry = self._entries.get(experiment_id)
            if entry is None:
                continue
            if revision is None:
                del self._entries[experiment_id]
            elif revision != entry.snapshot.revision:
                changed.append(experiment_id)
        return changed

    async def _reread(self, experiment_ids: list[str], read_at: float) -> None:
        for start in range(0, len(experiment_ids), READ_CHUNK):
            chunk = experiment_ids[start:start + READ_CHUNK]
            states = await self._store.read_many(chunk)
            for experiment_id, state in zip(chunk, states, strict=True):
                if state is None:
                    self._entries.pop(experiment_id, None)
            await self._install([s for s in states if s is not None
                                 and s.experiment.id in self._entries], read_at)

    async def _recompute_due(self, now: float) -> None:
        """Recompute, from what was read, the snapshots forgetting has moved far enough."""
        due_now: list[tuple[_Entry, StoredState]] = []
        while self._due and self._due[0][0] <= now:
            due, experiment_id = heapq.heappop(self._due)
            entry = self._entries.get(experiment_id)
            if entry is not None and entry.due == due:  # else dropped, or read again since
                due_now.append((entry, entry.state))
        if not due_now:
            return
        snapshots = await asyncio.to_thread(lambda: [
            build_snapshot(state, at=state.server_time + now - entry.read_at)
            for entry, state in due_now])
        await self._record_gates(snapshots)
        for (entry, state), snapshot in zip(due_now, snapshots, strict=True):
            if entry.state is not state:
                continue  # read again meanwhile: that read is newer
            half_life = state.experiment.exploration.half_life_s
            assert half_life is not None
            entry.snapshot = snapshot
            entry.due = now + recompute_interval(half_life)
            heapq.heappush(self._due, (entry.due, entry.state.experiment.id))

    async def run(self) -> None:
        """Refresh forever; Redis outages are logged and the last snapshots kept."""
        while not cancelling():
            started = self._clock()
            try:
                await self.refresh()
            except StoreUnavailable as error:
                logger.warning("cache refresh failed, serving last known posteriors: %s", error)
            except Exception:
                logger.exception("cache refresh failed")
            await asyncio.sleep(max(0.0, self._interval - (self._clock() - started)))
