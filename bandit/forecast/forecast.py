"""Forecasts for the tuning advisor: the next N decisions of a live experiment, simulated.

Each replication draws one plausible truth from the live posterior (every arm's mean, and for
Gaussian rewards its noise), then runs the replication loop
(:func:`bandit.forecast.replicate.replicate`, the service's own policy code) from the live
statistics under every scenario (the current settings, a proposed change) with the same random
numbers, so that scenario differences are paired: what differs between two scenarios' results
is the settings, not the luck.

At every checkpoint the loop hands back the statistics the service would hold; from them
:func:`first_call` finds when the stats endpoint would first call a winner (P(best) at or
above the threshold, expected loss at or below the bound). The advisor reports the results
with :func:`mean_interval` and :func:`wilson_interval`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bandit.forecast.codes import (
    N_DIAGNOSTICS,
    N_ENV_PARAMS,
    N_EXTRA,
    N_TRACE,
    THOMPSON,
    X_HALF_LIFE,
    X_HORIZON,
    X_QUADRATURE,
)
from bandit.forecast.parallel import run_replications
from bandit.forecast.replicate import replicate
from bandit.jit import jit
from bandit.policy import best_arm, layout, posteriors, student_t_tail_table
from bandit.policy.layout import BERNOULLI, BoolArray, FloatArray, IntArray

__all__ = [
    "CALL_STRIDE",
    "CHECKPOINTS",
    "Outcome",
    "Problem",
    "Scenario",
    "call_times",
    "draw_truths",
    "first_call",
    "forecast",
    "linear_checkpoints",
    "mean_interval",
    "wilson_interval",
]


#: The winner call is looked for at every CALL_STRIDE-th checkpoint (and now): each look is a
#: best-arm quadrature, which at K=100 costs about as much as simulating 150 decisions.
CALL_STRIDE = 3
#: Checkpoints of a forecast (evenly spaced) by default.
CHECKPOINTS = 60


@dataclass(frozen=True)
class Scenario:
    """One way of running the experiment: settings and which arms may be served."""

    settings: FloatArray  # (layout.N_SETTINGS,), as the service computes them
    active: BoolArray  # (K,)
    half_life: float  # forgetting half-life in decisions; inf: never forget

    @property
    def needs_quadrature(self) -> bool:
        """Whether the replication loop takes the probability path (one quadrature per update).

        Top-two goes there too: drawn decision by decision, a confident leader makes nearly
        every challenger draw fail and fall back to a quadrature of its own (measured: 39 s
        for a forecast estimated at 0.2 s), while the service itself serves top-two from its
        allocation probabilities, which is what the probability path does.
        """
        return bool(self.settings[layout.MIN_SHARE] > 0.0
                    or self.settings[layout.MAX_SHARE] < 1.0 or not self.active.all()
                    or not np.isnan(self.settings[layout.TOP_TWO]))


@dataclass(frozen=True)
class Problem:
    """The live state a forecast starts from, in the kernels' layout."""

    family: int
    prior: FloatArray  # (4,)
    stats: FloatArray  # (3, K), decayed to now
    counts: FloatArray  # (K,) raw observation counts
    horizon: int  # decisions to simulate
    batch: int  # decisions between posterior updates
    delay: float  # mean reward delay, in decisions (geometric)
    checkpoints: IntArray  # (C,) increasing decision counts, the last one == horizon
    threshold: float  # winner call: P(best) at least this ...
    max_loss: float  # ... and expected loss at most this


@dataclass(frozen=True)
class Outcome:
    """One scenario's results over the replications (rows)."""

    regret: FloatArray  # (R, C) cumulative expected regret: sum of mu* - mu_arm
    best_arm_rate: FloatArray  # (R,) share of decisions on the truly best arm
    shares: FloatArray  # (R, C, K) each arm's share of the decisions since the last checkpoint
    #: (R,) index into :func:`call_times` of the first winner call, or -1 if none
    call_checkpoint: IntArray
    call_correct: BoolArray  # (R,) whether that call named the truly best arm


