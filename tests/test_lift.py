"""Lift against the control (bandit.serving.lift) against analytic values and a large reference.

The intervals come from ``lift.DRAWS`` seeded draws. Each bound is checked against a reference
quantile from two million draws of another generator, within five standard errors of a
quantile estimated from ``DRAWS`` draws: sqrt(q (1 - q) / N) / f(x_q), with the density f of
the lift at the bound estimated from the reference draws. The tests are seeded, so they cannot
flake; the tolerance says how far off a correct implementation could land with another seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as scipy_stats

from bandit.model import Control, Experiment, Exploration
from bandit.policy import BERNOULLI, GAUSSIAN
from bandit.policy.layout import FloatArray
from bandit.serving import lift

REFERENCE_DRAWS = 2_000_000
BERNOULLI_PRIOR = np.array([1.0, 1.0, 0.0, 0.0])


def bernoulli_stats(*arms: tuple[int, int]) -> FloatArray:
    """Stats of arms with (successes, observations)."""
    return np.array([[s for s, _ in arms], [n - s for s, n in arms], [0.0] * len(arms)],
                    dtype=np.float64)


def experiment(*arms: str, **exploration: object) -> Experiment:
    return Experiment(id="e", arms=arms, reward="bernoulli", prior={"alpha": 1.0, "beta": 1.0},
                      exploration=Exploration(**exploration))  # type: ignore[arg-type]


def quantile_tolerance(reference: FloatArray, q: float) -> float:
    """Five standard errors of the q-quantile estimated from ``lift.DRAWS`` draws."""
    at = float(np.quantile(reference, q))
    width = 0.05 * float(np.std(reference))
    density = float(np.mean(np.abs(reference - at) < width)) / (2 * width)
    return 5 * math.sqrt(q * (1 - q) / lift.DRAWS) / density


def test_relative_lift_of_two_betas_against_analytic_values_and_a_large_reference() -> None:
    stats = bernoulli_stats((120, 1000), (100, 1000))  # arm 0: 12%, arm 1 (control): 10%
    law = lift.marginals(BERNOULLI, stats, BERNOULLI_PRIOR)
    [result, own] = lift.lifts(BERNOULLI, law, [1, None])
    assert own is None  # the control against itself
    assert result is not None
    alpha_a, beta_a, alpha_b, beta_b = 121.0, 881.0, 101.0, 901.0
    assert law[0].tolist() == [alpha_a, alpha_b] and law[1].tolist() == [beta_a, beta_b]
    mean_a, mean_b = alpha_a / (alpha_a + beta_a), alpha_b / (alpha_b + beta_b)
    assert result["kind"] == "relative" and result["against"] == 1
    assert result["mean"] == pytest.approx(mean_a / mean_b - 1, rel=1e-12)

    rng = np.random.default_rng(7)
    reference = (rng.beta(alpha_a, beta_a, REFERENCE_DRAWS)
                 / rng.beta(alpha_b, beta_b, REFERENCE_DRAWS) - 1)
    for bound, q in zip(result["ci95"], (0.025, 0.975), strict=True):
        expected = float(np.quantile(reference, q))
        assert abs(bound - expected) <= quantile_tolerance(reference, q), (q, bound, expected)

    # The delta method on the log of the ratio agrees to within its own (small) bias.
    log_sd = math.sqrt(sum(a * b / ((a + b) ** 2 * (a + b + 1)) / (a / (a + b)) ** 2
                           for a, b in ((alpha_a, beta_a), (alpha_b, beta_b))))
    normal = [math.exp(math.log(mean_a / mean_b) + z * log_sd) - 1 for z in (-1.96, 1.96)]
    assert result["ci95"] == pytest.approx(normal, abs=0.01)

    # P(arm 0 beats the control) = integral of f_a(x) F_b(x): a binomial standard error of
    # DRAWS draws, five times.
    exact, _ = integrate.quad(lambda x: scipy_stats.beta.pdf(x, alpha_a, beta_a)
                              * scipy_stats.beta.cdf(x, alpha_b, beta_b), 0, 1, limit=200)
    assert abs(result["p_better"] - exact) <= 5 * math.sqrt(exact * (1 - exact) / lift.DRAWS)


def test_the_same_posteriors_always_give_the_same_interval() -> None:
    stats = bernoulli_stats((30, 300), (25, 310), (40, 290))
    law = lift.marginals(BERNOULLI, stats, BERNOULLI_PRIOR)
    first = lift.lifts(BERNOULLI, law, [None, 0, 0])
    assert lift.lifts(BERNOULLI, law, [None, 0, 0]) == first
    # An arm's lift does not depend on which other arms were asked for.
    assert lift.lifts(BERNOULLI, law, [None, 0, 0], arms=[2]) == [first[2]]


def test_gaussian_lift_is_relative_for_positive_means_and_absolute_near_zero() -> None:
    prior = np.array([0.0, 0.01, 1.0, 1.0])
    # Weighted count, mean, sum of squared deviations: means 10 and 9.5, sd 2, 400 each.
    stats = np.array([[400.0, 400.0], [10.0, 9.5], [1600.0, 1600.0]])
    law = lift.marginals(GAUSSIAN, stats, prior)
    [result, _] = lift.lifts(GAUSSIAN, law, [1, None])
    assert result is not None and result["kind"] == "relative"
    rng = np.random.default_rng(11)
    dof, loc, scale = law
    reference = ((loc[0] + scale[0] * rng.standard_t(dof[0], REFERENCE_DRAWS))
                 / (loc[1] + scale[1] * rng.standard_t(dof[1], REFERENCE_DRAWS)) - 1)
    for bound, q in zip(result["ci95"], (0.025, 0.975), strict=True):
        assert abs(bound - float(np.quantile(reference, q))) <= quantile_tolerance(reference, q)

    # A reference mean around 0: a ratio means nothing, the difference of means is reported.
    stats = np.array([[400.0, 400.0], [0.3, 0.05], [1600.0, 1600.0]])
    law = lift.marginals(GAUSSIAN, stats, prior)
    [result, _] = lift.lifts(GAUSSIAN, law, [1, None])
    assert result is not None and result["kind"] == "absolute"
    assert result["mean"] == pytest.approx(law[1, 0] - law[1, 1])
    # The difference of two Student-t means with ~800 degrees of freedom is close to normal.
    sd = math.hypot(*(law[2] * np.sqrt(law[0] / (law[0] - 2))))
    assert result["ci95"] == pytest.approx([result["mean"] - 1.96 * sd,
                                            result["mean"] + 1.96 * sd], abs=0.03 * sd)


def test_the_control_is_the_configured_arm_else_the_arm_named_control() -> None:
    configured = experiment("a", "control", "b", control=Control("b", 0.2))
    assert lift.control_of(configured) == lift.Control(2, "setting")
    assert lift.control_of(experiment("a", "control", "b")) == lift.Control(1, "name")
    assert lift.control_of(experiment("a", "b")) is None


def test_without_a_control_each_arm_is_compared_with_the_best_other_active_arm() -> None:
    arms = experiment("a", "b", "c", "d")
    means = np.array([0.1, 0.3, 0.2, 0.9])
    active = np.array([True, True, True, False])  # d is paused: out of the race
    assert lift.references(arms, means, active, None) == [1, 2, 1, 1]
    control = lift.Control(0, "name")
    assert lift.references(arms, means, active, control) == [None, 0, 0, 0]
