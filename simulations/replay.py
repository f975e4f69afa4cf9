"""Off-policy evaluation: what a policy would have earned, estimated from logged decisions.

A log (:class:`simulations.logs.Log`) records, for each decision, the action the *logging*
policy took, the reward it got and its propensity (the probability the logger gave that
action). The estimators here answer "what would the *target* policy
(:mod:`simulations.targets`) have earned on the same traffic?" without running it:

- :func:`ips` (inverse propensity scoring): mean of ``r * pi(a) / mu(a)``. Unbiased whenever the
  logger gave positive probability to every action the target can take; its variance grows with
  the weights ``pi / mu``.
- :func:`snips` (self-normalised IPS): ``sum(w r) / sum(w)``. Biased by O(1/n) but bounded by the
  rewards and usually far less variable; its standard error comes from the delta method.
- :func:`replay` (Li et al. 2011, rejection sampling): walk the log in time order, ask the policy
  for a decision, keep the row only when the decision equals the logged action, and let the
  policy learn from it. The only one of the three that evaluates a policy that *learns*, but only
  valid when the logger was uniform at random, which it checks.

Every estimator returns an :class:`Estimate` with a 95% confidence interval.

The Open Bandit Dataset sample ships with the package (:mod:`simulations.obd`, which holds the
worked example :func:`simulations.obd.evaluate_obd`).

Nothing here prints or reads the environment; randomness comes from an explicit seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from bandit.policy import cumulative, sample_one
from bandit.policy.layout import FloatArray
from simulations.logs import Log, LogError
from simulations.targets import ReplayPolicy, TargetProbabilities, ThompsonPolicy

__all__ = [
    "Estimate",
    "ips",
    "logged_mean",
    "replay",
    "snips",
]


# Two-sided 95% normal quantile (1.959964...).
_Z95 = NormalDist().inv_cdf(0.975)

# Target probabilities are checked to sum to one per row up to this (they are often computed).
_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Estimate:
    """A policy value estimate with its standard error and 95% confidence interval.

    ``n`` is the number of log rows used; ``effective_n`` is how many of them effectively carry
    information: Kish's ``(sum w)^2 / sum w^2`` for the importance-weighted estimators, the
    number of matched rows for replay.
    """

    value: float
    stderr: float
    ci_low: float
    ci_high: float
    n: int
    effective_n: float
    method: str

    def covers(self, truth: float) -> bool:
        """Whether the confidence interval contains ``truth``."""
        return self.ci_low <= truth <= self.ci_high


def _target_of_logged(log: Log, target: TargetProbabilities) -> FloatArray:
    """pi(a_i | row i): the target's probability of each logged action, after validation."""
    raw = target(log) if callable(target) else target
    matrix = np.asarray(raw, dtype=np.float64)
    if matrix.shape == (log.n_actions,):
        matrix = np.broadcast_to(matrix, (log.n, log.n_actions))
    elif matrix.shape != (log.n, log.n_actions):
        raise ValueError(
            f"target probabilities must have shape ({log.n_actions},) or "
            f"({log.n}, {log.n_actions}), got {matrix.shape}"
        )
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0.0):
        raise ValueError("target probabilities must be finite and non-negative")
    sums = matrix.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > _SUM_TOLERANCE):
        row = int(np.argmax(np.abs(sums - 1.0)))
        raise ValueError(
            f"target probabilities must sum to 1 per row; row {row} sums to {sums[row]}"
        )
    return np.asarray(matrix[np.arange(log.n), log.actions], dtype=np.float64)


# ----------------------------------------------------------------------------------- estimators


def _normal(value: float, stderr: float, n: int, effective_n: float, method: str) -> Estimate:
    return Estimate(
        value=value,
        stderr=stderr,
        ci_low=value - _Z95 * stderr,
        ci_high=value + _Z95 * stderr,
        n=n,
        effective_n=effective_n,
        method=method,
    )


def _kish(weights: FloatArray) -> float:
    squares = float(np.sum(weights**2))
    return float(np.sum(weights)) ** 2 / squares if squares > 0.0 else 0.0


def _require_rows(log: Log, minimum: int = 2) -> None:
    if log.n < minimum:
        raise ValueError(f"need at least {minimum} rows for a standard error, got {log.n}")


def logged_mean(log: Log) -> Estimate:
    """The logging policy's own value: the mean logged reward (on-policy, no weighting)."""
    _require_rows(log)
    stderr = float(np.std(log.rewards, ddof=1)) / math.sqrt(log.n)
    return _normal(float(np.mean(log.rewards)), stderr, log.n, float(log.n), "on-policy mean")


def ips(log: Log, target_probabilities: TargetProbabilities) -> Estimate:
    """Inverse propensity scoring: mean of ``r * pi(a) / mu(a)``, normal-approximation CI.

    Unbiased for any logger that covers the target's actions (no uniformity needed); the
    standard error is the sample standard deviation of the weighted rewards over sqrt(n).
    """
    _require_rows(log)
    weights = _target_of_logged(log, target_probabilities) / log.propensities
    contributions = weights * log.rewards
    stderr = float(np.std(contributions, ddof=1)) / math.sqrt(log.n)
    return _normal(float(np.mean(contributions)), stderr, log.n, _kish(weights), "ips")


