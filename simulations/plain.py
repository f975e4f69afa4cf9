"""The simulator's fast loop: plain Thompson sampling on a stationary Bernoulli problem.

Most simulations (Chapelle & Li's comparisons, sweeps of arms and gaps) run the service's
Thompson sampling with no exploration setting on a stationary Bernoulli environment, every
reward delivered at once. For them :mod:`simulations.engine` runs :func:`replicate_plain`
instead of the general loop :func:`bandit.forecast.replicate.replicate`: the same random draws
in the same order, so the same numbers (tests/test_engine.py checks every output array),
without the general loop's bookkeeping. The advisor's forecasts never take this path (they
start from live statistics), so it lives with the simulator, not in the product.
"""

from __future__ import annotations

import math

import numpy as np

from bandit.forecast.codes import D_DELIVERED, D_MEAN_MAX, D_MEAN_MIN, D_REVISIONS
from bandit.jit import jit
from bandit.policy import layout
from bandit.policy.layout import FloatArray, IntArray

__all__ = ["replicate_plain"]


@jit
def replicate_plain(
    settings: FloatArray, prior: FloatArray, means: FloatArray, horizon: int,
    checkpoints: IntArray, rng: np.random.Generator, pseudo_out: FloatArray,
    regret_out: FloatArray, best_out: FloatArray, shares_out: FloatArray,
    pulls_out: FloatArray, diagnostics: FloatArray, final_stats: FloatArray,
) -> None:
    """``replicate`` for its commonest case, draw for draw and number for number: plain
    Thompson (``simulations.engine`` decides when) on a stationary Bernoulli environment from
    the prior, every arm active, each reward delivered at once (batch 1, no delay, no
    forgetting), no trace.

    Per step it only draws, rewards, counts and updates the pulled arm's Beta shapes; the
    general loop's checks for moving means, refreshes, delays and forgetting, its per-step
    best-arm and interval counts (taken here from the pull counts at each checkpoint, which
    are exact integers) and its precomputed gamma constants (faster on one machine, not on
    another) cost about a sixth of its speed.
    """
    n_arms = means.shape[0]
    inv_temperature = 1.0 / settings[layout.TEMPERATURE]
    store = np.zeros((3, n_arms))
    counts = np.zeros(n_arms)
    # The posterior's Beta shapes, as thompson.posterior_column computes them. Generator.beta
    # draws what the general loop's thompson_argmax draws from them, value for value.
    alpha = np.full(n_arms, prior[0])
    beta = np.full(n_arms, prior[1])
    mu_star = means.max()
    at_last = np.zeros(n_arms)  # pulls at the last checkpoint
    pseudo = 0.0
    regret = 0.0
    checkpoint = 0
    last_checkpoint = 0
    next_checkpoint = checkpoints[0]
    for t in range(horizon):
        arm = -1
        best = -math.inf
        for k in range(n_arms):  # the first maximum wins, as in thompson_argmax
            draw = rng.beta(alpha[k], beta[k])
            if draw > best:
                best = draw
                arm = k
        mean = means[arm]
        reward = 1.0 if rng.random() < mean else 0.0
        pseudo += mu_star - mean
        regret += mu_star - reward
        counts[arm] += 1.0
        store[0, arm] += reward
        store[1, arm] += 1.0 - reward
        alpha[arm] = prior[0] + store[0, arm] * inv_temperature
        beta[arm] = prior[1] + store[1, arm] * inv_temperature
        if t + 1 == next_checkpoint:
            pseudo_out[checkpoint] = pseudo
            regret_out[checkpoint] = regret
            best_pulls = 0.0
            width = t + 1 - last_checkpoint
            for k in range(n_arms):
                if means[k] >= mu_star:
                    best_pulls += counts[k]
                shares_out[checkpoint, k] = (counts[k] - at_last[k]) / width
                at_last[k] = counts[k]
            best_out[checkpoint] = best_pulls / (t + 1)
            last_checkpoint = t + 1
            checkpoint += 1
            next_checkpoint = checkpoints[checkpoint] if checkpoint < checkpoints.shape[0] else -1
    pulls_out[:] = counts
    diagnostics[:] = 0.0
    diagnostics[D_DELIVERED] = horizon
    diagnostics[D_REVISIONS] = horizon  # the general loop refreshes once per step
    diagnostics[D_MEAN_MIN] = means.min()
    diagnostics[D_MEAN_MAX] = mu_star
    final_stats[:3] = store
    final_stats[3] = counts
