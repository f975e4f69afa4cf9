"""The simulator: replications of a policy on an environment, run in parallel threads.

:func:`simulate` runs ``reps`` replications of the replication loop
(:func:`bandit.forecast.replicate.replicate`, the service's own policy code in numba: see its
module for what one step does) and hands back regret, best-arm rates and allocation shares at
the checkpoints; :func:`trace` records one replication step by step. Plain Thompson sampling
on a stationary Bernoulli problem takes the fast loop :func:`simulations.plain.replicate_plain`
instead, which gives the same numbers.

Replications get independent generators from ``SeedSequence(seed).spawn(reps)`` and write to
their own rows, so results do not depend on the number of threads, nor on where a chunk of
replications runs (:func:`simulate_chunk`, what :mod:`simulations.distributed` runs on Dask).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bandit.forecast.codes import (
    CHURN,
    D_DELAY_SUM,
    D_DELIVERED,
    D_DISCARDED,
    D_MEAN_MAX,
    D_MEAN_MIN,
    D_PENDING,
    D_PENDING_REWARD,
    D_QUADRATURES,
    D_RETIRED,
    DRIFT_SD,
    N_DIAGNOSTICS,
    N_TRACE,
    NOISE_SD,
    T_ARM,
    T_ARM_MEAN,
    T_BEST_MEAN,
    T_PROPENSITY,
    T_REVISION,
    T_REWARD,
    THOMPSON,
    X_HALF_LIFE,
    X_QUADRATURE,
)
from bandit.forecast.parallel import run_replications
from bandit.forecast.replicate import replicate
from bandit.policy import layout, student_t_tail_table
from bandit.policy.layout import BERNOULLI, FloatArray, IntArray
from simulations.environments import Environment, EnvironmentArrays
from simulations.plain import replicate_plain
from simulations.policies import PolicyArrays, PolicySpec

__all__ = [
    "SimulationResult",
    "Trace",
    "log_checkpoints",
    "simulate",
    "simulate_chunk",
    "trace",
]


@dataclass(frozen=True)
class SimulationResult:
    """Metrics of ``reps`` replications at the checkpoints (rows: replications)."""

    policy: str
    checkpoints: IntArray  # (C,) number of pulls so far, 1-based
    pseudo_regret: FloatArray  # (reps, C) sum of mu*_t - mu_{a_t}
    regret: FloatArray  # (reps, C) sum of mu*_t - r_t
    best_arm_rate: FloatArray  # (reps, C) share of pulls so far on the then-best arm
    shares: FloatArray  # (reps, C, K) pull shares of each arm (slot) since the last checkpoint
    pulls: FloatArray  # (reps, K)
    seconds: float  # wall time


@dataclass(frozen=True)
class Trace:
    """Every step of one replication (the first of :func:`simulate` with the same seed)."""

    arms: IntArray  # (T,)
    rewards: FloatArray  # (T,)
    arm_means: FloatArray  # (T,) mean of the pulled arm
    best_means: FloatArray  # (T,) mu*_t
    propensities: FloatArray  # (T,) allocation probability of the pulled arm (NaN: fast path)
    revisions: IntArray  # (T,) how many times the policy's view had changed at the decision
    stats: FloatArray  # (3, K) final store statistics (the service's layout)
    counts: FloatArray  # (K,) final raw observation counts
    delivered: int  # rewards written to the store
    pending: int  # rewards still in flight at the end
    pending_reward: float  # their sum
    discarded: int  # rewards dropped because their arm had retired
    delay_sum: float  # sum over delivered rewards of their delay in steps
    retired: int  # arms replaced by churn
    quadratures: int  # allocation-probability computations (service path)
    mean_min: float  # smallest arm mean seen
    mean_max: float  # largest arm mean seen


def log_checkpoints(horizon: int, count: int = 100) -> IntArray:
    """About ``count`` log-spaced step counts from 1 to ``horizon`` (both included), unique."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    steps = np.unique(np.round(np.geomspace(1.0, horizon, count)).astype(np.int64))
    steps[-1] = horizon
    return steps


