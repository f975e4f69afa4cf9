"""Posteriors: forgetting, posterior parameters and marginals of each arm's mean, and
Thompson draws from them."""

from __future__ import annotations

import math

import numpy as np

from bandit.jit import jit
from bandit.policy.layout import BERNOULLI, BoolArray, FloatArray, IntArray


@jit
def forget(family: int, stats: FloatArray, elapsed: FloatArray, half_life: float) -> FloatArray:
    """Exponential forgetting: evidence older by one half-life counts half as much.

    The Gaussian mean is a weighted mean, so scaling W and q leaves it unchanged. A NaN, infinite
    or non-positive half-life means no forgetting (a copy is returned).
    """
    out = stats.copy()
    if not (half_life > 0.0 and math.isfinite(half_life)):
        return out
    second = 1 if family == BERNOULLI else 2
    for k in range(stats.shape[1]):
        # Clock skew between processes can make elapsed slightly negative; never amplify.
        factor = 2.0 ** (-max(elapsed[k], 0.0) / half_life)
        out[0, k] *= factor
        out[second, k] *= factor
    return out


@jit
def posterior_parameters(
    family: int, stats: FloatArray, prior: FloatArray, temperature: float
) -> FloatArray:
    """Tempered conjugate posterior parameters, float64 (4, K).

    Bernoulli rows: alpha, beta, 0, 0. Gaussian rows: mu_n, kappa_n, alpha_n, beta_n.
    Tempering divides the evidence by ``temperature`` (T > 1 widens the posterior).
    """
    n_arms = stats.shape[1]
    out = np.zeros((4, n_arms))
    inv_t = 1.0 / temperature
    for k in range(n_arms):
        if family == BERNOULLI:
            out[0, k] = prior[0] + stats[0, k] * inv_t
            out[1, k] = prior[1] + stats[1, k] * inv_t
        else:
            normal_gamma_column(prior, stats, inv_t, k, out)
    return out


@jit
def normal_gamma_column(
    prior: FloatArray, stats: FloatArray, inv_temperature: float, k: int, out: FloatArray
) -> None:
    """Rows 0-3 of column k of ``out``: arm k's tempered Normal-Gamma posterior (mu, kappa,
    alpha, beta). Shared with the simulator, so both compute the posterior identically."""
    mu0, kappa0, alpha0, beta0 = prior[0], prior[1], prior[2], prior[3]
    weight = stats[0, k] * inv_temperature
    mean = stats[1, k] if weight > 0.0 else mu0
    sq_dev = stats[2, k] * inv_temperature
    kappa_n = kappa0 + weight
    out[0, k] = (kappa0 * mu0 + weight * mean) / kappa_n
    out[1, k] = kappa_n
    out[2, k] = alpha0 + 0.5 * weight
    out[3, k] = beta0 + 0.5 * sq_dev + kappa0 * weight * (mean - mu0) ** 2 / (2.0 * kappa_n)


@jit
def marginal_parameters(family: int, params: FloatArray) -> FloatArray:
    """Law of each arm's mean: Beta(alpha, beta) rows, or Student-t (dof, loc, scale) rows."""
    n_arms = params.shape[1]
    out = np.zeros((3, n_arms))
    for k in range(n_arms):
        if family == BERNOULLI:
            out[0, k] = params[0, k]
            out[1, k] = params[1, k]
        else:
            mu_n, kappa_n, alpha_n, beta_n = params[0, k], params[1, k], params[2, k], params[3, k]
            out[0, k] = 2.0 * alpha_n
            out[1, k] = mu_n
            out[2, k] = math.sqrt(beta_n / (alpha_n * kappa_n))
    return out


@jit
def posterior_means(family: int, marginals: FloatArray) -> FloatArray:
    """Posterior mean of each arm's mean (the Student-t location, also for dof <= 1)."""
    n_arms = marginals.shape[1]
    out = np.empty(n_arms)
    for k in range(n_arms):
        if family == BERNOULLI:
            out[k] = marginals[0, k] / (marginals[0, k] + marginals[1, k])
        else:
            out[k] = marginals[1, k]
    return out


@jit
def draw_mean(family: int, params: FloatArray, k: int, rng: np.random.Generator) -> float:
    """One posterior draw of arm k's mean (Normal-Gamma: precision first, then the mean)."""
    if family == BERNOULLI:
        return float(rng.beta(params[0, k], params[1, k]))
    precision = rng.gamma(params[2, k], 1.0 / params[3, k])
    return float(rng.normal(params[0, k], 1.0 / math.sqrt(params[1, k] * precision)))


@jit
def thompson_draws(
    family: int,
    stats: FloatArray,
    prior: FloatArray,
    temperature: float,
    n: int,
    rng: np.random.Generator,
) -> FloatArray:
    """``n`` joint draws of every arm's mean from the tempered posterior, float64 (n, K)."""
    params = posterior_parameters(family, stats, prior, temperature)
    n_arms = stats.shape[1]
    out = np.empty((n, n_arms))
    for i in range(n):
        for k in range(n_arms):
            out[i, k] = draw_mean(family, params, k, rng)
    return out


@jit
def _choices_from_params(
    family: int, params: FloatArray, active: BoolArray, n: int, rng: np.random.Generator
) -> IntArray:
    n_arms = params.shape[1]
    out = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        best = -np.inf
        for k in range(n_arms):
            if not active[k]:
                continue
            draw = draw_mean(family, params, k, rng)
            if out[i] < 0 or draw > best:
                best = draw
                out[i] = k
    return out


@jit
def thompson_choices(
    family: int,
    stats: FloatArray,
    prior: FloatArray,
    temperature: float,
    n: int,
    rng: np.random.Generator,
    active: BoolArray,
) -> IntArray:
    """``n`` Thompson decisions: argmax of one posterior draw over the active arms (-1 if none)."""
    params = posterior_parameters(family, stats, prior, temperature)
    return _choices_from_params(family, params, active, n, rng)
