"""P(best feasible) with guardrails (issue 20, started): the exact integral for absolute
thresholds against Monte Carlo, and the behaviour the issue asks of the allocation."""

from __future__ import annotations

import numpy as np
import pytest

from bandit.errors import InvalidValue
from bandit.model import Experiment, parse_new_experiment
from bandit.policy.guardrails import (
    ABSOLUTE,
    HIGHER,
    LOWER,
    RELATIVE,
    feasible_best_exact,
    feasible_best_monte_carlo,
)
from bandit.policy.layout import BERNOULLI, GAUSSIAN


def _beta(successes: list[float], failures: list[float]) -> np.ndarray:
    """Posterior parameters (4, K) of Beta(1 + s, 1 + f) arms."""
    out = np.zeros((4, len(successes)))
    out[0] = 1.0 + np.asarray(successes)
    out[1] = 1.0 + np.asarray(failures)
    return out


def _normal_gamma(means: list[float], n: float, sd: float) -> np.ndarray:
    """Normal-Gamma posteriors after n observations of sd ``sd`` around ``means``."""
    k = len(means)
    return np.array([means, [n] * k, [n / 2] * k, [n / 2 * sd**2] * k], dtype=np.float64)


def test_the_exact_integral_agrees_with_monte_carlo_within_its_error() -> None:
    """Four arms, a click primary, two absolute guardrails (a revenue floor, a latency cap).
    200,000 seeded draws: every arm's exact share within 4 Monte Carlo standard errors (a
    false alarm about once in 16,000 arms), and both sum to 1."""
    primary = _beta([30, 40, 45, 38], [70, 60, 55, 62])
    revenue = _normal_gamma([1.00, 0.97, 1.02, 0.99], n=400, sd=0.5)
    latency = _normal_gamma([100.0, 101.0, 104.0, 99.0], n=200, sd=20.0)
    args = (BERNOULLI, primary, [GAUSSIAN, GAUSSIAN], [revenue, latency], [HIGHER, LOWER])
    active = np.ones(4, dtype=bool)
    exact = feasible_best_exact(*args, [0.98, 103.0], 0, active)
    shares, errors = feasible_best_monte_carlo(*args, [ABSOLUTE, ABSOLUTE], [0.98, 103.0], 0,
                                               active, 200_000, seed=7)
    assert abs(exact.sum() - 1.0) < 1e-6 and abs(shares.sum() - 1.0) < 1e-12
    assert np.all(np.abs(exact - shares) <= 4 * np.maximum(errors, 1e-4)), (exact, shares)


def test_a_harmful_best_arm_gets_nothing_and_the_control_stays_feasible() -> None:
    """Arm 2 has the best primary by far but a guardrail 5% worse than control (well
    measured: 20,000 observations each); the guardrail allows -2%: arm 2 gets (almost) no
    traffic, the best of the others takes it. With a threshold no arm meets, the control
    is still feasible and gets everything."""
    primary = _beta([100, 110, 300], [900, 890, 700])
    revenue = _normal_gamma([1.00, 1.00, 0.95], n=20_000, sd=0.5)
    args = (BERNOULLI, primary, [GAUSSIAN], [revenue], [HIGHER], [RELATIVE], [-0.02], 0,
            np.ones(3, dtype=bool))
    shares, _ = feasible_best_monte_carlo(*args, 100_000, seed=1)
    assert shares[2] < 1e-3 and shares[1] > 0.5
    impossible = _normal_gamma([1.0, 1.0, 1.0], n=20_000, sd=0.5)
    shares, _ = feasible_best_monte_carlo(BERNOULLI, primary, [GAUSSIAN], [impossible],
                                          [HIGHER], [ABSOLUTE], [5.0], 0,
                                          np.ones(3, dtype=bool), 10_000, seed=2)
    assert shares[0] == 1.0


