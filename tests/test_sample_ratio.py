"""The sample-ratio test over simulated experiments: its false-alarm rate is its threshold, it
catches a sampler that serves one arm 5% too often as often as the maths says, and a past
problem leaves its window.

Each simulated experiment is served the way the service serves one: decisions drawn from a
snapshot's allocation probabilities by the policy's sampler, two processes tallying them in
their own ``DrawTally`` and flushing at random moments into shared totals (what Redis adds up),
history samples built by ``history.traffic_columns`` once a minute, and the tracker's window
over them. The shares adapt to the rewards twice a minute (a cheap stand-in for the
Thompson kernel; ``tests/test_health.py`` runs the real service end to end), traffic stops
for a while, an arm is paused and resumed mid-interval, and a floor on the shares is set.

Tolerances are binomial, from the maths: with 1,000 experiments and a test of level alpha, the
number of alarms has mean 1000 alpha and standard deviation sqrt(1000 alpha (1 - alpha)); the
checks allow three of them. Everything is seeded, so the test cannot flake.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bandit import policy
from bandit.policy.layout import FloatArray
from bandit.serving import health
from bandit.serving.decisions import DrawTally
from bandit.serving.history import traffic_columns
from bandit.store.codec import Draws, Traffic

EXPERIMENTS = 1000
INTERVAL_S = 60.0
#: 66 minutes of history: the tracker's window is its last 61 (a mark every 5 minutes).
INTERVALS = 66
SNAPSHOTS_PER_INTERVAL = 2


def _three_sigma(alpha: float, runs: int = EXPERIMENTS) -> float:
    return 3 * math.sqrt(runs * alpha * (1 - alpha))


@dataclass
class _Redis:
    """The totals the processes' flushes add up to (the served and draws hashes), and beside
    them what a broken sampler's true propensities would have expected."""

    arms: int
    served: FloatArray = field(init=False)
    draws: dict[int, list[float]] = field(default_factory=dict)
    truth: FloatArray = field(init=False)

    def __post_init__(self) -> None:
        self.served = np.zeros(self.arms)
        self.truth = np.zeros(self.arms)

    def flush(self, tally: DrawTally, truth: DrawTally) -> None:
        for index, sums in tally.sums().items():
            total = self.draws.setdefault(index, [0.0, 0.0, 0.0])
            for position, value in enumerate(sums):
                total[position] += value
        for index, sums in truth.sums().items():
            self.truth[index] += sums.expected

    def traffic(self) -> Traffic:
        return Traffic({i: int(v) for i, v in enumerate(self.served.tolist())},
                       {i: Draws(*v) for i, v in self.draws.items()})


def _shares(successes: FloatArray, failures: FloatArray, active: FloatArray,
            floor: float) -> FloatArray:
    """Thompson-like shares: the further an arm's mean is behind the best, in standard
    errors, the less it gets; paused arms none; a floor for the active ones."""
    mean = (successes + 1) / (successes + failures + 2)
    error = np.sqrt(mean * (1 - mean) / (successes + failures + 3))
    best = int(np.argmax(mean))
    z = (mean - mean[best]) / np.sqrt(error ** 2 + error[best] ** 2 + 1e-12)
    weights = np.exp(1.7 * z) * active
    shares: FloatArray = weights / weights.sum()
    if floor > 0:
        shares = np.where(active > 0, np.maximum(shares, floor), 0.0)
        shares /= shares.sum()
    return shares


def simulate(rng: np.random.Generator, *, broken: float = 0.0, adaptive: bool = True,
             rate: float = 40.0) -> list[dict[str, Any]]:
    """History samples of one experiment; besides the service's columns, ``truth``: the
    cumulative expected draws per arm under the sampler really used (differs when
    ``broken``: arm 0 is then drawn with its propensity times 1 + broken, the others scaled
    to make room, while the tally records the honest propensities)."""
    arms = int(rng.integers(2, 5)) if adaptive else 3
    rates = rng.uniform(0.05, 0.2, arms)
    successes, failures = np.zeros(arms), np.zeros(arms)
    active = np.ones(arms)
    steps = INTERVALS * SNAPSHOTS_PER_INTERVAL
    # Traffic stops for up to 5 minutes; an arm is paused for up to 20, both starting at a
    # snapshot (mid-interval).
    quiet = _stretch(rng, steps, 5 * SNAPSHOTS_PER_INTERVAL) if adaptive else range(0)
    paused = _stretch(rng, steps, 20 * SNAPSHOTS_PER_INTERVAL) if adaptive else range(0)
    floor_from = int(rng.integers(0, steps)) if adaptive else steps
    paused_arm = int(rng.integers(1, arms))
    redis = _Redis(arms)
    processes = [(DrawTally(), DrawTally()), (DrawTally(), DrawTally())]
    samples = [_sample(0.0, redis, np.full(arms, 1 / arms), successes, failures)]
    for step in range(steps):
        active[paused_arm] = 0.0 if step in paused else 1.0
        probabilities = (_shares(successes, failures, active, 0.1 if step >= floor_from else 0)
                         if adaptive else np.array([0.5, 0.3, 0.2]))
        used = probabilities.copy()
        if broken and 0 < used[0] < 1:
            used[0] = min(1.0, used[0] * (1 + broken))
            used[1:] *= (1 - used[0]) / used[1:].sum()
        n = 0 if step in quiet else int(rng.poisson(rate)) if adaptive else int(rate)
        chosen = policy.sample_arms(policy.cumulative(used), n, rng) if n else np.zeros(0, int)
        tally, truth = processes[int(rng.integers(2))]
        tally.add_chosen(probabilities, chosen.tolist())
        truth.add_chosen(used, chosen.tolist())
        redis.served += np.bincount(chosen, minlength=arms)
        t = INTERVAL_S * (step + 1) / SNAPSHOTS_PER_INTERVAL
        if adaptive:
            rewards = rng.random(n) < rates[chosen]
            successes += np.bincount(chosen, weights=rewards, minlength=arms)
            failures += np.bincount(chosen, weights=~rewards, minlength=arms)
        for index in range(2):
            if rng.random() < 0.5:
                redis.flush(*processes[index])
                processes[index] = (DrawTally(), DrawTally())
        if (step + 1) % SNAPSHOTS_PER_INTERVAL == 0:
            samples.append(_sample(t, redis, probabilities, successes, failures))
    return samples


