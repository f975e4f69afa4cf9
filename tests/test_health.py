"""Winner calls, the sample-ratio test with changing weights, stalled rewards."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bandit.api.app import create_app
from bandit.policy import PosteriorSummary
from bandit.serving import health
from bandit.serving.decisions import DrawTally
from bandit.serving.history import traffic_columns
from bandit.settings import Settings
from bandit.store.codec import Draws, Traffic


def summary(p_best: list[float], loss: list[float], mean: list[float]) -> PosteriorSummary:
    nan = np.full(len(p_best), np.nan)
    return PosteriorSummary(mean=np.array(mean), ci_low=nan, ci_high=nan,
                            p_best=np.array(p_best), expected_loss=np.array(loss))


def test_winner_needs_both_probability_and_small_loss() -> None:
    arms = ["a", "b"]
    clear = summary([0.97, 0.03], [0.0001, 0.02], [0.12, 0.10])
    assert health.winner(clear, arms, 0.95, 0.001, active=2) == {
        "arm": "a", "p_best": 0.97, "expected_loss": 0.0001, "threshold": 0.95,
        "max_loss": 0.001}
    assert health.winner(clear, arms, 0.99, 0.001, active=2) is None  # not probable enough
    assert health.winner(clear, arms, 0.95, 0.00005, active=2) is None  # could still lose too much
    assert health.default_max_loss(clear) == pytest.approx(0.0012)


def _samples(shares: list[list[float]], served: list[list[int]],
             n: list[list[float]] | None = None) -> list[dict[str, Any]]:
    return [{"t": 60.0 * i, "arms": ["a", "b", "c"][:len(s)], "share": s, "served": d,
             "n": (n or [[0.0] * len(s)] * len(shares))[i]}
            for i, (s, d) in enumerate(zip(shares, served, strict=True))]


def _history(intervals: list[list[tuple[int, list[float]]]], rng: np.random.Generator,
             *, served_as: list[float] | None = None) -> list[dict[str, Any]]:
    """Samples 60 s apart of an experiment served, in each interval, stretches of ``(count,
    shares)``, drawn at random and tallied as the service tallies them (``DrawTally``);
    ``served_as``: the shares really drawn from instead (a broken sampler)."""
    arms = len(intervals[0][0][1])
    totals = {i: [0.0, 0.0, 0.0] for i in range(arms)}
    samples = []
    for i, stretches in enumerate([[], *intervals]):
        tally = DrawTally()
        for count, shares in stretches:
            probabilities = np.array(shares)
            drawn = rng.multinomial(count, served_as or probabilities)
            for index, times in enumerate(drawn.tolist()):
                if times:
                    tally.add(probabilities, index, times)
        for index, sums in tally.sums().items():
            totals[index] = [a + b for a, b in zip(totals[index], sums, strict=True)]
        traffic = Traffic({k: int(v[0]) for k, v in totals.items()},
                          {k: Draws(*v) for k, v in totals.items()})
        samples.append({"t": 60.0 * i, "arms": [f"arm{a}" for a in range(arms)],
                        "share": (stretches or intervals[0])[-1][1], "n": [0.0] * arms,
                        **traffic_columns(traffic, arms)})
    return samples


def test_sample_ratio_follows_changing_weights() -> None:
    rng = np.random.default_rng(3)
    shares = [[0.5, 0.5], [0.5, 0.5], [0.8, 0.2], [0.8, 0.2], [0.95, 0.05]]
    intervals = [[(2000, a), (3000, b), (5000, a)] for a, b in itertools.pairwise(shares)]
    result = health.sample_ratio(_history(intervals, rng))
    assert result is not None and result["ok"], result
    assert result["decisions"] == 40_000 and result["dof"] == 1
    # Expected: the propensities summed; their variance is below Pearson's assumption.
    assert result["expected"][1] == pytest.approx(
        sum(n * p[1] for stretches in intervals for n, p in stretches), abs=0.1)
    assert 0.5 < result["design_effect"] < 1
    # The same traffic served at the first weights throughout is a gross imbalance.
    frozen = health.sample_ratio(_history(intervals, rng, served_as=[0.5, 0.5]))
    assert frozen is not None and not frozen["ok"] and frozen["p_value"] < 1e-100


def test_sample_ratio_flags_an_arm_that_gets_half_its_traffic() -> None:
    rng = np.random.default_rng(4)
    intervals = [[(10_000, [1 / 3] * 3)]] * 2
    result = health.sample_ratio(_history(intervals, rng, served_as=[0.4, 0.4, 0.2]))
    assert result is not None and not result["ok"]
    assert result["expected"] == pytest.approx([6666.7, 6666.7, 6666.7], abs=0.1)
    assert result["design_effect"] == pytest.approx(1.0)


def test_sample_ratio_needs_two_samples_with_traffic() -> None:
    rng = np.random.default_rng(5)
    assert health.sample_ratio(_history([[(10, [0.5, 0.5])]], rng)[1:]) is None
    assert health.sample_ratio(_history([[(10, [0.5, 0.5])], []], rng)[1:]) is None


def test_sparse_arms_are_pooled_and_an_arm_drawn_at_propensity_zero_is_flagged() -> None:
    rng = np.random.default_rng(6)
    shares = [0.996, 0.001, 0.001, 0.001, 0.001]
    result = health.sample_ratio(_history([[(3000, shares)]], rng))
    assert result is not None and result["dof"] == 1  # a cell of 12 expected draws, pooled
    zero = np.array([3000.0, 0.0])
    flagged = health.sample_ratio_test(np.array([2999.0, 1.0]), zero, np.zeros(2))
    assert flagged is None  # only one arm had a propensity: nothing to compare
    three = health.sample_ratio_test(np.array([1490.0, 1500.0, 10.0]),
                                     np.array([1500.0, 1500.0, 0.0]), np.array([750.0] * 2 + [0]))
    assert three is not None and not three["ok"] and three["p_value"] == 0.0


def test_legacy_samples_without_the_sums_are_skipped() -> None:
    """Samples stored before the sums existed carry none: the test starts after them."""
    rng = np.random.default_rng(7)
    samples = _history([[(1000, [0.5, 0.5])]] * 4, rng)
    legacy = [{k: v for k, v in s.items() if k not in ("drawn", "expected", "variance")}
              for s in samples[:3]]
    assert health.sample_ratio(legacy) is None
    result = health.sample_ratio(legacy + samples[4:])
    assert result is None  # one sample with the sums: no stretch to judge yet
    result = health.sample_ratio(legacy[:2] + samples[2:])
    assert result is not None and result["decisions"] == 2000 and result["since"] == 120.0


def test_a_past_problem_leaves_the_window() -> None:
    """An arm served a third too often for the first hour, then healthy for two: flagged
    during the problem, green again once it is more than a window old."""
    rng = np.random.default_rng(8)
    shares = [0.5, 0.3, 0.2]
    bad = _history([[(500, shares)]] * 60, rng, served_as=[0.4, 0.4, 0.2])
    good = _history([[(500, shares)]] * 120, rng)
    offset = {k: [x - y for x, y in zip(bad[-1][k], good[0][k], strict=True)]
              for k in ("drawn", "expected", "variance", "served")}
    samples = bad + [{**s, "t": s["t"] + bad[-1]["t"],
                      **{k: [x + y for x, y in zip(s[k], offset[k], strict=True)]
                         for k in offset}} for s in good[1:]]
    tracker = health.HealthTracker()
    states = []
    for sample in samples:
        tracker.add([sample])
        result = tracker.sample_ratio()
        states.append(None if result is None else result["ok"])
    assert states[60] is False and states[-1] is True
    # Up while the problem is a large part of the window; green once the window (an hour,
    # from a mark) starts after it.
    assert states[60:100] == [False] * 40
    assert all(states[120:])
    result = tracker.sample_ratio()
    assert result is not None
    assert health.SAMPLE_RATIO_WINDOW_S <= result["window_s"] <= (
        health.SAMPLE_RATIO_WINDOW_S + health.MARK_STEP_S)


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
                "n": m, "drawn": d, "expected": [sum(d) * x for x in s],
                "variance": [sum(d) * x * (1 - x) for x in s]}
               for i, (s, d, m) in enumerate(zip(shares, served, n, strict=True))]
    whole = (health.sample_ratio(samples), health.reward_flow(samples, 60.0))
    assert whole[0] is not None and whole[1] is not None and whole[1]["stalled"]
    for cut in ([3], [1, 2, 5, 11], list(range(1, 12))):
        tracker = health.HealthTracker()
        start = 0
        for end in [*cut, len(samples)]:
            tracker.add(samples[max(0, start - 1):end])  # overlapping pieces
            start = end
        assert (tracker.sample_ratio(), tracker.reward_flow(60.0)) == whole, cut


def test_shares_moving_and_a_pause_within_an_interval_are_no_alarm() -> None:
    """Issue 16: decisions served at shares that moved (and with an arm paused) between two
    samples were judged against the average of the two samples' shares: a false alarm."""
    rng = np.random.default_rng(16)
    stretches = [(1000, [1 / 3, 1 / 3, 1 / 3]), (300, [0.5, 0.0, 0.5]),
                 (2000, [0.8, 0.1, 0.1])]
    drawn, expected, variance = np.zeros(3), np.zeros(3), np.zeros(3)
    for count, shares in stretches:
        p = np.array(shares)
        drawn += rng.multinomial(count, p)
        expected += count * p
        variance += count * p * (1 - p)
    samples = [
        {"t": 0.0, "arms": ["a", "b", "c"], "share": stretches[0][1], "n": [0.0] * 3,
         "served": [0, 0, 0], "drawn": [0, 0, 0], "expected": [0.0] * 3,
         "variance": [0.0] * 3},
        {"t": 60.0, "arms": ["a", "b", "c"], "share": stretches[-1][1], "n": [0.0] * 3,
         "served": drawn.astype(int).tolist(), "drawn": drawn.astype(int).tolist(),
         "expected": expected.tolist(), "variance": variance.tolist()},
    ]
    result = health.sample_ratio(samples)
    assert result is not None and result["ok"], result
    assert result["decisions"] == 3300
    assert result["expected"] == pytest.approx(expected.round(1).tolist())


