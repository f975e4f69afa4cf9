"""The tuning advisor: its forecast against a direct simulation, its inputs, its endpoint."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from bandit.forecast import forecast
from bandit.policy import PolicySettings, student_t_tail_table
from bandit.policy.layout import BERNOULLI
from bandit.serving import advisor

Client = TestClient[Any, Any]

# Live state of the test experiment: 200 observations per arm.
SUCCESSES = np.array([12.0, 20.0, 9.0])
FAILURES = np.array([188.0, 180.0, 191.0])
ARMS = ["a", "b", "c"]
# The test client refreshes its cache every 50 ms: at 400 decisions/s, one update per 20.
TRAFFIC = 400.0
BATCH = 20
HORIZON = 3000
# Two independent Monte Carlo means of the same quantity differ by more than 3.29 standard
# errors of their difference with probability 0.001 (normal approximation; seeded, so fixed).
Z = 3.29


async def _experiment_with_rewards(client: Client, **extra: Any) -> None:
    response = await client.post("/v1/experiments", json={
        "id": "adv", "arms": ARMS, "reward": "bernoulli", **extra})
    assert response.status == 201, await response.text()
    events = []
    for arm, successes, failures in zip(ARMS, SUCCESSES, FAILURES, strict=True):
        events += [{"id": f"{arm}{i}", "experiment": "adv", "arm": arm,
                    "reward": 1.0 if i < successes else 0.0}
                   for i in range(int(successes + failures))]
    result = await (await client.post("/v1/events", json={"events": events})).json()
    assert result["accepted"] == len(events)


async def _advise(client: Client, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = await client.post("/v1/experiments/adv/advise", json=body)
    assert response.status == status, await response.text()
    return dict(await response.json())


def _direct_simulation(epsilon: float, reps: int, seed: int) -> tuple[np.ndarray[Any, Any], ...]:
    """Thompson sampling with epsilon mixing written out in numpy, independently of the engine:
    truths drawn from the posterior, decisions in batches of BATCH from a posterior that is
    updated between batches. Returns per replication the regret and the best-arm rate."""
    rng = np.random.default_rng(seed)
    k = len(ARMS)
    alpha = np.tile(1.0 + SUCCESSES, (reps, 1))
    beta = np.tile(1.0 + FAILURES, (reps, 1))
    truth = rng.beta(alpha, beta)
    best_arm = truth.argmax(axis=1)
    regret = np.zeros(reps)
    on_best = np.zeros(reps)
    rows = np.repeat(np.arange(reps), BATCH)
    for _ in range(HORIZON // BATCH):
        draws = rng.beta(alpha[:, None, :], beta[:, None, :], size=(reps, BATCH, k))
        arms = draws.argmax(axis=2)
        if epsilon > 0:
            explore = rng.random((reps, BATCH)) < epsilon
            arms = np.where(explore, rng.integers(0, k, (reps, BATCH)), arms)
        means = np.take_along_axis(truth, arms, axis=1)
        regret += (truth.max(axis=1)[:, None] - means).sum(axis=1)
        on_best += (arms == best_arm[:, None]).sum(axis=1)
        rewards = (rng.random((reps, BATCH)) < means).astype(float)
        np.add.at(alpha, (rows, arms.ravel()), rewards.ravel())
        np.add.at(beta, (rows, arms.ravel()), 1.0 - rewards.ravel())
    return regret, on_best / HORIZON


def _standard_error(interval: list[float]) -> float:
    return (interval[1] - interval[0]) / (2 * 1.96)


async def test_forecast_agrees_with_a_direct_simulation(client: Client) -> None:
    await _experiment_with_rewards(client)
    result = await _advise(client, {
        "exploration": {"epsilon": 0.3}, "decisions": HORIZON, "traffic_per_s": TRAFFIC,
        "reward_delay_s": 0, "reps": 400, "seed": 11})
    assert result["assumptions"]["update_every"] == BATCH
    for scenario, epsilon in (("current", 0.0), ("proposed", 0.3)):
        forecast_regret = result[scenario]["regret"]
        regret, best_rate = _direct_simulation(epsilon, reps=4000, seed=5)
        direct_se = regret.std(ddof=1) / math.sqrt(regret.size)
        bound = Z * math.hypot(_standard_error(forecast_regret["ci95"]), direct_se)
        # Shown by `pytest -rP`: the figures the closing note quotes.
        low, high = forecast_regret["ci95"]
        print(f"{scenario}: forecast regret {forecast_regret['mean']:.2f} [{low:.2f}, "
              f"{high:.2f}], direct {regret.mean():.2f} +- {1.96 * direct_se:.2f}; "
              f"best-arm rate {result[scenario]['best_arm_rate']['mean']:.4f} against "
              f"{best_rate.mean():.4f}")
        assert abs(forecast_regret["mean"] - regret.mean()) <= bound, (scenario, bound)
        forecast_best = result[scenario]["best_arm_rate"]
        bound = Z * math.hypot(_standard_error(forecast_best["ci95"]),
                               best_rate.std(ddof=1) / math.sqrt(best_rate.size))
        assert abs(forecast_best["mean"] - best_rate.mean()) <= bound, (scenario, bound)
    print(f"difference {result['difference']}")
    # Uniform exploration on 30% of traffic costs regret here: the forecast sees it clearly.
    assert result["difference"]["regret"]["ci95"][0] > 0
    assert result["difference"]["p_proposed_better"] < 0.2


async def test_no_change_forecasts_the_current_settings_exactly(client: Client) -> None:
    await _experiment_with_rewards(client, exploration={"min_share": 0.05})
    result = await _advise(client, {"decisions": 1000, "traffic_per_s": TRAFFIC, "reps": 20,
                                    "seed": 3})
    assert result["changes"] == {}
    # Paired scenarios share their random numbers: the same settings give the same futures.
    assert result["current"] == result["proposed"]
    assert result["difference"] == {"regret": {"mean": 0.0, "ci95": [0.0, 0.0]},
                                    "p_proposed_better": 0.0}
    shares = result["current"]["shares"]
    # Floors: every arm gets at least 5% of the 20 x 1000 decisions; the realised share of an
    # arm held at its floor has standard error sqrt(0.05 * 0.95 / 20000) = 0.0015.
    assert min(np.mean(s["mean"]) for s in shares.values()) >= 0.05 - Z * 0.0015
    for index, total in enumerate(zip(*(s["mean"] for s in shares.values()), strict=True)):
        assert sum(total) == pytest.approx(1.0, abs=5e-6), index  # rounded to 1e-6 each


async def test_a_proposal_with_new_and_paused_arms(client: Client) -> None:
    await _experiment_with_rewards(client)
    result = await _advise(client, {
        "arms": {"add": ["d"], "pause": ["b"]}, "decisions": 2000, "traffic_per_s": TRAFFIC,
        "reps": 20, "seed": 1})
    assert result["arms"] == ["a", "b", "c", "d"]
    assert result["changes"] == {"arms.b": {"old": "active", "new": "paused"},
                                 "arms.d": {"old": None, "new": "active"}}
    current, proposed = result["current"]["shares"], result["proposed"]["shares"]
    assert set(current["d"]["high"]) == {0.0}  # not an arm yet
    assert set(proposed["b"]["high"]) == {0.0}  # paused
    assert max(current["b"]["mean"]) > 0.3  # b leads now ...
    # ... and the new arm, starting from the prior, gets explored under the proposal.
    assert proposed["d"]["mean"][0] > 0.05


async def test_a_control_arm_keeps_its_share(client: Client) -> None:
    await _experiment_with_rewards(client)
    result = await _advise(client, {
        "exploration": {"control": {"arm": "c", "share": 0.25}}, "decisions": 4000,
        "traffic_per_s": TRAFFIC, "reps": 40, "seed": 2})
    shares = result["proposed"]["shares"]["c"]["mean"]
    # 40 reps x ~66 decisions per checkpoint: the share's standard error is about 0.008.
    assert np.mean(shares) == pytest.approx(0.25, abs=0.01)


async def test_winner_calls(client: Client) -> None:
    await _experiment_with_rewards(client)
    # b (20/200) against a (12/200) and c (9/200): P(b best) is about 0.95 now, so more data
    # makes the call in most futures, and the called arm is almost always the true best.
    result = await _advise(client, {"decisions": 20000, "traffic_per_s": TRAFFIC, "reps": 50,
                                    "seed": 4, "max_loss": 0.01})
    call = result["current"]["winner_call"]
    assert call["probability"] > 0.8
    assert call["correct"] > 0.8
    assert call["seconds"]["median"] == pytest.approx(call["decisions"]["median"] / TRAFFIC)
    lenient = await _advise(client, {"decisions": 1000, "traffic_per_s": TRAFFIC, "reps": 10,
                                     "seed": 4, "threshold": 0.5, "max_loss": 1.0})
    # P(best) >= 0.5 and any loss: called now, before any new decision.
    assert lenient["current"]["winner_call"]["decisions"] == {"median": 0.0,
                                                              "range80": [0.0, 0.0]}


def test_first_call_needs_both_the_probability_and_the_loss_bound() -> None:
    prior = np.array([1.0, 1.0, 0.0, 0.0])
    clear = np.zeros((1, 4, 2))
    clear[0, :2] = [[100.0, 10.0], [900.0, 990.0]]  # 10% against 1%
    tied = np.zeros((1, 4, 2))
    tied[0, :2] = [[100.0, 100.0], [900.0, 900.0]]
    active = np.ones(2, dtype=np.bool_)
    rng = np.random.default_rng(0)
    table = student_t_tail_table()
    assert forecast.first_call(BERNOULLI, clear, prior, active, 0.95, 0.001, table, rng) == (
        0, 0)
    assert forecast.first_call(BERNOULLI, tied, prior, active, 0.95, 1.0, table, rng) == (
        -1, -1)
    # Loss bound of 0: even a clear leader has some posterior expected loss.
    assert forecast.first_call(BERNOULLI, clear, prior, active, 0.95, 0.0, table, rng) == (
        -1, -1)
    only_second = np.array([False, True])
    assert forecast.first_call(BERNOULLI, clear, prior, only_second, 0.95, 1.0, table,
                               rng) == (0, 1)


def test_the_service_never_imports_the_simulator() -> None:
    """The advisor's forecasts run bandit.forecast: the service (the HTTP app, with the advisor
    behind its advise endpoint) loads nothing of the researchers' simulations package.

    A fresh interpreter, since this one has imported simulations for other tests."""
    script = ("import sys, bandit.api.app, bandit.serving.advisor; "
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'simulations'))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout


def _samples(rate: float, delay_s: float, coverage: float = 1.0) -> list[dict[str, Any]]:
    """History samples every 60 s of an experiment served at ``rate`` whose rewards arrive
    ``delay_s`` after their decisions (for ``coverage`` of the decisions)."""
    return [{"t": 1000.0 + 60 * i, "served": [rate * 60 * i, 0.0],
             "n": [coverage * rate * max(0.0, 60 * i - delay_s), 0.0]} for i in range(30)]


def test_traffic_rate_and_delay_are_measured_from_the_history() -> None:
    samples = _samples(rate=5.0, delay_s=90.0)
    last = samples.pop()
    traffic = advisor.measure_traffic(samples, last["t"], sum(last["served"]), sum(last["n"]))
    assert traffic.rate == pytest.approx(5.0)
    assert traffic.delay_s == pytest.approx(90.0)
    # Over the window, rewards lag by 90 s of the 1740 s of decisions.
    assert traffic.coverage == pytest.approx((1740 - 90) / 1740)
    assert traffic.notes == ()


def test_a_delay_is_not_guessed_when_rewards_cover_few_decisions() -> None:
    samples = _samples(rate=5.0, delay_s=90.0, coverage=0.3)
    last = samples.pop()
    traffic = advisor.measure_traffic(samples, last["t"], sum(last["served"]), sum(last["n"]))
    assert traffic.rate == pytest.approx(5.0)
    assert traffic.delay_s is None
    assert "28%" in traffic.notes[0]  # 0.3 x (1740 - 90) / 1740


def test_no_traffic_means_no_rate() -> None:
    traffic = advisor.measure_traffic([], 1000.0, 0.0, 0.0)
    assert traffic.rate is None


@pytest.mark.parametrize(("body", "message"), [
    ({"exploration": {"min_share": 0.5}}, "min_share: 0.5 * 3 active arms > 1"),
    ({"exploration": {"max_share": 0.2, "min_share": 0.3}}, "max_share"),
    ({"exploration": {"epsilon": 2}}, "epsilon"),
    ({"arms": {"pause": ["zzz"]}}, "unknown arm"),
    ({"decisions": 5}, "decisions: must be between 10"),
    ({"decisions": 1_000_000, "reps": 2000}, "to forecast (at most 10 s)"),
    ({"reps": 1}, "reps"),
    ({"traffic_per_s": 0}, "traffic_per_s"),
    ({"reward_delay_s": -1}, "reward_delay_s"),
    ({"threshold": 0.2}, "threshold"),
    ({"version": 1}, "unknown field"),
    ({}, "traffic_per_s: no decisions were served"),
])
async def test_bad_advice_requests_are_422_and_change_nothing(
        client: Client, body: dict[str, Any], message: str) -> None:
    await _experiment_with_rewards(client)
    if "traffic_per_s" not in body and message != "traffic_per_s: no decisions were served":
        body = {**body, "traffic_per_s": 10}
    error = await _advise(client, body, status=422)
    assert message in error["error"]["message"]
    shown = await (await client.get("/v1/experiments/adv")).json()
    assert shown["version"] == 1
    audit = await (await client.get("/v1/experiments/adv/audit")).json()
    assert len(audit["entries"]) == 1


async def test_advice_on_an_unknown_experiment_is_404(client: Client) -> None:
    response = await client.post("/v1/experiments/nope/advise", json={})
    assert response.status == 404


def test_scenario_settings_follow_the_simulated_arms() -> None:
    """A control arm's index is remapped when arms outside both scenarios are left out."""
    from bandit.model import parse_new_experiment

    experiment = parse_new_experiment({
        "id": "x", "arms": ["p", "q", "r"], "reward": "bernoulli",
        "exploration": {"control": {"arm": "r", "share": 0.2}}}, 0.0)
    scenario = advisor._scenario(experiment, ("q", "r"), rate=10.0)
    expected = PolicySettings(control_index=1, control_share=0.2).as_array()
    assert np.array_equal(scenario.settings[6:], expected[6:])
    assert scenario.active.tolist() == [True, True]
    assert scenario.half_life == math.inf
    assert not scenario.needs_quadrature
    # Top-two is forecast from allocation probabilities, as the service serves it: drawn
    # decision by decision, a confident leader makes each challenger cost a quadrature.
    top_two = parse_new_experiment({"id": "y", "arms": ["p", "q"], "reward": "bernoulli",
                                    "exploration": {"top_two": 0.01}}, 0.0)
    assert advisor._scenario(top_two, ("p", "q"), rate=10.0).needs_quadrature


