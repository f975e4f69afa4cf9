"""Guardrails: each arm's probability of being the best *feasible* arm, and of violating.

An arm is feasible when every guardrail metric of it keeps its threshold: an absolute one
(``mean >= t`` when higher is better, ``mean <= t`` when lower is), or one relative to the
control arm's mean c of the same metric, ``level = c + r |c|`` (r the allowed relative change:
-0.02 is "no worse than 2% below control" for a higher-is-better metric, +0.05 "no more than 5%
above" for a lower-is-better one; |c| keeps the sense of "worse" for negative means). The
control is always feasible, so traffic always has somewhere safe to go. The allocation is
P(arm is the best feasible arm) under the joint posterior, whose metrics are independent per
arm and metric (each metric has its own conjugate posterior, updated from its own rewards).

``feasible_best`` (the service's and the simulator's kernel). Given the control's guardrail
means, arms are feasible independently, arm j with probability p_j, and

    P(i is the best feasible) = p_i * integral f_i(x) prod_{j != i} (1 - p_j S_j(x)) dx

with f, S the density and survival function of each arm's primary mean: one quadrature on the
primary's merged grid (the best-arm kernel's nodes, ``bandit.policy.best_arm``). With absolute
thresholds only, p_j is exact and so is the share (quadrature error ~1e-4). Relative thresholds
make p_j depend on the control's means: the share is averaged over ``OUTER`` Latin-hypercube
draws of them (inverse CDF of each control metric's posterior; fewer beyond
``FULL_DRAWS_ARMS`` arms), the inner probability exact, and its Monte Carlo standard error
is reported (about 1e-3 at worst in the tests, beside floors of 1e-2 and more).

Slow references for the tests (joint draws of everything; scipy's laws) are in
``tests/support/guardrails_reference.py``.
"""

from __future__ import annotations

import math

import numpy as np

from bandit.jit import jit
from bandit.policy.best_arm import (
    _expit,
    _group_cdf,
    _group_pdf,
    law_frame,
    merged_grid,
)
from bandit.policy.layout import BERNOULLI, BoolArray, FloatArray, IntArray
from bandit.policy.posteriors import marginal_parameters

__all__ = ["ABSOLUTE", "HIGHER", "LOWER", "RELATIVE", "feasible_best"]

#: A guardrail's direction.
HIGHER, LOWER = 1, -1
#: Threshold kinds: an absolute level, or a relative change against the control.
ABSOLUTE, RELATIVE = 0, 1


#: Nodes of each arm's guardrail-metric law table (sinh-spaced, as the best-arm kernel's).
TABLE_NODES = 257
#: Draws of the control's guardrail means when a threshold is relative to them, in
#: ``REPLICATES`` independent Latin hypercubes.
OUTER = 256
REPLICATES = 8
#: Up to this many racing arms all ``OUTER`` draws are made; beyond, proportionally fewer (at
#: least 2 per replicate), so that the refresh's cost stays about linear in the arms: its
#: standard error, reported, grows as the square root (measured at K=1000: 16 draws, 53 ms
#: under load; `python -m benchmarks.bench_guardrails --arms 1000`).
FULL_DRAWS_ARMS = 25


