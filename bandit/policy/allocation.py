"""Allocation probabilities: P(best) folded with every exploration setting (epsilon, floors
and caps, temperature, warm-up, top-two, a control share)."""

from __future__ import annotations

import math

import numpy as np

from bandit.jit import jit
from bandit.policy.best_arm import best_arm_probabilities
from bandit.policy.layout import (
    CONTROL_INDEX,
    CONTROL_SHARE,
    EPSILON,
    MAX_SHARE,
    MIN_SHARE,
    TEMPERATURE,
    TOP_TWO,
    WARMUP,
    BoolArray,
    FloatArray,
    IntArray,
)


@jit
def _clipped_sum(psi: FloatArray, scale: float, low: float, high: float) -> float:
    total = 0.0
    for value in psi:
        total += min(max(scale * value, low), high)
    return total


@jit
def _project_shares(psi: FloatArray, low: float, high: float) -> FloatArray:
    """Water-filling: solve g(c) = sum_i clip(c psi_i, low, high) = 1 for the scale c, exactly.

    g is piecewise linear and non-decreasing with breakpoints low/psi_i and high/psi_i: bisect
    them for the crossing segment, then solve the linear piece with sums recomputed from scratch
    (running sums lose psi values 1e200 times smaller than others). Free arms keep their ratios.
    When even the largest finite breakpoint is not enough (caps hit while zero-psi arms, or
    arms so small that high / psi overflows, sit near the floor), those arms share the rest
    evenly (they cannot pass the cap then). A last pass hands the
    rounding residual to the free arms so the sum is 1 to ~1e-16.
    """
    n_arms = psi.shape[0]
    if n_arms * low >= 1.0 or n_arms * high <= 1.0:
        return np.full(n_arms, 1.0 / n_arms)
    breaks = np.empty(2 * n_arms)
    n_breaks = 0
    for value in psi:
        # Subnormal psi overflow high / psi to inf: such arms never reach a cap at finite scale.
        for bound in (low, high):
            if value > 0.0 and math.isfinite(bound / value):
                breaks[n_breaks] = bound / value
                n_breaks += 1
    breaks = np.sort(breaks[:n_breaks])
    scale = 0.0
    if n_breaks > 0:
        scale = breaks[-1]
        if _clipped_sum(psi, scale, low, high) > 1.0:
            lo, hi = -1, n_breaks - 1
            while hi - lo > 1:
                middle = (lo + hi) // 2
                if _clipped_sum(psi, breaks[middle], low, high) >= 1.0:
                    hi = middle
                else:
                    lo = middle
            left = breaks[lo] if lo >= 0 else 0.0
            right = breaks[hi]
            middle_scale = 0.5 * (left + right)
            slope = 0.0
            constant = 0.0
            for value in psi:
                clipped = min(max(middle_scale * value, low), high)
                if low < clipped < high:
                    slope += value
                else:
                    constant += clipped
            scale = right
            if slope > 0.0:
                scale = min(max((1.0 - constant) / slope, left), right)
    out = np.empty(n_arms)
    stalled = np.empty(n_arms, dtype=np.bool_)
    for i in range(n_arms):
        out[i] = min(max(scale * psi[i], low), high)
        stalled[i] = not (psi[i] > 0.0 and math.isfinite(high / psi[i]))
    n_stalled = stalled.sum()
    residual = 1.0 - out.sum()
    if residual > 0.0 and n_stalled > 0:
        for i in range(n_arms):
            if stalled[i]:
                out[i] = min(out[i] + residual / n_stalled, high)
        residual = 1.0 - out.sum()
    free = 0.0
    for i in range(n_arms):
        if low < out[i] < high:
            free += out[i]
    # Below ~1e-300 the proportional split itself would be dominated by subnormal rounding.
    if free > 1e-300:
        for i in range(n_arms):
            if low < out[i] < high:
                out[i] += residual * out[i] / free
    return out