def draw_truths(family: int, stats: FloatArray, prior: FloatArray,
                rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    """One plausible truth from the (untempered) posterior: each arm's mean and noise sd."""
    params = posteriors.posterior_parameters(family, stats, prior, 1.0)
    if family == BERNOULLI:
        return rng.beta(params[0], params[1]), np.ones(stats.shape[1])
    precision = rng.gamma(params[2], 1.0 / params[3])
    means = rng.normal(params[0], 1.0 / np.sqrt(params[1] * precision))
    return means, 1.0 / np.sqrt(precision)


@jit
def first_call(family: int, checkpoint_stats: FloatArray, prior: FloatArray,
                active: BoolArray, threshold: float, max_loss: float, tail_table: FloatArray,
                rng: np.random.Generator) -> tuple[int, int]:
    """(checkpoint, arm) of the first winner call the stats endpoint would make, or (-1, -1)."""
    for c in range(checkpoint_stats.shape[0]):
        stats = checkpoint_stats[c, :3]
        p_best, expected_max = best_arm.best_arm_probabilities(
            family, stats, prior, 1.0, active, tail_table, rng)
        leader = -1
        for k in range(p_best.shape[0]):
            if active[k] and (leader < 0 or p_best[k] > p_best[leader]):
                leader = k
        if leader < 0 or p_best[leader] < threshold:
            continue
        params = posteriors.posterior_parameters(family, stats, prior, 1.0)
        means = posteriors.posterior_means(family, posteriors.marginal_parameters(family, params))
        if max(expected_max - means[leader], 0.0) <= max_loss:
            return c, leader
    return -1, -1


def forecast(problem: Problem, scenarios: Sequence[Scenario], *, reps: int, seed: int,
             threads: int | None = None,
             progress: Callable[[int], None] | None = None) -> list[Outcome]:
    """Simulate ``reps`` plausible futures under every scenario (paired, see the module doc)."""
    n_arms = problem.stats.shape[1]
    n_checkpoints = problem.checkpoints.shape[0]
    outcomes = [
        Outcome(regret=np.zeros((reps, n_checkpoints)), best_arm_rate=np.zeros(reps),
                shares=np.zeros((reps, n_checkpoints, n_arms)),
                call_checkpoint=np.full(reps, -1, dtype=np.int64),
                call_correct=np.zeros(reps, dtype=np.bool_))
        for _ in scenarios
    ]
    seeds = np.random.SeedSequence(seed).spawn(reps)
    initial = np.vstack([problem.stats, problem.counts[None, :]])
    tail_table = student_t_tail_table()
    call_rows = _call_rows(n_checkpoints)
    no_changes = np.zeros((0, n_arms))
    env_params = np.zeros(N_ENV_PARAMS)
    extras = []  # the policy's extra parameters of each scenario (read-only in the loop)
    for scenario in scenarios:
        extra = np.zeros(N_EXTRA)
        extra[X_HALF_LIFE] = scenario.half_life
        extra[X_HORIZON] = problem.horizon
        extra[X_QUADRATURE] = 1.0 if scenario.needs_quadrature else 0.0
        extras.append(extra)

    def future(r: int) -> None:
        truth_seed, run_seed, call_seed = seeds[r].spawn(3)
        means, noise = draw_truths(problem.family, problem.stats, problem.prior,
                                   np.random.default_rng(truth_seed))
        best = int(np.argmax(means))
        for scenario, extra, outcome in zip(scenarios, extras, outcomes, strict=True):
            pulls = np.zeros(n_arms)
            # Row 0: now; row c + 1: at checkpoint c.
            checkpoint_stats = np.zeros((n_checkpoints + 1, 4, n_arms))
            checkpoint_stats[0] = initial
            replicate(
                THOMPSON, scenario.settings, problem.prior, extra, problem.family, means,
                np.zeros(0, dtype=np.int64), no_changes, env_params, noise, initial,
                scenario.active, problem.horizon, problem.batch, problem.delay,
                problem.checkpoints, tail_table, np.random.default_rng(run_seed),
                outcome.regret[r], np.zeros(n_checkpoints), np.zeros(n_checkpoints),
                outcome.shares[r], pulls, np.zeros((0, N_TRACE)), np.zeros(N_DIAGNOSTICS),
                np.zeros((4, n_arms)), checkpoint_stats[1:],
            )
            outcome.best_arm_rate[r] = pulls[best] / problem.horizon
            checkpoint, arm = first_call(
                problem.family, checkpoint_stats[call_rows], problem.prior, scenario.active,
                problem.threshold, problem.max_loss, tail_table,
                np.random.default_rng(call_seed))
            outcome.call_checkpoint[r] = checkpoint
            outcome.call_correct[r] = arm == best

    run_replications(future, reps, threads, progress)
    return outcomes


def _call_rows(n_checkpoints: int) -> IntArray:
    """Rows of the checkpoint statistics (row 0: now) at which a winner call is looked for:
    now, every CALL_STRIDE-th checkpoint, and the last."""
    rows = list(range(CALL_STRIDE, n_checkpoints + 1, CALL_STRIDE))
    if not rows or rows[-1] != n_checkpoints:
        rows.append(n_checkpoints)
    return np.array([0, *rows], dtype=np.int64)


def call_times(problem: Problem) -> IntArray:
    """Decisions from now at which :attr:`Outcome.call_checkpoint` indices fall."""
    decisions = np.concatenate([[0], problem.checkpoints]).astype(np.int64)
    return decisions[_call_rows(problem.checkpoints.shape[0])]


def linear_checkpoints(horizon: int, count: int = CHECKPOINTS) -> IntArray:
    """About ``count`` evenly spaced decision counts up to ``horizon`` (operators think in time,
    so forecasts are reported on a linear scale)."""
    steps = np.unique(np.round(np.linspace(horizon / count, horizon, count)).astype(np.int64))
    steps = steps[steps >= 1]
    steps[-1] = horizon
    return steps


def mean_interval(values: FloatArray) -> tuple[float, float, float]:
    """Mean and its 95% normal interval (Monte Carlo error of an expectation)."""
    mean = float(values.mean())
    half = 1.96 * float(values.std(ddof=1)) / math.sqrt(values.shape[0]) if values.shape[0] > 1 \
        else math.inf
    return mean, mean - half, mean + half


def wilson_interval(successes: int, trials: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sensible at 0 and 1, unlike the normal one)."""
    if trials == 0:
        return 0.0, 1.0
    z = 1.96
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (
        1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)
