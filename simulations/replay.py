"""Off-policy evaluation: what a policy would have earned, estimated from logged decisions.

A log records, for each decision, the action the *logging* policy took, the reward it got and
its propensity (the probability the logger gave that action). The estimators here answer "what
would the *target* policy have earned on the same traffic?" without running it:

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

import csv
import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import NormalDist
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from bandit.policy import (
    BERNOULLI,
    PolicySettings,
    allocation_probabilities,
    cumulative,
    sample_one,
)

__all__ = [
    "Estimate",
    "Log",
    "LogError",
    "ReplayPolicy",
    "StaticPolicy",
    "TargetProbabilities",
    "ThompsonPolicy",
    "fixed_arm_probabilities",
    "ips",
    "load_log",
    "logged_mean",
    "read_log",
    "replay",
    "select_position",
    "snips",
    "thompson_probabilities",
    "uniform_probabilities",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_ArrayT = TypeVar("_ArrayT", bound=npt.NDArray[np.generic])

# Two-sided 95% normal quantile (1.959964...).
_Z95 = NormalDist().inv_cdf(0.975)

# Accepted column names, first match wins: OBD's names first, then generic ones.
_ACTION_COLUMNS = ("item_id", "arm", "action")
_REWARD_COLUMNS = ("click", "reward")
_PROPENSITY_COLUMNS = ("propensity_score", "propensity")
_POSITION_COLUMN = "position"
_TIMESTAMP_COLUMN = "timestamp"

# Target probabilities are checked to sum to one per row up to this (they are often computed).
_SUM_TOLERANCE = 1e-6

_DEFAULT_SETTINGS = PolicySettings()


class LogError(ValueError):
    """A log (file or arrays) that cannot be evaluated; the message names the file, line, column."""


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


@dataclass(frozen=True)
class Log:
    """Logged decisions as read-only numpy arrays, one entry per row, in log order.

    ``actions`` are int64 in ``0 .. n_actions - 1``; ``propensities`` are the logging policy's
    probabilities of those actions, in (0, 1]; ``timestamps`` are POSIX seconds (ISO 8601 in a
    file is converted; naive times are taken as UTC) or whatever numbers the file held.
    Validated on construction, so a Log built in code is as trustworthy as one loaded from disk.
    """

    actions: IntArray
    rewards: FloatArray
    propensities: FloatArray
    n_actions: int
    positions: IntArray | None = None
    timestamps: FloatArray | None = None

    def __post_init__(self) -> None:
        actions = _frozen(np.asarray(self.actions, dtype=np.int64))
        n = actions.shape[0]
        if actions.ndim != 1 or n == 0:
            raise LogError(f"actions must be a non-empty 1-d array, got shape {actions.shape}")
        if self.n_actions < 1:
            raise LogError(f"n_actions must be >= 1, got {self.n_actions}")
        if actions.min() < 0 or actions.max() >= self.n_actions:
            raise LogError(
                f"actions must lie in 0..{self.n_actions - 1}, got {actions.min()}..{actions.max()}"
            )
        rewards = _frozen(np.asarray(self.rewards, dtype=np.float64))
        propensities = _frozen(np.asarray(self.propensities, dtype=np.float64))
        for name, array in (("rewards", rewards), ("propensities", propensities)):
            if array.shape != (n,):
                raise LogError(f"{name} must have shape ({n},), got {array.shape}")
        if not np.all(np.isfinite(rewards)):
            raise LogError("rewards must be finite")
        bad = ~((propensities > 0.0) & (propensities <= 1.0))
        if bad.any():
            row = int(np.argmax(bad))
            raise LogError(
                f"propensities must lie in (0, 1]: {int(bad.sum())} do not, "
                f"the first at row {row} is {propensities[row]!r}"
            )
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "rewards", rewards)
        object.__setattr__(self, "propensities", propensities)
        if self.positions is not None:
            positions = _frozen(np.asarray(self.positions, dtype=np.int64))
            if positions.shape != (n,):
                raise LogError(f"positions must have shape ({n},), got {positions.shape}")
            object.__setattr__(self, "positions", positions)
        if self.timestamps is not None:
            timestamps = _frozen(np.asarray(self.timestamps, dtype=np.float64))
            if timestamps.shape != (n,) or not np.all(np.isfinite(timestamps)):
                raise LogError(f"timestamps must be {n} finite numbers")
            object.__setattr__(self, "timestamps", timestamps)

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.actions.shape[0])


# Per-row action probabilities of the evaluated policy: (n, K), or (K,) for a policy that does not
# depend on the row, or a function of the log returning either.
TargetProbabilities = npt.ArrayLike | Callable[[Log], npt.ArrayLike]


def _frozen(array: _ArrayT) -> _ArrayT:
    """A read-only copy, so a Log cannot change under an estimator or a caller."""
    copy = array.copy()
    copy.setflags(write=False)
    return copy


# --------------------------------------------------------------------------------------- loading


def load_log(path: str | Path, *, n_actions: int | None = None) -> Log:
    """Read a CSV log: the Open Bandit Dataset files load as they are.

    Columns (first name found wins): action ``item_id``/``arm``/``action``, reward
    ``click``/``reward``, propensity ``propensity_score``/``propensity``; optional ``position``
    and ``timestamp``. Other columns (OBD's user features) are ignored. ``n_actions`` defaults to
    the largest action + 1; pass it when some actions never appear in the log, or replay's
    uniformity check and the helpers will count the wrong number of arms.
    """
    path = Path(path)
    with path.open(newline="") as handle:
        return read_log(handle, str(path), n_actions=n_actions)


def read_log(handle: Iterable[str], source: str, *, n_actions: int | None = None) -> Log:
    """:func:`load_log` from lines already open (e.g. a member of an archive); ``source``
    names them in error messages."""
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        raise LogError(f"{source}: empty file")
    columns = {name.strip(): index for index, name in enumerate(header)}
    action_col = _column(source, columns, _ACTION_COLUMNS, "action")
    reward_col = _column(source, columns, _REWARD_COLUMNS, "reward")
    propensity_col = _column(source, columns, _PROPENSITY_COLUMNS, "propensity")
    position_col = columns.get(_POSITION_COLUMN)
    timestamp_col = columns.get(_TIMESTAMP_COLUMN)

    actions: list[int] = []
    rewards: list[float] = []
    propensities: list[float] = []
    positions: list[int] = []
    timestamps: list[float] = []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        try:
            actions.append(int(row[action_col]))
            rewards.append(float(row[reward_col]))
            propensities.append(float(row[propensity_col]))
            if position_col is not None:
                positions.append(int(row[position_col]))
            if timestamp_col is not None:
                timestamps.append(_timestamp(row[timestamp_col]))
        except (ValueError, IndexError) as e:
            raise LogError(f"{source}, line {line}: {e}") from e

    if not actions:
        raise LogError(f"{source}: no rows")
    action_array = np.array(actions, dtype=np.int64)
    if action_array.min() < 0:
        raise LogError(f"{source}: actions must be >= 0, got {action_array.min()}")
    largest = int(action_array.max())
    if n_actions is not None and n_actions <= largest:
        raise LogError(f"{source}: n_actions={n_actions} but the log has action {largest}")
    try:
        return Log(
            actions=action_array,
            rewards=np.array(rewards),
            propensities=np.array(propensities),
            n_actions=largest + 1 if n_actions is None else n_actions,
            positions=np.array(positions, dtype=np.int64) if position_col is not None else None,
            timestamps=np.array(timestamps) if timestamp_col is not None else None,
        )
    except LogError as e:
        raise LogError(f"{source}: {e}") from e


def _column(source: str, columns: dict[str, int], names: Sequence[str], role: str) -> int:
    for name in names:
        if name in columns:
            return columns[name]
    raise LogError(
        f"{source}: no {role} column (expected one of {', '.join(names)}); "
        f"columns are {', '.join(sorted(columns)) or 'none'}"
    )


def _timestamp(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def select_position(log: Log, position: int) -> Log:
    """The rows logged at one slot (OBD: 1, 2 or 3), whose propensities refer to that slot."""
    if log.positions is None:
        raise LogError("this log has no position column")
    keep = log.positions == position
    if not keep.any():
        found = ", ".join(str(p) for p in np.unique(log.positions))
        raise LogError(f"no rows at position {position}; positions present: {found}")
    return Log(
        actions=log.actions[keep],
        rewards=log.rewards[keep],
        propensities=log.propensities[keep],
        n_actions=log.n_actions,
        positions=log.positions[keep],
        timestamps=None if log.timestamps is None else log.timestamps[keep],
    )


# ------------------------------------------------------------------------- target probabilities


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