def _validated_checkpoints(checkpoints: npt.ArrayLike | None, horizon: int) -> IntArray:
    if checkpoints is None:
        return log_checkpoints(horizon)
    raw = np.asarray(checkpoints)
    steps = raw.astype(np.int64)
    if raw.ndim != 1 or raw.shape[0] < 1 or not np.array_equal(raw, steps):
        raise ValueError("checkpoints must be a non-empty 1-d array of integer step counts")
    if np.any(np.diff(steps) <= 0) or steps[0] < 1 or steps[-1] > horizon:
        raise ValueError(f"checkpoints must increase strictly within [1, {horizon}]")
    return np.ascontiguousarray(steps)


@dataclass(frozen=True)
class _Run:
    policy: PolicyArrays
    environment: EnvironmentArrays
    horizon: int
    batch: int
    delay: float
    checkpoints: IntArray


def _prepare(policy: PolicySpec, environment: Environment, horizon: int, batch: int,
             delay: float, checkpoints: npt.ArrayLike | None) -> _Run:
    if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    if isinstance(batch, bool) or int(batch) != batch or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    if not (math.isfinite(delay) and delay >= 0.0):
        raise ValueError(f"delay must be a finite number of steps >= 0, got {delay!r}")
    arrays = environment.arrays()
    return _Run(
        policy.arrays(arrays.family, environment.n_arms, int(horizon)),
        arrays,
        int(horizon),
        int(batch),
        float(delay),
        _validated_checkpoints(checkpoints, int(horizon)),
    )


def _run_one(run: _Run, rng: np.random.Generator, pseudo: FloatArray, regret: FloatArray,
             best: FloatArray, shares: FloatArray, pulls: FloatArray, trace_rows: FloatArray,
             diagnostics: FloatArray, final_stats: FloatArray) -> None:
    p, e = run.policy, run.environment
    n_arms = e.means.shape[0]
    if trace_rows.shape[0] == 0 and _is_plain(run):
        replicate_plain(p.settings, p.prior, e.means, run.horizon, run.checkpoints, rng,
                        pseudo, regret, best, shares, pulls, diagnostics, final_stats)
        return
    replicate(
        p.code, p.settings, p.prior, p.extra, e.family, e.means, e.change_times, e.change_means,
        e.params, np.full(n_arms, e.params[NOISE_SD]), np.zeros((4, n_arms)),
        np.ones(n_arms, dtype=np.bool_), run.horizon, run.batch, run.delay, run.checkpoints,
        student_t_tail_table(), rng, pseudo, regret, best, shares, pulls, trace_rows,
        diagnostics, final_stats, np.zeros((0, 4, n_arms)),
    )


def _is_plain(run: _Run) -> bool:
    """Whether ``replicate_plain`` computes this run (the same numbers, faster)."""
    p, e, settings = run.policy, run.environment, run.policy.settings
    half_life = p.extra[X_HALF_LIFE]
    return bool(
        p.code == THOMPSON and e.family == BERNOULLI
        and p.extra[X_QUADRATURE] == 0.0
        and settings[layout.MIN_SHARE] == 0.0 and settings[layout.MAX_SHARE] >= 1.0
        and settings[layout.EPSILON] == 0.0 and settings[layout.WARMUP] == 0.0
        and math.isnan(settings[layout.TOP_TWO])
        and not settings[layout.CONTROL_INDEX] >= 0.0
        and not (half_life > 0.0 and math.isfinite(half_life))
        and e.change_times.shape[0] == 0
        and e.params[DRIFT_SD] == 0.0 and e.params[CHURN] == 0.0
        and run.batch == 1 and run.delay == 0.0
    )


def _generators(seed: int, stop: int, start: int = 0) -> list[np.random.Generator]:
    """Generators of replications start .. stop-1: replication i gets child i of
    ``SeedSequence(seed)`` (what ``spawn`` would give it), whatever the range asked for."""
    return [np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))
            for i in range(start, stop)]


