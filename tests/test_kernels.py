"""Kernels against scipy/numpy references. Every random test is seeded, so none can flake."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from bandit.policy import best_arm, layout, posteriors, sampling, student_t_tail_table
from bandit.policy.layout import BERNOULLI, GAUSSIAN, FloatArray

# Fixed significance level of the goodness-of-fit tests; with fixed seeds the outcome is
# deterministic, this only says how surprising a pass/fail boundary we accept.
SIGNIFICANCE = 1e-3
# Required accuracy of P(best) (brief: 0.005 absolute); the grid achieves ~1e-5.
P_BEST_TOLERANCE = 0.005
BERNOULLI_PRIOR = np.array([1.0, 1.0, 0.0, 0.0])
GAUSSIAN_PRIOR = np.array([0.0, 1.0, 1.0, 1.0])


def _bernoulli(successes: list[float], failures: list[float]) -> FloatArray:
    return np.array([successes, failures, [0.0] * len(successes)], dtype=np.float64)


def _gaussian(weight: list[float], mean: list[float], sq_dev: list[float]) -> FloatArray:
    return np.array([weight, mean, sq_dev], dtype=np.float64)


def _laws(family: int, stats: FloatArray, prior: FloatArray, temperature: float) -> list[object]:
    params = posteriors.posterior_parameters(family, stats, prior, temperature)
    marginals = posteriors.marginal_parameters(family, params)
    if family == BERNOULLI:
        return [scipy.stats.beta(a, b) for a, b in zip(marginals[0], marginals[1], strict=True)]
    return [
        scipy.stats.t(dof, loc=loc, scale=scale)
        for dof, loc, scale in zip(marginals[0], marginals[1], marginals[2], strict=True)
    ]


def _quad_p_best(laws: list[object]) -> FloatArray:
    """P(i best) = int_0^1 prod_{j != i} F_j(F_i^-1(u)) du: bounded, no singular densities."""
    out = []
    for i, law in enumerate(laws):
        others = [other for j, other in enumerate(laws) if j != i]

        def integrand(u: float, law: object = law, others: list[object] = others) -> float:
            x = law.ppf(u)  # type: ignore[attr-defined]
            return float(np.prod([other.cdf(x) for other in others]))  # type: ignore[attr-defined]

        value, _ = scipy.integrate.quad(integrand, 0.0, 1.0, limit=400, epsabs=1e-10)
        out.append(value)
    return np.array(out)


def _best(
    family: int, stats: FloatArray, prior: FloatArray, temperature: float = 1.0
) -> tuple[FloatArray, float]:
    active = np.ones(stats.shape[1], dtype=np.bool_)
    return best_arm.best_arm_probabilities(
        family, stats, prior, temperature, active, student_t_tail_table(), np.random.default_rng(0)
    )


QUADRATURE_CASES = [
    ("bern-close", BERNOULLI, _bernoulli([10, 12], [20, 18]), BERNOULLI_PRIOR, 1.0),
    ("bern-far", BERNOULLI, _bernoulli([10, 60], [90, 40]), BERNOULLI_PRIOR, 1.0),
    ("bern-large", BERNOULLI, _bernoulli([5000, 5010], [5000, 4990]), BERNOULLI_PRIOR, 1.0),
    ("bern-3", BERNOULLI, _bernoulli([3, 4, 5.5], [5, 4, 7]), BERNOULLI_PRIOR, 1.0),
    (
        "bern-identical",
        BERNOULLI,
        _bernoulli([3, 3, 3, 4, 0], [5, 5, 5, 4, 0]),
        BERNOULLI_PRIOR,
        1.0,
    ),
    (
        "bern-10",
        BERNOULLI,
        _bernoulli(list(range(10)), [10.0 - i for i in range(10)]),
        BERNOULLI_PRIOR,
        1.0,
    ),
    ("bern-jeffreys", BERNOULLI, _bernoulli([0, 0, 3], [0, 0, 1]), np.array([0.5, 0.5, 0, 0]), 1.0),
    ("bern-skewed", BERNOULLI, _bernoulli([0, 1, 2], [1000, 900, 3000]), BERNOULLI_PRIOR, 1.0),
    ("bern-hot", BERNOULLI, _bernoulli([100, 1, 50], [1, 100, 50]), BERNOULLI_PRIOR, 3.0),
    ("bern-cold", BERNOULLI, _bernoulli([10, 12], [20, 18]), BERNOULLI_PRIOR, 0.5),
    ("gauss-prior", GAUSSIAN, _gaussian([0, 1], [0, 0.3], [0, 0.5]), GAUSSIAN_PRIOR, 1.0),
    ("gauss-low-dof", GAUSSIAN, _gaussian([3, 5], [1, 1.2], [4, 6]), GAUSSIAN_PRIOR, 1.0),
    (
        "gauss-high-dof",
        GAUSSIAN,
        _gaussian([300, 500, 400], [1, 1.05, 1.02], [300, 600, 420]),
        GAUSSIAN_PRIOR,
        1.0,
    ),
    (
        "gauss-10",
        GAUSSIAN,
        _gaussian([5.0 * (i + 1) for i in range(10)], [0.1 * i for i in range(10)], [20.0] * 10),
        GAUSSIAN_PRIOR,
        1.0,
    ),
    ("gauss-hot", GAUSSIAN, _gaussian([30, 50], [1, 1.3], [40, 60]), GAUSSIAN_PRIOR, 4.0),
]


@pytest.mark.parametrize(
    ("family", "stats", "prior", "temperature"),
    [case[1:] for case in QUADRATURE_CASES],
    ids=[case[0] for case in QUADRATURE_CASES],
)
def test_best_arm_matches_scipy_quad(
    family: int, stats: FloatArray, prior: FloatArray, temperature: float
) -> None:
    p_best, _ = _best(family, stats, prior, temperature)
    reference = _quad_p_best(_laws(family, stats, prior, temperature))
    assert np.abs(p_best - reference).max() < P_BEST_TOLERANCE
    assert p_best.sum() == pytest.approx(1.0, abs=1e-12)


def test_identical_arms_share_exactly() -> None:
    p_best, _ = _best(BERNOULLI, _bernoulli([0] * 7, [0] * 7), BERNOULLI_PRIOR)
    np.testing.assert_allclose(p_best, 1 / 7, rtol=1e-12)


def test_paused_arms_excluded() -> None:
    stats = _bernoulli([10, 50, 12], [20, 1, 18])
    active = np.array([True, False, True])
    p_best, _ = best_arm.best_arm_probabilities(
        BERNOULLI,
        stats,
        BERNOULLI_PRIOR,
        1.0,
        active,
        student_t_tail_table(),
        np.random.default_rng(0),
    )
    assert p_best[1] == 0.0
    reference = _quad_p_best(_laws(BERNOULLI, stats[:, [0, 2]], BERNOULLI_PRIOR, 1.0))
    assert np.abs(p_best[[0, 2]] - reference).max() < P_BEST_TOLERANCE


@pytest.mark.parametrize(
    ("family", "stats", "prior"),
    [
        (BERNOULLI, _bernoulli([3, 4, 5.5], [5, 4, 7]), BERNOULLI_PRIOR),
        (GAUSSIAN, _gaussian([3, 5, 2], [1, 1.2, 0.4], [4, 6, 1]), GAUSSIAN_PRIOR),
    ],
)
def test_best_arm_and_expected_max_match_monte_carlo(
    family: int, stats: FloatArray, prior: FloatArray
) -> None:
    draws = posteriors.thompson_draws(family, stats, prior, 1.0, 200_000, np.random.default_rng(7))
    frequency = np.bincount(draws.argmax(axis=1), minlength=stats.shape[1]) / draws.shape[0]
    p_best, expected_max = _best(family, stats, prior)
    # 5 binomial standard errors: a miss means a real bias, not bad luck.
    sigma = np.sqrt(p_best * (1 - p_best) / draws.shape[0])
    assert np.all(np.abs(frequency - p_best) < 5 * sigma + 1e-12)
    maxima = draws.max(axis=1)
    assert abs(maxima.mean() - expected_max) < 5 * maxima.std() / np.sqrt(maxima.shape[0])


def test_monte_carlo_fallback_agrees_with_quadrature() -> None:
    stats = _bernoulli([3, 4, 5.5], [5, 4, 7])
    params = posteriors.posterior_parameters(BERNOULLI, stats, BERNOULLI_PRIOR, 1.0)
    relevant = np.ones(3, dtype=np.bool_)
    draws = layout.MONTE_CARLO_DRAWS
    estimate, _ = best_arm._monte_carlo_best(
        BERNOULLI, params, relevant, draws, np.random.default_rng(3)
    )
    p_best, _ = _best(BERNOULLI, stats, BERNOULLI_PRIOR)
    # The documented worst-case standard error 0.5/sqrt(M), at 5 sigma.
    assert np.abs(estimate - p_best).max() < 5 * 0.5 / np.sqrt(draws)


def test_many_distinct_arms_stay_accurate() -> None:
    # 300 overlapping posteriors exercise grid thinning; compare with a large Monte Carlo.
    successes = 100.0 + np.arange(300) * 0.2
    stats = _bernoulli(list(successes), list(200.0 - successes))
    p_best, _ = _best(BERNOULLI, stats, BERNOULLI_PRIOR)
    params = posteriors.posterior_parameters(BERNOULLI, stats, BERNOULLI_PRIOR, 1.0)
    draws = 40_000
    estimate, _ = best_arm._monte_carlo_best(
        BERNOULLI, params, np.ones(300, dtype=np.bool_), draws, np.random.default_rng(11)
    )
    sigma = np.sqrt(np.maximum(p_best * (1 - p_best), 1e-6) / draws)
    assert np.all(np.abs(estimate - p_best) < 5 * sigma)


def test_beta_draws_follow_beta() -> None:
    stats = _bernoulli([3, 40], [7, 10])
    draws = posteriors.thompson_draws(
        BERNOULLI, stats, BERNOULLI_PRIOR, 2.0, 20_000, np.random.default_rng(1)
    )
    for arm, (alpha, beta) in enumerate([(1 + 1.5, 1 + 3.5), (1 + 20, 1 + 5)]):
        result = scipy.stats.kstest(draws[:, arm], scipy.stats.beta(alpha, beta).cdf)
        assert result.pvalue > SIGNIFICANCE


def test_gaussian_draws_follow_student_t_marginal() -> None:
    stats = _gaussian([4, 60], [1.0, -0.5], [3.0, 80.0])
    draws = posteriors.thompson_draws(
        GAUSSIAN, stats, GAUSSIAN_PRIOR, 1.0, 20_000, np.random.default_rng(2)
    )
    for arm, law in enumerate(_laws(GAUSSIAN, stats, GAUSSIAN_PRIOR, 1.0)):
        result = scipy.stats.kstest(draws[:, arm], law.cdf)  # type: ignore[attr-defined]
        assert result.pvalue > SIGNIFICANCE


def test_gaussian_posterior_parameters_by_hand() -> None:
    stats = _gaussian([4.0], [2.0], [6.0])
    prior = np.array([1.0, 2.0, 3.0, 4.0])
    mu_n, kappa_n, alpha_n, beta_n = posteriors.posterior_parameters(
        GAUSSIAN, stats, prior, 2.0)[:, 0]
    # Tempered evidence W' = 2, q' = 3.
    assert kappa_n == pytest.approx(4.0)
    assert mu_n == pytest.approx((2 * 1 + 2 * 2) / 4)
    assert alpha_n == pytest.approx(4.0)
    assert beta_n == pytest.approx(4 + 1.5 + 2 * 2 * 1 / (2 * 4))


def test_thompson_choices_only_active() -> None:
    stats = _bernoulli([50, 1, 30], [1, 50, 30])
    active = np.array([False, True, True])
    choices = posteriors.thompson_choices(
        BERNOULLI, stats, BERNOULLI_PRIOR, 1.0, 2000, np.random.default_rng(4), active
    )
    assert set(np.unique(choices)) <= {1, 2}


def test_forget_halves_at_one_half_life() -> None:
    bern = _bernoulli([8, 4], [2, 6])
    out = posteriors.forget(BERNOULLI, bern, np.array([10.0, 20.0]), 10.0)
    np.testing.assert_allclose(out[:2], bern[:2] * np.array([0.5, 0.25]), rtol=1e-14)
    gauss = _gaussian([8, 4], [1.5, -2.0], [3, 5])
    out = posteriors.forget(GAUSSIAN, gauss, np.array([10.0, 0.0]), 10.0)
    np.testing.assert_allclose(out[0], [4.0, 4.0], rtol=1e-14)
    np.testing.assert_array_equal(out[1], gauss[1])
    np.testing.assert_allclose(out[2], [1.5, 5.0], rtol=1e-14)


@pytest.mark.parametrize("half_life", [np.nan, np.inf])
def test_forget_without_half_life_is_a_copy(half_life: float) -> None:
    stats = _bernoulli([8, 4], [2, 6])
    out = posteriors.forget(BERNOULLI, stats, np.array([1e9, 1e9]), half_life)
    np.testing.assert_array_equal(out, stats)
    assert out is not stats


def test_sample_arms_frequencies_and_zero_arms() -> None:
    probabilities = np.array([0.0, 0.1, 0.0, 0.45, 0.3, 0.15, 0.0])
    cdf = sampling.cumulative(probabilities)
    assert cdf[-1] == 1.0
    n = 200_000
    arms = sampling.sample_arms(cdf, n, np.random.default_rng(5))
    observed = np.bincount(arms, minlength=probabilities.shape[0])
    assert np.all(observed[probabilities == 0.0] == 0)
    positive = probabilities > 0.0
    result = scipy.stats.chisquare(observed[positive], n * probabilities[positive])
    assert result.pvalue > SIGNIFICANCE


def test_cumulative_never_exposes_trailing_zero_arm() -> None:
    probabilities = np.array([0.1] * 10 + [0.0])
    cdf = sampling.cumulative(probabilities)
    # 0.1 summed ten times is 0.9999999999999999 in floating point; the tail is forced to 1.
    assert cdf[9] == 1.0
    assert np.all(sampling.sample_arms(cdf, 10_000, np.random.default_rng(6)) < 10)


@pytest.mark.parametrize(
    "probabilities", [[0.4, 0.3, 0.2, 0.1], [0.6, 0.0, 0.3, 0.1], [0.998, 0.001, 0.001, 0.0]]
)
def test_slates_follow_plackett_luce(probabilities: list[float]) -> None:
    p = np.array(probabilities)
    n, k = 100_000, 2
    arms, slate, positions = sampling.sample_slates(p, n, k, np.random.default_rng(8))
    assert np.all(arms[:, 0] != arms[:, 1])
    assert np.all(p[arms] > 0.0)
    expected_positions = np.stack([p[arms[:, 0]], p[arms[:, 1]] / (1 - p[arms[:, 0]])], axis=1)
    np.testing.assert_allclose(positions, expected_positions, rtol=1e-12)
    np.testing.assert_allclose(slate, positions.prod(axis=1), rtol=1e-12)
    codes = arms[:, 0] * 4 + arms[:, 1]
    for code in np.unique(codes):
        share = float(np.mean(codes == code))
        propensity = float(slate[codes == code][0])
        # 5 binomial standard errors of the observed share of this ranked slate.
        assert abs(share - propensity) < 5 * np.sqrt(propensity * (1 - propensity) / n) + 1e-9
    # Every ranked slate with positive propensity shows up (and nothing else does).
    positive = np.flatnonzero(p > 0)
    expected = {a * 4 + b for a in positive for b in positive if a != b}
    assert set(np.unique(codes)) <= expected
