"""Calls on an experiment: is there a winner, is traffic served as promised, do rewards arrive.

Pure functions of a posterior summary and the experiment's history samples
(:mod:`bandit.serving.history`); the service fetches those and reports the results in the stats.
The sample-ratio test judges the draws recorded with their propensities
(``bandit.serving.decisions.DrawTally``) over the last hour of samples.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from bandit.policy import Guarded, PosteriorSummary
from bandit.policy.layout import FloatArray, IntArray

#: Sample-ratio tests fail below this p-value: rare enough that a flag is worth a look.
SAMPLE_RATIO_ALPHA = 0.001
#: Decisions served with no new reward observation before the reward flow counts as stalled.
STALL_DECISIONS = 100
#: ... and history intervals it must have lasted (so a short gap between batches is no alarm).
STALL_INTERVALS = 5
#: The sample-ratio test covers (at least) this much of the newest history.
SAMPLE_RATIO_WINDOW_S = 3600.0
#: Marks of the sample-ratio sums kept per experiment are this far apart (bounds the memory).
MARK_STEP_S = SAMPLE_RATIO_WINDOW_S / 12
#: Arms expected to be drawn fewer times in the window are pooled into one cell.
MIN_CELL_EXPECTED = 5.0


def default_max_loss(summary: PosteriorSummary) -> float:
    """1% of the best posterior mean (0.001 when that is 0): loss bounds are in reward units."""
    means = summary.mean[np.isfinite(summary.mean)]
    best = float(np.abs(means).max()) if means.size else 0.0
    return 0.01 * best if best > 0 else 0.001


def winner(summary: PosteriorSummary, arms: Sequence[str], threshold: float,
           max_loss: float, *, active: int, contextual: bool = False,
           guarded: Guarded | None = None, observed: bool = True) -> dict[str, Any] | None:
    """The arm with P(best) >= threshold whose expected loss is below ``max_loss``, if any.

    ``active``: the number of active arms. With fewer than two there is nothing to compare:
    the one arm left is "best" with probability 1 on no evidence at all, which is no call.
    A contextual experiment gets no call: its best arm depends on the context, and its arms'
    summaries are means over the contexts each was served in (the policy's own choices
    confound them), so a single winner would mislead.

    With guardrails (``guarded``, untempered) the winner must be feasible: the leader is by
    P(best feasible), which must reach ``threshold``, as must its P(feasible)
    (1 - P(violates any guardrail)), and its expected loss is against the best feasible arm.
    No call is made before every active arm has observations of the primary and of every
    guardrail metric (``observed``): the priors alone make the control "best feasible" with
    high probability (an unobserved rate is as likely above a 1% cap as anywhere), which is
    no evidence for it.
    """
    if active < 2 or contextual or (guarded is not None and not observed):
        return None
    p_best = np.nan_to_num(summary.p_best if guarded is None else guarded.p_best_feasible,
                           nan=-1.0)
    leader = int(np.argmax(p_best))
    loss = float(summary.expected_loss[leader])
    feasible = 1.0
    if guarded is not None:
        # Against the best feasible arm, not the best arm: an infeasible arm's higher primary
        # is no loss.
        loss = max(guarded.expected_max_feasible - float(summary.mean[leader]), 0.0)
        feasible = 1.0 - float(guarded.p_violates_any[leader])
    if p_best[leader] >= threshold and loss <= max_loss and feasible >= threshold:
        call = {"arm": arms[leader], "p_best": float(p_best[leader]), "expected_loss": loss,
                "threshold": threshold, "max_loss": max_loss}
        if guarded is not None:
            call["p_feasible"] = feasible
        return call
    return None


class HealthTracker:
    """The serving-health checks kept up to date sample by sample.

    The stats endpoint is asked often and a history holds up to a day of samples per arm, so
    each process keeps these per experiment and reads only the samples that arrived since it
    last looked. :func:`sample_ratio` and :func:`reward_flow` run the same code over a whole
    list of samples.

    The sample-ratio test covers the last hour: the difference between the newest sample and
    a mark at least ``SAMPLE_RATIO_WINDOW_S`` older (marks are kept every twelfth of the
    window, so the window is 60 to 65 minutes at the defaults, or the whole history when it is
    shorter). A problem that is fixed leaves the window an hour later and the flag goes green;
    settings changes need no reset, since every draw brings its own propensities.
    """

    def __init__(self) -> None:
        self.last: dict[str, Any] | None = None
        # The first sample of the run of samples at the current observation count.
        self.anchor: dict[str, Any] | None = None
        #: Cumulative sample-ratio sums, at least MARK_STEP_S apart, the oldest being the
        #: newest one at least a window before ``newest``.
        self._marks: deque[_Sums] = deque()
        self._newest: _Sums | None = None

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
            sums = _Sums.of(sample)
            if sums is not None:  # None: a sample of a version without the sums
                self._add_sums(sums)

    def _add_sums(self, sums: _Sums) -> None:
        self._newest = sums
        if not self._marks or sums.t - self._marks[-1].t >= MARK_STEP_S:
            self._marks.append(sums)
        cutoff = sums.t - SAMPLE_RATIO_WINDOW_S
        while len(self._marks) > 1 and self._marks[1].t <= cutoff:
            self._marks.popleft()

    def sample_ratio(self) -> dict[str, Any] | None:
        """Chi-square test of the draws per arm over the last hour against their propensities
        (see :func:`sample_ratio_test`); None until two samples with the sums span traffic."""
        newest = self._newest
        if newest is None or not self._marks or self._marks[0] is newest:
            return None
        since = self._marks[0]
        result = sample_ratio_test(*newest.minus(since))
        if result is not None:
            result.update(since=since.t, window_s=newest.t - since.t)
        return result

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


@dataclass(frozen=True)
class _Sums:
    """A history sample's cumulative sample-ratio sums (``bandit.serving.history``)."""

    t: float
    observed: FloatArray
    expected: FloatArray
    variance: FloatArray

    @classmethod
    def of(cls, sample: dict[str, Any]) -> _Sums | None:
        if "expected" not in sample:
            return None
        return cls(float(sample["t"]), np.array(sample["drawn"], float),
                   np.array(sample["expected"], float), np.array(sample["variance"], float))

    def minus(self, before: _Sums) -> tuple[FloatArray, FloatArray, FloatArray]:
        """The sums between ``before`` and this sample (arms added since count from 0)."""
        arms = self.observed.shape[0]

        def since(now: FloatArray, then: FloatArray) -> FloatArray:
            return now - np.pad(then, (0, arms - then.shape[0]))

        return (since(self.observed, before.observed), since(self.expected, before.expected),
                since(self.variance, before.variance))


