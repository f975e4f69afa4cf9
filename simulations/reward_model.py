"""The reward model q(x, a) of the model-based off-policy estimators, cross-fitted.

DM, DR, Switch-DR and DRos (:mod:`simulations.ope`) need an estimate of every action's
expected reward in every logged context, q(x_i, a) for all a, not only the logged one. Here it
is one regression per action on the log's ``features`` (the experiment's linear model's x,
intercept included), or on an intercept alone for a log without contexts:

- Gaussian rewards: ridge regression, q(x, a) = m + x . beta_a, minimising
  sum (r - m - x . beta_a)^2 + ridge |beta_a|^2 over the rows logged with a;
- Bernoulli rewards: logistic regression, q(x, a) = sigmoid(m + x . beta_a), maximising the
  log-likelihood minus ridge m (1 - m) |beta_a|^2 / 2, by Newton's method.

m is the mean reward (its logit for Bernoulli rewards) of the rows fitted on, so the penalty
shrinks each action towards the log's overall rate rather than towards 0 or 1/2: an action
with no click in its rows gets a small q, not a wild one. The penalty weighs as much as
``ridge`` rows: a row's squared error has curvature 1, a row's log-likelihood about m (1 - m)
(hence the factor, without which rare clicks would be shrunk as if by 1 / (m (1 - m)) rows).
With a ridge of 1 and hundreds of rows per action, the shrinkage moves q by O(1/rows), well
inside the estimators' intervals.

**Cross-fitting** (``folds`` = F >= 2): the rows are split at random into F folds, and row i's
q(x_i, .) comes from the models fitted on the other F - 1 folds, so that no row's residual r_i
- q(x_i, a_i) is shrunk by having been fitted on (Chernozhukov et al. 2018; obp's
``RegressionModel.fit_predict(n_folds=...)``). ``folds=1`` fits and predicts on all rows.

The fits are numba kernels over the rows (one pass per Newton step for all F models at once),
so a million rows with a few features take seconds; numpy and numba only, no scikit-learn.

Besides q, the model keeps what the estimators' intervals need: the design x, the slope
dq/d(x . beta) at every (row, action) (1 for ridge, q (1 - q) for logistic) and each action's
mean Hessian (see :mod:`simulations.ope`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bandit.jit import jit
from bandit.policy.layout import FloatArray, IntArray
from simulations.logs import Log

__all__ = ["DEFAULT_FOLDS", "DEFAULT_RIDGE", "RewardModel", "fit_reward_model"]

ModelKind = Literal["ridge", "logistic"]
DEFAULT_FOLDS = 5
DEFAULT_RIDGE = 1.0
#: Newton's method stops when no coefficient moves by more than this (or after _ITERATIONS).
_TOLERANCE = 1e-10
_ITERATIONS = 50
#: A Newton step is scaled down to this largest coefficient change (a damped step: the
#: penalised log-likelihood is concave, so the damped iteration still converges).
_MAX_STEP = 4.0
#: Bernoulli rates are clipped to [_RATE_FLOOR, 1 - _RATE_FLOOR] for the logit of the offset.
_RATE_FLOOR = 1e-6


@dataclass(frozen=True)
class RewardModel:
    """q(x_i, a) for every row and action (cross-fitted), and what the intervals need."""

    q_hat: FloatArray  # (n, K)
    design: FloatArray  # (n, d): the regression's x of each row (a column of ones without)
    slope: FloatArray  # (n, K): dq / d(x . beta) at each row and action
    hessians: FloatArray  # (K, d, d): each action's Hessian (penalty included) over n
    kind: ModelKind
    folds: int
    ridge: float

    def check(self, log: Log) -> FloatArray:
        """``q_hat`` after checking it belongs to ``log`` (same rows and actions)."""
        if self.q_hat.shape != (log.n, log.n_actions):
            raise ValueError(f"the reward model has shape {self.q_hat.shape}, the log "
                             f"({log.n}, {log.n_actions}): fit it on the same rows")
        return self.q_hat


def fit_reward_model(log: Log, kind: ModelKind, *, folds: int = DEFAULT_FOLDS, seed: int = 0,
                     ridge: float = DEFAULT_RIDGE) -> RewardModel:
    """Fit the per-action regressions on ``log`` (module notes); ``kind`` "logistic" for
    Bernoulli rewards (rewards must lie in [0, 1]), "ridge" for Gaussian ones."""
    if kind not in ("ridge", "logistic"):
        raise ValueError(f"kind must be ridge or logistic, got {kind!r}")
    if not 1 <= folds <= log.n:
        raise ValueError(f"folds must be from 1 to the number of rows ({log.n}), got {folds}")
    if not ridge > 0.0:
        raise ValueError(f"ridge must be > 0, got {ridge!r}")
    if kind == "logistic" and (log.rewards.min() < 0.0 or log.rewards.max() > 1.0):
        raise ValueError("a logistic reward model needs rewards in [0, 1]; use ridge")
    design = (np.ones((log.n, 1)) if log.features is None
              else np.ascontiguousarray(log.features, dtype=np.float64))
    fold_of = np.asarray(np.random.default_rng(seed).permutation(log.n) % folds,
                         dtype=np.int64)
    actions = np.ascontiguousarray(log.actions)
    rewards = np.ascontiguousarray(log.rewards)
    offsets = _offsets(rewards, fold_of, folds, kind)
    if kind == "logistic":
        rates = 1.0 / (1.0 + np.exp(-offsets))
        coefficients = _logistic_fits(design, actions, rewards, fold_of, folds, log.n_actions,
                                      offsets, ridge * rates * (1.0 - rates), _ITERATIONS,
                                      _TOLERANCE, _MAX_STEP)
        rate = min(max(float(rewards.mean()), _RATE_FLOOR), 1.0 - _RATE_FLOOR)
        penalty = ridge * rate * (1.0 - rate)
    else:
        coefficients = _ridge_fits(design, actions, rewards, fold_of, folds, log.n_actions,
                                   offsets, ridge)
        penalty = ridge
    q_hat = np.empty((log.n, log.n_actions))
    for f in range(folds):
        rows = fold_of == f
        q_hat[rows] = offsets[f] + design[rows] @ coefficients[f].T
    if kind == "logistic":
        q_hat = 1.0 / (1.0 + np.exp(-q_hat))
        slope = q_hat * (1.0 - q_hat)
    else:
        slope = np.ones_like(q_hat)
    return RewardModel(q_hat=q_hat, design=design, slope=slope,
                       hessians=_hessians(design, actions, slope, log.n_actions, penalty),
                       kind=kind, folds=folds, ridge=ridge)


def _offsets(rewards: FloatArray, fold_of: IntArray, folds: int, kind: ModelKind) -> FloatArray:
    """Per fold, the mean reward of the rows its models are fitted on (the logit of it for
    logistic models)."""
    totals = np.bincount(fold_of, weights=rewards, minlength=folds)
    counts = np.bincount(fold_of, minlength=folds).astype(np.float64)
    if folds > 1:
        totals, counts = totals.sum() - totals, counts.sum() - counts
    means = totals / counts
    if kind == "ridge":
        return np.asarray(means, dtype=np.float64)
    rates = np.clip(means, _RATE_FLOOR, 1.0 - _RATE_FLOOR)
    return np.asarray(np.log(rates / (1.0 - rates)), dtype=np.float64)


def _hessians(design: FloatArray, actions: IntArray, slope: FloatArray, n_actions: int,
              penalty: float) -> FloatArray:
    """(sum over the rows of action a of slope x x^T + penalty I) / n, per action."""
    n, d = design.shape
    logged = slope[np.arange(n), actions]
    out = np.empty((n_actions, d, d))
    for a in range(n_actions):
        rows = actions == a
        x = design[rows]
        out[a] = (x.T @ (x * logged[rows, None]) + penalty * np.eye(d)) / n
    return out


@jit
def _logistic_fits(x: FloatArray, actions: IntArray, rewards: FloatArray, fold_of: IntArray,
                   folds: int, n_actions: int, offsets: FloatArray, penalties: FloatArray,
                   iterations: int, tolerance: float, max_step: float) -> FloatArray:
    """Coefficients (F, K, d) of the penalised logistic regressions, model f fitted on the
    rows outside fold f (all rows when F = 1) with penalty ``penalties[f]``, by damped Newton
    steps, all models at once."""
    n, d = x.shape
    beta = np.zeros((folds, n_actions, d))
    for _ in range(iterations):
        gradient = np.zeros((folds, n_actions, d))
        hessian = np.zeros((folds, n_actions, d, d))
        for i in range(n):
            a = actions[i]
            for f in range(folds):
                if folds > 1 and f == fold_of[i]:
                    continue
                eta = offsets[f]
                for j in range(d):
                    eta += x[i, j] * beta[f, a, j]
                p = 1.0 / (1.0 + math.exp(-eta))
                error = rewards[i] - p
                weight = p * (1.0 - p)
                for j in range(d):
                    gradient[f, a, j] += error * x[i, j]
                    scaled = weight * x[i, j]
                    for k in range(j + 1):
                        hessian[f, a, j, k] += scaled * x[i, k]
        largest = 0.0
        for f in range(folds):
            for a in range(n_actions):
                h = hessian[f, a]
                for j in range(d):
                    h[j, j] += penalties[f]
                    for k in range(j):
                        h[k, j] = h[j, k]
                g = gradient[f, a] - penalties[f] * beta[f, a]
                step = np.linalg.solve(h, g)
                size = np.abs(step).max()
                if size > max_step:
                    step *= max_step / size
                    size = max_step
                beta[f, a] += step
                largest = max(largest, size)
        if largest < tolerance:
            break
    return beta


@jit
def _ridge_fits(x: FloatArray, actions: IntArray, rewards: FloatArray, fold_of: IntArray,
                folds: int, n_actions: int, offsets: FloatArray, ridge: float) -> FloatArray:
    """Coefficients (F, K, d) of the ridge regressions of r - offset_f, model f fitted on the
    rows outside fold f (all rows when F = 1): one pass for the per-fold sums, then the
    training sums are the totals minus the fold's own."""
    n, d = x.shape
    gram = np.zeros((folds, n_actions, d, d))
    moment = np.zeros((folds, n_actions, d))
    sums = np.zeros((folds, n_actions, d))
    for i in range(n):
        a, f = actions[i], fold_of[i]
        for j in range(d):
            moment[f, a, j] += x[i, j] * rewards[i]
            sums[f, a, j] += x[i, j]
            for k in range(j + 1):
                gram[f, a, j, k] += x[i, j] * x[i, k]
    beta = np.zeros((folds, n_actions, d))
    for a in range(n_actions):
        total_gram = gram[:, a].sum(axis=0)
        total_moment = moment[:, a].sum(axis=0)
        total_sums = sums[:, a].sum(axis=0)
        for f in range(folds):
            if folds > 1:
                g = total_gram - gram[f, a]
                b = total_moment - moment[f, a] - offsets[f] * (total_sums - sums[f, a])
            else:
                g = total_gram.copy()
                b = total_moment - offsets[f] * total_sums
            for j in range(d):
                g[j, j] += ridge
                for k in range(j):
                    g[k, j] = g[j, k]
            beta[f, a] = np.linalg.solve(g, b)
    return beta