@jit
def _law_nodes(family: int, c0: float, c1: float, c2: float, tail_table: FloatArray,
               nodes: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """A law's quadrature variable (logit of the mean for Beta, the mean for Student-t) on
    ``nodes`` sinh-spaced points, its density there and its CDF (normalised to end at 1)."""
    center, scale, spread = law_frame(family, c0, c1, c2, tail_table)
    x = np.empty(nodes)
    for j in range(nodes):
        x[j] = center + scale * math.sinh(spread * (-1.0 + 2.0 * j / (nodes - 1)))
    f = _group_pdf(family, c0, c1, c2, x, 0, nodes)
    return x, f, _group_cdf(f, x, 0)


@jit
def _variable(family: int, mean: float) -> float:
    """A mean level in the quadrature variable's scale (logit for a Beta law's mean)."""
    if family != BERNOULLI:
        return mean
    if mean <= 0.0:
        return -math.inf
    if mean >= 1.0:
        return math.inf
    return math.log(mean) - math.log1p(-mean)


@jit
def _mean(family: int, v: float) -> float:
    return _expit(v) if family == BERNOULLI else v


@jit
def _cdf_at(x: FloatArray, cdf: FloatArray, v: float) -> float:
    """The tabulated CDF at v, linear between nodes (0 below the table, 1 above)."""
    n = x.shape[0]
    if v <= x[0]:
        return 0.0
    if v >= x[n - 1]:
        return 1.0
    j = np.searchsorted(x, v, side="right")
    t = (v - x[j - 1]) / (x[j] - x[j - 1])
    return float(cdf[j - 1] + t * (cdf[j] - cdf[j - 1]))


@jit
def _quantile(x: FloatArray, cdf: FloatArray, u: float) -> float:
    """The inverse of ``_cdf_at``."""
    n = x.shape[0]
    j = np.searchsorted(cdf, u, side="right")
    if j <= 0:
        return float(x[0])
    if j >= n:
        return float(x[n - 1])
    width = cdf[j] - cdf[j - 1]
    t = (u - cdf[j - 1]) / width if width > 0.0 else 0.5
    return float(x[j - 1] + t * (x[j] - x[j - 1]))


@jit
def _primary_grid(family: int, marginals: FloatArray, racing: BoolArray,
                  tail_table: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The racing arms' primary laws on one merged, thinned grid: the grid, each arm's density
    f (K, n) and survival function S (K, n) there (rows of arms not racing are zero)."""
    n_arms = marginals.shape[1]
    counts = np.zeros(n_arms, dtype=np.int64)
    center = np.zeros(n_arms)
    scale = np.zeros(n_arms)
    spread = np.zeros(n_arms)
    for k in range(n_arms):
        if not racing[k]:
            continue
        center[k], scale[k], spread[k] = law_frame(family, marginals[0, k], marginals[1, k],
                                                   marginals[2, k], tail_table)
        counts[k] = min(max(1 + 16 * math.ceil(spread[k]), 65), 513)
    # No floor to keep: the lowest node is kept anyway.
    x = merged_grid(center, scale, spread, counts, -math.inf)
    n = x.shape[0]
    density = np.zeros((n_arms, n))
    survival = np.zeros((n_arms, n))
    for k in range(n_arms):
        if not racing[k]:
            continue
        f = _group_pdf(family, marginals[0, k], marginals[1, k], marginals[2, k], x, 0, n)
        cdf = _group_cdf(f, x, 0)
        density[k] = f
        for j in range(n):
            survival[k, j] = 1.0 - cdf[j]
    return x, density, survival


@jit
def _best_feasible(family: int, x: FloatArray, density: FloatArray, survival: FloatArray,
                   feasible: FloatArray, racing: BoolArray) -> tuple[FloatArray, float]:
    """P(i is the best feasible) for independent feasibility probabilities ``feasible``: the
    module's integral, with exact zero factors (a sure arm below its support) counted apart so
    that an arm's own factor can be divided out; and E[M], M the best feasible arm's primary
    mean, whose law is P(M <= x) = prod_j (1 - p_j S_j(x)) (the control, sure, keeps M
    defined): the mean at the grid's start plus the integral of P(M > x) in mean units."""
    n_arms, n = density.shape
    product = np.ones(n)
    zeros = np.zeros(n, dtype=np.int64)
    for k in range(n_arms):
        if not racing[k] or feasible[k] <= 0.0:
            continue
        p = feasible[k]
        for j in range(n):
            factor = 1.0 - p * survival[k, j]
            if factor > 0.0:
                product[j] *= factor
            else:
                zeros[j] += 1
    out = np.zeros(n_arms)
    for i in range(n_arms):
        if not racing[i] or feasible[i] <= 0.0:
            continue
        p = feasible[i]
        total = 0.0
        previous = 0.0
        for j in range(n):
            own = 1.0 - p * survival[i, j]
            value = 0.0
            if own > 0.0:
                if zeros[j] == 0:
                    value = density[i, j] * product[j] / own
            elif zeros[j] == 1:
                value = density[i, j] * product[j]
            if j > 0:
                total += 0.5 * (value + previous) * (x[j] - x[j - 1])
            previous = value
        out[i] = p * total
    expected_max = _mean(family, x[0])
    previous = 0.0
    for j in range(n):
        above = 1.0 - (product[j] if zeros[j] == 0 else 0.0)
        if family == BERNOULLI:  # the grid is in logits: d mean = mean (1 - mean) d logit
            mean = _expit(x[j])
            above *= mean * (1.0 - mean)
        if j > 0:
            expected_max += 0.5 * (above + previous) * (x[j] - x[j - 1])
        previous = above
    return out, expected_max


@jit
def feasible_best(primary_family: int, primary: FloatArray, families: IntArray,
                  guards: FloatArray, directions: IntArray, kinds: IntArray,
                  thresholds: FloatArray, control: int, racing: BoolArray,
                  tail_table: FloatArray, outer: int,
                  rng: np.random.Generator) -> tuple[FloatArray, FloatArray, FloatArray,
                                                     FloatArray, float]:
    """P(best feasible) of every arm, its Monte Carlo standard error (0 when exact), each
    arm's P(violates) per guardrail (G, K), P(violates any) (K), and the expected primary
    mean of the best feasible arm (for the winner call's expected loss).

    ``primary`` and ``guards[g]``: posterior parameters (4, K) (tempered for the primary only:
    feasibility is judged on the untempered evidence). ``control`` (-1: none) is always
    feasible; ``racing``: the arms in the race (the control among them). When no arm can be
    feasible (no control, every arm surely violating) the shares are all 0.
    """
    n_arms = primary.shape[1]
    n_guards = guards.shape[0]
    marginals = marginal_parameters(primary_family, primary)
    x, density, survival = _primary_grid(primary_family, marginals, racing, tail_table)
    # Each arm's law of each guardrail metric, tabulated.
    nodes = np.zeros((n_guards, n_arms, TABLE_NODES))
    cdfs = np.zeros((n_guards, n_arms, TABLE_NODES))
    relative = -1
    for g in range(n_guards):
        law = marginal_parameters(families[g], guards[g])
        if kinds[g] == RELATIVE:
            relative = g
        for k in range(n_arms):
            if racing[k] or k == control:
                xs, _, cdf = _law_nodes(families[g], law[0, k], law[1, k], law[2, k],
                                        tail_table, TABLE_NODES)
                nodes[g, k] = xs
                cdfs[g, k] = cdf
    draws = outer if relative >= 0 and control >= 0 else 1
    # Latin hypercube, in REPLICATES independent hypercubes (so that the estimate's error can be
    # measured: the spread of their means): per guardrail, one uniform in each of a
    # hypercube's strata, shuffled.
    replicates = REPLICATES if draws > 1 else 1
    per = draws // replicates
    if draws > 1:  # each draw costs a quadrature over every arm: fewer with many arms
        per = max(2, min(per, per * FULL_DRAWS_ARMS // max(int(racing.sum()), 1)))
    draws = per * replicates
    strata = np.empty((n_guards, draws))
    for r in range(replicates):
        for g in range(n_guards):
            order = rng.permutation(per)
            for m in range(per):
                strata[g, r * per + m] = (order[m] + rng.random()) / per
    shares = np.zeros((draws, n_arms))
    best_means = np.zeros(draws)
    violates = np.zeros((n_guards, n_arms))
    feasible_sum = np.zeros(n_arms)
    feasible = np.empty(n_arms)
    levels = np.empty(n_guards)
    for m in range(draws):
        for g in range(n_guards):
            if kinds[g] == RELATIVE and control >= 0:
                c = _mean(families[g], _quantile(nodes[g, control], cdfs[g, control],
                                                 strata[g, m]))
                levels[g] = c + thresholds[g] * abs(c)
            else:
                levels[g] = thresholds[g]
        for k in range(n_arms):
            feasible[k] = 0.0
            if not (racing[k] or k == control):
                continue
            p = 1.0
            for g in range(n_guards):
                below = _cdf_at(nodes[g, k], cdfs[g, k], _variable(families[g], levels[g]))
                bad = below if directions[g] == HIGHER else 1.0 - below
                violates[g, k] += bad
                p *= 1.0 - bad
            feasible[k] = 1.0 if k == control else p
            feasible_sum[k] += feasible[k]
        shares[m], best_means[m] = _best_feasible(primary_family, x, density, survival,
                                                  feasible, racing)
    mean = np.zeros(n_arms)
    error = np.zeros(n_arms)
    for k in range(n_arms):
        mean[k] = shares[:, k].mean()
        if replicates > 1:
            means = np.empty(replicates)
            for r in range(replicates):
                means[r] = shares[r * per:(r + 1) * per, k].mean()
            error[k] = means.std() / math.sqrt(replicates - 1)
    total = mean.sum()
    if total > 0.0:
        mean /= total
        error /= total
    any_violation = np.zeros(n_arms)
    for k in range(n_arms):
        if racing[k] or k == control:
            any_violation[k] = 0.0 if k == control else 1.0 - feasible_sum[k] / draws
    for g in range(n_guards):
        for k in range(n_arms):
            violates[g, k] = 0.0 if k == control else violates[g, k] / draws
    return mean, error, violates, any_violation, best_means.mean()
