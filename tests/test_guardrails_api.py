"""Guardrails through HTTP on a real Redis: rewards by metric (the same atomic step and dedup as
the primary's), the allocation and its gate, the stats and the winner call, bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from bandit.api.app import create_app
from bandit.settings import Settings
from tests.test_decision_log import _flushed_export
from tests.test_layers_api import _ok, _redis_keys, _refused

Client = TestClient[Any, Any]

REVENUE = {"metric": "revenue", "kind": "gaussian", "direction": "higher",
           "threshold": {"relative": -0.02}}
UNSUBSCRIBE = {"metric": "unsubscribe", "kind": "bernoulli", "direction": "lower",
               "threshold": {"absolute": 0.01}}


async def _create(client: Client, experiment_id: str = "g", **extra: Any) -> dict[str, Any]:
    body = {"id": experiment_id, "arms": ["control", "b", "c"], "reward": "bernoulli",
            "guardrails": [REVENUE, UNSUBSCRIBE], "control": "control", **extra}
    return dict(await _ok(await client.post("/v1/experiments", json=body), 201))


async def _events(client: Client, events: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(await _ok(await client.post("/v1/events", json={"events": events})))


async def _stats(client: Client, experiment_id: str = "g") -> dict[str, Any]:
    return dict(await _ok(await client.get(f"/v1/experiments/{experiment_id}/stats")))


async def _settled(client: Client, check: Any, experiment_id: str = "g",
                   timeout_s: float = 5.0) -> dict[str, Any]:
    """The stats once ``check(stats)`` holds (the cache refreshes every 50 ms here)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = await _stats(client, experiment_id)
        if check(stats) or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.05)


def _arm(stats: dict[str, Any], arm: str) -> dict[str, Any]:
    return next(a for a in stats["arms"] if a["arm"] == arm)


def harmful_events(experiment_id: str = "g", *, clicks: bool = True, c_revenue: float = 1.0,
                   unsubscribes: int = 200) -> list[dict[str, Any]]:
    """Arm b with the best clicks by far (200 of 400, against 40 and 60) and revenue 10% below
    the control's (400 observations each, sd 0.5 exactly: the difference is 4 standard
    errors); c's revenue ``c_revenue``; every arm with ``unsubscribes`` unsubscribe
    observations, all 0 (the gate waits for every metric)."""
    noise = [(-1) ** i * 0.5 for i in range(400)]  # mean 0, sd 0.5 exactly
    events: list[dict[str, Any]] = []
    for arm, revenue, hits in (("control", 1.0, 40), ("b", 0.9, 200), ("c", c_revenue, 60)):
        events += [{"id": f"{arm}-r{i}", "experiment": experiment_id, "arm": arm,
                    "metric": "revenue", "reward": revenue + e} for i, e in enumerate(noise)]
        events += [{"id": f"{arm}-u{i}", "experiment": experiment_id, "arm": arm,
                    "metric": "unsubscribe", "reward": 0} for i in range(unsubscribes)]
        if clicks:
            events += [{"id": f"{arm}-p{i}", "experiment": experiment_id, "arm": arm,
                        "reward": int(i < hits)} for i in range(400)]
    return events


async def _held(client: Client, clicks: bool = True) -> dict[str, Any]:
    """The stats once the gate holds b (``harmful_events`` sent)."""
    events = harmful_events(clicks=clicks)
    assert (await _events(client, events))["accepted"] == len(events)
    stats = await _settled(client, lambda s: _arm(s, "b")["held"])
    assert _arm(stats, "b")["held"], stats
    return stats


