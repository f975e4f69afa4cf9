"""The policies off-policy evaluation evaluates ("targets").

Two forms, for the estimators of :mod:`simulations.ope` and :mod:`simulations.replay`:

- :data:`TargetProbabilities`, what the estimators (:func:`~simulations.ope.ips`,
  :func:`~simulations.ope.dr`, ...) weigh a log with: the target's action probabilities, per
  row or the same for every row (:func:`uniform_probabilities`,
  :func:`fixed_arm_probabilities`, :func:`thompson_probabilities`, and for the service's
  policies learnt on a log, :func:`service_allocation` and :func:`contextual_probabilities`);
- a :class:`ReplayPolicy`, which :func:`~simulations.replay.replay` queries and teaches row
  by row: :class:`StaticPolicy` never learns, :class:`ThompsonPolicy` learns as the service
  does.

Thompson allocations are computed by the service's own code, so what is evaluated is what
production would serve: :func:`service_settings` turns exploration settings into the kernel's
through the service's own validation and conversion (``bandit.model.parse_exploration``, the
cache's ``policy_settings``); :func:`arm_statistics` and :func:`contextual_posterior` count a
log's rewards into the statistics the service would hold (forgetting included), and
:func:`service_allocation` and :func:`contextual_probabilities` are the allocation the service
would serve from them, exactly (the probabilities, not a sample of decisions).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from bandit.errors import InvalidValue
from bandit.features import DEFAULT_NOISE, Feature, LinearModel
from bandit.model import (
    BERNOULLI_PRIOR,
    GAUSSIAN_PRIOR,
    Experiment,
    Exploration,
    check_consistent,
    parse_exploration,
)
from bandit.policy import (
    BERNOULLI,
    GAUSSIAN,
    ContextualPosterior,
    PolicySettings,
    allocation_probabilities,
)
from bandit.policy.contextual import add_observations, stats_width
from bandit.policy.layout import FloatArray
from bandit.serving.cache import policy_settings, prior_array
from simulations.logs import Log

__all__ = [
    "ReplayPolicy",
    "ServicePolicy",
    "StaticPolicy",
    "TargetProbabilities",
    "ThompsonPolicy",
    "arm_statistics",
    "contextual_posterior",
    "contextual_probabilities",
    "default_model",
    "fixed_arm_probabilities",
    "service_allocation",
    "service_settings",
    "thompson_probabilities",
    "uniform_probabilities",
]

RewardKind = Literal["bernoulli", "gaussian"]


_DEFAULT_SETTINGS = PolicySettings()

# Per-row action probabilities of the evaluated policy: (n, K), or (K,) for a policy that does not
# depend on the row, or a function of the log returning either.
TargetProbabilities = npt.ArrayLike | Callable[[Log], npt.ArrayLike]


def uniform_probabilities(n_actions: int) -> FloatArray:
    """Every action with probability 1/K."""
    if n_actions < 1:
        raise ValueError(f"n_actions must be >= 1, got {n_actions}")
    return np.full(n_actions, 1.0 / n_actions)


def fixed_arm_probabilities(n_actions: int, arm: int) -> FloatArray:
    """Always ``arm``."""
    if not 0 <= arm < n_actions:
        raise ValueError(f"arm must be in 0..{n_actions - 1}, got {arm}")
    out = np.zeros(n_actions)
    out[arm] = 1.0
    return out


def thompson_probabilities(
    successes: npt.ArrayLike,
    failures: npt.ArrayLike,
    *,
    prior: tuple[float, float] = (1.0, 1.0),
    settings: PolicySettings = _DEFAULT_SETTINGS,
) -> FloatArray:
    """Allocation of a Bernoulli Thompson policy frozen at Beta(prior + counts) posteriors.

    Computed by the service's own :func:`bandit.policy.allocation_probabilities`, so what is
    evaluated is exactly what production would serve from those statistics and settings.
    """
    successes_array = np.asarray(successes, dtype=np.float64)
    failures_array = np.asarray(failures, dtype=np.float64)
    if successes_array.ndim != 1 or successes_array.shape != failures_array.shape:
        raise ValueError(
            f"successes and failures must be 1-d of one length, got "
            f"{successes_array.shape} and {failures_array.shape}"
        )
    stats = np.vstack([successes_array, failures_array, np.zeros_like(successes_array)])
    return allocation_probabilities(
        BERNOULLI,
        stats,
        successes_array + failures_array,
        np.array([prior[0], prior[1], 0.0, 0.0]),
        settings,
    )


class ReplayPolicy(Protocol):
    """A policy replay can query and teach. Immutable: learning returns the next policy."""

    def probabilities(self) -> FloatArray:
        """Current allocation probabilities over the K actions (sum to 1)."""
        ...

    def learn(self, action: int, reward: float) -> ReplayPolicy:
        """The policy after seeing ``reward`` for ``action`` (``self`` if it does not learn)."""
        ...


@dataclass(frozen=True)
class StaticPolicy:
    """A policy that never learns, e.g. :func:`fixed_arm_probabilities` or a frozen Thompson."""

    allocation: FloatArray

    def probabilities(self) -> FloatArray:
        """The fixed allocation."""
        return self.allocation

    def learn(self, action: int, reward: float) -> StaticPolicy:
        """Unchanged: a static policy ignores feedback."""
        return self


@dataclass(frozen=True)
class ThompsonPolicy:
    """Online Bernoulli Thompson sampling as the service runs it, learning one reward at a time.

    Allocation by :func:`bandit.policy.allocation_probabilities` with ``settings`` (epsilon,
    floors and caps, temperature, warm-up, top-two, control share); rewards must lie in [0, 1]
    (a fractional reward counts as that fraction of a success).
    """

    successes: FloatArray
    failures: FloatArray
    prior: tuple[float, float] = (1.0, 1.0)
    settings: PolicySettings = _DEFAULT_SETTINGS

    @classmethod
    def fresh(
        cls,
        n_actions: int,
        *,
        prior: tuple[float, float] = (1.0, 1.0),
        settings: PolicySettings = _DEFAULT_SETTINGS,
    ) -> ThompsonPolicy:
        """A sampler that has seen nothing yet."""
        return cls(np.zeros(n_actions), np.zeros(n_actions), prior, settings)

    def probabilities(self) -> FloatArray:
        """The service's allocation for the current posteriors."""
        return thompson_probabilities(
            self.successes, self.failures, prior=self.prior, settings=self.settings
        )

    def learn(self, action: int, reward: float) -> ThompsonPolicy:
        """Posterior update with one Bernoulli observation."""
        if not 0.0 <= reward <= 1.0:
            raise ValueError(f"Bernoulli Thompson needs rewards in [0, 1], got {reward!r}")
        successes = self.successes.copy()
        failures = self.failures.copy()
        successes[action] += reward
        failures[action] += 1.0 - reward
        return dataclasses.replace(self, successes=successes, failures=failures)



