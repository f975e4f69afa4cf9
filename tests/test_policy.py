"""fold_exploration properties (hypothesis) and the public wrappers of bandit.policy."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit import policy
from bandit.policy import BERNOULLI, GAUSSIAN, PolicySettings, allocation
from bandit.policy.layout import FloatArray

# Water-filling and the control split are exact up to a few rounding errors.
EXACT = 1e-12


@st.composite
def _cases(draw: st.DrawFn) -> tuple[FloatArray, FloatArray, PolicySettings, npt.NDArray[np.bool_]]:
    n_arms = draw(st.integers(2, 8))
    weights = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=n_arms, max_size=n_arms)))
    active = np.array(draw(st.lists(st.booleans(), min_size=n_arms, max_size=n_arms)))
    leader = draw(st.integers(0, n_arms - 1))
    active[leader] = True
    weights[leader] += 1e-3
    p_best = np.where(active, weights, 0.0)
    p_best /= p_best.sum()
    counts = np.array(draw(st.lists(st.integers(0, 20), min_size=n_arms, max_size=n_arms)), float)
    control = draw(st.none() | st.integers(0, n_arms - 1))
    n_bandit = int(active.sum()) - (control is not None and bool(active[control]))
    bound = 1.0 / max(n_bandit, 1)
    chosen = PolicySettings(
        epsilon=draw(st.floats(0.0, 1.0)),
        min_share=draw(st.floats(0.0, bound)),
        max_share=draw(st.floats(bound, 1.0)),
        warmup=draw(st.integers(0, 10)),
        top_two=draw(st.none() | st.floats(0.01, 0.99)),
        control_index=control,
        control_share=draw(st.floats(0.0, 0.9)),
    )
    return p_best, counts, chosen, active


@settings(max_examples=500, deadline=None)
@given(_cases())
def test_fold_exploration_invariants(
    case: tuple[FloatArray, FloatArray, PolicySettings, npt.NDArray[np.bool_]],
) -> None:
    p_best, counts, chosen, active = case
    out = allocation.fold_exploration(p_best, counts, chosen.as_array(), active)
    assert np.all(out[~active] == 0.0)
    assert np.all(out >= 0.0)
    assert out.sum() == pytest.approx(1.0, abs=EXACT)
    control = chosen.control_index
    bandit = active.copy()
    bandit_share = 1.0
    if control is not None and active[control]:
        bandit[control] = False
        if bandit.any():
            assert out[control] == chosen.control_share
            bandit_share = 1.0 - chosen.control_share
    if not bandit.any() or bandit_share == 0.0:
        return
    shares = out[bandit] / bandit_share
    assert np.all(shares >= chosen.min_share - EXACT)
    assert np.all(shares <= chosen.max_share + EXACT)
    if np.any(counts[bandit] < chosen.warmup):
        # Warm-up is uniform, and the floors and caps of a uniform vector are inactive.
        np.testing.assert_allclose(shares, 1.0 / bandit.sum(), rtol=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8).filter(lambda w: sum(w) > 1e-3),
    st.floats(0.0, 1.0),
)
def test_epsilon_mixture(weights: list[float], epsilon: float) -> None:
    p_best = np.array(weights) / sum(weights)
    active = np.ones(p_best.shape[0], dtype=np.bool_)
    out = allocation.fold_exploration(
        p_best, np.zeros_like(p_best), PolicySettings(epsilon=epsilon).as_array(), active
    )
    expected = (1 - epsilon) * p_best + epsilon / p_best.shape[0]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-15)


@settings(max_examples=200, deadline=None)
@given(
    # Zero or ordinary weights: when caps leave mass that only vanishingly small (e.g.
    # subnormal) arms could take, it is spread evenly, by design, not proportionally.
    st.lists(st.one_of(st.just(0.0), st.floats(1e-6, 1.0)), min_size=3, max_size=8).filter(
        lambda w: sum(w) > 1e-3
    ),
    st.floats(0.0, 0.3),
    st.floats(0.35, 1.0),
)
def test_floors_and_caps_keep_free_arms_proportional(
    weights: list[float], min_share: float, max_share: float
) -> None:
    p_best = np.array(weights) / sum(weights)
    n_arms = p_best.shape[0]
    min_share = min(min_share, 1.0 / n_arms)
    chosen = PolicySettings(min_share=min_share, max_share=max_share).as_array()
    out = allocation.fold_exploration(
        p_best, np.zeros(n_arms), chosen, np.ones(n_arms, dtype=np.bool_)
    )
    free = (out > min_share + 1e-9) & (out < max_share - 1e-9) & (p_best > 0)
    if free.sum() >= 2:
        ratios = out[free] / p_best[free]
        np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)


def test_caps_with_zero_probability_arms_spread_the_rest() -> None:
    out = allocation.fold_exploration(
        np.array([1.0, 0.0, 0.0]),
        np.zeros(3),
        PolicySettings(max_share=0.5).as_array(),
        np.ones(3, dtype=np.bool_),
    )
    np.testing.assert_allclose(out, [0.5, 0.25, 0.25], rtol=1e-15)


def test_top_two_formula_matches_simulation() -> None:
    p = np.array([0.5, 0.3, 0.15, 0.05])
    leader_probability = 0.6
    out = allocation.fold_exploration(
        p,
        np.zeros(4),
        PolicySettings(top_two=leader_probability).as_array(),
        np.ones(4, dtype=np.bool_),
    )
    rng = np.random.default_rng(9)
    n = 400_000
    leader = rng.choice(4, size=n, p=p)
    challenger = rng.choice(4, size=n, p=p)
    # Resample the challenger until it differs from the leader (Russo 2016).
    while np.any(same := challenger == leader):
        challenger[same] = rng.choice(4, size=int(same.sum()), p=p)
    chosen = np.where(rng.random(n) < leader_probability, leader, challenger)
    frequency = np.bincount(chosen, minlength=4) / n
    # 5 binomial standard errors.
    assert np.all(np.abs(frequency - out) < 5 * np.sqrt(out * (1 - out) / n))


def test_top_two_with_certain_leader() -> None:
    out = allocation.fold_exploration(
        np.array([0.0, 1.0, 0.0]),
        np.zeros(3),
        PolicySettings(top_two=0.7).as_array(),
        np.ones(3, dtype=np.bool_),
    )
    np.testing.assert_allclose(out, [0.15, 0.7, 0.15], rtol=1e-14)


BERN_STATS = np.array([[10.0, 30.0, 12.0], [30.0, 10.0, 28.0], [0.0, 0.0, 0.0]])
BERN_PRIOR = np.array([1.0, 1.0, 0.0, 0.0])


def test_allocation_is_thompson_by_default() -> None:
    counts = BERN_STATS[0] + BERN_STATS[1]
    out = policy.allocation_probabilities(
        BERNOULLI, BERN_STATS, counts, BERN_PRIOR, PolicySettings()
    )
    summary = policy.posterior_summary(BERNOULLI, BERN_STATS, BERN_PRIOR)
    np.testing.assert_allclose(out, summary.p_best, rtol=1e-12)


def test_allocation_holds_control_out_of_the_race() -> None:
    counts = BERN_STATS[0] + BERN_STATS[1]
    chosen = PolicySettings(control_index=1, control_share=0.2)
    out = policy.allocation_probabilities(BERNOULLI, BERN_STATS, counts, BERN_PRIOR, chosen)
    assert out[1] == 0.2
    race = policy.posterior_summary(
        BERNOULLI, BERN_STATS, BERN_PRIOR, np.array([True, False, True])
    ).p_best
    np.testing.assert_allclose(out[[0, 2]], 0.8 * race[[0, 2]], rtol=1e-12)


def test_allocation_warmup_and_pause() -> None:
    chosen = PolicySettings(warmup=50)
    active = np.array([True, True, False])
    out = policy.allocation_probabilities(
        BERNOULLI, BERN_STATS, [40.0, 60.0, 40.0], BERN_PRIOR, chosen, active
    )
    np.testing.assert_array_equal(out, [0.5, 0.5, 0.0])


def test_posterior_summary() -> None:
    stats = np.array([[5.0, 50.0], [1.2, 0.9], [4.0, 45.0]])
    prior = np.array([0.0, 1.0, 1.0, 1.0])
    active = np.array([True, False])
    summary = policy.posterior_summary(GAUSSIAN, stats, prior, active)
    kappa, alpha = 6.0, 3.5
    mean = 5 * 1.2 / kappa
    beta = 1 + 2 + 5 * 1.2**2 / (2 * kappa)
    law = scipy.stats.t(2 * alpha, loc=mean, scale=math.sqrt(beta / (alpha * kappa)))
    assert summary.mean[0] == pytest.approx(mean)
    assert summary.ci_low[0] == pytest.approx(law.ppf(0.025))
    assert summary.ci_high[0] == pytest.approx(law.ppf(0.975))
    np.testing.assert_array_equal(summary.p_best, [1.0, 0.0])
    assert summary.expected_loss[0] == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(summary.expected_loss[1])


def test_sample_one_matches_sample_arms() -> None:
    probabilities = np.array([0.2, 0.0, 0.5, 0.3, 0.0])
    cdf = policy.cumulative(probabilities)
    uniforms = np.random.default_rng(10).random(2000)
    one = [policy.sample_one(cdf.tolist(), float(u)) for u in uniforms]
    np.testing.assert_array_equal(one, np.searchsorted(cdf, uniforms, side="right"))
    assert 1 not in one and 4 not in one


def test_wrappers_validate() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="stats"):
        policy.allocation_probabilities(
            BERNOULLI, np.zeros((2, 3)), np.zeros(3), BERN_PRIOR, PolicySettings()
        )
    with pytest.raises(ValueError, match="family"):
        policy.forget(7, BERN_STATS, np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="counts"):
        policy.allocation_probabilities(
            BERNOULLI, BERN_STATS, np.zeros(2), BERN_PRIOR, PolicySettings()
        )
    with pytest.raises(ValueError, match="sum to 1"):
        policy.cumulative([0.5, 0.2])
    with pytest.raises(ValueError, match="cdf"):
        policy.sample_arms([0.5, 0.9], 3, rng)
    with pytest.raises(ValueError, match="k must be"):
        policy.sample_slates([0.5, 0.5, 0.0], 3, 3, rng)
    with pytest.raises(ValueError, match="half_life"):
        policy.forget(BERNOULLI, BERN_STATS, np.zeros(3), 0.0)


def test_wrappers_run() -> None:
    policy.warm_up_kernels()
    rng = np.random.default_rng(1)
    out = policy.forget(BERNOULLI, BERN_STATS, [0.0, 5.0, 10.0], None)
    np.testing.assert_array_equal(out, BERN_STATS)
    choices = policy.thompson_choices(BERNOULLI, BERN_STATS, BERN_PRIOR, 100, rng)
    assert choices.shape == (100,) and choices.dtype == np.int64
    arms, slate, positions = policy.sample_slates([0.5, 0.3, 0.2], 10, 2, rng)
    assert arms.shape == (10, 2) and slate.shape == (10,) and positions.shape == (10, 2)
