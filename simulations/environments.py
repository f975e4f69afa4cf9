"""Simulated environments: what the arms pay, and how that changes over time.

An :class:`Environment` is a frozen description (validated once); :meth:`Environment.arrays`
turns it into the plain arrays the replication loop (:mod:`bandit.forecast.replicate`) reads.
Time is counted in decisions ("steps").

- Stationary: the means never change.
- Piecewise-stationary: ``changes`` lists ``(t, means)``; from step ``t`` on (0-based, before the
  decision of step ``t``) the means are ``means``.
- Drifting: before every step after the first, each mean takes a Gaussian random-walk step of
  sd ``drift_sd`` (clipped to [0, 1] for Bernoulli arms).
- Churning: before every step after the first, each arm retires with probability ``churn`` and
  its slot gets a fresh arm whose mean is drawn from Beta(``churn_alpha``, ``churn_beta``).

The Lai-Robbins lower bound for stationary Bernoulli problems lives here too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from bandit.forecast.codes import CHURN, CHURN_ALPHA, CHURN_BETA, DRIFT_SD, N_ENV_PARAMS, NOISE_SD
from bandit.policy.layout import BERNOULLI, GAUSSIAN, FloatArray, IntArray

__all__ = [
    "REWARDS",
    "Environment",
    "EnvironmentArrays",
    "bernoulli_kl",
    "lai_robbins_bound",
    "lai_robbins_constant",
]


Reward = Literal["bernoulli", "gaussian"]
REWARDS: tuple[Reward, ...] = ("bernoulli", "gaussian")


class EnvironmentArrays(NamedTuple):
    """What the replication loop reads: family code, arrays, and the scalar parameters."""

    family: int
    means: FloatArray  # (K,) initial means
    change_times: IntArray  # (n,) strictly increasing steps
    change_means: FloatArray  # (n, K)
    params: FloatArray  # (N_ENV_PARAMS,) indexed by NOISE_SD ... CHURN_BETA


def _means(name: str, values: npt.ArrayLike, reward: str, n_arms: int | None) -> FloatArray:
    array = np.array(values, dtype=np.float64)
    if array.ndim != 1 or array.shape[0] < 2:
        raise ValueError(f"{name} must be a 1-d sequence of at least 2 means, got {array.shape}")
    if n_arms is not None and array.shape[0] != n_arms:
        raise ValueError(f"{name} must have {n_arms} means (one per arm), got {array.shape[0]}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    if reward == "bernoulli" and (np.any(array < 0.0) or np.any(array > 1.0)):
        raise ValueError(f"{name} of Bernoulli arms must be in [0, 1], got {array.tolist()}")
    array.setflags(write=False)
    return array


def _scalar(name: str, value: float, low: float, high: float, *, low_open: bool = False,
            high_open: bool = False) -> float:
    number = float(value)
    above = number > low if low_open else number >= low
    below = number < high if high_open else number <= high
    if not (math.isfinite(number) and above and below):
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be in {left}{low}, {high}{right}, got {value!r}")
    return number


@dataclass(frozen=True, eq=False)
class Environment:
    """A K-armed bandit problem; ``means`` and each change's means are stored read-only."""

    reward: Reward
    means: FloatArray
    noise_sd: float = 1.0
    changes: tuple[tuple[int, FloatArray], ...] = field(default=())
    drift_sd: float = 0.0
    churn: float = 0.0
    churn_alpha: float = 4.0
    churn_beta: float = 4.0

    def __post_init__(self) -> None:
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {', '.join(REWARDS)}, got {self.reward!r}")
        means = _means("means", self.means, self.reward, None)
        object.__setattr__(self, "means", means)
        changes: list[tuple[int, FloatArray]] = []
        previous = 0
        for index, change in enumerate(self.changes):
            if len(change) != 2:
                raise ValueError(f"changes[{index}] must be a pair (t, means), got {change!r}")
            step, values = change
            if isinstance(step, bool) or int(step) != step or int(step) <= previous:
                raise ValueError(f"changes[{index}]: t must be an integer step > {previous} "
                                 f"(strictly increasing, after step 0), got {step!r}")
            previous = int(step)
            changes.append((previous, _means(f"changes[{index}] means", values, self.reward,
                                             means.shape[0])))
        object.__setattr__(self, "changes", tuple(changes))
        object.__setattr__(self, "noise_sd", _scalar("noise_sd", self.noise_sd, 0.0, math.inf,
                                                     low_open=True, high_open=True))
        object.__setattr__(self, "drift_sd", _scalar("drift_sd", self.drift_sd, 0.0, math.inf,
                                                     high_open=True))
        object.__setattr__(self, "churn", _scalar("churn", self.churn, 0.0, 1.0,
                                                  high_open=True))
        for name in ("churn_alpha", "churn_beta"):
            object.__setattr__(self, name, _scalar(name, getattr(self, name), 0.0, math.inf,
                                                   low_open=True, high_open=True))

    @classmethod
    def bernoulli(cls, means: Sequence[float] | FloatArray, **options: float) -> Environment:
        """Shorthand for a (by default stationary) Bernoulli problem."""
        return cls("bernoulli", np.asarray(means, dtype=np.float64), **options)  # type: ignore[arg-type]

    @property
    def n_arms(self) -> int:
        return int(self.means.shape[0])

    @property
    def family(self) -> int:
        return BERNOULLI if self.reward == "bernoulli" else GAUSSIAN

    @property
    def stationary(self) -> bool:
        return not self.changes and self.drift_sd == 0.0 and self.churn == 0.0

    def arrays(self) -> EnvironmentArrays:
        n_arms = self.n_arms
        change_times = np.array([step for step, _ in self.changes], dtype=np.int64)
        change_means = np.zeros((len(self.changes), n_arms))
        for row, (_, values) in enumerate(self.changes):
            change_means[row] = values
        params = np.zeros(N_ENV_PARAMS)
        params[NOISE_SD] = self.noise_sd
        params[DRIFT_SD] = self.drift_sd
        params[CHURN] = self.churn
        params[CHURN_ALPHA] = self.churn_alpha
        params[CHURN_BETA] = self.churn_beta
        return EnvironmentArrays(self.family, self.means.copy(), change_times, change_means,
                                 params)