def snips(log: Log, target_probabilities: TargetProbabilities) -> Estimate:
    """Self-normalised IPS: ``sum(w r) / sum(w)`` with a delta-method standard error.

    The ratio of two means has variance ~ ``sum(w^2 (r - V)^2) / (sum w)^2`` (first-order
    Taylor expansion); the factor n/(n-1) matches the ddof=1 of :func:`ips`.
    """
    _require_rows(log)
    weights = _target_of_logged(log, target_probabilities) / log.propensities
    total = float(np.sum(weights))
    if not total > 0.0:
        raise ValueError("the target gives probability 0 to every logged action: nothing to weigh")
    value = float(np.sum(weights * log.rewards)) / total
    variance = float(np.sum(weights**2 * (log.rewards - value) ** 2)) / total**2
    stderr = math.sqrt(variance * log.n / (log.n - 1))
    return _normal(value, stderr, log.n, _kish(weights), "snips")


# --------------------------------------------------------------------------------------- replay


def _require_uniform(log: Log, rtol: float) -> None:
    expected = 1.0 / log.n_actions
    if not np.allclose(log.propensities, expected, rtol=rtol, atol=0.0):
        raise LogError(
            f"replay needs a log from a uniform-random logging policy (every propensity "
            f"1/{log.n_actions} = {expected:.6g}); this log's propensities range over "
            f"[{log.propensities.min():.6g}, {log.propensities.max():.6g}]. "
            f"Use ips or snips for non-uniform logs (or pass n_actions if some arms never appear)"
        )


def replay(
    log: Log,
    policy: ReplayPolicy | None = None,
    *,
    seed: int = 0,
    uniform_rtol: float = 1e-3,
) -> Estimate:
    """Li et al. (2011) replay: the policy's mean reward over the rows where it agrees with the log.

    Rows are walked in timestamp order (file order without timestamps). At each row the policy
    draws a decision from its allocation with a generator seeded by ``seed``; on a match the
    reward is counted and the policy learns it. With a uniform logger each row is kept with
    probability 1/K independently of everything else, so the kept rows are an unbiased sample of
    what the policy would have met online; any other logger biases it, hence the check (relative
    tolerance ``uniform_rtol`` on 1/K, allowing for rounded propensities in files).

    Default policy: :meth:`ThompsonPolicy.fresh`. The CI treats the matched rewards as
    independent: the Wilson score interval when they are all 0/1 (it stays sensible with very
    few clicks, where the plain normal interval collapses to a point), the normal one otherwise.
    """
    _require_uniform(log, uniform_rtol)
    current: ReplayPolicy = ThompsonPolicy.fresh(log.n_actions) if policy is None else policy
    order = (
        np.arange(log.n) if log.timestamps is None else np.argsort(log.timestamps, kind="stable")
    )
    uniforms = np.random.default_rng(seed).random(log.n).tolist()
    actions = log.actions.tolist()
    rewards = log.rewards.tolist()
    cdf = _cdf(current, log.n_actions)
    matched: list[float] = []
    for step, row in enumerate(order.tolist()):
        action = actions[row]
        if sample_one(cdf, uniforms[step]) != action:
            continue
        matched.append(rewards[row])
        learned = current.learn(action, rewards[row])
        if learned is not current:
            current = learned
            cdf = _cdf(current, log.n_actions)
    return _matched_estimate(np.array(matched), log.n)


def _cdf(policy: ReplayPolicy, n_actions: int) -> list[float]:
    probabilities = np.asarray(policy.probabilities(), dtype=np.float64)
    if probabilities.shape != (n_actions,):
        raise ValueError(
            f"policy probabilities must have shape ({n_actions},), got {probabilities.shape}"
        )
    return list(cumulative(probabilities).tolist())


def _matched_estimate(matched: FloatArray, n: int) -> Estimate:
    m = matched.shape[0]
    if m == 0:
        raise ValueError(f"the policy never agreed with the log in {n} rows: nothing to estimate")
    value = float(np.mean(matched))
    if np.all((matched == 0.0) | (matched == 1.0)):
        # Wilson score interval for a binomial proportion.
        stderr = math.sqrt(value * (1.0 - value) / m)
        z2 = _Z95**2
        centre = (value + z2 / (2 * m)) / (1 + z2 / m)
        half = _Z95 * math.sqrt(value * (1 - value) / m + z2 / (4 * m * m)) / (1 + z2 / m)
        # It always contains the proportion; min/max only undo rounding (e.g. at 0 clicks).
        low, high = min(value, centre - half), max(value, centre + half)
        return Estimate(value, stderr, low, high, n, float(m), "replay")
    if m < 2:
        raise ValueError("one matched non-binary reward: no standard error")
    stderr = float(np.std(matched, ddof=1)) / math.sqrt(m)
    return _normal(value, stderr, n, float(m), "replay")
