"""The service's decision log, as ``bandit log export`` writes it: Parquet or JSON lines.

One row per served decision, and for a slate one row per position. Columns (see
docs/simulations.md): ``decision_id``, ``experiment``, ``version``, ``timestamp`` (POSIX
seconds), ``action`` (index into the experiment's arms), ``arm`` (its id), ``n_actions``,
``position`` (0 for single decisions), ``propensity`` (the logging policy's exact probability
of that action at that position), ``reward`` (null: none reported within the attribution
window), ``reward_timestamp``, ``unit``, ``context`` (JSON text) and ``features`` (the
experiment's linear model's x, intercept included; contextual experiments only).

A Parquet file also carries the export's metadata under the schema key ``bandit`` (JSON: the
experiment, its arms, its reward kind, its model, the attribution window and the exported
span); a JSON-lines file has none, so the reward kind is inferred (all non-null rewards in
{0, 1}: Bernoulli) unless the caller says.

Missing rewards are a click that never came for a Bernoulli experiment (counted as 0) and an
unknown value for a Gaussian one (the row is dropped): :func:`read_decision_log` does so and
says how many in :attr:`DecisionLog.notes`. Every problem with the file is a
:class:`~simulations.logs.LogError` naming the file and the column.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bandit.features import LinearModel
from bandit.model import Experiment
from bandit.policy.layout import FloatArray
from simulations.logs import Log, LogError

__all__ = [
    "REQUIRED_COLUMNS",
    "DecisionLog",
    "logged_experiment",
    "read_decision_log",
]

RewardKind = Literal["bernoulli", "gaussian"]
#: Columns a decision log must have (the others are optional).
REQUIRED_COLUMNS = ("timestamp", "action", "arm", "n_actions", "position", "propensity",
                    "reward")
#: Schema metadata key of the Parquet export.
METADATA_KEY = b"bandit"


@dataclass(frozen=True)
class DecisionLog:
    """A decision log read and checked: the rows as a :class:`Log` (every position, file
    order), the arms, the reward kind and what was assumed."""

    source: str
    log: Log
    arms: tuple[str, ...]
    reward: RewardKind
    #: Where the reward kind came from: "metadata", "given" or "inferred".
    reward_source: str
    experiment: str | None
    model: LinearModel | None
    metadata: dict[str, Any]
    #: Per row, seconds from the decision to its reward (NaN without one).
    reward_delays: FloatArray
    #: Rows whose reward was missing (counted as 0, or dropped for Gaussian rewards).
    missing_rewards: int
    notes: tuple[str, ...]

    @property
    def positions(self) -> list[int]:
        """The positions present (one, 0, unless the experiment serves slates)."""
        assert self.log.positions is not None
        return sorted(int(p) for p in np.unique(self.log.positions))


def read_decision_log(path: str | Path, *, reward: RewardKind | None = None) -> DecisionLog:
    """Read ``*.parquet`` or ``*.jsonl`` (see the module notes); ``reward`` overrides the
    reward kind of the metadata or the inference."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise LogError(f"{source}: no such file")
    if path.suffix == ".parquet":
        columns, metadata = _read_parquet(path)
    elif path.suffix in (".jsonl", ".ndjson"):
        columns, metadata = _read_jsonl(path), {}
    else:
        raise LogError(f"{source}: expected a .parquet or .jsonl file from bandit log export")
    return _decision_log(source, columns, metadata, reward)