def bernoulli_kl(p: npt.ArrayLike, q: npt.ArrayLike) -> FloatArray:
    """KL(Bernoulli(p) || Bernoulli(q)), elementwise; +inf where q is 0 or 1 and p is not."""
    p_array = np.asarray(p, dtype=np.float64)
    q_array = np.asarray(q, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(p_array > 0.0, p_array * np.log(p_array / q_array), 0.0) + np.where(
            p_array < 1.0, (1.0 - p_array) * np.log((1.0 - p_array) / (1.0 - q_array)), 0.0
        )
    return np.asarray(np.where(np.isnan(kl), np.inf, kl), dtype=np.float64)


def lai_robbins_constant(means: npt.ArrayLike) -> float:
    """sum over suboptimal arms of (mu* - mu_i) / KL(mu_i, mu*), for Bernoulli arms.

    Any uniformly good policy has liminf R(T) / log T >= this constant (Lai & Robbins 1985).
    Arms facing a best arm of mean 1 have infinite KL and contribute 0.
    """
    array = _means("means", means, "bernoulli", None)
    best = float(array.max())
    gaps = best - array
    suboptimal = gaps > 0.0
    kl = bernoulli_kl(array[suboptimal], best)
    return float(np.sum(np.where(np.isfinite(kl), gaps[suboptimal] / kl, 0.0)))


def lai_robbins_bound(means: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
    """The asymptotic lower bound constant * log t on the cumulative regret after t pulls."""
    steps = np.asarray(t, dtype=np.float64)
    return np.asarray(lai_robbins_constant(means) * np.log(np.maximum(steps, 1.0)),
                      dtype=np.float64)