@jit
def _top_two(p: FloatArray, leader: float) -> FloatArray:
    """Top-two Thompson (Russo 2016): leader ~ p with prob beta, else a challenger ~ p != leader.

    psi_i = beta p_i + (1 - beta) p_i sum_{j != i} p_j / (1 - p_j). When some p_j is exactly 1
    the challenger law p_i / (1 - p_j) is 0/0; it is taken uniform over the other arms.
    """
    n_arms = p.shape[0]
    psi = np.empty(n_arms)
    if n_arms == 1:
        psi[0] = 1.0
        return psi
    ratio_sum = 0.0
    for j in range(n_arms):
        if p[j] < 1.0:
            ratio_sum += p[j] / (1.0 - p[j])
    for i in range(n_arms):
        own = p[i] / (1.0 - p[i]) if p[i] < 1.0 else 0.0
        psi[i] = leader * p[i] + (1.0 - leader) * p[i] * (ratio_sum - own)
    for j in range(n_arms):
        if p[j] >= 1.0:
            for i in range(n_arms):
                if i != j:
                    psi[i] += (1.0 - leader) * p[j] / (n_arms - 1)
    out: FloatArray = psi / psi.sum()
    return out


@jit
def _control_arm(settings: FloatArray, active: BoolArray) -> int:
    control = settings[CONTROL_INDEX]
    if not control >= 0.0:
        return -1
    index = int(control)
    # A paused control arm cannot hold its share; the bandit arms get all traffic then.
    if index >= active.shape[0] or not active[index]:
        return -1
    return index


@jit
def fold_exploration(
    p_best: FloatArray, counts: FloatArray, settings: FloatArray, active: BoolArray
) -> FloatArray:
    """Allocation probabilities (the propensity of every decision) from best-arm probabilities.

    Over the active non-control ("bandit") arms, in order: warm-up (uniform while any bandit arm
    has fewer than WARMUP observations), top-two Thompson, epsilon mixing, then floors and caps
    (MIN_SHARE, MAX_SHARE relative to the bandit traffic). Finally the control arm, if any, gets
    exactly CONTROL_SHARE and the bandit arms share the rest. Paused arms get exactly 0. If no
    arm is active the result is all zeros.
    """
    n_arms = p_best.shape[0]
    out = np.zeros(n_arms)
    control = _control_arm(settings, active)
    bandit = np.empty(n_arms, dtype=np.int64)
    n_bandit = 0
    for k in range(n_arms):
        if active[k] and k != control:
            bandit[n_bandit] = k
            n_bandit += 1
    bandit = bandit[:n_bandit]
    if n_bandit == 0:
        if control >= 0:
            out[control] = 1.0
        return out

    warming = False
    for arm in bandit:
        warming = warming or counts[arm] < settings[WARMUP]
    psi = _race_shares(p_best, bandit, np.ones(n_bandit, dtype=np.bool_), warming, settings)

    bandit_share = 1.0
    if control >= 0:
        bandit_share = 1.0 - settings[CONTROL_SHARE]
        out[control] = settings[CONTROL_SHARE]
    for i in range(n_bandit):
        out[bandit[i]] = bandit_share * psi[i]
    return out


@jit
def _race_shares(p_best: FloatArray, arms: IntArray, free: BoolArray, warming: bool,
                 settings: FloatArray) -> FloatArray:
    """The shares of the arms in the race (indices ``arms``), before any control share: the
    free ones' P(best) normalised (uniform while warming up, or when it is all 0), top-two,
    epsilon over the free arms, then floors and caps. Arms not free (held by the guardrails'
    gate) get no P(best) mass and no epsilon: exactly the floor, even when the caps would want
    them to take more (the free arms exceed their caps then)."""
    n_in = arms.shape[0]
    n_free = 0
    for i in range(n_in):
        n_free += free[i]
    psi = np.zeros(n_in)
    total = 0.0
    for i in range(n_in):
        if free[i]:
            psi[i] = max(p_best[arms[i]], 0.0)
            total += psi[i]
    if warming or not total > 0.0:
        for i in range(n_in):
            psi[i] = 1.0 / n_free if free[i] else 0.0
    else:
        psi /= total
        leader = settings[TOP_TWO]
        if not math.isnan(leader):
            psi = _top_two(psi, leader)
    epsilon = settings[EPSILON]
    for i in range(n_in):
        psi[i] = (1.0 - epsilon) * psi[i] + (epsilon / n_free if free[i] else 0.0)
    low, high = settings[MIN_SHARE], settings[MAX_SHARE]
    if n_free == n_in:
        return _project_shares(psi, low, high)
    # Held arms get exactly the floor; the free arms share the rest, within the floors and
    # caps scaled to it. When the caps cannot take it all (a cap meant for more arms), the
    # free arms exceed them, never the held arms their floor.
    budget = 1.0 - (n_in - n_free) * low
    chosen = np.empty(n_free)
    j = 0
    for i in range(n_in):
        if free[i]:
            chosen[j] = psi[i]
            j += 1
    chosen = _project_shares(chosen, low / budget, min(high / budget, 1.0)) * budget
    j = 0
    for i in range(n_in):
        if free[i]:
            psi[i] = chosen[j]
            j += 1
        else:
            psi[i] = low
    return psi