def simulate(
    policy: PolicySpec,
    environment: Environment,
    *,
    horizon: int,
    reps: int,
    seed: int,
    batch: int = 1,
    delay: float = 0.0,
    checkpoints: npt.ArrayLike | None = None,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Run ``reps`` replications of ``policy`` on ``environment`` for ``horizon`` steps.

    ``threads`` (default: all cores) only changes the speed, never the numbers. ``progress``
    is called from this thread with the number of replications just finished.
    """
    if isinstance(reps, bool) or int(reps) != reps or reps < 1:
        raise ValueError(f"reps must be an integer >= 1, got {reps!r}")
    return simulate_chunk(policy, environment, horizon=horizon, seed=seed, start=0,
                          stop=int(reps), batch=batch, delay=delay, checkpoints=checkpoints,
                          threads=threads, progress=progress)


def simulate_chunk(
    policy: PolicySpec,
    environment: Environment,
    *,
    horizon: int,
    seed: int,
    start: int,
    stop: int,
    batch: int = 1,
    delay: float = 0.0,
    checkpoints: npt.ArrayLike | None = None,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Replications ``start`` .. ``stop``-1 of the run :func:`simulate` makes with the same
    arguments (and any ``reps >= stop``): its rows ``start:stop``, bit for bit.

    Replication i depends only on ``seed`` and i, so a run cut into chunks computed anywhere
    (threads, processes, machines) and put back in row order is the run itself. An empty
    chunk (``start == stop``) only validates the arguments.
    """
    run = _prepare(policy, environment, horizon, batch, delay, checkpoints)
    for name, value in (("start", start), ("stop", stop)):
        if isinstance(value, bool) or int(value) != value or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if stop < start:
        raise ValueError(f"stop must be >= start, got start={start!r}, stop={stop!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads!r}")
    reps = int(stop) - int(start)
    n_checkpoints, n_arms = run.checkpoints.shape[0], environment.n_arms
    pseudo = np.zeros((reps, n_checkpoints))
    regret = np.zeros((reps, n_checkpoints))
    best = np.zeros((reps, n_checkpoints))
    shares = np.zeros((reps, n_checkpoints, n_arms))
    pulls = np.zeros((reps, n_arms))
    diagnostics = np.zeros((reps, N_DIAGNOSTICS))
    final_stats = np.zeros((reps, 4, n_arms))
    no_trace = np.zeros((0, N_TRACE))
    generators = _generators(seed, int(stop), int(start))

    def replication(i: int) -> None:
        _run_one(run, generators[i], pseudo[i], regret[i], best[i], shares[i], pulls[i],
                 no_trace, diagnostics[i], final_stats[i])

    started = time.perf_counter()
    if reps > 0:
        run_replications(replication, reps, threads, progress)
    return SimulationResult(
        policy=policy.label,
        checkpoints=run.checkpoints,
        pseudo_regret=pseudo,
        regret=regret,
        best_arm_rate=best,
        shares=shares,
        pulls=pulls,
        seconds=time.perf_counter() - started,
    )


def trace(policy: PolicySpec, environment: Environment, *, horizon: int, seed: int,
          batch: int = 1, delay: float = 0.0) -> Trace:
    """One replication step by step: the first replication of :func:`simulate` (same seed)."""
    run = _prepare(policy, environment, horizon, batch, delay, None)
    n_checkpoints, n_arms = run.checkpoints.shape[0], environment.n_arms
    rows = np.zeros((run.horizon, N_TRACE))
    diagnostics = np.zeros(N_DIAGNOSTICS)
    final_stats = np.zeros((4, n_arms))
    _run_one(run, _generators(seed, 1)[0], np.zeros(n_checkpoints), np.zeros(n_checkpoints),
             np.zeros(n_checkpoints), np.zeros((n_checkpoints, n_arms)), np.zeros(n_arms), rows,
             diagnostics, final_stats)
    return Trace(
        arms=rows[:, T_ARM].astype(np.int64),
        rewards=rows[:, T_REWARD].copy(),
        arm_means=rows[:, T_ARM_MEAN].copy(),
        best_means=rows[:, T_BEST_MEAN].copy(),
        propensities=rows[:, T_PROPENSITY].copy(),
        revisions=rows[:, T_REVISION].astype(np.int64),
        stats=final_stats[:3].copy(),
        counts=final_stats[3].copy(),
        delivered=int(diagnostics[D_DELIVERED]),
        pending=int(diagnostics[D_PENDING]),
        pending_reward=float(diagnostics[D_PENDING_REWARD]),
        discarded=int(diagnostics[D_DISCARDED]),
        delay_sum=float(diagnostics[D_DELAY_SUM]),
        retired=int(diagnostics[D_RETIRED]),
        quadratures=int(diagnostics[D_QUADRATURES]),
        mean_min=float(diagnostics[D_MEAN_MIN]),
        mean_max=float(diagnostics[D_MEAN_MAX]),
    )
