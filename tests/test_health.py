"""Winner calls, the sample-ratio test with changing weights, stalled rewards."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from bandit.policy import PosteriorSummary
from bandit.serving import health


def summary(p_best: list[float], loss: list[float], mean: list[float]) -> PosteriorSummary:
    nan = np.full(len(p_best), np.nan)
    return PosteriorSummary(mean=np.array(mean), ci_low=nan, ci_high=nan,
                            p_best=np.array(p_best), expected_loss=np.array(loss))


def test_winner_needs_both_probability_and_small_loss() -> None:
    arms = ["a", "b"]
    clear = summary([0.97, 0.03], [0.0001, 0.02], [0.12, 0.10])
    assert health.winner(clear, arms, 0.95, 0.001) == {
        "arm": "a", "p_best": 0.97, "expected_loss": 0.0001, "threshold": 0.95,
        "max_loss": 0.001}
    assert health.winner(clear, arms, 0.99, 0.001) is None  # not probable enough
    assert health.winner(clear, arms, 0.95, 0.00005) is None  # could still lose too much
    assert health.default_max_loss(clear) == pytest.approx(0.0012)


def _samples(shares: list[list[float]], served: list[list[int]],
             n: list[list[float]] | None = None) -> list[dict[str, Any]]:
    return [{"t": 60.0 * i, "arms": ["a", "b", "c"][:len(s)], "share": s, "served": d,
             "n": (n or [[0.0] * len(s)] * len(shares))[i]}
            for i, (s, d) in enumerate(zip(shares, served, strict=True))]


def test_sample_ratio_follows_changing_weights() -> None:
    rng = np.random.default_rng(3)
    shares = [[0.5, 0.5], [0.5, 0.5], [0.8, 0.2], [0.8, 0.2], [0.95, 0.05]]
    served = [np.zeros(2, int)]
    for before, after in itertools.pairwise(shares):
        weights = (np.array(before) + np.array(after)) / 2
        served.append(served[-1] + rng.multinomial(10_000, weights))
    result = health.sample_ratio(_samples(shares, [s.tolist() for s in served]))
    assert result is not None and result["ok"], result
    assert result["decisions"] == 40_000 and result["dof"] == 1
    # The same traffic judged against the first weights throughout is a gross imbalance.
    frozen = health.sample_ratio(_samples([[0.5, 0.5]] * 5, [s.tolist() for s in served]))
    assert frozen is not None and not frozen["ok"] and frozen["p_value"] < 1e-100


def test_sample_ratio_flags_an_arm_that_gets_half_its_traffic() -> None:
    shares = [[1 / 3] * 3] * 3
    served = [[0, 0, 0], [4000, 4000, 2000], [8000, 8000, 4000]]
    result = health.sample_ratio(_samples(shares, served))
    assert result is not None and not result["ok"]
    assert result["expected"] == pytest.approx([6666.7, 6666.7, 6666.7], abs=0.1)


def test_sample_ratio_needs_two_samples_with_traffic() -> None:
    assert health.sample_ratio(_samples([[0.5, 0.5]], [[3, 4]])) is None
    assert health.sample_ratio(_samples([[0.5, 0.5]] * 2, [[3, 4], [3, 4]])) is None


def test_rewards_that_stop_arriving_are_flagged() -> None:
    shares = [[0.5, 0.5]] * 8
    served = [[100 * i, 100 * i] for i in range(8)]
    flowing = [[10.0 * i, 10.0 * i] for i in range(8)]
    stopped = [[10.0 * min(i, 2), 10.0 * min(i, 2)] for i in range(8)]
    ok = health.reward_flow(_samples(shares, served, flowing), 60.0)
    assert ok is not None and not ok["stalled"] and ok["quiet_for_s"] == 0
    flagged = health.reward_flow(_samples(shares, served, stopped), 60.0)
    assert flagged is not None and flagged["stalled"]
    assert flagged["unchanged_since"] == 120.0 and flagged["decisions_since"] == 1000
    # A quiet stretch shorter than five intervals is not an alarm.
    short = health.reward_flow(_samples(shares[:5], served[:5], stopped[:5]), 60.0)
    assert short is not None and not short["stalled"]


async def test_stats_call_a_winner(client: TestClient[Any, Any]) -> None:
    await client.post("/v1/experiments", json={"id": "call", "arms": ["a", "b"],
                                               "reward": "bernoulli"})
    events = [{"id": f"e{i}", "experiment": "call", "arm": "a" if i % 2 else "b",
               # a (odd i) succeeds 4 times in 5, b (even i) once in 5.
               "reward": int(i % 10 != 1 if i % 2 else i % 10 == 0)}
              for i in range(400)]
    assert (await (await client.post("/v1/events", json={"events": events})).json())[
        "accepted"] == 400
    for _ in range(100):
        body = await (await client.get("/v1/experiments/call/stats")).json()
        if body["arms"][0]["n"] == 200:
            break
    # a: 160 of 200, b: 40 of 200. A clear winner: expected loss far below 1% of 0.8.
    assert body["winner"]["arm"] == "a"
    assert body["winner"]["threshold"] == 0.95
    assert body["winner"]["expected_loss"] < body["winner"]["max_loss"] == pytest.approx(
        0.01 * 161 / 202)
    assert body["call_rule"] == {"threshold": 0.95, "max_loss": body["winner"]["max_loss"]}
    # Without history yet, the health checks have nothing to judge.
    assert body["health"]["sample_ratio"] is None
    strict = await (await client.get("/v1/experiments/call/stats",
                                      params={"threshold": "0.999", "max_loss": "0"})).json()
    assert strict["call_rule"] == {"threshold": 0.999, "max_loss": 0.0}
    # b is 16 standard deviations behind: P(best) and the expected loss round to 1 and 0.
    assert strict["winner"]["threshold"] == 0.999
    bad = await client.get("/v1/experiments/call/stats", params={"threshold": "0.2"})
    assert bad.status == 422


def test_the_tracker_fed_in_pieces_matches_the_whole_history() -> None:
    """The service feeds its tracker the new samples on each stats call: any split of the
    history (with overlaps, as `since` windows give) must give the same checks."""
    rng = np.random.default_rng(8)
    shares = [[0.5, 0.5]] * 3 + [[0.6, 0.3, 0.1]] * 4 + [[0.2, 0.2, 0.6]] * 5
    served = [[0, 0]]
    n = [[0.0, 0.0]]
    for i, (before, after) in enumerate(itertools.pairwise(shares)):
        k = len(after)
        weights = (np.array(before + [0.0] * (k - len(before))) + np.array(after)) / 2
        total = np.array(served[-1] + [0] * (k - len(served[-1])))
        served.append((total + rng.multinomial(500, weights / weights.sum())).tolist())
        n.append([x + (0 if i >= 5 else 10) for x in n[-1] + [0.0] * (k - len(n[-1]))])
    samples = [{"t": 60.0 * i, "arms": ["a", "b", "c"][:len(s)], "share": s, "served": d,
                "n": m} for i, (s, d, m) in enumerate(zip(shares, served, n, strict=True))]
    whole = (health.sample_ratio(samples), health.reward_flow(samples, 60.0))
    assert whole[0] is not None and whole[1] is not None and whole[1]["stalled"]
    for cut in ([3], [1, 2, 5, 11], list(range(1, 12))):
        tracker = health.HealthTracker()
        start = 0
        for end in [*cut, len(samples)]:
            tracker.add(samples[max(0, start - 1):end])  # overlapping pieces
            start = end
        assert (tracker.sample_ratio(), tracker.reward_flow(60.0)) == whole, cut
