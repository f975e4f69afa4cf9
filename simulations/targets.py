"""The policies off-policy evaluation evaluates ("targets").

Two forms, for the estimators of :mod:`simulations.replay`:

- :data:`TargetProbabilities`, what :func:`~simulations.replay.ips` and
  :func:`~simulations.replay.snips` weigh a log with: the target's action probabilities, per
  row or the same for every row (:func:`uniform_probabilities`,
  :func:`fixed_arm_probabilities`, :func:`thompson_probabilities`);
- a :class:`ReplayPolicy`, which :func:`~simulations.replay.replay` queries and teaches row
  by row: :class:`StaticPolicy` never learns, :class:`ThompsonPolicy` learns as the service
  does.

Thompson allocations are computed by the service's own code, so what is evaluated is what
production would serve.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from bandit.policy import BERNOULLI, PolicySettings, allocation_probabilities
from bandit.policy.layout import FloatArray
from simulations.logs import Log

__all__ = [
    "ReplayPolicy",
    "StaticPolicy",
    "TargetProbabilities",
    "ThompsonPolicy",
    "fixed_arm_probabilities",
    "thompson_probabilities",
    "uniform_probabilities",
]


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