def _read_parquet(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    # pyarrow ships no type information: imported by name, its objects are Any.
    parquet = importlib.import_module("pyarrow.parquet")
    try:
        table = parquet.read_table(path)
    except Exception as error:  # pyarrow raises its own errors for unreadable files
        raise LogError(f"{path}: not a readable Parquet file ({error})") from error
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    try:
        metadata = {} if raw is None else json.loads(raw)
    except ValueError as error:
        raise LogError(f"{path}: the schema metadata 'bandit' is not JSON ({error})") from error
    columns: dict[str, Any] = {}
    for name in table.column_names:
        column = table.column(name)
        if name == "features":
            columns[name] = column.to_pylist()
        else:
            columns[name] = column.to_numpy(zero_copy_only=False)
    return columns, metadata if isinstance(metadata, dict) else {}


def _read_jsonl(path: Path) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise LogError(f"{path}, line {line_number}: not JSON ({error})") from error
            if not isinstance(row, dict):
                raise LogError(f"{path}, line {line_number}: expected a JSON object")
            rows.append(row)
    names = {name for row in rows for name in row}
    return {name: [row.get(name) for row in rows] for name in sorted(names)}


def _numbers(source: str, columns: dict[str, Any], name: str, *,
             nullable: bool = False) -> FloatArray:
    values = columns[name]
    if isinstance(values, list):  # JSON lines: true and "0.5" are not numbers
        for row, value in enumerate(values):
            if isinstance(value, bool | str):
                raise LogError(f"{source}: column {name!r} must hold numbers; row {row} holds "
                               f"{value!r}")
    try:
        array = np.array([np.nan if v is None else v for v in values], dtype=np.float64) \
            if isinstance(values, list) else np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as error:
        raise LogError(f"{source}: column {name!r} must hold numbers ({error})") from error
    if not nullable and not np.all(np.isfinite(array)):
        row = int(np.argmax(~np.isfinite(array)))
        raise LogError(f"{source}: column {name!r} must hold finite numbers; row {row} holds "
                       f"{float(array[row])}")
    return array


def _decision_log(source: str, columns: dict[str, Any], metadata: dict[str, Any],
                  reward: RewardKind | None) -> DecisionLog:
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise LogError(f"{source}: missing column{'s' if len(missing) > 1 else ''} "
                       f"{', '.join(missing)} (a bandit log export has "
                       f"{', '.join(REQUIRED_COLUMNS)}); columns are "
                       f"{', '.join(sorted(columns)) or 'none'}")
    n = len(columns["action"])
    if n == 0:
        raise LogError(f"{source}: no rows")
    timestamps = _numbers(source, columns, "timestamp")
    actions = _integers(source, _numbers(source, columns, "action"), "action")
    positions = _integers(source, _numbers(source, columns, "position"), "position")
    propensities = _numbers(source, columns, "propensity")
    bad = ~((propensities > 0.0) & (propensities <= 1.0))
    if bad.any():
        row = int(np.argmax(bad))
        raise LogError(f"{source}: column 'propensity' must lie in (0, 1]: {int(bad.sum())} "
                       f"rows do not, the first (row {row}) holds {propensities[row]!r}")
    rewards = _numbers(source, columns, "reward", nullable=True)
    arms = _arms(source, columns, actions, metadata)
    n_actions = len(arms)
    if actions.min() < 0 or actions.max() >= n_actions:
        raise LogError(f"{source}: column 'action' must lie in 0..{n_actions - 1} (the "
                       f"experiment's {n_actions} arms), got {actions.min()}..{actions.max()}")
    kind, kind_source = _reward_kind(source, rewards, metadata, reward)
    notes: list[str] = []
    absent = np.isnan(rewards)
    n_missing = int(absent.sum())
    keep = np.ones(n, dtype=np.bool_)
    if n_missing and kind == "bernoulli":
        rewards = np.where(absent, 0.0, rewards)
        notes.append(f"{n_missing:,} of {n:,} rows have no reward: counted as 0 (a Bernoulli "
                     "reward that never came within the attribution window)")
    elif n_missing:
        keep = ~absent
        notes.append(f"{n_missing:,} of {n:,} rows have no reward: dropped (Gaussian rewards; "
                     "the estimates are for decisions whose reward was reported)")
        if not keep.any():
            raise LogError(f"{source}: no row has a reward")
    if kind == "bernoulli" and np.any((rewards < 0.0) | (rewards > 1.0)):
        raise LogError(f"{source}: column 'reward' holds values outside [0, 1] for a "
                       "Bernoulli experiment (pass --reward gaussian?)")
    features = _features(source, columns, n)
    delays = np.full(n, np.nan)
    if "reward_timestamp" in columns:
        delays = _numbers(source, columns, "reward_timestamp", nullable=True) - timestamps
    model = _model(source, metadata)
    if model is not None and features is not None and model.dimension != features.shape[1]:
        raise LogError(f"{source}: column 'features' has {features.shape[1]} values per row, "
                       f"the model in the metadata {model.dimension}")
    log = Log(actions=actions[keep], rewards=rewards[keep], propensities=propensities[keep],
              n_actions=n_actions, positions=positions[keep], timestamps=timestamps[keep],
              features=None if features is None else features[keep])
    experiment = metadata.get("experiment")
    if experiment is None and "experiment" in columns and len(columns["experiment"]):
        experiment = str(columns["experiment"][0])
    return DecisionLog(source=source, log=log, arms=arms, reward=kind, reward_source=kind_source,
                       experiment=None if experiment is None else str(experiment), model=model,
                       metadata=metadata, reward_delays=delays[keep], missing_rewards=n_missing,
                       notes=tuple(notes))


def _integers(source: str, values: FloatArray, name: str) -> np.ndarray[Any, np.dtype[np.int64]]:
    if not np.all(values == np.round(values)):
        raise LogError(f"{source}: column {name!r} must hold integers")
    return values.astype(np.int64)


def _arms(source: str, columns: dict[str, Any], actions: np.ndarray[Any, np.dtype[np.int64]],
          metadata: dict[str, Any]) -> tuple[str, ...]:
    """The experiment's arm ids by index: the metadata's, else those of the rows (an index no
    row shows gets a placeholder name)."""
    counts = _numbers(source, columns, "n_actions")
    n_actions = int(counts.max())
    if counts.min() != n_actions:
        raise LogError(f"{source}: column 'n_actions' must be the same in every row (the "
                       f"experiment's arms at export), got {int(counts.min())} to {n_actions}")
    named: dict[int, str] = {}
    for action, arm in zip(actions.tolist(), list(columns["arm"]), strict=True):
        known = named.setdefault(action, str(arm))
        if known != str(arm):
            raise LogError(f"{source}: column 'arm': action {action} is {known!r} in one row "
                           f"and {arm!r} in another")
    listed = metadata.get("arms")
    if isinstance(listed, list) and listed:
        arms = tuple(str(arm) for arm in listed)
        for action, arm in named.items():
            if action < len(arms) and arms[action] != arm:
                raise LogError(f"{source}: column 'arm' names action {action} {arm!r}, the "
                               f"metadata {arms[action]!r}")
        return arms
    if max(named) >= n_actions:
        raise LogError(f"{source}: column 'action' holds {max(named)}, outside the "
                       f"{n_actions} arms of column 'n_actions'")
    return tuple(named.get(i, f"#{i}") for i in range(n_actions))


def _reward_kind(source: str, rewards: FloatArray, metadata: dict[str, Any],
                 given: RewardKind | None) -> tuple[RewardKind, str]:
    if given is not None:
        return given, "given"
    declared = metadata.get("reward")
    if declared in ("bernoulli", "gaussian"):
        return declared, "metadata"
    observed = rewards[~np.isnan(rewards)]
    if observed.size == 0:
        raise LogError(f"{source}: no row has a reward (column 'reward' is all null)")
    binary = bool(np.all((observed == 0.0) | (observed == 1.0)))
    return ("bernoulli" if binary else "gaussian"), "inferred"


def _features(source: str, columns: dict[str, Any], n: int) -> FloatArray | None:
    values = columns.get("features")
    if values is None or all(v is None for v in values):
        return None
    if any(v is None for v in values):
        row = next(i for i, v in enumerate(values) if v is None)
        raise LogError(f"{source}: column 'features' is null in row {row} but not in others")
    widths = {len(v) for v in values}
    if len(widths) != 1:
        raise LogError(f"{source}: column 'features' holds lists of lengths "
                       f"{sorted(widths)}; every row must have the model's dimension")
    try:
        array = np.array(values, dtype=np.float64).reshape(n, -1)
    except (TypeError, ValueError) as error:
        raise LogError(f"{source}: column 'features' must hold lists of numbers") from error
    if not np.all(np.isfinite(array)):
        raise LogError(f"{source}: column 'features' must hold finite numbers")
    return array


def _model(source: str, metadata: dict[str, Any]) -> LinearModel | None:
    spec = metadata.get("model")
    if spec is None:
        return None
    try:
        return LinearModel.from_json(spec)
    except (KeyError, TypeError, ValueError) as error:
        raise LogError(f"{source}: the metadata's model is not a model spec ({error})") from error


def logged_experiment(metadata: dict[str, Any]) -> Experiment | None:
    """The logged experiment's configuration (its exploration settings and prior), from an
    export's metadata (``config``); None without one (JSON lines, or an older export)."""
    config = metadata.get("config")
    if not isinstance(config, dict):
        return None
    try:
        return Experiment.from_json(config)
    except (KeyError, TypeError, ValueError):
        return None
