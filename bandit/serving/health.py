"""Calls on an experiment: is there a winner, is traffic served as promised, do rewards arrive.

Pure functions of a posterior summary and the experiment's history samples
(:mod:`bandit.serving.history`); the service fetches those and reports the results in the stats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from bandit.policy import PosteriorSummary

#: Sample-ratio tests fail below this p-value: rare enough that a flag is worth a look.
SAMPLE_RATIO_ALPHA = 0.001
#: Decisions served with no new reward observation before the reward flow counts as stalled.
STALL_DECISIONS = 100
#: ... and history intervals it must have lasted (so a short gap between batches is no alarm).
STALL_INTERVALS = 5


def default_max_loss(summary: PosteriorSummary) -> float:
    """1% of the best posterior mean (0.001 when that is 0): loss bounds are in reward units."""
    means = summary.mean[np.isfinite(summary.mean)]
    best = float(np.abs(means).max()) if means.size else 0.0
    return 0.01 * best if best > 0 else 0.001


def winner(summary: PosteriorSummary, arms: Sequence[str], threshold: float,
           max_loss: float) -> dict[str, Any] | None:
    """The arm with P(best) >= threshold whose expected loss is below ``max_loss``, if any."""
    p_best = np.nan_to_num(summary.p_best, nan=-1.0)
    leader = int(np.argmax(p_best))
    loss = float(summary.expected_loss[leader])
    if p_best[leader] >= threshold and loss <= max_loss:
        return {"arm": arms[leader], "p_best": float(p_best[leader]), "expected_loss": loss,
                "threshold": threshold, "max_loss": max_loss}
    return None


class HealthTracker:
    """The serving-health checks kept up to date sample by sample.

    The stats endpoint is asked often and a history holds up to a day of samples per arm, so
    each process keeps these running sums per experiment and reads only the samples that
    arrived since it last looked. :func:`sample_ratio` and :func:`reward_flow` run the same
    code over a whole list of samples.
    """

    def __init__(self) -> None:
        self.last: dict[str, Any] | None = None
        self.observed = np.zeros(0)
        self.expected = np.zeros(0)
        # The first sample of the run of samples at the current observation count.
        self.anchor: dict[str, Any] | None = None

    @property
    def last_t(self) -> float:
        return -math.inf if self.last is None else float(self.last["t"])

    def add(self, samples: Sequence[dict[str, Any]]) -> None:
        """Fold in samples newer than the last one seen, oldest first."""
        for sample in samples:
            if sample["t"] <= self.last_t:
                continue
            before, self.last = self.last, sample
            if before is None or sum(sample["n"]) != sum(before["n"]):
                self.anchor = sample
            if before is None:
                continue
            count = len(before["arms"])
            grow = len(sample["arms"]) - self.observed.shape[0]
            if grow > 0:  # arms added: they count from the sample that first lists them
                self.observed = np.concatenate([self.observed, np.zeros(grow)])
                self.expected = np.concatenate([self.expected, np.zeros(grow)])
            served = (np.array(sample["served"][:count], float)
                      - np.array(before["served"], float))
            total = served.sum()
            if total <= 0:
                continue
            shares = (np.array(before["share"], float)
                      + np.array(sample["share"][:count], float)) / 2
            self.observed[:count] += served
            self.expected[:count] += total * shares / shares.sum()

    def sample_ratio(self) -> dict[str, Any] | None:
        """Chi-square test of decisions served per arm against what the propensities promised.

        Weights change over time, so the expectation is built interval by interval: the
        decisions served between two history samples, spread over the arms by the average of
        the two samples' shares. Served counts are flushed by each process about once a
        second, so the test is for gross imbalance (a broken client, a caching layer), not
        for a handful of decisions.
        """
        decisions = float(self.observed.sum())
        used = self.expected > 0
        if decisions < 1 or used.sum() < 2:
            return None
        observed, expected = self.observed, self.expected
        # An arm served while its propensity rounded to almost 0 (its decisions flushed after a
        # change took its traffic away) makes the statistic overflow: it is as large as a float
        # goes (p-value 0), not inf, which JSON cannot carry.
        with np.errstate(over="ignore"):
            chi2 = float((((observed - expected) ** 2)[used] / expected[used]).sum())
        chi2 = min(chi2, float(np.finfo(np.float64).max))
        dof = int(used.sum()) - 1
        p_value = float(scipy_stats.chi2.sf(chi2, dof))
        return {"decisions": int(decisions), "chi2": chi2, "dof": dof, "p_value": p_value,
                "ok": p_value >= SAMPLE_RATIO_ALPHA,
                "expected": [round(e, 1) for e in expected.tolist()],
                "observed": [int(o) for o in observed.tolist()]}

    def reward_flow(self, interval_s: float) -> dict[str, Any] | None:
        """When rewards last arrived, and whether they stopped while decisions kept coming."""
        last, since = self.last, self.anchor
        if last is None or since is None:
            return None
        decisions_since = sum(last["served"]) - sum(since["served"])
        quiet_for = last["t"] - since["t"]
        return {"observations": sum(last["n"]), "unchanged_since": since["t"],
                "decisions_since": decisions_since, "quiet_for_s": quiet_for,
                "stalled": decisions_since >= STALL_DECISIONS
                and quiet_for >= STALL_INTERVALS * interval_s}


def sample_ratio(samples: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """:meth:`HealthTracker.sample_ratio` over ``samples``."""
    tracker = HealthTracker()
    tracker.add(samples)
    return tracker.sample_ratio()


def reward_flow(samples: Sequence[dict[str, Any]], interval_s: float) -> dict[str, Any] | None:
    """:meth:`HealthTracker.reward_flow` over ``samples``."""
    tracker = HealthTracker()
    tracker.add(samples)
    return tracker.reward_flow(interval_s)
