"""What the store writes and reads, as plain data: an experiment's stored state, events
encoded for the APPLY_EVENTS script, and the (de)serialisation between them (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson

from bandit.model import Experiment
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


class EncodedEvent(NamedTuple):
    """A reward event checked against its experiment, ready for the APPLY_EVENTS script."""

    event_id: str
    arm_index: int
    reward: float
    ts: float | None
    decision_id: str | None


def config_json(experiment: Experiment) -> str:
    return orjson.dumps(experiment.to_json()).decode()


def half_life(experiment: Experiment) -> str:
    half_life = experiment.exploration.half_life_s
    return "" if half_life is None else repr(half_life)


def encode_events(events: list[EncodedEvent]) -> str:
    # A slate's reward marker holds its unique head, not its (up to 3,000-digit) arm list.
    return "".join(
        f"{e.event_id}\t{e.arm_index}\t{e.reward!r}\t{'-' if e.ts is None else repr(e.ts)}\t"
        f"{'-' if e.decision_id is None else decision_key(e.decision_id)}\n"
        for e in events
    )


def decode_state(result: list[Any]) -> StoredState:
    config, flat_stats, server_time = result
    experiment = Experiment.from_json(orjson.loads(config))
    arms = len(experiment.arms)
    gaussian = experiment.reward == "gaussian"
    stats = np.zeros((3, arms))
    counts = np.zeros(arms)
    updated_at = np.zeros(arms)
    rows = {"w": 0, "m": 1, "q": 2} if gaussian else {"s": 0, "f": 1}
    revision = 0
    for position in range(0, len(flat_stats), 2):
        name, value = flat_stats[position], flat_stats[position + 1]
        if name == "rev":
            revision = int(value)
            continue
        index_text, _, kind = name.partition(":")
        index = int(index_text)
        if index >= arms:
            continue  # written for an arm of a newer configuration than this snapshot read
        if kind == "n":
            counts[index] = float(value)
        elif kind == "t":
            updated_at[index] = float(value)
        elif kind in rows:
            stats[rows[kind], index] = float(value)
    return StoredState(experiment, stats, counts, updated_at, revision,
                       float(server_time))
