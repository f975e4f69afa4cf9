"""What the experiment list shows at a glance, and each arm's lift for the stats.

Pure functions of what the stats endpoint computes (the snapshot's posterior summary, the
winner call, the serving-health report), plus the decisions served in the last hour, counted
from the history samples the health tracker is fed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from bandit.policy import PosteriorSummary
from bandit.serving import lift
from bandit.serving.cache import Snapshot

#: The traffic window of the list: decisions served in the last hour.
TRAFFIC_WINDOW_S = 3600.0
#: Samples are kept this far apart for it (at least): an hour is then about 60 points per
#: experiment, whatever the sampling interval; the window reported is at most a minute longer.
TRAFFIC_STEP_S = 60.0


class TrafficWindow:
    """Decisions served (all arms) over time, from history samples, for the last hour.

    Keeps one sample at or before the window's start (the baseline) and about one a minute
    after it; samples hold cumulative served counts, so decisions in the window are the served
    count now minus the baseline's.
    """

    def __init__(self) -> None:
        self.points: deque[tuple[float, int]] = deque()
        self.last_t = -math.inf

    def add(self, samples: Sequence[dict[str, Any]]) -> None:
        """Fold in samples newer than the last one seen, oldest first."""
        for sample in samples:
            t = float(sample["t"])
            if t <= self.last_t:
                continue
            self.last_t = t
            served = int(sum(sample["served"]))
            # The newest point is always the newest sample (an experiment gone idle keeps its
            # last count); it moves on until it is a step past the point before it.
            if len(self.points) > 1 and self.points[-1][0] - self.points[-2][0] < TRAFFIC_STEP_S:
                self.points[-1] = (t, served)
            else:
                self.points.append((t, served))
        self._trim(self.last_t)

    def _trim(self, now: float) -> None:
        start = now - TRAFFIC_WINDOW_S
        while len(self.points) > 1 and self.points[1][0] <= start:
            self.points.popleft()

    def last_hour(self, now: float, created_at: float, served: int) -> dict[str, Any] | None:
        """Decisions served in the last hour (``seconds``: the span they were counted over,
        an hour to a minute more, or since creation), or None when the history cannot say."""
        now = max(now, self.last_t)
        self._trim(now)
        start = now - TRAFFIC_WINDOW_S
        if created_at >= start:
            return {"decisions": served, "seconds": max(now - created_at, 0.0)}
        if self.points and self.points[0][0] <= start:
            t, before = self.points[0]
            return {"decisions": max(served - before, 0), "seconds": now - t}
        if served == 0:  # nothing ever served: nothing in the last hour either
            return {"decisions": 0, "seconds": TRAFFIC_WINDOW_S}
        return None  # the history does not reach back an hour


def arm_lifts(snapshot: Snapshot, summary: PosteriorSummary,
              ) -> tuple[lift.Control | None, list[dict[str, Any] | None]]:
    """The control (if any) and every arm's lift, with the reference named. CPU work (10,000
    posterior draws per arm): run it in a thread."""
    experiment = snapshot.experiment
    control = lift.control_of(experiment)
    law = lift.marginals(snapshot.family, snapshot.stats, snapshot.prior)
    reference = lift.references(experiment, summary.mean, snapshot.active, control)
    lifts = lift.lifts(snapshot.family, law, reference)
    for item in lifts:
        if item is not None:
            item["against"] = experiment.arms[item["against"]]
    return control, lifts


def leader_of(summary: PosteriorSummary) -> int | None:
    """The arm with the highest P(best), as the winner call picks it."""
    p_best = np.nan_to_num(summary.p_best, nan=-1.0)
    if not p_best.size or p_best.max() < 0:
        return None
    return int(np.argmax(p_best))


def list_summary(snapshot: Snapshot, summary: PosteriorSummary,
                 winner: dict[str, Any] | None, health: dict[str, Any],
                 lifts: Sequence[dict[str, Any] | None],
                 traffic: dict[str, Any] | None) -> dict[str, Any]:
    """An experiment at a glance: its leader and winner, the leader's lift (of ``lifts``, every
    arm's), health flags and traffic. No leader (nor lift) before the first observation: the
    priors alone would name one at random."""
    leader = leader_of(summary) if snapshot.counts.sum() > 0 else None
    ratio, rewards = health["sample_ratio"], health["rewards"]
    return {
        "leader": None if leader is None else {
            "arm": snapshot.experiment.arms[leader], "p_best": float(summary.p_best[leader])},
        "winner": None if winner is None else winner["arm"],
        "lift": None if leader is None else lifts[leader],
        "health": {"sample_ratio_ok": None if ratio is None else bool(ratio["ok"]),
                   "rewards_stalled": None if rewards is None else bool(rewards["stalled"])},
        "traffic_last_hour": traffic,
    }