@jit
def racing_arms(counts: FloatArray, settings: FloatArray,
                active: BoolArray) -> tuple[BoolArray, bool]:
    """The arms in the best-arm race (active, the control held out: it gets a fixed share),
    and whether warm-up forces uniform allocation (an active bandit arm below WARMUP)."""
    control = _control_arm(settings, active)
    racing = active.copy()
    warming = False
    for k in range(active.shape[0]):
        if k == control:
            racing[k] = False
        elif active[k] and counts[k] < settings[WARMUP]:
            warming = True
    return racing, warming


@jit
def policy_probabilities(
    family: int,
    stats: FloatArray,
    counts: FloatArray,
    prior: FloatArray,
    settings: FloatArray,
    active: BoolArray,
    tail_table: FloatArray,
    rng: np.random.Generator,
) -> FloatArray:
    """THE policy: allocation probabilities from the posterior statistics and the settings.

    The control arm is held out of the best-arm race (it is allocated a fixed share), and the
    quadrature is skipped while warm-up forces uniform allocation. ``rng`` is used only by the
    Monte Carlo fallback of :func:`best_arm_probabilities`.
    """
    racing, warming = racing_arms(counts, settings, active)
    if warming:
        p_best = racing.astype(np.float64)
    else:
        p_best, _ = best_arm_probabilities(
            family, stats, prior, settings[TEMPERATURE], racing, tail_table, rng
        )
    return fold_exploration(p_best, counts, settings, active)


@jit
def fold_guarded(p_best: FloatArray, counts: FloatArray, settings: FloatArray,
                 active: BoolArray, held: BoolArray) -> FloatArray:
    """``fold_exploration`` for an experiment with guardrails, given P(best feasible).

    The control races with the other arms: it is the safe fallback, so P(best feasible) can
    send it the traffic no other arm may have. With a control share it gets that share plus
    its part of the rest. Held arms (the hard gate) get no P(best) mass and no epsilon: the
    floor alone (MIN_SHARE; 0 without one), even when the caps would want them to take more
    (the free arms exceed their caps then). Warm-up and top-two work as in
    ``fold_exploration``, over the arms not held.
    """
    n_arms = p_best.shape[0]
    out = np.zeros(n_arms)
    control = _control_arm(settings, active)
    arms = np.empty(n_arms, dtype=np.int64)
    n_in = 0
    warming = False
    for k in range(n_arms):
        if active[k]:
            arms[n_in] = k
            n_in += 1
            warming = warming or (k != control and counts[k] < settings[WARMUP])
    if n_in == 0:
        return out
    arms = arms[:n_in]
    free = np.empty(n_in, dtype=np.bool_)
    n_free = 0
    for i in range(n_in):
        free[i] = not held[arms[i]] or arms[i] == control
        n_free += free[i]
    if n_free == 0:  # every arm held and no control: nothing is safer than another
        free[:] = True
    psi = _race_shares(p_best, arms, free, warming, settings)
    share = settings[CONTROL_SHARE] if control >= 0 else 0.0
    for i in range(n_in):
        out[arms[i]] = (1.0 - share) * psi[i]
    if control >= 0:
        out[control] += share
    return out