def sample_ratio_test(observed: FloatArray, expected: FloatArray, variance: FloatArray,
                      alpha: float = SAMPLE_RATIO_ALPHA) -> dict[str, Any] | None:
    """Pearson's chi-square test of draws per arm against the sum of their propensities.

    Each draw is a categorical draw with its own propensities, so the counts are not one
    multinomial: their exact variance, ``sum p(1-p)`` per arm, is below what Pearson's
    statistic assumes whenever propensities moved (Thompson sampling, pauses, setting
    changes), and the plain test would flag less than ``alpha`` of healthy experiments. The
    statistic is divided by the mean design effect (the first-order Rao-Scott correction),
    ``sum(variance / expected) / dof``, which is exact for two arms and 1 when nothing moved.
    Arms expecting fewer than ``MIN_CELL_EXPECTED`` draws are pooled into one cell (with the
    smallest others until it reaches that), where the chi-square law of the statistic holds;
    a pooled cell's variance is taken as the sum of its arms' (a little more than it is).
    A draw of an arm whose propensity was 0 throughout is impossible: p-value 0.
    """
    decisions = float(observed.sum())
    if decisions < 1 or int((expected > 0).sum()) < 2:
        return None
    cells = _cells(expected)
    if len(cells) < 2:
        return None
    cell_observed = np.array([observed[c].sum() for c in cells])
    cell_expected = np.array([expected[c].sum() for c in cells])
    cell_variance = np.array([variance[c].sum() for c in cells])
    dof = len(cells) - 1
    pearson = float(((cell_observed - cell_expected) ** 2 / cell_expected).sum())
    design_effect = float((cell_variance / cell_expected).sum()) / dof
    chi2 = pearson / max(design_effect, 1e-9)
    if observed[expected <= 0].sum() > 0:
        chi2 = math.inf
    # As large as a float goes (p-value 0), not inf, which JSON cannot carry.
    chi2 = min(chi2, float(np.finfo(np.float64).max))
    p_value = float(scipy_stats.chi2.sf(chi2, dof))
    return {"decisions": round(decisions), "chi2": chi2, "dof": dof, "p_value": p_value,
            "ok": p_value >= alpha, "design_effect": design_effect,
            "expected": [round(e, 1) for e in expected.tolist()],
            "observed": [round(o) for o in observed.tolist()]}


def _cells(expected: FloatArray) -> list[IntArray]:
    """The arms with a propensity, grouped into the test's cells: one per arm, the sparse
    ones pooled into one, with the smallest others while it expects too few."""
    order = [int(i) for i in np.argsort(expected, kind="stable") if expected[i] > 0]
    pooled = [i for i in order if expected[i] < MIN_CELL_EXPECTED]
    rest = order[len(pooled):]
    while pooled and rest and float(expected[pooled].sum()) < MIN_CELL_EXPECTED:
        pooled.append(rest.pop(0))
    cells = [np.array([i]) for i in rest]
    if pooled:
        cells.insert(0, np.array(pooled))
    return cells


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
