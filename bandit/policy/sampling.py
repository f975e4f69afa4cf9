"""Drawing decisions from allocation probabilities: single arms by binary search on the
cumulative probabilities, ranked slates by Plackett-Luce."""

from __future__ import annotations

import numpy as np

from bandit.jit import jit
from bandit.policy.layout import FloatArray, IntArray

# Fast-path rejection attempts before sample_slates falls back to an exact linear scan; the
# mixture of both paths is still exactly the Plackett-Luce conditional.
_SLATE_REJECTIONS = 16


@jit
def cumulative(probabilities: FloatArray) -> FloatArray:
    """CDF for :func:`sample_arms`; 1.0 from the last positive-probability arm on.

    Forcing the tail (not just the last element) to 1 means rounding can never leave a
    sliver of [0, 1) to a trailing zero-probability arm.
    """
    cdf = np.cumsum(probabilities)
    last = -1
    for k in range(probabilities.shape[0]):
        if probabilities[k] > 0.0:
            last = k
    if last >= 0:
        cdf[last:] = 1.0
    return cdf


@jit
def sample_arms(cdf: FloatArray, n: int, rng: np.random.Generator) -> IntArray:
    """``n`` independent decisions from a :func:`cumulative` CDF (zero-probability arms never)."""
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        # side='right' skips arms whose CDF step is empty, i.e. zero-probability arms.
        out[i] = np.searchsorted(cdf, rng.random(), side="right")
    return out


@jit
def sample_slates(
    probabilities: FloatArray, n: int, k: int, rng: np.random.Generator
) -> tuple[IntArray, FloatArray, FloatArray]:
    """``n`` ranked slates of ``k`` distinct arms, Plackett-Luce without replacement.

    Returns arms (n, k), the slate propensity (n,) and the position propensities (n, k) with
    position_propensity[t] = p[a_t] / (1 - sum_{s<t} p[a_s]). The caller guarantees that k is
    at most the number of positive-probability arms.
    """
    n_arms = probabilities.shape[0]
    cdf = cumulative(probabilities)
    arms = np.empty((n, k), dtype=np.int64)
    slate = np.empty(n)
    positions = np.empty((n, k))
    taken = np.zeros(n_arms, dtype=np.bool_)
    for i in range(n):
        used = 0.0
        propensity = 1.0
        for t in range(k):
            arm = -1
            for _ in range(_SLATE_REJECTIONS):
                candidate = int(np.searchsorted(cdf, rng.random(), side="right"))
                if not taken[candidate]:
                    arm = candidate
                    break
            if arm < 0:
                remaining = 0.0
                for a in range(n_arms):
                    if not taken[a]:
                        remaining += probabilities[a]
                target = rng.random() * remaining
                acc = 0.0
                for a in range(n_arms):
                    if not taken[a] and probabilities[a] > 0.0:
                        arm = a
                        acc += probabilities[a]
                        if acc > target:
                            break
            taken[arm] = True
            arms[i, t] = arm
            positions[i, t] = probabilities[arm] / max(1.0 - used, probabilities[arm])
            propensity *= positions[i, t]
            used += probabilities[arm]
        slate[i] = propensity
        for t in range(k):
            taken[arms[i, t]] = False
    return arms, slate, positions