def test_without_guardrails_it_is_plain_p_best() -> None:
    """No guardrail: the share is P(best), which for two Beta arms has a closed form checked
    here by the exact integral (both methods agree with it)."""
    primary = _beta([10, 14], [20, 16])
    active = np.ones(2, dtype=bool)
    exact = feasible_best_exact(BERNOULLI, primary, [], [], [], [], 0, active)
    shares, errors = feasible_best_monte_carlo(BERNOULLI, primary, [], [], [], [], [], 0,
                                               active, 100_000, seed=3)
    # P(X > Y) for X ~ Beta(15, 17), Y ~ Beta(11, 21), Evan Miller's sum formula.
    from math import exp, lgamma, log

    def log_beta(a: float, b: float) -> float:
        return lgamma(a) + lgamma(b) - lgamma(a + b)

    a1, b1, a2, b2 = 15, 17, 11, 21
    p_x_beats_y = sum(exp(log_beta(a2 + i, b1 + b2) - log(b1 + i) - log_beta(1 + i, b1)
                          - log_beta(a2, b2)) for i in range(a1))
    assert abs(exact[1] - p_x_beats_y) < 1e-6
    assert abs(shares[1] - p_x_beats_y) < 4 * errors[1]


# -- the experiment's guardrails: parsed and checked at create ----------------------------------

REVENUE = {"metric": "revenue", "kind": "gaussian", "direction": "higher",
           "threshold": {"relative": -0.02}}


def _create(**extra: object) -> Experiment:
    return parse_new_experiment({"id": "g", "arms": ["control", "b", "c"],
                                 "reward": "bernoulli", **extra}, 0.0)


def test_guardrails_round_trip_with_their_control() -> None:
    latency = {"metric": "latency-ms", "kind": "gaussian", "direction": "lower",
               "threshold": {"absolute": 250}}
    experiment = _create(guardrails=[REVENUE, latency], control="control")
    assert experiment.control_arm == "control"
    assert Experiment.from_json(experiment.to_json()) == experiment
    assert experiment.to_json()["guardrails"][1]["threshold"] == {"absolute": 250.0}
    shared = _create(guardrails=[REVENUE], exploration={"control": {"arm": "c", "share": 0.2}})
    assert shared.control_arm == "c"


@pytest.mark.parametrize(("extra", "message"), [
    ({"guardrails": [REVENUE]}, "no control arm"),
    ({"guardrails": [REVENUE], "control": "nope"}, "control: 'nope' is not an arm"),
    ({"guardrails": [REVENUE, {**REVENUE, "direction": "lower"}], "control": "control"},
     "contradictory directions"),
    ({"guardrails": [{**REVENUE, "metric": "primary"}], "control": "control"},
     "primary metric"),
    ({"guardrails": [{**REVENUE, "threshold": {"relative": -0.02, "absolute": 1}}],
      "control": "control"}, "exactly one of"),
    ({"guardrails": [{**REVENUE, "kind": "bernoulli", "threshold": {"absolute": 2}}]},
     "guardrails[0].threshold.absolute: must be <= 1.0"),
    ({"guardrails": [{**REVENUE, "direction": "up"}], "control": "control"},
     "guardrails[0].direction"),
    ({"guardrails": [{**REVENUE, "metric": f"m{i}"} for i in range(6)],
      "control": "control"}, "at most 5"),
    ({"guardrails": [REVENUE], "control": "b",
      "exploration": {"control": {"arm": "c", "share": 0.2}}}, "one control"),
])
def test_bad_guardrails_name_the_field(extra: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidValue, match=message.replace("[", r"\[").replace("]", r"\]")):
        _create(**extra)


def test_guardrails_and_control_change_by_patch_audited() -> None:
    from bandit.patches import parse_patch

    experiment = _create(control="control")
    patch = parse_patch({"version": 1, "guardrails": [REVENUE]}, experiment, 1.0)
    assert patch.experiment.guardrails[0].metric == "revenue"
    assert patch.changes["guardrails"] == {"old": [], "new": [
        {"metric": "revenue", "kind": "gaussian", "direction": "higher",
         "threshold": {"relative": -0.02}}]}
    with pytest.raises(InvalidValue, match="no control arm"):
        parse_patch({"version": 2, "control": None}, patch.experiment, 2.0)
