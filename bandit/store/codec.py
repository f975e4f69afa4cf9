"""What the store writes and reads, as plain data: an experiment's stored state, events
encoded for the APPLY_EVENTS script, the sample-ratio sums, the history lists' sizes, and the
(de)serialisation between them (pure functions)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson

from bandit.model import GUARD_SEPARATOR, Experiment
from bandit.settings import Settings
from bandit.tokens import decision_key


@dataclass(frozen=True)
class StoredState:
    """What one consistent read of an experiment returns."""

    experiment: Experiment
    #: (3, K): bernoulli successes, failures, 0; gaussian weight, mean, m2 (decayed to ``t``).
    stats: npt.NDArray[np.float64]
    #: (K,) raw observation counts.
    counts: npt.NDArray[np.float64]
    #: (K,) server time each arm's statistics were last decayed to (0 = never updated).
    updated_at: npt.NDArray[np.float64]
    revision: int
    server_time: float
    #: A contextual experiment's statistics rows (K, width), decayed to ``updated_at`` (see
    #: ``bandit.policy.contextual``); None for a context-free one.
    rows: npt.NDArray[np.float64] | None = None
    #: Each guardrail metric's statistics, by ``Guardrail.key`` (those of its current kind).
    guards: dict[str, GuardState] = field(default_factory=dict)
    #: The arms the guardrails' hard gate holds (indices), as last recorded.
    held: frozenset[int] = frozenset()


@dataclass(frozen=True)
class GuardState:
    """One guardrail metric's statistics, laid out as an experiment's (``StoredState``)."""

    stats: npt.NDArray[np.float64]
    counts: npt.NDArray[np.float64]
    updated_at: npt.NDArray[np.float64]


class EncodedEvent(NamedTuple):
    """A reward event checked against its experiment, ready for the APPLY_EVENTS script."""

    event_id: str
    arm_index: int
    reward: float
    ts: float | None
    decision_id: str | None
    #: ``|<metric>|<kind initial>`` for a guardrail metric's reward, "" for the primary's.
    guard: str = ""


class Draws(NamedTuple):
    """One arm's sample-ratio sums over a run of fresh draws (``bandit.serving.decisions``)."""

    #: Draws that chose the arm.
    observed: float
    #: The arm's propensity summed over every draw (whichever arm it chose).
    expected: float
    #: ``p(1-p)`` of the arm summed over every draw: the exact variance of ``observed``.
    variance: float


