"""Guardrail violations in a forecast: the traffic a setting sends to arms that truly break a
guardrail.

Each replication draws one plausible world from the live (untempered) posteriors: every arm's
primary mean and every guardrail metric's mean (and a Gaussian metric's noise). In that world an
arm is *infeasible* when one of its guardrail means is on the wrong side of its threshold, an
absolute level or ``c + r |c|`` with c the control's drawn mean of that metric (the control
itself is always feasible). Every scenario then runs the service's guarded allocation
(:func:`bandit.policy.guarded_allocation`: P(best feasible) folded with the exploration
settings, and the hard gate with its memory) from the live statistics, recomputed every
``every`` decisions, each decision drawn from the allocation of the moment and rewarded in every
metric (one observation of each metric per decision, after the same geometric delay). What is
counted: the decisions that went to infeasible arms, and the primary regret against the best
feasible arm of the world (a decision on an infeasible arm with a better primary costs
nothing there: it is counted as infeasible traffic instead).

One recomputation costs 0.2-3 ms (a quadrature per Latin-hypercube draw of the control's
means when a threshold is relative), so a forecast recomputes at most ``MAX_RECOMPUTATIONS``
times per replication and scenario, which the advisor turns into a coarser cadence than the
service's when the horizon is long (and says so). Scenarios share each replication's world and
random numbers (paired, as the primary forecast's are). Forgetting is not simulated here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from bandit.forecast.forecast import draw_truths
from bandit.forecast.parallel import run_replications
from bandit.policy import Guard, PolicySettings, guarded_allocation
from bandit.policy.layout import BERNOULLI, BoolArray, FloatArray

__all__ = ["MAX_RECOMPUTATIONS", "GuardOutcome", "GuardProblem",
           "GuardScenario", "forecast_guardrails", "infeasible_arms", "merge_batch",
           "recompute_every",
           "seconds_per_recomputation"]

#: Guarded allocations computed per replication and scenario, at most (at K=20 with a
#: relative threshold, 100 futures x 2 scenarios x 8 take about 8 s of the advisor's 10).
MAX_RECOMPUTATIONS = 8
#: Mixed into the forecast's seed: the guardrails' futures are their own random stream.
_STREAM = 20_020


@dataclass(frozen=True)
class GuardProblem:
    """The live state: the primary's statistics and the guardrail metrics'."""

    family: int
    prior: FloatArray
    stats: FloatArray  # (3, K)
    counts: FloatArray  # (K,)
    metrics: tuple[Guard, ...]
    #: The arm relative thresholds are judged against in the drawn worlds (None: none).
    control: int | None
    horizon: int
    every: int  # decisions between recomputations
    delay: float  # mean reward delay, in decisions (geometric)


@dataclass(frozen=True)
class GuardScenario:
    """One way of running the experiment, as the guarded allocation takes it."""

    settings: PolicySettings
    active: BoolArray
    control: int | None
    gate_min_samples: int | None
    held: BoolArray  # the gate's memory at the start


@dataclass(frozen=True)
class GuardOutcome:
    """One scenario's results over the replications (rows)."""

    infeasible: FloatArray  # (R,) decisions sent to arms infeasible in the replication's world
    held: FloatArray  # (R,) decisions sent to arms the gate held when they were drawn
    pulls: FloatArray  # (R, K) decisions per arm
    #: (R,) primary regret against the best feasible arm of the replication's world: the sum
    #: over decisions of (its primary mean - the decision's arm's)^+.
    regret: FloatArray


def recompute_every(horizon: int, update_every: int) -> int:
    """Decisions between recomputations: the service's cadence, or coarser so that there are
    at most ``MAX_RECOMPUTATIONS``."""
    return max(update_every, math.ceil(horizon / MAX_RECOMPUTATIONS))


def seconds_per_recomputation(n_arms: int, relative: bool) -> float:
    """One recomputation of the simulation, measured: the guarded allocation with two
    guardrails and its batch of decisions took 1.3 ms at K=3 and 5 ms at K=20 with a relative
    threshold (a posterior's grid grows with its spread; a lone ``guarded_allocation`` on
    tight posteriors takes 0.44 and 2.2 ms); without one, a Latin-hypercube draw instead of
    256, about a quarter."""
    return 1e-3 + 2e-4 * n_arms if relative else 4e-4 + 5e-5 * n_arms


def infeasible_arms(metrics: Sequence[Guard], means: FloatArray,
                    control: int | None) -> BoolArray:
    """Arms whose true mean (``means``: (G, K)) of some guardrail metric breaks its
    threshold; the control never does."""
    n_arms = means.shape[1]
    out = np.zeros(n_arms, dtype=np.bool_)
    for g, metric in enumerate(metrics):
        level = metric.threshold
        if metric.relative:
            assert control is not None
            c = means[g, control]
            level = c + metric.threshold * abs(c)
        out |= means[g] < level if metric.higher else means[g] > level
    if control is not None:
        out[control] = False
    return out


def _rewards(family: int, means: FloatArray, noise: FloatArray,
             rng: np.random.Generator) -> FloatArray:
    if family == BERNOULLI:
        return (rng.random(means.shape[0]) < means).astype(np.float64)
    return rng.normal(means, noise)


