"""Calls on an experiment: is there a winner, is traffic served as promised, do rewards arrive.

Pure functions of a posterior summary and the experiment's history samples
(:mod:`bandit.history`); the service fetches those and reports the results in the stats.
"""

from __future__ import annotations

import itertools
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


def sample_ratio(samples: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Chi-square test of decisions served per arm against what the propensities promised.

    Weights change over time, so the expectation is built interval by interval: the decisions
    served between two history samples, spread over the arms by the average of the two
    samples' shares. Arms added later count from the sample that first lists them. Served
    counts are flushed by each process about once a second, so the test is for gross
    imbalance (a broken client, a caching layer), not for a handful of decisions.
    """
    if len(samples) < 2:
        return None
    arms = samples[-1]["arms"]
    observed = np.zeros(len(arms))
    expected = np.zeros(len(arms))
    for before, after in itertools.pairwise(samples):
        count = len(before["arms"])
        served = np.array(after["served"][:count], float) - np.array(before["served"], float)
        total = served.sum()
        if total <= 0:
            continue
        shares = (np.array(before["share"], float) + np.array(after["share"][:count], float)) / 2
        observed[:count] += served
        expected[:count] += total * shares / shares.sum()
    decisions = float(observed.sum())
    used = expected > 0
    if decisions < 1 or used.sum() < 2:
        return None
    chi2 = float((((observed - expected) ** 2)[used] / expected[used]).sum())
    dof = int(used.sum()) - 1
    p_value = float(scipy_stats.chi2.sf(chi2, dof))
    return {"decisions": int(decisions), "chi2": chi2, "dof": dof, "p_value": p_value,
            "ok": p_value >= SAMPLE_RATIO_ALPHA,
            "expected": [round(e, 1) for e in expected.tolist()],
            "observed": [int(o) for o in observed.tolist()]}


def reward_flow(samples: Sequence[dict[str, Any]], interval_s: float) -> dict[str, Any] | None:
    """When rewards last arrived, and whether they stopped while decisions kept being served."""
    if not samples:
        return None
    last = samples[-1]
    observations = sum(last["n"])
    # The first sample of the run at the current count: rewards last arrived just before it.
    anchor = len(samples) - 1
    while anchor > 0 and sum(samples[anchor - 1]["n"]) == observations:
        anchor -= 1
    since = samples[anchor]
    decisions_since = sum(last["served"]) - sum(since["served"])
    quiet_for = last["t"] - since["t"]
    return {"observations": observations, "unchanged_since": since["t"],
            "decisions_since": decisions_since, "quiet_for_s": quiet_for,
            "stalled": decisions_since >= STALL_DECISIONS
            and quiet_for >= STALL_INTERVALS * interval_s}
