"""Decision kernels of the classic baselines the simulator compares Thompson sampling with.

Uniform, epsilon-greedy, UCB1, KL-UCB, Bayes-UCB and SW-UCB (formulas and references in
:mod:`simulations.policies`), one decision per call of :func:`choose_index_policy` from the
replication loop. ``view`` holds the statistics the policy has seen, in the service's layout
(Bernoulli: successes, failures; Gaussian: weight, mean, squared deviations), except for
SW-UCB whose rows are the windowed count and reward sum.

Unobserved arms have an infinite index; ties between index maxima are broken uniformly at
random.
"""

from __future__ import annotations

import math

import numpy as np

from bandit.forecast.codes import (
    BAYES_UCB,
    EPSILON_GREEDY,
    KL_UCB,
    SW_UCB,
    UCB1,
    UNIFORM,
    X_C,
    X_EPSILON,
    X_HORIZON,
    X_SCALE,
    X_TAU,
    X_XI,
)
from bandit.jit import jit
from bandit.policy.layout import BERNOULLI, FloatArray

__all__ = [
    "bernoulli_kl_scalar",
    "beta_upper_quantile",
    "beta_upper_tail",
    "choose_index_policy",
    "kl_ucb_index",
]


# Iteration caps. Bayes-UCB's quantile: Newton inside a bisection bracket takes about 6 steps,
# the cap is what bisection alone would take. KL-UCB's bisection: 2^-40 ~ 1e-12. The continued
# fraction needs O(sqrt(max(a, b))) terms (Numerical Recipes 6.4), far below its cap.
_QUANTILE_ITERATIONS = 48
_KL_ITERATIONS = 40
_CF_ITERATIONS = 10_000
# Modified Lentz: the floor that keeps its denominators away from zero.
_TINY = 1e-300


@jit
def _better(index: float, best: float, ties: int, rng: np.random.Generator) -> tuple[bool, int]:
    """Running argmax with uniform tie-breaking (reservoir sampling over equal maxima)."""
    if index > best:
        return True, 1
    if index == best:
        ties += 1
        return rng.random() * ties < 1.0, ties
    return False, ties


@jit
def _observed(family: int, view: FloatArray, k: int) -> tuple[float, float]:
    """(weight n, mean) of arm k's observations; the Bernoulli mean is s / (s + f)."""
    if family == BERNOULLI:
        n = view[0, k] + view[1, k]
        return n, view[0, k] / n if n > 0.0 else 0.0
    return view[0, k], view[1, k]


@jit
def bernoulli_kl_scalar(p: float, q: float) -> float:
    """KL(Bernoulli(p) || Bernoulli(q)) with q clipped into (0, 1)."""
    q = min(max(q, 1e-15), 1.0 - 1e-15)
    kl = 0.0
    if p > 0.0:
        kl += p * math.log(p / q)
    if p < 1.0:
        kl += (1.0 - p) * math.log((1.0 - p) / (1.0 - q))
    return kl


@jit
def kl_ucb_index(mean: float, n: float, level: float) -> float:
    """max{q in [mean, 1] : n kl(mean, q) <= level}, by bisection to ~1e-12."""
    low, high = mean, 1.0
    if n * bernoulli_kl_scalar(mean, high) <= level:
        return 1.0
    for _ in range(_KL_ITERATIONS):
        middle = 0.5 * (low + high)
        if n * bernoulli_kl_scalar(mean, middle) > level:
            high = middle
        else:
            low = middle
    return low


@jit
def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _CF_ITERATIONS):
        m2 = 2.0 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


@jit
def beta_upper_tail(a: float, b: float, x: float) -> float:
    """P(X > x) for X ~ Beta(a, b), accurate when small (1 - I_x(a, b) = I_{1-x}(b, a))."""
    if x <= 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return 1.0 - math.exp(log_front) * _beta_cf(a, b, x) / a
    return math.exp(log_front) * _beta_cf(b, a, 1.0 - x) / b


@jit
def beta_upper_quantile(a: float, b: float, tail: float) -> float:
    """x with P(X > x) = tail for X ~ Beta(a, b): Newton on log P(X > x), kept inside a
    bisection bracket (~6 tail evaluations instead of ~48 for bisection alone)."""
    if tail >= 1.0:
        return 0.0
    if tail <= 0.0:
        return 1.0
    log_target = math.log(tail)
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    low, high = 0.0, 1.0
    x = a / (a + b)
    for _ in range(_QUANTILE_ITERATIONS):
        upper = beta_upper_tail(a, b, x)
        if upper > tail:
            low = x
        else:
            high = x
        density = math.exp(log_norm + (a - 1.0) * math.log(x) + (b - 1.0) * math.log1p(-x))
        following = 0.5 * (low + high)
        if upper > 0.0 and density > 0.0:
            # d/dx log P(X > x) = -density / P(X > x)
            newton = x + (math.log(upper) - log_target) * upper / density
            if low < newton < high:
                following = newton
        if abs(following - x) <= 1e-14 or high - low <= 1e-15:
            return following
        x = following
    return x


@jit
def choose_index_policy(
    code: int,
    family: int,
    view: FloatArray,
    prior: FloatArray,
    extra: FloatArray,
    t: int,
    rng: np.random.Generator,
) -> int:
    """Decision of a non-Thompson policy at step ``t`` (0-based: ``t`` plays so far)."""
    n_arms = view.shape[1]
    if code == UNIFORM:
        return int(rng.integers(0, n_arms))
    greedy_only = False
    if code == EPSILON_GREEDY:
        if rng.random() < extra[X_EPSILON]:
            return int(rng.integers(0, n_arms))
        greedy_only = True
    log_t = math.log(max(t, 1))
    level = log_t
    if code == KL_UCB and log_t > 1.0:
        level += extra[X_C] * math.log(log_t)
    tail = 1.0
    if code == BAYES_UCB:
        tail = 1.0 / ((t + 1) * math.log(max(extra[X_HORIZON], 2.0)) ** extra[X_C])
    window_log = math.log(max(min(t, extra[X_TAU]), 1.0))
    best = -math.inf
    winner = 0
    ties = 0
    for k in range(n_arms):
        if code == SW_UCB:
            n = view[0, k]
            mean = view[1, k] / n if n > 0.0 else 0.0
        else:
            n, mean = _observed(family, view, k)
        if code == BAYES_UCB:
            index = beta_upper_quantile(prior[0] + view[0, k], prior[1] + view[1, k], tail)
        elif n <= 0.0:
            index = math.inf
        elif greedy_only:
            index = mean
        elif code == UCB1:
            index = mean + extra[X_SCALE] * math.sqrt(2.0 * log_t / n)
        elif code == KL_UCB:
            index = kl_ucb_index(mean, n, level)
        else:
            index = mean + extra[X_SCALE] * math.sqrt(extra[X_XI] * window_log / n)
        take, ties = _better(index, best, ties, rng)
        if take:
            best = index
            winner = k
    return winner