def merge_batch(family: int, stats: FloatArray, n: FloatArray, total: FloatArray,
                m2: FloatArray) -> None:
    """Add a batch of observations (per arm: their count ``n``, sum ``total`` and squared
    deviations about their own mean ``m2``, unused for Beta counts) to ``stats`` in the
    service's layout: successes and failures, or weight, mean and squared deviations merged by
    Chan's formula (Welford's, one by one, up to rounding)."""
    if family == BERNOULLI:
        stats[0] += total
        stats[1] += n - total
        return
    seen = n > 0
    if not seen.any():
        return
    batch_mean = np.where(seen, total / np.where(seen, n, 1.0), 0.0)
    before = stats[0].copy()
    after = before + n
    safe = np.where(after > 0, after, 1.0)
    delta = batch_mean - stats[1]
    stats[1] = np.where(seen, stats[1] + delta * n / safe, stats[1])
    stats[2] = np.where(seen, stats[2] + m2 + delta**2 * before * n / safe, stats[2])
    stats[0] = after


def _merge(family: int, stats: FloatArray, counts: FloatArray, n: FloatArray,
           total: FloatArray, squares: FloatArray) -> None:
    """Add a batch of observations given per arm as count, sum and sum of squares."""
    counts += n
    batch_mean = np.where(n > 0, total / np.where(n > 0, n, 1.0), 0.0)
    merge_batch(family, stats, n, total, np.maximum(squares - n * batch_mean**2, 0.0))


def _simulate(problem: GuardProblem, scenario: GuardScenario, infeasible: BoolArray,
              means: FloatArray, noise: FloatArray, rng: np.random.Generator,
              pulls: FloatArray) -> tuple[float, float]:
    """One scenario in one world: (decisions on infeasible arms, decisions on held arms);
    ``pulls`` receives the decisions per arm."""
    n_arms = problem.stats.shape[1]
    metrics = problem.metrics
    families = [problem.family, *(m.family for m in metrics)]
    stats = [problem.stats.copy(), *(m.stats.copy() for m in metrics)]
    counts = [problem.counts.copy(), *(m.counts.copy() for m in metrics)]
    every = problem.every
    updates = math.ceil(problem.horizon / every)
    # Observations not visible yet, by the recomputation that first sees them:
    # (slot, metric, [count, sum, sum of squares], arm).
    pending = np.zeros((updates, len(families), 3, n_arms))
    held = scenario.held.copy()
    arrive = 1.0 / (1.0 + problem.delay)
    on_infeasible = on_held = 0.0
    for u in range(updates):
        if u > 0:
            for m, family in enumerate(families):
                n, total, squares = pending[u, m]
                _merge(family, stats[m], counts[m], n, total, squares)
        guards = [replace(metric, stats=stats[g + 1], counts=counts[g + 1])
                  for g, metric in enumerate(metrics)]
        guarded = guarded_allocation(problem.family, stats[0], counts[0], problem.prior,
                                     scenario.settings, scenario.active, guards,
                                     scenario.control, scenario.gate_min_samples, held)
        held = guarded.held
        start = u * every
        size = min(every, problem.horizon - start)
        cdf = np.cumsum(guarded.probabilities)
        cdf[-1] = 1.0
        arms = np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), n_arms - 1)
        on_infeasible += float(np.count_nonzero(infeasible[arms]))
        on_held += float(np.count_nonzero(held[arms]))
        pulls += np.bincount(arms, minlength=n_arms)
        lag = rng.geometric(arrive, size) - 1 if problem.delay > 0 else np.zeros(size, np.int64)
        # A reward of decision t after a lag d is seen from decision t + d + 1 on.
        slot = (start + np.arange(size) + lag) // every + 1
        seen = slot < updates
        cells = slot[seen] * n_arms + arms[seen]
        for m, family in enumerate(families):
            values = _rewards(family, means[m, arms], noise[m, arms], rng)[seen]
            for column, weights in enumerate((None, values, values * values)):
                pending[:, m, column] += np.bincount(
                    cells, weights=weights, minlength=updates * n_arms).reshape(updates, n_arms)
    return on_infeasible, on_held


def forecast_guardrails(problem: GuardProblem, scenarios: Sequence[GuardScenario], *,
                        reps: int, seed: int,
                        threads: int | None = None) -> tuple[list[GuardOutcome], BoolArray]:
    """Every scenario in ``reps`` drawn worlds (paired); also which arms were infeasible in
    each world, (R, K)."""
    n_arms = problem.stats.shape[1]
    outcomes = [GuardOutcome(np.zeros(reps), np.zeros(reps), np.zeros((reps, n_arms)),
                             np.zeros(reps)) for _ in scenarios]
    worlds = np.zeros((reps, n_arms), dtype=np.bool_)
    seeds = np.random.SeedSequence([seed, _STREAM]).spawn(reps)

    def future(r: int) -> None:
        truth_seed, run_seed = seeds[r].spawn(2)
        truth_rng = np.random.default_rng(truth_seed)
        drawn = [draw_truths(problem.family, problem.stats, problem.prior, truth_rng)]
        drawn += [draw_truths(m.family, m.stats, m.prior, truth_rng) for m in problem.metrics]
        means = np.stack([d[0] for d in drawn])
        noise = np.stack([d[1] for d in drawn])
        infeasible = infeasible_arms(problem.metrics, means[1:], problem.control)
        worlds[r] = infeasible
        best = means[0][~infeasible].max() if (~infeasible).any() else means[0].max()
        gaps = np.maximum(best - means[0], 0.0)
        for scenario, outcome in zip(scenarios, outcomes, strict=True):
            # The same random numbers in every scenario: differences are the settings'.
            on_infeasible, on_held = _simulate(problem, scenario, infeasible, means, noise,
                                               np.random.default_rng(run_seed),
                                               outcome.pulls[r])
            outcome.infeasible[r] = on_infeasible
            outcome.held[r] = on_held
            outcome.regret[r] = float(outcome.pulls[r] @ gaps)

    run_replications(future, reps, threads, None)
    return outcomes, worlds