async def test_rewards_by_metric_update_their_own_posteriors_once(client: Client) -> None:
    await _create(client)
    events = [{"id": f"r{i}", "experiment": "g", "arm": "b", "reward": 2.0 + i,
               "metric": "revenue"} for i in range(4)]
    events += [{"id": "u1", "experiment": "g", "arm": "b", "reward": 1, "metric": "unsubscribe"},
               {"id": "p1", "experiment": "g", "arm": "b", "reward": 1},
               {"id": "p2", "experiment": "g", "arm": "b", "reward": 0, "metric": "primary"}]
    assert await _events(client, events) == {"accepted": 7, "duplicates": 0, "rejected": []}
    # The same ids again: duplicates, whatever their metric, and nothing counted twice.
    again = await _events(client, events)
    assert again["accepted"] == 0 and again["duplicates"] == 7
    stats = await _settled(client, lambda s: _arm(s, "b")["n"] == 2)
    b = _arm(stats, "b")
    assert b["n"] == 2 and b["mean"] == (1 + 1) / (2 + 2)  # Beta(1, 1) + 1 success, 1 failure
    assert b["guardrails"]["revenue"]["n"] == 4
    assert abs(b["guardrails"]["revenue"]["mean"] - 3.5) < 0.01  # kappa 0.01 barely shrinks
    assert b["guardrails"]["unsubscribe"] == {
        "n": 1, "mean": 2 / 3, "ci95": b["guardrails"]["unsubscribe"]["ci95"],
        "p_violates": b["guardrails"]["unsubscribe"]["p_violates"]}
    assert _arm(stats, "control")["p_violates"] is None
    assert stats["guardrails"]["control"] == "control"
    assert 0 < stats["guardrails"]["monte_carlo_error"] < 0.01


async def test_a_decision_is_rewarded_once_per_metric(client: Client) -> None:
    await _create(client)
    decision = await _ok(await client.post("/v1/experiments/g/allocate", json={}))
    [choice] = decision["decisions"]
    base = {"experiment": "g", "arm": choice["arm"], "decision_id": choice["decision_id"]}
    first = await _events(client, [{**base, "id": "a", "reward": 1},
                                   {**base, "id": "b", "reward": 5.0, "metric": "revenue"},
                                   {**base, "id": "c", "reward": 0, "metric": "unsubscribe"}])
    assert first["accepted"] == 3
    second = await _events(client, [{**base, "id": "d", "reward": 6.0, "metric": "revenue"}])
    assert second["accepted"] == 0
    assert "already has a reward" in second["rejected"][0]["error"]


async def test_bad_rewards_by_metric_are_refused_and_change_nothing(
        client: Client, settings: Settings) -> None:
    await _create(client)
    await _create(client, "plain", guardrails=[], control=None)
    before = _redis_keys(settings)
    result = await _events(client, [
        {"id": "x1", "experiment": "g", "arm": "b", "reward": 1, "metric": "latency"},
        {"id": "x2", "experiment": "g", "arm": "b", "reward": 2.5, "metric": "unsubscribe"},
        {"id": "x3", "experiment": "plain", "arm": "b", "reward": 1, "metric": "revenue"},
        {"id": "x4", "experiment": "g", "arm": "b", "reward": 1, "metric": 7},
        {"id": "x5", "experiment": "g", "arm": "b", "reward": 1, "metric": "Bad Name"},
    ])
    errors = [r["error"] for r in result["rejected"]]
    assert result["accepted"] == 0 and len(errors) == 5
    assert "'latency' is not a guardrail metric of experiment 'g'" in errors[0]
    assert "['revenue', 'unsubscribe']" in errors[0]
    assert "outside [0, 1] for bernoulli guardrail metric 'unsubscribe'" in errors[1]
    assert "it has no guardrails" in errors[2]
    assert "metric: expected a metric name" in errors[3]
    assert "not a valid metric name" in errors[4]
    assert _redis_keys(settings) == before


async def test_bad_guardrails_are_refused_at_create_and_patch(client: Client,
                                                               settings: Settings) -> None:
    before = _redis_keys(settings)
    body = {"id": "g", "arms": ["control", "b"], "reward": "bernoulli"}
    await _refused(await client.post("/v1/experiments", json={**body, "guardrails": [REVENUE]}),
                   422, "no control arm")
    await _refused(await client.post("/v1/experiments", json={
        **body, "control": "control", "guardrails": [REVENUE, {**REVENUE,
                                                               "direction": "lower"}]}),
        422, "contradictory directions")
    await _refused(await client.post("/v1/experiments", json={
        **body, "exploration": {"gate_min_samples": 100}}), 422, "has none")
    assert _redis_keys(settings) == before
    created = await _create(client)
    before = _redis_keys(settings)
    await _refused(await client.patch("/v1/experiments/g", json={
        "version": created["version"], "control": None}), 422, "no control arm")
    assert _redis_keys(settings) == before


