"""Off-policy estimators: what a *target* policy would have earned on logged traffic.

A log (:class:`simulations.logs.Log`) holds, per row i, the logged action a_i, its reward r_i
and its propensity mu_i = mu(a_i | x_i), the probability the logging policy gave that action.
The target gives every action a probability pi(a | x_i) (a matrix (n, K), or one row for a
policy that ignores the context: :data:`~simulations.targets.TargetProbabilities`). With the
importance weight w_i = pi(a_i | x_i) / mu_i and a reward model q(x, a)
(:mod:`simulations.reward_model`, cross-fitted), the estimators are those of the Open Bandit
Pipeline (Saito et al. 2021, ``obp.ope.estimators``), value for value:

- :func:`ips`: mean of w_i r_i. Unbiased when the logger covers the target's actions.
- :func:`snips`: sum(w r) / sum(w), self-normalised: biased by O(1/n), bounded by the rewards.
- :func:`dm` (direct method): mean of q(x_i, pi) = sum_a pi(a | x_i) q(x_i, a). No weights,
  so little variance, but only as right as the model.
- :func:`dr` (doubly robust): mean of q(x_i, pi) + w_i (r_i - q(x_i, a_i)). Unbiased when the
  propensities are right, whatever the model; a good model only shrinks the variance.
- :func:`switch_dr`: DR where w_i <= tau, DM where the weight is larger (Wang et al. 2017).
- :func:`dros` (DR with optimistic shrinkage, Su et al. 2020): DR with the weight w replaced
  by lambda w / (w^2 + lambda) (lambda = 0: DM; lambda -> infinity: DR).

Every model-based estimator is the mean of per-row terms phi_i = q(x_i, pi) + omega_i (r_i -
q(x_i, a_i)), with omega_i = 0 (DM), w_i (DR), w_i 1[w_i <= tau] (Switch-DR) or the shrunk
weight (DRos).

**Intervals.** Every :class:`Estimate` carries a 95% interval, value +- 1.96 standard errors,
from the normal approximation of the per-row *influence terms* (their sample standard
deviation over sqrt(n)):

- IPS: the terms w_i r_i themselves.
- SNIPS: a ratio of two means; by the delta method its influence terms are w_i (r_i - V) /
  mean(w).
- DM, DR, Switch-DR, DRos: the terms phi_i plus the first-order effect of the reward model's
  own estimation error (the delta method for an M-estimator, the model's coefficients
  stacked with the value): c_i = u_{a_i} . x_i (r_i - q(x_i, a_i)), where u_a = H_a^-1 g_a,
  H_a the Hessian of action a's (ridge or logistic) fit, and g_a the derivative of the
  estimate with respect to that model's coefficients, mean_i [pi(a | x_i) - 1[a_i = a]
  omega_i] dq(x_i, a). For DR, g_a is zero on average (the weights undo the model) and the
  term vanishes to first order; for DM it is the whole of the model's uncertainty, without
  which a DM interval would be the spread of q(x, pi) over contexts (zero on a log without
  contexts) and far too narrow. The value itself is unchanged.

These intervals are honest when the terms are many and not too skewed: Kish's effective sample
size (``effective_n``, (sum w)^2 / sum w^2 of the weights applied to rewards) says how many
rows carry a weighted estimate; below a few dozen, or with a handful of non-zero rewards, no
normal interval is trustworthy (``normal_ok`` is then False and the report says so), and a
percentile bootstrap (:func:`bootstrap_interval`) is the better summary. The model-based
intervals also assume the reward model is well specified: DM's (and Switch-DR's on switched-off
rows) is an interval around what the model can express.

Nothing here prints or reads the environment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from bandit.jit import jit
from bandit.policy.layout import FloatArray, IntArray
from simulations.logs import Log

if TYPE_CHECKING:
    from simulations.reward_model import RewardModel
    from simulations.targets import TargetProbabilities

__all__ = [
    "DEFAULT_LAMBDA",
    "DEFAULT_TAU",
    "ESTIMATORS",
    "MIN_EFFECTIVE_N",
    "Estimate",
    "bootstrap_interval",
    "dm",
    "dr",
    "dros",
    "estimate_all",
    "importance_weights",
    "ips",
    "normal_estimate",
    "snips",
    "switch_dr",
    "target_matrix",
]

# Two-sided 95% normal quantile (1.959964...).
Z95 = NormalDist().inv_cdf(0.975)

#: Target probabilities are checked to sum to one per row up to this (they are often computed).
_SUM_TOLERANCE = 1e-6
#: Switch-DR's weight threshold and DRos's shrinkage, by default: weights above 10 (a target 10x
#: likelier than the logger) go to the model; DRos halves a weight of 10.
DEFAULT_TAU = 10.0
DEFAULT_LAMBDA = 100.0
#: Below this effective sample size a normal interval is not trusted (``Estimate.normal_ok``).
MIN_EFFECTIVE_N = 30.0
#: The estimators of :func:`estimate_all`, in report order.
ESTIMATORS = ("ips", "snips", "dm", "dr", "switch-dr", "dros")


@dataclass(frozen=True)
class Estimate:
    """A policy value estimate with its standard error and 95% confidence interval.

    ``n`` is the number of log rows used; ``effective_n`` is how many of them effectively carry
    information: Kish's ``(sum w)^2 / sum w^2`` for the weights applied to rewards (the rows,
    for DM; the matched rows, for replay). ``normal_ok`` is False when the normal interval
    should not be trusted (see the module notes).
    """

    value: float
    stderr: float
    ci_low: float
    ci_high: float
    n: int
    effective_n: float
    method: str
    normal_ok: bool = True

    def covers(self, truth: float) -> bool:
        """Whether the confidence interval contains ``truth``."""
        return self.ci_low <= truth <= self.ci_high


# ------------------------------------------------------------------------------------- inputs


def target_matrix(log: Log, target: TargetProbabilities) -> FloatArray:
    """pi(a | row i) for every row and action, (n, K), after validation."""
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
    return matrix


def importance_weights(log: Log, target: FloatArray) -> FloatArray:
    """w_i = pi(a_i | x_i) / mu_i for a validated (n, K) ``target`` (:func:`target_matrix`)."""
    return np.asarray(target[np.arange(log.n), log.actions] / log.propensities,
                      dtype=np.float64)


def _require_rows(log: Log, minimum: int = 2) -> None:
    if log.n < minimum:
        raise ValueError(f"need at least {minimum} rows for a standard error, got {log.n}")


def _kish(weights: FloatArray) -> float:
    squares = float(np.sum(weights**2))
    return float(np.sum(weights)) ** 2 / squares if squares > 0.0 else 0.0


def normal_estimate(value: float, stderr: float, n: int, effective_n: float,
                    method: str) -> Estimate:
    """An estimate with the normal 95% interval value +- 1.96 stderr."""
    return Estimate(value=value, stderr=stderr, ci_low=value - Z95 * stderr,
                    ci_high=value + Z95 * stderr, n=n, effective_n=effective_n, method=method,
                    normal_ok=effective_n >= MIN_EFFECTIVE_N)


def _from_terms(value: float, terms: FloatArray, effective_n: float, method: str,
                nonzero: int) -> Estimate:
    """Estimate with the normal interval of the influence ``terms`` (sd / sqrt(n)).

    ``nonzero``: how many rows carry a non-zero reward term; with fewer than a handful the
    normal approximation is not trusted whatever the effective n.
    """
    n = terms.shape[0]
    stderr = float(np.std(terms, ddof=1)) / math.sqrt(n)
    return Estimate(value=value, stderr=stderr, ci_low=value - Z95 * stderr,
                    ci_high=value + Z95 * stderr, n=n, effective_n=effective_n, method=method,
                    normal_ok=effective_n >= MIN_EFFECTIVE_N and nonzero >= 5)


# --------------------------------------------------------------------------- importance only


def ips(log: Log, target_probabilities: TargetProbabilities) -> Estimate:
    """Inverse propensity scoring: mean of ``w r`` (see the module notes for the interval)."""
    _require_rows(log)
    weights = importance_weights(log, target_matrix(log, target_probabilities))
    return _ips(log, weights)


def _ips(log: Log, weights: FloatArray) -> Estimate:
    terms = weights * log.rewards
    return _from_terms(float(np.mean(terms)), terms, _kish(weights), "ips",
                       int(np.count_nonzero(terms)))


def snips(log: Log, target_probabilities: TargetProbabilities) -> Estimate:
    """Self-normalised IPS: ``sum(w r) / sum(w)``, delta-method interval."""
    _require_rows(log)
    weights = importance_weights(log, target_matrix(log, target_probabilities))
    return _snips(log, weights)


def _snips(log: Log, weights: FloatArray) -> Estimate:
    mean_weight = float(np.mean(weights))
    if not mean_weight > 0.0:
        raise ValueError("the target gives probability 0 to every logged action (it only "
                         "takes actions the log never took): nothing to weigh")
    value = float(np.sum(weights * log.rewards)) / (mean_weight * log.n)
    # Ratio of means: influence w (r - V) / mean(w). Its ddof=1 standard deviation equals the
    # classic sqrt(sum w^2 (r - V)^2) / sum w up to the factor n / (n - 1), since the terms
    # sum to zero.
    terms = weights * (log.rewards - value) / mean_weight
    stderr = math.sqrt(float(np.sum(terms**2)) / (log.n - 1)) / math.sqrt(log.n)
    effective_n = _kish(weights)
    nonzero = int(np.count_nonzero(weights * log.rewards))
    return Estimate(value=value, stderr=stderr, ci_low=value - Z95 * stderr,
                    ci_high=value + Z95 * stderr, n=log.n, effective_n=effective_n,
                    method="snips", normal_ok=effective_n >= MIN_EFFECTIVE_N and nonzero >= 5)


# ----------------------------------------------------------------------------- model-based


def dm(log: Log, target_probabilities: TargetProbabilities, model: RewardModel) -> Estimate:
    """Direct method: mean of ``q(x, pi)`` (see the module notes for the interval)."""
    _require_rows(log)
    target = target_matrix(log, target_probabilities)
    return _model_based(log, target, model, np.zeros(log.n), "dm")


def dr(log: Log, target_probabilities: TargetProbabilities, model: RewardModel) -> Estimate:
    """Doubly robust: mean of ``q(x, pi) + w (r - q(x, a))``."""
    _require_rows(log)
    target = target_matrix(log, target_probabilities)
    return _model_based(log, target, model, importance_weights(log, target), "dr")


def switch_dr(log: Log, target_probabilities: TargetProbabilities, model: RewardModel,
              tau: float = DEFAULT_TAU) -> Estimate:
    """Switch-DR: DR on rows whose weight is at most ``tau``, DM on the others."""
    _require_rows(log)
    target = target_matrix(log, target_probabilities)
    return _model_based(log, target, model, _switched(importance_weights(log, target), tau),
                        "switch-dr")


def dros(log: Log, target_probabilities: TargetProbabilities, model: RewardModel,
         lambda_: float = DEFAULT_LAMBDA) -> Estimate:
    """DR with optimistic shrinkage: the weight w becomes ``lambda w / (w^2 + lambda)``."""
    _require_rows(log)
    target = target_matrix(log, target_probabilities)
    return _model_based(log, target, model, _shrunk(importance_weights(log, target), lambda_),
                        "dros")


def _switched(weights: FloatArray, tau: float) -> FloatArray:
    if not tau >= 0.0:
        raise ValueError(f"tau must be >= 0, got {tau!r}")
    return np.where(weights <= tau, weights, 0.0)


def _shrunk(weights: FloatArray, lambda_: float) -> FloatArray:
    if not lambda_ >= 0.0:
        raise ValueError(f"lambda must be >= 0, got {lambda_!r}")
    if math.isinf(lambda_):
        return weights
    return np.asarray(lambda_ * weights / (weights**2 + lambda_), dtype=np.float64)


def _model_based(log: Log, target: FloatArray, model: RewardModel, omega: FloatArray,
                 method: str) -> Estimate:
    """Mean of phi_i = q(x_i, pi) + omega_i (r_i - q(x_i, a_i)), with the model's own
    uncertainty added to the influence terms (module notes)."""
    q = model.check(log)
    rows = np.arange(log.n)
    residuals = log.rewards - q[rows, log.actions]
    terms = np.einsum("ij,ij->i", target, q) + omega * residuals
    value = float(np.mean(terms))
    influence = terms + _model_correction(log, target, model, omega, residuals)
    effective_n = float(log.n) if method == "dm" else _kish(omega)
    nonzero = log.n if method == "dm" else int(np.count_nonzero(omega * log.rewards))
    return _from_terms(value, influence, effective_n, method, nonzero)


def _model_correction(log: Log, target: FloatArray, model: RewardModel, omega: FloatArray,
                      residuals: FloatArray) -> FloatArray:
    """c_i = u_{a_i} . x_i (r_i - q(x_i, a_i)), u_a = H_a^-1 g_a (module notes)."""
    x, slope = model.design, model.slope
    n, n_actions = log.n, log.n_actions
    logged_slope = slope[np.arange(n), log.actions]
    # g_a = mean_i [pi(a | x_i) slope(x_i, a) x_i] - mean_i [1[a_i = a] omega_i slope_i x_i].
    gradient = (target * slope).T @ x
    gradient -= _sum_by_action(x * (omega * logged_slope)[:, None], log.actions, n_actions)
    gradient /= n
    u = np.stack([np.linalg.solve(model.hessians[a], gradient[a]) for a in range(n_actions)])
    return np.asarray(np.einsum("ij,ij->i", u[log.actions], x) * residuals, dtype=np.float64)


def _sum_by_action(values: FloatArray, actions: IntArray, n_actions: int) -> FloatArray:
    """Per action, the sum of the rows of ``values`` (n, d) logged with it: (K, d)."""
    out = np.zeros((n_actions, values.shape[1]))
    np.add.at(out, actions, values)
    return out


# ------------------------------------------------------------------------------------ together


def estimate_all(log: Log, target_probabilities: TargetProbabilities,
                 model: RewardModel | None, *, tau: float = DEFAULT_TAU,
                 lambda_: float = DEFAULT_LAMBDA) -> dict[str, Estimate]:
    """Every estimator of :data:`ESTIMATORS` (IPS and SNIPS only without a model), the target
    validated once."""
    _require_rows(log)
    target = target_matrix(log, target_probabilities)
    weights = importance_weights(log, target)
    out = {"ips": _ips(log, weights), "snips": _snips(log, weights)}
    if model is not None:
        out["dm"] = _model_based(log, target, model, np.zeros(log.n), "dm")
        out["dr"] = _model_based(log, target, model, weights, "dr")
        out["switch-dr"] = _model_based(log, target, model, _switched(weights, tau), "switch-dr")
        out["dros"] = _model_based(log, target, model, _shrunk(weights, lambda_), "dros")
    return out


# ---------------------------------------------------------------------------------- bootstrap


def bootstrap_interval(terms: FloatArray, *, replicates: int = 2000, seed: int = 0,
                       ratio_of: FloatArray | None = None) -> tuple[float, float]:
    """95% percentile bootstrap interval of mean(terms) (or of sum(terms) / sum(ratio_of), for
    a self-normalised estimate), resampling rows with replacement."""
    n = terms.shape[0]
    if n < 2 or replicates < 10:
        raise ValueError("need at least 2 rows and 10 replicates")
    denominators = np.ones(n) if ratio_of is None else np.asarray(ratio_of, dtype=np.float64)
    values = _bootstrap(np.ascontiguousarray(terms, dtype=np.float64),
                        np.ascontiguousarray(denominators), replicates,
                        np.random.default_rng(seed))
    low, high = np.quantile(values, [0.025, 0.975])
    return float(low), float(high)


@jit
def _bootstrap(terms: FloatArray, denominators: FloatArray, replicates: int,
               rng: np.random.Generator) -> FloatArray:
    n = terms.shape[0]
    out = np.empty(replicates)
    for b in range(replicates):
        top = 0.0
        bottom = 0.0
        for _ in range(n):
            i = rng.integers(0, n)
            top += terms[i]
            bottom += denominators[i]
        out[b] = top / bottom if bottom != 0.0 else np.nan
    return out