async def test_a_healthy_experiment_with_moving_shares_and_a_pause_is_ok(
    redis_url: str,
) -> None:
    """Issue 16 end to end: within one history interval the shares move (rewards), an arm is
    paused, and decisions come singly, in batches, as slates and for sticky units; the
    sample-ratio test over what the service recorded is green (it was p ~ 1e-19 before)."""
    interval = 5.0
    settings = Settings(redis_url=redis_url, refresh_interval_s=0.05,
                        served_flush_interval_s=0.05, history_interval_s=interval)
    async with TestClient(TestServer(create_app(settings, seed=16))) as client:
        assert (await client.post("/v1/experiments", json={
            "id": "srm", "arms": ["a", "b", "c"], "reward": "bernoulli"})).status == 201

        async def allocate(body: dict[str, Any]) -> list[dict[str, Any]]:
            response = await client.post("/v1/experiments/srm/allocate", json=body)
            assert response.status == 200
            return list((await response.json())["decisions"])

        async def history() -> list[dict[str, Any]]:
            body = await (await client.get("/v1/experiments/srm/history")).json()
            return list(body["samples"])

        await allocate({})
        while not await history():  # the first sample: the test starts from it
            await asyncio.sleep(0.05)
        draws = 1 + 3000
        await allocate({"n": 3000})
        events = [{"id": f"e{i}", "experiment": "srm", "arm": "a", "reward": 1}
                  for i in range(40)]
        assert (await (await client.post("/v1/events", json={"events": events})).json())[
            "accepted"] == 40
        while True:  # single decisions until the shares moved
            draws += 1
            if (await allocate({}))[0]["propensity"] > 0.5:
                break
            await asyncio.sleep(0.02)
        for _ in range(20):
            await allocate({"n": 20})
            draws += 20
        assert (await client.patch("/v1/experiments/srm", json={
            "version": 1, "arms": {"pause": ["a"]}})).status == 200
        await allocate({"n": 400})
        await allocate({"n": 100, "k": 2})
        for unit in range(30):
            await allocate({"unit": f"u{unit}", "sticky": True, "n": 3})
        draws += 400 + 100 + 30
        latest = await history()
        assert len(latest) == 1, "all of it within one history interval"
        deadline = asyncio.get_running_loop().time() + 6 * interval
        while True:
            result = (await (await client.get("/v1/experiments/srm/stats")).json())[
                "health"]["sample_ratio"]
            # The first decision was flushed before the first sample, so it is not in the test.
            if result is not None and result["decisions"] == draws - 1:
                break
            assert asyncio.get_running_loop().time() < deadline, result
            await asyncio.sleep(0.1)
        assert result["ok"], result
        assert result["design_effect"] < 0.9  # the shares moved a lot