async def test_a_harmful_arm_is_held_at_the_floor_and_the_gate_is_audited(
        client: Client) -> None:
    """Arm b has the best primary by far, and revenue 10% below control's, with 400
    observations each (sd 0.5: the difference is 4 standard errors): P(violates) is ~1, so
    the gate holds b at the floor; c takes the bandit's traffic."""
    created = await _create(client, exploration={"min_share": 0.05, "gate_min_samples": 100})
    stats = await _held(client)
    b = _arm(stats, "b")
    assert b["held"] and b["p_violates"] > 0.95
    assert b["guardrails"]["revenue"]["p_violates"] > 0.95
    assert abs(b["share"] - 0.05) < 1e-9  # the floor, exactly
    assert _arm(stats, "c")["share"] > 0.5
    # Decisions carry the same propensities (from the cached allocation).
    allocation = await _ok(await client.post("/v1/experiments/g/allocate", json={"n": 200}))
    propensities = {d["arm"]: d["propensity"] for d in allocation["decisions"]}
    assert abs(propensities["b"] - 0.05) < 1e-9
    audit = await _ok(await client.get("/v1/experiments/g/audit"))
    gate = [entry for entry in audit["entries"] if entry["action"] == "gate"]
    assert len(gate) == 1 and gate[0]["actor"] == "guardrail-gate"
    assert gate[0]["changes"] == {"held": {"old": [], "new": ["b"]}}
    assert gate[0]["version"] == created["version"]
    # The winner must be feasible: b leads the primary, and is no winner.
    assert stats["winner"] is None or stats["winner"]["arm"] != "b"


async def test_the_log_export_joins_the_primary_reward_not_a_guardrail_s(
        client: Client, settings: Settings) -> None:
    """A guardrail metric's reward for a decision, applied before its primary reward, is not
    the decision's reward in the export (it would be: the join takes a decision's first
    reward record)."""
    await _create(client)
    decisions = (await _ok(await client.post("/v1/experiments/g/allocate",
                                             json={"n": 2})))["decisions"]
    first, second = decisions
    await _events(client, [
        {"id": "g1", "experiment": "g", "arm": first["arm"], "reward": 7.5,
         "decision_id": first["decision_id"], "metric": "revenue"},
        {"id": "g2", "experiment": "g", "arm": second["arm"], "reward": 0.25,
         "decision_id": second["decision_id"], "metric": "revenue"}])
    await _events(client, [{"id": "p1", "experiment": "g", "arm": first["arm"], "reward": 1,
                            "decision_id": first["decision_id"]}])
    rows = {row["decision_id"]: row for row in await _flushed_export(client, settings, "g")}
    assert rows[first["decision_id"]]["reward"] == 1.0
    assert rows[second["decision_id"]]["reward"] is None
    # The guardrail rewards have a column of their own.
    assert json.loads(rows[first["decision_id"]]["guardrails"]) == {"revenue": 7.5}
    assert json.loads(rows[second["decision_id"]]["guardrails"]) == {"revenue": 0.25}


