"""Each arm's lift against a reference arm, with a 95% interval, from posterior draws.

The reference is the experiment's control: the arm of the ``control`` exploration setting, else
an arm named ``control``. Without one, each arm is compared with the best other arm (the active
arm, other than itself, with the highest posterior mean): the leader's lift is then its margin
over the runner-up, and every other arm's lift says how far behind the leader it is. The first
arm is no reference: in a bandit the arms' order is only the order they were added in.

Lift is relative, ``mean(arm) / mean(reference) - 1``, for posteriors of positive means (always
for bernoulli rewards; for gaussian rewards when no draw of the reference's mean is <= 0);
otherwise a ratio means nothing and the lift is the absolute difference of the means. The
point estimate is that of the posterior means; the interval is the central 95% of the same
quantity over draws from the two arms' (untempered, independent) posteriors of their means:
Beta for bernoulli rewards, Student-t for gaussian ones (Normal-Gamma marginals).

The draws are seeded, so the same posteriors always give the same interval (on every process
and every refresh of a page). With ``DRAWS`` draws the Monte Carlo error of each bound is about
1.5% of the interval's half-width (for a near-normal lift: the standard error of a 2.5%
quantile of N draws is sqrt(0.025 * 0.975 / N) / phi(1.96) = 0.027 standard deviations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bandit.model import Experiment
from bandit.policy import BERNOULLI, posteriors
from bandit.policy.layout import BoolArray, FloatArray

#: Posterior draws per arm.
DRAWS = 10_000
#: The seed of every computation: the same posteriors give the same intervals.
SEED = 20_261_206
#: The arm name taken as the control when no control share is configured.
CONTROL_NAME = "control"

LiftKind = Literal["relative", "absolute"]


@dataclass(frozen=True)
class Control:
    """The experiment's control arm and how it was chosen (``setting`` or ``name``)."""

    index: int
    source: Literal["setting", "name"]


def control_of(experiment: Experiment) -> Control | None:
    """The control arm: the ``control`` setting's arm (or the experiment's ``control``, which
    its guardrails are judged against), else an arm named ``control``."""
    if experiment.control_arm is not None:
        index = experiment.control_index
        if index is not None:
            return Control(index, "setting")
    index = experiment.arm_index(CONTROL_NAME)
    return None if index is None else Control(index, "name")


def marginals(family: int, stats: FloatArray, prior: FloatArray) -> FloatArray:
    """The law of each arm's mean, (3, K): Beta (alpha, beta, 0) or Student-t (dof, loc,
    scale), as the stats endpoint summarises it (untempered)."""
    params = posteriors.posterior_parameters(family, stats, prior, 1.0)
    result: FloatArray = posteriors.marginal_parameters(family, params)
    return result


def _means(family: int, law: FloatArray) -> FloatArray:
    result: FloatArray = posteriors.posterior_means(family, law)
    return result


def _draws(family: int, law: FloatArray, arm: int, rng: np.random.Generator) -> FloatArray:
    draws: FloatArray
    if family == BERNOULLI:
        draws = rng.beta(law[0, arm], law[1, arm], DRAWS)
    else:
        draws = law[1, arm] + law[2, arm] * rng.standard_t(law[0, arm], DRAWS)
    return draws


def references(experiment: Experiment, means: FloatArray, active: BoolArray,
               control: Control | None) -> list[int | None]:
    """Each arm's reference arm (None for the control itself, or with nothing to compare)."""
    count = len(experiment.arms)
    if control is not None:
        return [None if arm == control.index else control.index for arm in range(count)]
    result: list[int | None] = []
    for arm in range(count):
        others = [i for i in range(count) if i != arm and math.isfinite(means[i])]
        # Active arms first: a paused arm is out of the race.
        candidates = [i for i in others if active[i]] or others
        result.append(max(candidates, key=lambda i: means[i]) if candidates else None)
    return result


def lifts(family: int, law: FloatArray, reference: list[int | None],
          arms: list[int] | None = None) -> list[dict[str, Any] | None]:
    """The lift of each arm of ``arms`` (default: all) against its ``reference``.

    Each is ``{against, kind, mean, ci95, p_better}`` (``against`` an arm index here; the
    caller names it), or None without a reference. ``p_better``: the posterior probability
    that the arm's mean is above the reference's.
    """
    means = _means(family, law)
    wanted = range(law.shape[1]) if arms is None else arms
    # One generator per reference arm, seeded alike: every arm is compared with the same
    # reference draws, and an arm's own draws do not depend on which other arms were asked for.
    reference_draws: dict[int, FloatArray] = {}
    result: list[dict[str, Any] | None] = []
    for arm in wanted:
        against = reference[arm]
        if against is None:
            result.append(None)
            continue
        if against not in reference_draws:
            reference_draws[against] = _draws(family, law, against,
                                              np.random.default_rng([SEED, against]))
        base = reference_draws[against]
        draws = _draws(family, law, arm, np.random.default_rng([SEED, arm, 1]))
        result.append(lift(draws, base, float(means[arm]), float(means[against]), against))
    return result


def lift(draws: FloatArray, base: FloatArray, mean: float, base_mean: float,
         against: int) -> dict[str, Any] | None:
    """The lift of draws of one arm's mean against draws of the reference's."""
    if not (np.isfinite(draws).all() and np.isfinite(base).all()):
        return None
    kind: LiftKind = "relative" if base_mean > 0 and base.min() > 0 else "absolute"
    if kind == "relative":
        values = draws / base - 1.0
        point = mean / base_mean - 1.0
    else:
        values = draws - base
        point = mean - base_mean
    low, high = np.quantile(values, [0.025, 0.975])
    if not all(map(math.isfinite, (point, low, high))):
        return None
    return {"against": against, "kind": kind, "mean": point,
            "ci95": [float(low), float(high)],
            "p_better": float(np.mean(draws > base))}
