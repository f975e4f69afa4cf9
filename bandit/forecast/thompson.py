"""Thompson-sampling decision kernels: the service's policy, one decision at a time.

The replication loop decides either from allocation probabilities it has computed with the
service's ``allocation.policy_probabilities`` (:func:`sample_from_cdf`, the service's own
search), or, when no floor, cap or paused arm calls for them, by drawing the decision itself
with exactly the same distribution (:func:`choose_thompson`, ~100x cheaper than one
quadrature; :func:`thompson_argmax` when no exploration setting is on). The draws are those
of the service's sampler, in the same order, so a simulated decision is a served one.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import numpy.typing as npt

from bandit.jit import jit
from bandit.policy import best_arm, layout, posteriors
from bandit.policy.layout import BERNOULLI, FloatArray

__all__ = [
    "N_PARAMS",
    "choose_thompson",
    "posterior_column",
    "sample_from_cdf",
    "thompson_argmax",
]


@jit
def sample_from_cdf(cdf: FloatArray, uniform: float) -> int:
    """The decision of sampling.sample_arms for the uniform it draws, without allocating."""
    return int(np.searchsorted(cdf, uniform, side="right"))


# Thompson draw parameters ("params", float64 (N_PARAMS, K)): rows 0-3 are those of
# posteriors.posterior_parameters; for Bernoulli arms rows 2-5 cache the Marsaglia-Tsang constants
# (d = shape - 1/3, c = 1/sqrt(9 d)) of alpha and of beta, which change only with the posterior.
N_PARAMS = 6


@jit
def posterior_column(
    family: int, view: FloatArray, prior: FloatArray, inv_temperature: float, k: int,
    params: FloatArray,
) -> None:
    """Column k of posteriors.posterior_parameters, in place (same floating-point operations)."""
    if family == BERNOULLI:
        for row in range(2):
            shape = prior[row] + view[row, k] * inv_temperature
            params[row, k] = shape
            d = shape - 1. / 3.
            params[2 + 2 * row, k] = d
            params[3 + 2 * row, k] = 1. / np.sqrt(9 * d) if shape > 1.0 else 0.0
        return
    posteriors.normal_gamma_column(prior, view, inv_temperature, k, params)


@numba.njit(inline="always")
def _standard_gamma(shape: float, d: float, c: float, rng: np.random.Generator) -> float:
    """Generator.standard_gamma(shape), with its constants d, c precomputed when shape > 1.

    numba's port of numpy's Marsaglia-Tsang loop statement for statement, so the same random
    numbers give the same value; without its sqrt and division per draw, and inlined, a Beta
    draw costs about half of Generator.beta.
    """
    if shape <= 1.0:
        return float(rng.standard_gamma(shape))
    while True:
        while True:
            x = rng.standard_normal()
            v = 1.0 + c * x
            if v > 0.0:
                break
        v = v * v * v
        u = rng.random()
        if u < 1.0 - 0.0331 * (x * x) * (x * x):
            return d * v
        if np.log(u) < 0.5 * x * x + d * (1. - v + np.log(v)):
            return d * v


@numba.njit(inline="always")
def _beta_draw(params: FloatArray, k: int, rng: np.random.Generator) -> float:
    """Generator.beta(params[0, k], params[1, k]), value for value (numba's random_beta)."""
    a = params[0, k]
    b = params[1, k]
    if a <= 1.0 and b <= 1.0:
        return float(rng.beta(a, b))
    gamma_a = _standard_gamma(a, params[2, k], params[3, k], rng)
    gamma_b = _standard_gamma(b, params[4, k], params[5, k], rng)
    return gamma_a / (gamma_a + gamma_b)


@jit
def _draw_mean(family: int, params: FloatArray, k: int, rng: np.random.Generator) -> float:
    """One posterior draw of arm k's mean: the same draws, in the same order, as the service."""
    if family == BERNOULLI:
        return _beta_draw(params, k, rng)
    precision = rng.gamma(params[2, k], 1.0 / params[3, k])
    return float(rng.normal(params[0, k], 1.0 / math.sqrt(params[1, k] * precision)))


@jit
def thompson_argmax(family: int, params: FloatArray, control: int,
                    rng: np.random.Generator) -> int:
    """Plain Thompson decision: argmax of one posterior draw over the arms but ``control``."""
    # One loop per family: a family test inside the loop costs ~25% of the Bernoulli speed.
    # Draws are finite, so the first arm beats -inf: the first maximum wins, as in the service.
    winner = -1
    best = -math.inf
    if family == BERNOULLI:
        for k in range(params.shape[1]):
            if k != control:
                draw = _beta_draw(params, k, rng)
                if draw > best:
                    best = draw
                    winner = k
        return winner
    for k in range(params.shape[1]):
        if k != control:
            draw = _draw_mean(family, params, k, rng)
            if winner < 0 or draw > best:
                best = draw
                winner = k
    return winner


@jit
def _uniform_bandit_arm(n_arms: int, control: int, rng: np.random.Generator) -> int:
    arm = int(rng.integers(0, n_arms - 1 if control >= 0 else n_arms))
    return arm + 1 if 0 <= control <= arm else arm


# Top-two challenger: resampling attempts before switching to the exact conditional law from
# the quadrature. Rejection sampling is memoryless, so the switch does not bias the law.
_CHALLENGER_ATTEMPTS = 64


@jit
def choose_thompson(
    family: int,
    view: FloatArray,
    counts: FloatArray,
    params: FloatArray,
    prior: FloatArray,
    settings: FloatArray,
    racing: npt.NDArray[np.bool_],
    tail_table: FloatArray,
    rng: np.random.Generator,
) -> int:
    """One decision distributed exactly as allocation.fold_exploration's probabilities.

    Valid when floors and caps are off (MIN_SHARE 0, MAX_SHARE 1; then the projection is the
    identity) and every arm is active. ``params`` is posterior_parameters(view) (tempered).
    Matching fold_exploration term by term:

    - control arm: probability CONTROL_SHARE, held out of the race;
    - epsilon: with probability EPSILON a uniform bandit arm (the eps / n mixture term);
    - warm-up: while any bandit arm has fewer than WARMUP observations, uniform;
    - otherwise the argmax of one tempered posterior draw over the bandit arms: arm i wins with
      probability p_best[i], which is what best_arm_probabilities integrates;
    - top-two (leader probability beta): with probability 1 - beta the draw is repeated until a
      different arm wins, so given leader j arm i != j comes with probability p_i / (1 - p_j),
      and overall psi_i = beta p_i + (1 - beta) p_i sum_{j != i} p_j / (1 - p_j) (_top_two).

    With no exploration setting on, it makes exactly the draws of posteriors.thompson_choices.
    """
    n_arms = view.shape[1]
    control = int(settings[layout.CONTROL_INDEX]) if settings[layout.CONTROL_INDEX] >= 0 else -1
    share = settings[layout.CONTROL_SHARE]
    if control >= 0 and share > 0.0 and rng.random() < share:
        return control
    if settings[layout.EPSILON] > 0.0 and rng.random() < settings[layout.EPSILON]:
        return _uniform_bandit_arm(n_arms, control, rng)
    if settings[layout.WARMUP] > 0.0:
        for k in range(n_arms):
            if k != control and counts[k] < settings[layout.WARMUP]:
                return _uniform_bandit_arm(n_arms, control, rng)
    leader = thompson_argmax(family, params, control, rng)
    leader_share = settings[layout.TOP_TWO]
    if math.isnan(leader_share) or n_arms - (control >= 0) == 1 or rng.random() < leader_share:
        return leader
    for _ in range(_CHALLENGER_ATTEMPTS):
        challenger = thompson_argmax(family, params, control, rng)
        if challenger != leader:
            return challenger
    # The leader wins almost surely: draw the challenger from p_i / (1 - p_leader) directly,
    # with fold_exploration's normalisation and its convention when p_leader rounds to 1.
    p_best, _ = best_arm.best_arm_probabilities(
        family, view, prior, settings[layout.TEMPERATURE], racing, tail_table, rng
    )
    total = 0.0
    for k in range(n_arms):
        if racing[k]:
            total += max(p_best[k], 0.0)
    others = 0.0
    for k in range(n_arms):
        if k != leader and racing[k]:
            others += max(p_best[k], 0.0)
    if not (total > 0.0 and others > 0.0 and max(p_best[leader], 0.0) / total < 1.0):
        # As _top_two when p_leader is 1: a uniform challenger.
        arm = int(rng.integers(0, n_arms - 2 if control >= 0 else n_arms - 1))
        for k in range(n_arms):
            if k not in (leader, control):
                if arm == 0:
                    return k
                arm -= 1
    target = rng.random() * others
    acc = 0.0
    last = leader
    for k in range(n_arms):
        if k != leader and racing[k] and p_best[k] > 0.0:
            acc += p_best[k]
            last = k
            if acc > target:
                return k
    return last
