"""What the experiment list shows at a glance, each arm's lift for the stats, and the parts of
the stats (and history samples) only a contextual experiment has.

Pure functions of what the stats endpoint computes (the snapshot's posterior summary, the
winner call, the serving-health report), plus the decisions served in the last hour, counted
from the history samples the health tracker is fed.

A contextual experiment allocates per context, so no one vector of allocation probabilities
describes it: its arms' ``share`` is the average propensity its decisions were actually drawn
with (``served_shares``: the sample-ratio sums, expected / drawn), its ``model`` the posteriors
of each arm's coefficients (``model_report``), and its ``segments`` the decisions served per
value of each categorical feature (``segment_report``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from bandit.policy import ContextualPosterior, Guarded, PosteriorSummary, metric_summary
from bandit.policy.layout import FloatArray
from bandit.serving import lift
from bandit.serving.cache import Snapshot
from bandit.store.codec import Traffic

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


def leader_of(p_best: FloatArray) -> int | None:
    """The arm with the highest ``p_best`` (P(best), or P(best feasible) with guardrails), as
    the winner call picks it."""
    p_best = np.nan_to_num(p_best, nan=-1.0)
    if not p_best.size or p_best.max() < 0:
        return None
    return int(np.argmax(p_best))


def list_summary(snapshot: Snapshot, summary: PosteriorSummary,
                 winner: dict[str, Any] | None, health: dict[str, Any],
                 lifts: Sequence[dict[str, Any] | None],
                 traffic: dict[str, Any] | None,
                 guarded: Guarded | None = None) -> dict[str, Any]:
    """An experiment at a glance: its leader and winner, the leader's lift (of ``lifts``, every
    arm's), health flags and traffic. No leader (nor lift) before the first observation: the
    priors alone would name one at random. With guardrails (``guarded``, untempered) the leader
    is the arm most probably the best feasible one, as the winner call picks it: an arm that
    breaks a guardrail leads nothing."""
    p_best = summary.p_best if guarded is None else guarded.p_best_feasible
    leader = leader_of(p_best) if snapshot.counts.sum() > 0 else None
    ratio, rewards = health["sample_ratio"], health["rewards"]
    return {
        "leader": None if leader is None else {
            "arm": snapshot.experiment.arms[leader], "p_best": float(p_best[leader])},
        "winner": None if winner is None else winner["arm"],
        "lift": None if leader is None else lifts[leader],
        "health": {"sample_ratio_ok": None if ratio is None else bool(ratio["ok"]),
                   "rewards_stalled": None if rewards is None else bool(rewards["stalled"])},
        "traffic_last_hour": traffic,
    }


def served_shares(snapshot: Snapshot, traffic: Traffic | None) -> list[float | None]:
    """Each arm's ``share``: a context-free experiment's allocation probability; for a
    contextual one the average propensity of the arm over every fresh draw served so far (the
    sample-ratio sums: the arm's expected draws over all draws), None before the first draw.

    The snapshot's own probabilities of a contextual experiment are those of the arms'
    context-free marginals, which no decision is drawn from.
    """
    if snapshot.contextual is None:
        return list(snapshot.probability_list)
    arms = len(snapshot.experiment.arms)
    draws = {} if traffic is None else traffic.draws
    # Every draw's propensities sum to 1: the expected counts sum to the number of draws.
    total = sum(max(d.expected, 0.0) for d in draws.values())
    if not total > 0:
        return [None] * arms
    return [min(max(draws[i].expected / total, 0.0), 1.0) if i in draws else 0.0
            for i in range(arms)]


def segment_columns(snapshot: Snapshot, traffic: Traffic) -> dict[str, list[int]]:
    """A history sample's ``segments``: cumulative decisions served per segment
    (``feature=value``) and arm (in the sample's arm order); segments never served are left
    out."""
    arms = len(snapshot.experiment.arms)
    return {segment: [counts.get(i, 0) for i in range(arms)]
            for segment, counts in sorted(traffic.segments.items())
            if any(counts.get(i, 0) for i in range(arms))}


def model_report(snapshot: Snapshot, posterior: ContextualPosterior) -> dict[str, Any]:
    """The stats' ``model``: the columns of x, and per arm its observations and the posterior
    mean and central 95% interval of each coefficient (``posterior``: untempered). CPU work
    (a triangular solve per arm): run it in a thread."""
    summary = posterior.coefficients()
    arms = []
    for i, arm in enumerate(snapshot.experiment.arms):
        arms.append({
            "arm": arm,
            "n": snapshot.counts[i].item(),
            "mean": [finite(v) for v in summary.mean[i].tolist()],
            "ci95": [[finite(low), finite(high)] for low, high in
                     zip(summary.ci_low[i].tolist(), summary.ci_high[i].tolist(), strict=True)],
        })
    return {"columns": posterior.model.columns(), "arms": arms}


def segment_report(snapshot: Snapshot, traffic: Traffic) -> list[dict[str, Any]]:
    """The stats' ``segments``: per categorical feature of the model, per value (the declared
    ones, then "other"), the decisions served and each arm's count and share of them."""
    posterior = snapshot.contextual
    assert posterior is not None
    arms = len(snapshot.experiment.arms)
    report = []
    for feature in posterior.model.categorical():
        values = []
        for value in [*feature.values, "other"]:
            counts = traffic.segments.get(f"{feature.name}={value}", {})
            served = [counts.get(i, 0) for i in range(arms)]
            decisions = sum(served)
            values.append({"value": value, "decisions": decisions, "served": served,
                           "share": [count / decisions if decisions else None
                                     for count in served]})
        report.append({"feature": feature.name, "values": values})
    return report


def finite(value: float) -> float | None:
    """A number for a JSON answer: None for NaN or an infinity (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


def violations(snapshot: Snapshot, guarded: Guarded) -> list[float | None]:
    """Each arm's P(violates any guardrail) as the stats and the history report it: None for
    the control (always feasible) and for paused arms."""
    experiment = snapshot.experiment
    control = experiment.control_arm
    return [None if arm == control or arm in experiment.paused else float(p)
            for arm, p in zip(experiment.arms, guarded.p_violates_any.tolist(), strict=True)]


def add_guardrails(arms: list[dict[str, Any]], snapshot: Snapshot, guarded: Guarded) -> None:
    """Each arm's guardrail metrics beside its primary one (the stats' ``arms``): per metric
    its observations, posterior mean and 95% interval and P(violates); per arm P(violates
    any), P(best feasible) and whether the hard gate holds it."""
    experiment = snapshot.experiment
    shown = violations(snapshot, guarded)  # None: the control, or a paused arm
    for g, (guardrail, guard) in enumerate(zip(experiment.guardrails, snapshot.guards,
                                               strict=True)):
        mean, low, high = metric_summary(guard.family, guard.stats, guard.prior)
        for i, arm in enumerate(arms):
            arm.setdefault("guardrails", {})[guardrail.metric] = {
                "n": float(guard.counts[i]), "mean": finite(mean[i]),
                "ci95": [finite(low[i]), finite(high[i])],
                "p_violates": None if shown[i] is None else float(guarded.p_violates[g, i])}
    for i, arm in enumerate(arms):
        arm["p_violates"] = shown[i]
        arm["p_best_feasible"] = None if arm["state"] == "paused" \
            else float(guarded.p_best_feasible[i])
        arm["held"] = bool(snapshot.guarded is not None and snapshot.guarded.held[i])


def guardrail_report(snapshot: Snapshot, guarded: Guarded) -> dict[str, Any]:
    """The guardrails as configured, the control they are judged against, the gate, and the
    Monte Carlo error of P(best feasible) (0 when every threshold is absolute: exact)."""
    experiment = snapshot.experiment
    return {"metrics": [g.to_json() for g in experiment.guardrails],
            "control": experiment.control_arm,
            "gate_min_samples": experiment.exploration.gate_min_samples,
            "monte_carlo_error": float(guarded.error.max()) if guarded.error.size else 0.0}