async def test_a_contextual_experiment_keeps_guardrails_on_its_marginals(client: Client) -> None:
    """Guardrail rewards of contextual decisions carry the context (for the decision's
    signature) and update context-free statistics; the gate holds an arm at the floor for
    every context."""
    model = {"type": "linear", "features": [
        {"name": "region", "type": "categorical", "values": ["eu", "us"]}]}
    await _create(client, "ctx", model=model, guardrails=[REVENUE],
                  exploration={"min_share": 0.05, "gate_min_samples": 100})
    answer = await _ok(await client.post("/v1/experiments/ctx/allocate",
                                         json={"context": {"region": "eu"}}))
    [decision] = answer["decisions"]
    base = {"experiment": "ctx", "arm": decision["arm"], "decision_id": decision["decision_id"],
            "metric": "revenue", "reward": 3.0}
    result = await _events(client, [{**base, "id": "with", "context": {"region": "eu"}},
                                    {**base, "id": "without"}])
    assert result["accepted"] == 1
    assert "context" in result["rejected"][0]["error"]
    noise = [(-1) ** i * 0.5 for i in range(400)]
    events = [{"id": f"{arm}-{i}", "experiment": "ctx", "arm": arm, "metric": "revenue",
               "reward": level + e} for arm, level in (("control", 1.0), ("b", 0.9), ("c", 1.0))
              for i, e in enumerate(noise)]
    assert (await _events(client, events))["accepted"] == len(events)
    stats = await _settled(client, lambda s: _arm(s, "b")["held"], "ctx")
    assert _arm(stats, "b")["held"]
    assert _arm(stats, "b")["guardrails"]["revenue"]["n"] == 400
    for region in ("eu", "us"):
        answer = await _ok(await client.post("/v1/experiments/ctx/allocate", json={
            "n": 300, "context": {"region": region}}))
        propensities = {d["arm"]: d["propensity"] for d in answer["decisions"]}
        assert propensities["b"] == 0.05 or "b" not in propensities


async def test_turning_the_gate_off_releases_the_held_arm_with_an_audit_entry(
        client: Client) -> None:
    created = await _create(client, exploration={"min_share": 0.05, "gate_min_samples": 100})
    await _held(client, clicks=False)
    await _ok(await client.patch("/v1/experiments/g", json={
        "version": created["version"], "exploration": {"gate_min_samples": None}}))
    stats = await _settled(client, lambda s: not _arm(s, "b")["held"])
    assert not _arm(stats, "b")["held"] and _arm(stats, "b")["p_violates"] > 0.95
    audit = await _ok(await client.get("/v1/experiments/g/audit"))
    gates = [e for e in audit["entries"] if e["action"] == "gate"]
    assert [e["changes"]["held"] for e in gates] == [{"old": [], "new": ["b"]},
                                                   {"old": ["b"], "new": []}]
    assert gates[0]["reason"].startswith("b P(violates a guardrail) 0.9")
    # Released because the gate is off, not because b stopped violating: the entry says so.
    assert gates[1]["reason"] == "the gate is off now (exploration.gate_min_samples null)"


async def test_a_guardrail_added_on_another_process_is_not_refused_here(
        settings: Settings) -> None:
    """Process A has the experiment cached (and refreshes it only every minute here); process
    B adds a guardrail; a reward for it reaching A at once is counted, not dropped for good as
    unknown (A reads the experiment again first, as for an arm added a moment ago)."""
    slow = dataclasses.replace(settings, refresh_interval_s=60.0)
    async with TestClient(TestServer(create_app(slow, seed=1))) as a, \
            TestClient(TestServer(create_app(settings, seed=2))) as b:
        created = await _create(a)
        assert (await _events(a, [{"id": "r0", "experiment": "g", "arm": "b", "reward": 1.0,
                                   "metric": "revenue"}]))["accepted"] == 1
        latency = {"metric": "latency", "kind": "gaussian", "direction": "lower",
                   "threshold": {"absolute": 250}}
        await _ok(await b.patch("/v1/experiments/g", json={
            "version": created["version"], "guardrails": [REVENUE, UNSUBSCRIBE, latency]}))
        result = await _events(a, [{"id": "l1", "experiment": "g", "arm": "b",
                                    "reward": 120.0, "metric": "latency"}])
        assert result == {"accepted": 1, "duplicates": 0, "rejected": []}


async def test_no_winner_is_called_on_the_priors_alone(client: Client) -> None:
    """Before any data the unsubscribe cap makes every arm but the control 99% likely
    infeasible a priori, so the control is 'best feasible' with probability 0.99: that is no
    evidence, and no winner is called (an attacker run found one, in the stats and the
    list)."""
    await _create(client)
    stats = await _stats(client)
    assert _arm(stats, "control")["p_best_feasible"] > 0.95
    assert stats["winner"] is None
    listed = await _ok(await client.get("/v1/experiments?summary=true"))
    [entry] = [e for e in listed["experiments"] if e["id"] == "g"]
    assert entry["summary"]["winner"] is None