def _stretch(rng: np.random.Generator, steps: int, longest: int) -> range:
    start = int(rng.integers(0, steps))
    return range(start, start + int(rng.integers(1, longest + 1)))


def _sample(t: float, redis: _Redis, shares: FloatArray, successes: FloatArray,
            failures: FloatArray) -> dict[str, Any]:
    arms = len(shares)
    return {"t": t, "version": 1, "arms": [f"arm{i}" for i in range(arms)],
            "share": shares.tolist(), "n": (successes + failures).tolist(),
            **traffic_columns(redis.traffic(), arms), "truth": redis.truth.tolist()}


def _p_values(seed: int, **options: Any) -> tuple[list[float], list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    p_values, results = [], []
    for _ in range(EXPERIMENTS):
        samples = simulate(rng, **options)
        result = health.sample_ratio(samples)
        assert result is not None
        [since] = [s["truth"] for s in samples if s["t"] == result["since"]]
        result["truth"] = np.array(samples[-1]["truth"]) - np.array(since)
        p_values.append(result["p_value"])
        results.append(result)
    return p_values, results


@pytest.mark.slow
def test_healthy_adaptive_experiments_alarm_at_the_threshold() -> None:
    p_values, results = _p_values(2016)
    assert all(3600 <= r["window_s"] <= 3600 + health.MARK_STEP_S for r in results)
    # Pauses and moving shares make the design effect matter (1 would be a fixed allocation).
    assert min(r["design_effect"] for r in results) < 0.9
    for alpha in (0.2, 0.05, health.SAMPLE_RATIO_ALPHA):
        alarms = sum(p < alpha for p in p_values)
        assert abs(alarms - EXPERIMENTS * alpha) <= _three_sigma(alpha), (alpha, alarms)
    assert sum(not r["ok"] for r in results) <= (
        EXPERIMENTS * health.SAMPLE_RATIO_ALPHA + _three_sigma(health.SAMPLE_RATIO_ALPHA))


@pytest.mark.slow
def test_one_arm_served_five_percent_too_often_is_caught_as_often_as_expected() -> None:
    """Fixed shares (0.5, 0.3, 0.2), N = 4,026 decisions in the window (33 per snapshot),
    arm 0 served at 0.525 instead of 0.5: Pearson's statistic is then noncentral chi-square
    with 2 degrees of freedom and lambda = N sum((p' - p)^2 / p) = N x 0.0025 = 10.07, so the
    power is 0.82 at alpha = 0.05 and 0.35 at 0.001."""
    p_values, results = _p_values(5, broken=0.05, adaptive=False, rate=33)
    assert all(r["design_effect"] == pytest.approx(1.0) for r in results)
    per_decision = 0.025 ** 2 / 0.5 + 0.015 ** 2 / 0.3 + 0.01 ** 2 / 0.2
    for alpha, stated in ((0.05, 0.82), (health.SAMPLE_RATIO_ALPHA, 0.35)):
        critical = scipy_stats.chi2.isf(alpha, 2)
        assert scipy_stats.ncx2.sf(critical, 2, 4026 * per_decision) == pytest.approx(
            stated, abs=0.005)
        # The window holds the draws flushed in it: about 4,026, a few more or less.
        powers = [float(scipy_stats.ncx2.sf(critical, 2, r["decisions"] * per_decision))
                  for r in results]
        _assert_caught(sum(p < alpha for p in p_values), powers)


def _assert_caught(caught: int, powers: list[float]) -> None:
    """As many caught as the powers predict, within three standard deviations."""
    predicted = sum(powers)
    spread = math.sqrt(sum(p * (1 - p) for p in powers))
    assert abs(caught - predicted) <= 3 * spread, (caught, predicted, spread)


@pytest.mark.slow
def test_a_broken_sampler_among_adaptive_experiments_is_caught() -> None:
    """With adaptive shares the noncentrality differs per experiment: lambda =
    sum over cells of (E' - E)^2 / E divided by the design effect, with E' the expected draws
    under the broken sampler; the expected number caught is the sum of the powers."""
    alpha = 0.05
    p_values, results = _p_values(7, broken=0.05)
    powers = []
    for result in results:
        expected = np.array(result["expected"])
        shift = result["truth"] - expected
        used = expected >= health.MIN_CELL_EXPECTED
        noncentrality = float((shift[used] ** 2 / expected[used]).sum()) / result[
            "design_effect"]
        critical = scipy_stats.chi2.isf(alpha, result["dof"])
        powers.append(float(scipy_stats.ncx2.sf(critical, result["dof"], noncentrality)))
    assert sum(powers) > 2 * EXPERIMENTS * alpha  # the test has power here at all
    _assert_caught(sum(p < alpha for p in p_values), powers)
