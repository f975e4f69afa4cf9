"""Guardrails for operators, through a real server: the CLI's tables and flags, and the tuning
advisor's forecast of the traffic sent to arms that break a guardrail."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from bandit.forecast import guardrails as gf
from bandit.policy import BERNOULLI, GAUSSIAN, Guard, PolicySettings
from tests.test_guardrails_api import (
    REVENUE,
    UNSUBSCRIBE,
    _arm,
    _events,
    _settled,
    harmful_events,
)
from tests.test_layers_api import _ok
from tests.test_operator_cli import cli, invoke

Client = TestClient[Any, Any]

TRAFFIC = 400.0


async def _harmful(client: Client, experiment_id: str = "g", **exploration: Any) -> None:
    """Arm b has by far the best primary and revenue 10% below control's (400 observations
    per arm, sd 0.5: four standard errors), so it breaks the revenue guardrail in nearly every
    world the posteriors allow; c's revenue is 20% above control's, and no arm ever
    unsubscribed anyone in 1000 observations: c is feasible in nearly every world."""
    body = {"id": experiment_id, "arms": ["control", "b", "c"], "reward": "bernoulli",
            "guardrails": [REVENUE, UNSUBSCRIBE], "control": "control",
            "exploration": {"min_share": 0.05, "gate_min_samples": 100, **exploration}}
    await _ok(await client.post("/v1/experiments", json=body), 201)
    events = harmful_events(experiment_id, c_revenue=1.2, unsubscribes=1000)
    assert (await _events(client, events))["accepted"] == len(events)
    await _settled(client, lambda s: _arm(s, "b")["held"], experiment_id)


async def _advise(client: Client, body: dict[str, Any], experiment_id: str = "g",
                  ) -> dict[str, Any]:
    return dict(await _ok(await client.post(f"/v1/experiments/{experiment_id}/advise",
                                            json=body)))


@pytest.fixture
async def base(client: Client) -> str:
    return str(client.make_url("")).rstrip("/")


# -- the command line ---------------------------------------------------------------------------


async def test_create_takes_guardrails_a_control_and_the_gate(
        base: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli(base, "create", "g", "--arms", "control,b,c", "--control", "control",
                     "--guardrail", "revenue:gaussian:higher:relative=-0.02",
                     "--guardrail", "unsubscribe:bernoulli:lower:absolute=0.01",
                     "--set", "gate_min_samples=100") == 0
    out = capsys.readouterr().out
    assert "  guardrail = revenue:gaussian:higher:relative=-0.02" in out
    assert "  guardrail = unsubscribe:bernoulli:lower:absolute=0.01" in out
    assert "  control arm = control" in out and "  gate_min_samples = 100" in out
    shown = await _ok(await client.get("/v1/experiments/g"))
    assert shown["guardrails"] == [REVENUE, UNSUBSCRIBE]
    assert shown["control"] == "control"
    assert shown["exploration"]["gate_min_samples"] == 100
    # tune: the whole new list, and the gate's minimum sample by --set.
    assert await cli(base, "tune", "g", "--guardrail", "revenue:gaussian:higher:relative=-0.05",
                     "--set", "gate_min_samples=500") == 0
    out = capsys.readouterr().out
    assert "version 1 -> 2" in out and "gate_min_samples" in out and "guardrails" in out
    shown = await _ok(await client.get("/v1/experiments/g"))
    assert shown["guardrails"] == [{**REVENUE, "threshold": {"relative": -0.05}}]
    assert shown["exploration"]["gate_min_samples"] == 500
    # The gate needs guardrails: the service refuses clearing them under it (nothing sent
    # wrong on our side: exit 3, its message).
    assert await cli(base, "tune", "g", "--guardrail", "none", "--control", "none") == 3
    assert "has none" in capsys.readouterr().err
    assert await cli(base, "tune", "g", "--guardrail", "none", "--control", "none",
                     "--set", "gate_min_samples=none") == 0
    shown = await _ok(await client.get("/v1/experiments/g"))
    assert shown["guardrails"] == [] and shown["control"] is None


@pytest.mark.parametrize("arguments", [
    ["--guardrail", "revenue:gaussian:higher"],
    ["--guardrail", "revenue:poisson:higher:relative=-0.02"],
    ["--guardrail", "revenue:gaussian:up:relative=-0.02"],
    ["--guardrail", "revenue:gaussian:higher:within=0.1"],
    ["--guardrail", "revenue:gaussian:higher:relative=nan"],
    ["--guardrail", "none", "--guardrail", "revenue:gaussian:higher:relative=-0.02"],
    ["--guardrail", "revenue:gaussian:higher:relative=-0.02", "--guardrail", "none"],
    ["--control", ""],
])
def test_bad_guardrail_flags_are_usage_errors(arguments: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke("--url", "http://127.0.0.1:9", "create", "g", "--arms", "a,b",
                  *arguments) == 2
    assert "guardrail" in capsys.readouterr().err or "arm id" in capsys.readouterr().err


async def test_show_and_stats_render_guardrails_the_gate_and_a_feasible_winner(
        base: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    await _harmful(client)
    assert await cli(base, "show", "g") == 0
    out = capsys.readouterr().out
    assert "guardrail 1         revenue:gaussian:higher:relative=-0.02 (mean >= control's - " \
           "0.02 x |control's|)" in out
    assert "guardrail 2         unsubscribe:bernoulli:lower:absolute=0.01 (mean <= 0.01)" in out
    assert "\ncontrol arm         control\n" in out
    assert "guardrails (revenue:gaussian:higher:relative=-0.02; unsubscribe:bernoulli:lower:" \
           "absolute=0.01; control control; gate after 100 observations):" in out
    assert "held at the floor by the gate: b" in out
    stats = await _ok(await client.get("/v1/experiments/g/stats"))
    lines = out.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("arm      metric"))):]
    assert table[0].split() == ["arm", "metric", "n", "mean", "95%", "CI", "P(violates)"]
    revenue_b = next(line for line in table if line.split()[:2] == ["b", "revenue"])
    value = _arm(stats, "b")["guardrails"]["revenue"]
    assert revenue_b.split()[2] == "400"
    assert float(revenue_b.split()[3]) == pytest.approx(value["mean"], abs=5e-4)
    assert revenue_b.endswith(" !")  # P(violates) >= 0.8 is flagged
    assert next(line for line in table if line.split()[:2] == ["control", "revenue"]).endswith(
        "control")
    feasible = lines[lines.index(next(line for line in lines
                                      if line.startswith("arm      P(violates any)"))):]
    assert feasible[2].split()[0] == "b" and feasible[2].split()[-1] == "HELD"
    assert feasible[3].split()[-1] == "-"
    assert f"{_arm(stats, 'c')['p_best_feasible']:.4f}" in feasible[3]
    # A lenient call rule: c is the winner, feasible, and says so.
    assert await cli(base, "stats", "g", "--threshold", "0.5", "--max-loss", "1") == 0
    out = capsys.readouterr().out
    winner = (await _ok(await client.get("/v1/experiments/g/stats?threshold=0.5&max_loss=1"))
              )["winner"]
    assert winner["arm"] == "c"
    assert (f"winner: c (P(best feasible) {winner['p_best']:.4f}, P(feasible) "
            f"{winner['p_feasible']:.4f}, expected loss") in out
    # No call: the rule names P(feasible) too.
    assert await cli(base, "stats", "g", "--threshold", "0.999") == 0
    assert "winner: none yet (needs P(best feasible) >= 0.999, P(feasible) >= 0.999" in \
        capsys.readouterr().out


async def test_an_experiment_without_guardrails_renders_as_before(
        base: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli(base, "create", "plain", "--arms", "a,b") == 0
    capsys.readouterr()
    assert await cli(base, "show", "plain") == 0
    out = capsys.readouterr().out
    assert "guardrail " not in out and "P(violates" not in out and "held at" not in out


async def test_advise_renders_the_guardrail_forecast(
        base: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    await _harmful(client)
    assert await cli(base, "advise", "g", "--set", "epsilon=0.3", "--set", "min_share=0",
                     "--set", "gate_min_samples=none", "--decisions", "2000", "--traffic",
                     "400", "--reps", "20", "--seed", "3") == 0
    out = capsys.readouterr().out
    assert "guardrails (revenue, unsubscribe; control control): arms breaking one in the " \
           "simulated worlds: b " in out
    lines = out.splitlines()
    row = next(line for line in lines if line.startswith("to infeasible arms"))
    assert "pts" in row
    shares = lines[lines.index("share of the horizon under the guarded allocation (the "
                               "service's):") + 1:]
    assert shares[0].split() == ["arm", "current", "proposed", "P(infeasible)"]
    assert [line.split()[0] for line in shares[1:4]] == ["control", "b", "c"]
    assert "the proposal sends less traffic to infeasible arms in 0% of the simulated " \
           "futures" in out


# -- the advisor ------------------------------------------------------------------------------


async def test_removing_the_gate_for_exploration_forecasts_more_harmful_traffic(
        client: Client) -> None:
    """The gate holds b at its floor and gives it no epsilon; without the gate, epsilon 0.3
    sends b a tenth of the traffic whatever its guardrails say."""
    await _harmful(client)
    result = await _advise(client, {"exploration": {"epsilon": 0.3, "min_share": 0.0,
                                                    "gate_min_samples": None},
                                    "decisions": 4000, "traffic_per_s": TRAFFIC, "reps": 40,
                                    "seed": 5})
    guard = result["guardrails"]
    assert guard["control"] == "control"
    assert [m["metric"] for m in guard["metrics"]] == ["revenue", "unsubscribe"]
    # b breaks revenue in (nearly) every world; the control never counts as infeasible.
    assert guard["p_infeasible"]["b"] > 0.95 and guard["p_infeasible"]["control"] == 0.0
    assert guard["p_infeasible"]["c"] < 0.05
    assert guard["recomputations"] <= gf.MAX_RECOMPUTATIONS
    current, proposed = guard["current"], guard["proposed"]
    # Held at the 5% floor now; a tenth of the traffic (epsilon 0.3 over 3 arms) proposed.
    assert current["held_share"]["mean"] > 0.04
    assert 0.04 < current["infeasible_share"]["mean"] < 0.07
    assert 0.09 < proposed["infeasible_share"]["mean"] < 0.12
    assert proposed["infeasible_decisions"]["mean"] == pytest.approx(
        4000 * proposed["infeasible_share"]["mean"])
    difference = guard["difference"]
    assert difference["infeasible_share"]["ci95"][0] > 0
    assert difference["p_proposed_safer"] < 0.1
    # Epsilon also sends the worse control a tenth of the traffic: more primary regret against
    # the best feasible arm (c), though b's better clicks cost nothing there.
    assert current["regret"]["mean"] >= 0 and difference["regret"]["ci95"][0] > 0
    assert any("guardrails' forecast" in note for note in result["assumptions"]["notes"])


async def test_removing_the_floor_forecasts_less_and_a_seed_repeats_the_forecast(
        client: Client) -> None:
    await _harmful(client)
    body = {"exploration": {"min_share": 0.0}, "decisions": 2000, "traffic_per_s": TRAFFIC,
            "reps": 20, "seed": 3}
    result = await _advise(client, body)
    guard = result["guardrails"]
    assert guard["proposed"]["infeasible_share"]["mean"] < 0.02
    assert guard["difference"]["infeasible_share"]["ci95"][1] < 0
    assert guard["difference"]["p_proposed_safer"] > 0.9
    assert (await _advise(client, body))["guardrails"] == guard


async def test_an_experiment_without_guardrails_gets_no_guardrail_forecast(
        client: Client) -> None:
    await _ok(await client.post("/v1/experiments", json={
        "id": "plain", "arms": ["a", "b"], "reward": "bernoulli"}), 201)
    result = await _advise(client, {"decisions": 500, "traffic_per_s": TRAFFIC, "reps": 10,
                                    "seed": 1}, "plain")
    assert "guardrails" not in result
    assert not any("guardrail" in note for note in result["assumptions"]["notes"])


def test_infeasible_arms_follow_the_thresholds() -> None:
    prior = np.zeros(4)
    stats = np.zeros((3, 3))
    revenue = Guard(GAUSSIAN, stats, np.zeros(3), prior, True, -0.02, True)
    unsubscribe = Guard(BERNOULLI, stats, np.zeros(3), prior, False, 0.01, False)
    means = np.array([[-1.0, -1.03, -1.01],  # relative to |c|: level -1.02
                      [0.02, 0.005, 0.005]])  # the control's 2% never counts
    assert gf.infeasible_arms([revenue, unsubscribe], means, 0).tolist() == [
        False, True, False]
    means[1, 2] = 0.011
    assert gf.infeasible_arms([revenue, unsubscribe], means, 0).tolist() == [
        False, True, True]


def test_the_gate_holds_a_harmful_arm_in_the_simulation() -> None:
    """Straight from the forecast module: with the gate, a clearly harmful arm gets its floor;
    both scenarios see the same worlds."""
    stats = np.array([[40.0, 200.0, 60.0], [360.0, 200.0, 340.0], [0.0, 0.0, 0.0]])
    counts = np.full(3, 400.0)
    revenue = np.array([[400.0] * 3, [1.0, 0.9, 1.3], [100.0] * 3])
    metric = Guard(GAUSSIAN, revenue, counts, np.array([0.0, 0.01, 1.0, 1.0]), True,
                            -0.02, True)
    problem = gf.GuardProblem(BERNOULLI, np.array([1.0, 1.0, 0.0, 0.0]), stats, counts,
                              (metric,), 0, horizon=1200, every=100, delay=0.0)
    held = np.zeros(3, dtype=np.bool_)
    active = np.ones(3, dtype=np.bool_)
    gated = gf.GuardScenario(PolicySettings(min_share=0.05), active, 0, 100, held)
    loose = gf.GuardScenario(PolicySettings(epsilon=0.3), active, 0, None, held)
    (with_gate, without), worlds = gf.forecast_guardrails(problem, [gated, loose], reps=10,
                                                          seed=2, threads=1)
    assert worlds.tolist() == [[False, True, False]] * 10
    assert np.all(with_gate.held == with_gate.infeasible)  # b is held all along
    assert math.isclose(with_gate.infeasible.mean() / 1200, 0.05, abs_tol=0.02)
    assert without.held.sum() == 0
    assert without.infeasible.mean() > 2 * with_gate.infeasible.mean()