async def test_gaussian_experiments_with_forgetting_and_top_two(client: Client) -> None:
    response = await client.post("/v1/experiments", json={
        "id": "adv", "arms": ARMS, "reward": "gaussian",
        "exploration": {"half_life_s": 600, "warmup": 5}})
    assert response.status == 201
    rng = np.random.default_rng(1)
    events = [{"id": f"g{i}", "experiment": "adv", "arm": ARMS[i % 3],
               "reward": float(rng.normal([1.0, 1.5, 0.8][i % 3], 2.0))} for i in range(300)]
    assert (await (await client.post("/v1/events", json={"events": events})).json())[
        "accepted"] == 300
    result = await _advise(client, {
        "exploration": {"top_two": 0.5, "half_life_s": None}, "decisions": 2000,
        "traffic_per_s": 20, "reward_delay_s": 2, "reps": 40, "seed": 9})
    assert result["changes"] == {
        "exploration.half_life_s": {"old": 600.0, "new": None},
        "exploration.top_two": {"old": None, "new": 0.5}}
    assert result["assumptions"]["horizon_s"] == pytest.approx(100.0)
    for scenario in ("current", "proposed"):
        forecast_regret = result[scenario]["regret"]
        # Pseudo-regret is a sum of gaps to the best mean: never negative.
        assert forecast_regret["range80"][0] >= 0
        assert forecast_regret["ci95"][0] <= forecast_regret["mean"] <= forecast_regret["ci95"][1]
        shares = result[scenario]["shares"]
        for total in zip(*(s["mean"] for s in shares.values()), strict=True):
            assert sum(total) == pytest.approx(1.0, abs=5e-6)
    # Top-two holds the leader to about half the traffic once it leads.
    assert max(result["proposed"]["shares"]["b"]["mean"][-10:]) < 0.75