@dataclass(frozen=True)
class Traffic:
    """What was served of one experiment, as flushed by every process."""

    #: Decisions served per arm index (a slate counts for each arm it holds).
    served: dict[int, int]
    #: Sample-ratio sums per arm index.
    draws: dict[int, Draws]
    #: Contextual decisions served per segment (``feature=value``) and arm index.
    segments: dict[str, dict[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class HistoryRings:
    """The two history lists: coarse (``history_interval_s``, ``history_max_samples``) and
    fine (``history_fine_interval_s`` for ``history_fine_window_s``; 0 samples: none)."""

    coarse_interval_s: float
    coarse_samples: int
    fine_interval_s: float
    fine_samples: int

    @classmethod
    def of(cls, settings: Settings) -> HistoryRings:
        fine = settings.history_fine_interval_s
        samples = (math.ceil(settings.history_fine_window_s / fine) + 1
                   if fine < settings.history_interval_s
                   and settings.history_fine_window_s > 0 else 0)
        return cls(settings.history_interval_s, settings.history_max_samples, fine, samples)

    @property
    def interval_s(self) -> float:
        """The spacing of the newest samples (the finest list in use)."""
        return self.fine_interval_s if self.fine_samples else self.coarse_interval_s


SEGMENT_SEPARATOR = "\x1f"


def decode_segments(fields: dict[str, str]) -> dict[str, dict[int, int]]:
    """The segments hash (``<segment>\x1f<arm>`` -> count) per segment and arm index."""
    out: dict[str, dict[int, int]] = {}
    for name, value in fields.items():
        segment, _, arm = name.rpartition(SEGMENT_SEPARATOR)
        out.setdefault(segment, {})[int(arm)] = int(value)
    return out


def encode_draws(draws: dict[int, Draws]) -> list[str]:
    """ADD_DRAWS arguments: field, increment pairs (``repr``: every digit of a float)."""
    arguments = []
    for arm, sums in draws.items():
        for suffix, value in zip("oev", sums, strict=True):
            arguments += [f"{arm}:{suffix}", repr(float(value))]
    return arguments


def decode_draws(fields: dict[str, str]) -> dict[int, Draws]:
    """The draws hash (``i:o``, ``i:e``, ``i:v``) per arm index."""
    sums: dict[int, list[float]] = {}
    for name, value in fields.items():
        arm, _, suffix = name.partition(":")
        sums.setdefault(int(arm), [0.0, 0.0, 0.0])["oev".index(suffix)] = float(value)
    return {arm: Draws(*values) for arm, values in sums.items()}


def config_json(experiment: Experiment) -> str:
    return orjson.dumps(experiment.to_json()).decode()


def half_life(experiment: Experiment) -> str:
    half_life = experiment.exploration.half_life_s
    return "" if half_life is None else repr(half_life)


def encode_events(events: list[EncodedEvent]) -> str:
    # A slate's reward marker holds its unique head, not its (up to 3,000-digit) arm list.
    return "".join(
        f"{e.event_id}\t{e.arm_index}{e.guard}\t{e.reward!r}\t"
        f"{'-' if e.ts is None else repr(e.ts)}\t"
        f"{'-' if e.decision_id is None else decision_key(e.decision_id)}\n"
        for e in events
    )


def decode_state(result: list[Any]) -> StoredState:
    """What the READ script returned, as bytes (or str: then without contextual rows)."""
    config, flat_stats, server_time = result
    experiment = Experiment.from_json(orjson.loads(config))
    arms = len(experiment.arms)
    gaussian = experiment.reward == "gaussian"
    stats = np.zeros((3, arms))
    counts = np.zeros(arms)
    updated_at = np.zeros(arms)
    rows = GUARD_ROWS["g" if gaussian else "b"]
    model_rows = None
    if experiment.model is not None:
        d = experiment.model.dimension
        model_rows = np.zeros((arms, 3 + d + d * (d + 1) // 2))
    revision = 0
    guards: dict[str, GuardState] = {}
    held: frozenset[int] = frozenset()
    for position in range(0, len(flat_stats), 2):
        name, value = flat_stats[position], flat_stats[position + 1]
        if type(name) is bytes:  # read undecoded (the rows are binary): names are ASCII
            name = name.decode()
        if name == "rev":
            revision = int(value)
            continue
        if name == "held":
            held = frozenset(int(i) for i in text(value).split(",") if i)
            continue
        index_text, _, kind = name.partition(":")
        index_text, bar, guard_key = index_text.partition(GUARD_SEPARATOR)
        index = int(index_text)
        if index >= arms:
            continue  # written for an arm of a newer configuration than this snapshot read
        if bar:
            guard = guards.get(guard_key)
            if guard is None:
                guard = guards[guard_key] = GuardState(np.zeros((3, arms)), np.zeros(arms),
                                                       np.zeros(arms))
            _store_field(guard.stats, guard.counts, guard.updated_at,
                         GUARD_ROWS[guard_key[-1]], kind, index, value)
        elif kind == "x" and model_rows is not None:
            row = decode_row(value)
            model_rows[index, :row.shape[0]] = row
        else:
            _store_field(stats, counts, updated_at, rows, kind, index, value)
    return StoredState(experiment, stats, counts, updated_at, revision,
                       float(server_time), model_rows, guards, held)


#: Which row of the statistics each stored field is, by kind (``g``aussian, ``b``ernoulli).
GUARD_ROWS = {"g": {"w": 0, "m": 1, "q": 2}, "b": {"s": 0, "f": 1}}


def _store_field(stats: npt.NDArray[np.float64], counts: npt.NDArray[np.float64],
                 updated_at: npt.NDArray[np.float64], rows: dict[str, int], kind: str,
                 index: int, value: str | bytes) -> None:
    if kind == "n":
        counts[index] = float(value)
    elif kind == "t":
        updated_at[index] = float(value)
    elif kind in rows:
        stats[rows[kind], index] = float(value)


def text(value: str | bytes) -> str:
    """A reply's value as text (the store reads some replies undecoded)."""
    return value if isinstance(value, str) else value.decode()


def arm_sums(events: list[EncodedEvent], features: npt.NDArray[np.float64],
             weights: npt.NDArray[np.float64]) -> dict[int, tuple[npt.NDArray[np.float64], int]]:
    """Per arm index: the statistics row (``bandit.policy.contextual``'s layout: weight, sum
    r, sum r^2, X^T y, upper triangle of X^T X) summed over the events, and their number."""
    arms = np.fromiter((e.arm_index for e in events), dtype=np.int64, count=len(events))
    rewards = np.fromiter((e.reward for e in events), dtype=np.float64, count=len(events))
    touched, compact = np.unique(arms, return_inverse=True)
    d = features.shape[1]
    out: dict[int, tuple[npt.NDArray[np.float64], int]] = {}
    for j, arm in enumerate(touched.tolist()):
        mine = compact == j
        x, r, w = features[mine], rewards[mine], weights[mine]
        wx = x * w[:, None]
        gram = wx.T @ x
        row = np.concatenate([[w.sum(), w @ r, w @ (r * r)], wx.T @ r,
                              gram[np.triu_indices(d)]])
        out[int(arm)] = (row, int(mine.sum()))
    return out


def encode_row(row: npt.NDArray[np.float64]) -> bytes:
    """A statistics row as APPLY_CONTEXTUAL takes and stores it: little-endian doubles (the
    Lua ``struct`` library's ``<d``), exact and parsed in microseconds where text would take
    milliseconds per arm at d = 64."""
    return np.ascontiguousarray(row, dtype="<f8").tobytes()


def decode_row(value: bytes) -> npt.NDArray[np.float64]:
    """``encode_row`` back (the store reads experiments undecoded, see ``RedisStore.read``)."""
    return np.frombuffer(value, dtype="<f8").astype(np.float64)
