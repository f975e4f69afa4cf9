"""Logged decisions for off-policy evaluation: the :class:`Log` arrays and how to read them.

A log records, for each decision, the action the *logging* policy took, the reward it got and
its propensity (the probability the logger gave that action). :func:`load_log` and
:func:`read_log` read CSV files, the Open Bandit Dataset's as they are; :func:`select_position`
keeps one slot of a multi-slot log, :func:`take_rows` any subset of rows. The estimators are in
:mod:`simulations.ope` (and :mod:`simulations.replay`); the service's own export (``bandit log
export``, Parquet or JSON lines) is read by :mod:`simulations.decision_log`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from bandit.policy.layout import FloatArray, IntArray

__all__ = ["Log", "LogError", "load_log", "read_log", "select_position", "take_rows"]

_ArrayT = TypeVar("_ArrayT", bound=npt.NDArray[np.generic])

# Accepted column names, first match wins: OBD's names first, then generic ones.
_ACTION_COLUMNS = ("item_id", "arm", "action")
_REWARD_COLUMNS = ("click", "reward")
_PROPENSITY_COLUMNS = ("propensity_score", "propensity")
_POSITION_COLUMN = "position"
_TIMESTAMP_COLUMN = "timestamp"


class LogError(ValueError):
    """A log (file or arrays) that cannot be evaluated; the message names the file, line, column."""


@dataclass(frozen=True)
class Log:
    """Logged decisions as read-only numpy arrays, one entry per row, in log order.

    ``actions`` are int64 in ``0 .. n_actions - 1``; ``propensities`` are the logging policy's
    probabilities of those actions, in (0, 1]; ``timestamps`` are POSIX seconds (ISO 8601 in a
    file is converted; naive times are taken as UTC) or whatever numbers the file held;
    ``features`` (n, d) are the regression's x of each row (contextual logs), for the reward
    model of :mod:`simulations.reward_model` and contextual targets.
    Validated on construction, so a Log built in code is as trustworthy as one loaded from disk.
    """

    actions: IntArray
    rewards: FloatArray
    propensities: FloatArray
    n_actions: int
    positions: IntArray | None = None
    timestamps: FloatArray | None = None
    features: FloatArray | None = None

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
        if self.features is not None:
            features = _frozen(np.asarray(self.features, dtype=np.float64))
            if features.ndim != 2 or features.shape[0] != n or not np.all(np.isfinite(features)):
                raise LogError(f"features must be finite, of shape ({n}, d), got "
                               f"{features.shape}")
            object.__setattr__(self, "features", features)

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.actions.shape[0])


def _frozen(array: _ArrayT) -> _ArrayT:
    """A read-only copy, so a Log cannot change under an estimator or a caller."""
    copy = array.copy()
    copy.setflags(write=False)
    return copy


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
    return take_rows(log, np.flatnonzero(keep))


def take_rows(log: Log, index: npt.ArrayLike) -> Log:
    """The rows ``index`` (indices or a boolean mask) of ``log``, every column kept."""
    rows = np.asarray(index)
    if rows.dtype == np.bool_:
        rows = np.flatnonzero(rows)

    def part(array: _ArrayT | None) -> _ArrayT | None:
        return None if array is None else array[rows]

    return Log(
        actions=log.actions[rows],
        rewards=log.rewards[rows],
        propensities=log.propensities[rows],
        n_actions=log.n_actions,
        positions=part(log.positions),
        timestamps=part(log.timestamps),
        features=part(log.features),
    )