# ------------------------------------------------------------- the service's policy, from a log


@dataclass(frozen=True)
class ServicePolicy:
    """An experiment as the service would run it: its arms, reward kind, prior and exploration
    settings (validated and converted by the service's own code)."""

    experiment: Experiment
    settings: PolicySettings

    @property
    def family(self) -> int:
        return BERNOULLI if self.experiment.reward == "bernoulli" else GAUSSIAN

    @property
    def prior(self) -> FloatArray:
        return prior_array(self.experiment)

    @property
    def half_life_s(self) -> float | None:
        return self.experiment.exploration.half_life_s


def service_settings(arms: Sequence[str], reward: RewardKind,
                     exploration: Mapping[str, object] | None = None,
                     base: Experiment | None = None) -> ServicePolicy:
    """The service's policy for ``arms`` with ``exploration`` (the PATCH body's
    ``exploration`` object: ``epsilon``, ``min_share``, ``max_share``, ``temperature``,
    ``half_life_s``, ``warmup``, ``top_two``, ``control``) over the settings and prior of
    ``base`` (the logged experiment's, from an export's metadata), else over the defaults with
    the default prior. ValueError names a setting the service would refuse."""
    try:
        parsed = parse_exploration(dict(exploration or {}),
                                   Exploration() if base is None else base.exploration)
        prior = (dict(base.prior) if base is not None and base.reward == reward
                 else dict(BERNOULLI_PRIOR if reward == "bernoulli" else GAUSSIAN_PRIOR))
        # The logged experiment's paused arms stay paused: the service would not serve them.
        paused = frozenset() if base is None else base.paused & frozenset(arms)
        experiment = Experiment(id="log", arms=tuple(arms), reward=reward, prior=prior,
                                exploration=parsed, paused=paused)
        check_consistent(experiment)
    except InvalidValue as error:
        raise ValueError(error.message) from None
    return ServicePolicy(experiment, policy_settings(experiment))


