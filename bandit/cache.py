"""The in-process tier: each service process serves decisions from memory.

A ``Snapshot`` holds an experiment's configuration, its posterior statistics decayed to the
time of reading, and the allocation probabilities computed from them, so a decision is a
uniform draw and a binary search: no Redis round trip. A background task polls each cached
experiment's change counter every ``refresh_interval_s`` (one pipelined round trip for all of
them) and rebuilds the snapshots that changed, so a reward accepted by any process moves the
allocations of every process within about one interval plus the time to recompute.

Recomputing runs in a worker thread: the numba kernels release the GIL, so the event loop
keeps answering while a 1000-arm experiment is recomputed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from bandit import policy
from bandit.errors import NotFound, StoreUnavailable
from bandit.model import Experiment, Exploration
from bandit.store import RedisStore, StoredState

logger = logging.getLogger(__name__)

#: Experiments not asked for in this long stop being polled and are dropped from memory.
IDLE_EVICTION_S = 600.0
#: With forgetting on, probabilities drift with time alone; recompute at least this often.
FORGETTING_RECOMPUTE_S = 1.0


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
    summary_cache: dict[str, policy.PosteriorSummary] = field(default_factory=dict)

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


def prior_array(experiment: Experiment) -> npt.NDArray[np.float64]:
    prior = experiment.prior
    if experiment.reward == "bernoulli":
        return np.array([prior["alpha"], prior["beta"], 0.0, 0.0])
    return np.array([prior["mean"], prior["kappa"], prior["alpha"], prior["beta"]])


def build_snapshot(state: StoredState) -> Snapshot:
    """Decay the statistics to the read time and compute the allocation probabilities."""
    experiment = state.experiment
    family = family_of(experiment)
    stats = state.stats
    half_life = experiment.exploration.half_life_s
    if half_life is not None:
        elapsed = np.where(state.updated_at > 0, state.server_time - state.updated_at, 0.0)
        stats = policy.forget(family, stats, np.maximum(elapsed, 0.0), half_life)
    active = np.array([arm not in experiment.paused for arm in experiment.arms])
    prior = prior_array(experiment)
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
        server_time=state.server_time,
        servable=int(np.count_nonzero(probabilities > 0)),
    )


async def summary_of(snapshot: Snapshot) -> policy.PosteriorSummary:
    """The snapshot's posterior summary (means, intervals, P(best)), computed once, in a thread."""
    summary = snapshot.summary_cache.get("summary")
    if summary is None:
        summary = await asyncio.to_thread(policy.posterior_summary, snapshot.family,
                                          snapshot.stats, snapshot.prior, snapshot.active)
        snapshot.summary_cache["summary"] = summary
    return summary


def cancelling() -> bool:
    """True once the running task was asked to stop.

    redis-py can swallow a CancelledError delivered mid-command, so background loops check
    this on every turn: a cancel always ends them.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@dataclass
class _Entry:
    snapshot: Snapshot
    computed_at: float
    used_at: float


class ExperimentCache:
    def __init__(self, store: RedisStore, refresh_interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._interval = refresh_interval_s
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Future[Snapshot]] = {}
        #: When the cache last heard from Redis successfully (for the stale flag).
        self.last_success = clock()

    @property
    def age(self) -> float:
        """Seconds since the cache last confirmed its contents with Redis."""
        return self._clock() - self.last_success

    def peek(self, experiment_id: str) -> Snapshot | None:
        """The cached snapshot, without waiting: the decision hot path."""
        entry = self._entries.get(experiment_id)
        if entry is None:
            return None
        entry.used_at = self._clock()
        return entry.snapshot

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
            snapshot = await asyncio.to_thread(build_snapshot, state)
            now = self._clock()
            self._entries[experiment_id] = _Entry(snapshot, now, now)
            self.last_success = now
            future.set_result(snapshot)
            return snapshot
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved here, so waiters-less failures are not logged
            raise
        finally:
            del self._loading[experiment_id]

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot this process holds (the experiments it serves)."""
        return [entry.snapshot for entry in self._entries.values()]

    def forget(self, experiment_id: str) -> None:
        self._entries.pop(experiment_id, None)

    async def refresh(self) -> None:
        """One poll: rebuild every snapshot whose experiment changed in Redis."""
        now = self._clock()
        for experiment_id in [k for k, e in self._entries.items()
                              if now - e.used_at > IDLE_EVICTION_S]:
            del self._entries[experiment_id]
        ids = list(self._entries)
        if not ids:
            self.last_success = now
            return
        revisions = await self._store.revisions(ids)
        stale: list[str] = []
        for experiment_id, revision in zip(ids, revisions, strict=True):
            entry = self._entries.get(experiment_id)
            if entry is None:
                continue
            if revision is None:
                del self._entries[experiment_id]
                continue
            forgetting = entry.snapshot.experiment.exploration.half_life_s is not None
            if revision != entry.snapshot.revision or (
                forgetting and now - entry.computed_at >= FORGETTING_RECOMPUTE_S
            ):
                stale.append(experiment_id)
        if stale:
            states = await self._store.read_many(stale)
            fresh = [state for state in states if state is not None]
            snapshots = await asyncio.to_thread(lambda: [build_snapshot(s) for s in fresh])
            done = self._clock()
            for snapshot in snapshots:
                entry = self._entries.get(snapshot.experiment.id)
                if entry is not None:
                    entry.snapshot, entry.computed_at = snapshot, done
        self.last_success = now

    async def run(self) -> None:
        """Poll forever; Redis outages are logged and the last snapshots kept."""
        while not cancelling():
            started = self._clock()
            try:
                await self.refresh()
            except StoreUnavailable as error:
                logger.warning("cache refresh failed, serving last known posteriors: %s", error)
            except Exception:
                logger.exception("cache refresh failed")
            await asyncio.sleep(max(0.0, self._interval - (self._clock() - started)))
