"""Slow references for the guardrail kernel's tests (``bandit.policy.guardrails``): each
arm's P(best feasible) by joint posterior draws of every metric, for any thresholds, and by
scipy's laws and one integral per arm on a fine grid, for absolute thresholds."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import stats as scipy_stats

from bandit.jit import jit
from bandit.policy.guardrails import HIGHER, RELATIVE
from bandit.policy.layout import BERNOULLI, FloatArray
from bandit.policy.posteriors import draw_mean


@jit
def _monte_carlo(primary_family: int, primary: FloatArray, families: npt.NDArray[np.int64],
                 guards: FloatArray, directions: npt.NDArray[np.int64],
                 kinds: npt.NDArray[np.int64], thresholds: FloatArray, control: int,
                 active: npt.NDArray[np.bool_], draws: int,
                 rng: np.random.Generator) -> FloatArray:
    n_arms = primary.shape[1]
    n_guards = guards.shape[0]
    counts = np.zeros(n_arms)
    gamma = np.empty((n_guards, n_arms))
    for _ in range(draws):
        for g in range(n_guards):
            for k in range(n_arms):
                if active[k]:
                    gamma[g, k] = draw_mean(families[g], guards[g], k, rng)
        best, best_value = control, -math.inf
        for k in range(n_arms):
            if not active[k]:
                continue
            feasible = True
            if k != control:
                for g in range(n_guards):
                    level = thresholds[g]
                    if kinds[g] == RELATIVE:
                        level = gamma[g, control] + thresholds[g] * abs(gamma[g, control])
                    if directions[g] * (gamma[g, k] - level) < 0.0:
                        feasible = False
                        break
            if feasible:
                value = draw_mean(primary_family, primary, k, rng)
                if value > best_value:
                    best, best_value = k, value
        counts[best] += 1.0
    return counts / draws


def feasible_best_monte_carlo(primary_family: int, primary: FloatArray,
                              families: list[int], guards: list[FloatArray],
                              directions: list[int], kinds: list[int],
                              thresholds: list[float], control: int,
                              active: npt.NDArray[np.bool_], draws: int,
                              seed: int) -> tuple[FloatArray, FloatArray]:
    """Each arm's P(best feasible) from ``draws`` joint posterior draws, and its Monte Carlo
    standard error. ``primary`` and each of ``guards``: posterior parameters (4, K) as
    ``bandit.policy.posteriors.posterior_parameters`` gives them."""
    shares = _monte_carlo(
        primary_family, np.ascontiguousarray(primary, dtype=np.float64),
        np.asarray(families, dtype=np.int64),
        np.ascontiguousarray(np.stack(guards) if guards else np.zeros((0, 4, primary.shape[1]))),
        np.asarray(directions, dtype=np.int64), np.asarray(kinds, dtype=np.int64),
        np.asarray(thresholds, dtype=np.float64), control, np.asarray(active, dtype=np.bool_),
        draws, np.random.default_rng(seed))
    return shares, np.sqrt(shares * (1.0 - shares) / draws)


def _law(family: int, params: FloatArray, k: int) -> scipy_stats.rv_continuous:
    """The law of arm k's mean: Beta, or the Normal-Gamma's Student-t marginal."""
    if family == BERNOULLI:
        return scipy_stats.beta(params[0, k], params[1, k])
    mu, kappa, alpha, beta = params[:, k]
    return scipy_stats.t(2.0 * alpha, loc=mu, scale=math.sqrt(beta / (alpha * kappa)))


def feasible_probabilities(families: list[int], guards: list[FloatArray],
                           directions: list[int], thresholds: list[float], control: int,
                           active: npt.NDArray[np.bool_]) -> FloatArray:
    """P(arm is feasible) for absolute thresholds: the product over guardrails of the
    posterior mass on the right side of each (1 for the control, 0 for inactive arms)."""
    n_arms = len(active)
    out = np.zeros(n_arms)
    for k in range(n_arms):
        if not active[k]:
            continue
        p = 1.0
        if k != control:
            for family, params, direction, level in zip(families, guards, directions,
                                                        thresholds, strict=True):
                law = _law(family, params, k)
                p *= law.sf(level) if direction == HIGHER else law.cdf(level)
        out[k] = p
    return out


def feasible_best_exact(primary_family: int, primary: FloatArray, families: list[int],
                        guards: list[FloatArray], directions: list[int],
                        thresholds: list[float], control: int,
                        active: npt.NDArray[np.bool_], points: int = 20_001) -> FloatArray:
    """Each arm's P(best feasible) when every threshold is absolute, by one integral per arm
    on a grid of ``points`` over the primary means' joint support (see the module's doc)."""
    feasible = feasible_probabilities(families, guards, directions, thresholds, control,
                                      active)
    laws = [_law(primary_family, primary, k) if active[k] else None
            for k in range(len(active))]
    low = min(law.ppf(1e-12) for law in laws if law is not None)
    high = max(law.ppf(1 - 1e-12) for law in laws if law is not None)
    x = np.linspace(low, high, points)
    densities = {k: law.pdf(x) for k, law in enumerate(laws) if law is not None}
    # P(arm j is not a feasible arm above x): 1 - p_j (1 - F_j(x)).
    below = {k: 1.0 - feasible[k] * law.sf(x) for k, law in enumerate(laws) if law is not None}
    out = np.zeros(len(active))
    for i, density in densities.items():
        others = np.ones_like(x)
        for j, factor in below.items():
            if j != i:
                others *= factor
        out[i] = feasible[i] * np.trapezoid(density * others, x)
    return out