def _evidence_weights(log: Log, half_life_s: float | None, at: float | None) -> FloatArray:
    """Each row's weight in the statistics at time ``at``: 2^-(age / half-life), or 1."""
    if half_life_s is None:
        return np.ones(log.n)
    if log.timestamps is None or at is None:
        raise ValueError("forgetting (half_life_s) needs the rows' timestamps and a time")
    age = np.maximum(at - log.timestamps, 0.0)
    return np.asarray(2.0 ** (-age / half_life_s), dtype=np.float64)


def arm_statistics(log: Log, family: int, *, half_life_s: float | None = None,
                   at: float | None = None) -> tuple[FloatArray, FloatArray]:
    """The service's statistics (3, K) and raw counts (K,) after the rewards of ``log``.

    Bernoulli: successes and failures (a fractional reward counts as that fraction of a
    success); Gaussian: weight, weighted mean and weighted sum of squared deviations. With a
    half-life each row's evidence is decayed to time ``at`` by 2^-(age / half_life_s), as the
    service's forgetting leaves it; raw counts are never decayed.
    """
    k = log.n_actions
    weights = _evidence_weights(log, half_life_s, at)
    counts = np.bincount(log.actions, minlength=k).astype(np.float64)
    total = np.bincount(log.actions, weights=weights, minlength=k)
    rewarded = np.bincount(log.actions, weights=weights * log.rewards, minlength=k)
    stats = np.zeros((3, k))
    if family == BERNOULLI:
        stats[0], stats[1] = rewarded, total - rewarded
        return stats, counts
    mean = np.divide(rewarded, total, out=np.zeros(k), where=total > 0)
    squares = np.bincount(log.actions, weights=weights * (log.rewards - mean[log.actions]) ** 2,
                          minlength=k)
    stats[0], stats[1], stats[2] = total, mean, squares
    return stats, counts


def service_allocation(policy: ServicePolicy, stats: FloatArray, counts: FloatArray) -> FloatArray:
    """The allocation the service serves from these statistics: every setting folded in,
    computed by :func:`bandit.policy.allocation_probabilities` (exact, not sampled)."""
    experiment = policy.experiment
    active = np.array([arm not in experiment.paused for arm in experiment.arms])
    return allocation_probabilities(policy.family, stats, counts, policy.prior, policy.settings,
                                    active)


def default_model(dimension: int, reward: RewardKind) -> LinearModel:
    """A model for features without a declared one (a log without metadata): an intercept
    and ``dimension - 1`` numeric columns, the service's default prior for ``reward``."""
    if dimension < 1:
        raise ValueError(f"dimension must be >= 1, got {dimension}")
    features = tuple(Feature(f"x{j}", "numeric", scale=(0.0, 1.0)) for j in range(dimension - 1))
    noise = DEFAULT_NOISE[reward]
    return LinearModel(features=features, alpha=noise["alpha"], beta=noise["beta"])


def contextual_posterior(model: LinearModel, log: Log, settings: PolicySettings, *,
                         half_life_s: float | None = None,
                         at: float | None = None) -> ContextualPosterior:
    """The service's contextual posterior after the rows of ``log`` (their ``features`` are
    the model's x), added as the service adds rewards (``add_observations``), forgetting as
    in :func:`arm_statistics`."""
    if log.features is None:
        raise ValueError("a contextual target needs the log's features column")
    if log.features.shape[1] != model.dimension:
        raise ValueError(f"the features have {log.features.shape[1]} columns, the model "
                         f"{model.dimension}")
    rows = np.zeros((log.n_actions, stats_width(model.dimension)))
    add_observations(rows, np.ascontiguousarray(log.actions),
                     np.ascontiguousarray(log.features), np.ascontiguousarray(log.rewards),
                     _evidence_weights(log, half_life_s, at))
    counts = np.bincount(log.actions, minlength=log.n_actions).astype(np.float64)
    return ContextualPosterior.build(model, rows, counts, settings,
                                     np.ones(log.n_actions, dtype=np.bool_))


def contextual_probabilities(posterior: ContextualPosterior, features: FloatArray) -> FloatArray:
    """pi(a | x_i) for every row of ``features`` (n, d): the allocate endpoint's
    probabilities, one kernel call per row."""
    out = np.empty((features.shape[0], posterior.means.shape[0]))
    for i in range(features.shape[0]):
        out[i] = posterior.probabilities(features[i])
    if not math.isfinite(float(out.sum())):
        raise ValueError("the contextual posterior gave non-finite probabilities")
    return out
