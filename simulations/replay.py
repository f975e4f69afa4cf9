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

  Both live in :mod:`simulations.ope`, beside the model-based estimators (DM, DR, Switch-DR,
  DRos), and are re-exported here.
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

import numpy as np

from bandit.policy import cumulative, sample_one
from bandit.policy.layout import FloatArray
from simulations.logs import Log, LogError
from simulations.ope import Z95, Estimate, ips, normal_estimate, snips
from simulations.targets import ReplayPolicy, ThompsonPolicy

__all__ = [
    "Estimate",
    "ips",
    "logged_mean",
    "replay",
    "snips",
]


# ------------------------------------------------------------------------------ on-policy


def logged_mean(log: Log) -> Estimate:
    """The logging policy's own value: the mean logged reward (on-policy, no weighting)."""
    if log.n < 2:
        raise ValueError(f"need at least 2 rows for a standard error, got {log.n}")
    stderr = float(np.std(log.rewards, ddof=1)) / math.sqrt(log.n)
    return normal_estimate(float(np.mean(log.rewards)), stderr, log.n, float(log.n),
                           "on-policy mean")


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
        z2 = Z95**2
        centre = (value + z2 / (2 * m)) / (1 + z2 / m)
        half = Z95 * math.sqrt(value * (1 - value) / m + z2 / (4 * m * m)) / (1 + z2 / m)
        # It always contains the proportion; min/max only undo rounding (e.g. at 0 clicks).
        low, high = min(value, centre - half), max(value, centre + half)
        return Estimate(value, stderr, low, high, n, float(m), "replay")
    if m < 2:
        raise ValueError("one matched non-binary reward: no standard error")
    stderr = float(np.std(matched, ddof=1)) / math.sqrt(m)
    return normal_estimate(value, stderr, n, float(m), "replay")