async def test_fixed_experiments_refuse_guardrails_and_the_control_stays_active(
        client: Client, settings: Settings) -> None:
    before = _redis_keys(settings)
    await _refused(await client.post("/v1/experiments", json={
        "id": "fx", "arms": ["x", "y"], "reward": "bernoulli", "policy": "fixed",
        "weights": {"x": 1, "y": 1}, "control": "x", "guardrails": [UNSUBSCRIBE]}),
        422, "guardrails: a fixed experiment")
    assert _redis_keys(settings) == before
    created = await _create(client)
    before = _redis_keys(settings)
    await _refused(await client.patch("/v1/experiments/g", json={
        "version": created["version"], "arms": {"pause": ["control"]}}), 422,
        "the control 'control' must stay active")
    assert _redis_keys(settings) == before


async def test_a_sticky_unit_on_a_held_arm_gets_fresh_decisions(client: Client) -> None:
    """Units stuck to b before the gate held it are not served b while it is held (they
    would bypass the gate): they get fresh decisions, as a paused arm's units do."""
    await _create(client, exploration={"min_share": 0.05, "gate_min_samples": 100})
    stuck = []
    for i in range(60):
        answer = await _ok(await client.post("/v1/experiments/g/allocate", json={
            "unit": f"u{i}", "sticky": True}))
        if answer["decisions"][0]["arm"] == "b":
            stuck.append(f"u{i}")
    assert stuck
    await _held(client, clicks=False)
    served = []
    for unit in stuck:
        answer = await _ok(await client.post("/v1/experiments/g/allocate", json={
            "unit": unit, "sticky": True}))
        served.append(answer["decisions"][0])
    # Fresh draws: b at its floor of 5%; about 20 units, so more than 4 of them on b has
    # probability 0.003 (and before the fix, all of them were).
    assert sum(d["arm"] == "b" for d in served) <= max(3, len(served) // 5)
    assert all(d["propensity"] == 0.05 for d in served if d["arm"] == "b")


async def test_a_release_for_too_few_observations_says_so_and_the_list_leads_feasibly(
        client: Client) -> None:
    """Raising gate_min_samples past the arm's observations releases it: the audit says why
    (not its P(violates), still ~1). The list's leader is the best feasible arm, not the held
    one with the best clicks (both found by the second attacker run)."""
    created = await _create(client, exploration={"min_share": 0.05, "gate_min_samples": 100})
    await _held(client)
    listed = await _ok(await client.get("/v1/experiments?summary=true"))
    [entry] = [e for e in listed["experiments"] if e["id"] == "g"]
    assert entry["summary"]["leader"]["arm"] == "c"
    await _ok(await client.patch("/v1/experiments/g", json={
        "version": created["version"], "exploration": {"gate_min_samples": 1000}}))
    await _settled(client, lambda s: not _arm(s, "b")["held"])
    audit = await _ok(await client.get("/v1/experiments/g/audit"))
    release = [e for e in audit["entries"] if e["action"] == "gate"][-1]
    assert release["changes"]["held"] == {"old": ["b"], "new": []}
    assert release["reason"] == ("b released: 200 observations of a guardrail metric, fewer "
                                 "than gate_min_samples (1000)")


async def test_pausing_a_held_arm_releases_it_and_the_audit_says_why(client: Client) -> None:
    """The first attacker run found the release logged as 'P(violates) 0.000' (a paused arm's
    P(violates) is not computed); the reason now says it was paused."""
    created = await _create(client, exploration={"min_share": 0.05, "gate_min_samples": 100})
    await _held(client)
    await _ok(await client.patch("/v1/experiments/g", json={
        "version": created["version"], "arms": {"pause": ["b"]}}))
    await _settled(client, lambda s: not _arm(s, "b")["held"])
    audit = await _ok(await client.get("/v1/experiments/g/audit"))
    release = [e for e in audit["entries"] if e["action"] == "gate"][-1]
    assert release["changes"]["held"] == {"old": ["b"], "new": []}
    assert release["reason"] == "b paused"
