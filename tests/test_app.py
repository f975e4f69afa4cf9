"""The HTTP API through a real aiohttp server and a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from collections import Counter
from typing import Any

import pytest
import scipy.stats
from aiohttp.test_utils import TestClient, TestServer

from bandit.api.app import SERVICE, create_app
from bandit.settings import Settings

Client = TestClient[Any, Any]


async def create(client: Client, experiment_id: str = "homepage", arms: int = 3,
                 **extra: Any) -> dict[str, Any]:
    body = {"id": experiment_id, "arms": [f"arm{i}" for i in range(arms)],
            "reward": "bernoulli", **extra}
    response = await client.post("/v1/experiments", json=body)
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def stats(client: Client, experiment_id: str = "homepage") -> dict[str, Any]:
    response = await client.get(f"/v1/experiments/{experiment_id}/stats")
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def events(client: Client, batch: list[Any]) -> dict[str, Any]:
    response = await client.post("/v1/events", json={"events": batch})
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def wait_for_revision(client: Client, predicate: Any, experiment_id: str = "homepage",
                            timeout_s: float = 2.0) -> dict[str, Any]:
    """Stats once ``predicate(stats)`` holds (the cache refreshes every 50 ms in tests)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = await stats(client, experiment_id)
        if predicate(result) or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.02)


def error_of(body: dict[str, Any]) -> str:
    return str(body["error"]["message"])


# -- experiments -----------------------------------------------------------------------------


async def test_create_show_list(client: Client) -> None:
    created = await create(client)
    assert created["version"] == 1
    assert [arm["state"] for arm in created["arms"]] == ["active"] * 3
    assert created["prior"] == {"alpha": 1.0, "beta": 1.0}
    shown = await (await client.get("/v1/experiments/homepage")).json()
    assert shown == created
    listing = await (await client.get("/v1/experiments")).json()
    assert [e["id"] for e in listing["experiments"]] == ["homepage"]


async def test_duplicate_id_conflicts_and_keeps_the_original(client: Client) -> None:
    await create(client, arms=3)
    response = await client.post("/v1/experiments", json={
        "id": "homepage", "arms": ["x", "y"], "reward": "gaussian"})
    assert response.status == 409
    assert "already exists" in error_of(await response.json())
    shown = await (await client.get("/v1/experiments/homepage")).json()
    assert len(shown["arms"]) == 3 and shown["reward"] == "bernoulli"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"id": "e", "arms": ["a"], "reward": "bernoulli"}, "need 2 to 1000 arms"),
        ({"id": "e", "arms": [f"a{i}" for i in range(1001)], "reward": "bernoulli"},
         "need 2 to 1000 arms"),
        ({"id": "Bad Id", "arms": ["a", "b"], "reward": "bernoulli"}, "does not match"),
        ({"id": "e", "arms": ["a", "B!"], "reward": "bernoulli"}, "arms[1]"),
        ({"id": "e", "arms": ["a", "a"], "reward": "bernoulli"}, "duplicate arm"),
        ({"id": "e", "arms": ["a", "b"], "reward": "poisson"}, "reward: must be one of"),
        ({"id": "e", "arms": ["a", "b"]}, "reward: required"),
        ({"id": "e", "arms": ["a", "b"], "reward": "bernoulli", "colour": 1}, "unknown field"),
        ({"id": "e", "arms": ["a", "b", "c"], "reward": "bernoulli",
          "exploration": {"min_share": 0.4}}, "min_share: 0.4 * 3 active arms > 1"),
        ({"id": "e", "arms": ["a", "b"], "reward": "bernoulli",
          "exploration": {"max_share": 0.3}}, "caps cannot add up"),
        ({"id": "e", "arms": ["a", "b"], "reward": "bernoulli",
          "exploration": {"min_share": 0.4, "max_share": 0.3}}, "above max_share"),
        ({"id": "e", "arms": ["a", "b"], "reward": "bernoulli",
          "exploration": {"epsilon": 1.5}}, "epsilon: must be <= 1"),
        ({"id": "e", "arms": ["a", "b"], "reward": "bernoulli",
          "exploration": {"control": {"arm": "zz", "share": 0.2}}}, "is not an arm"),
        ({"id": "e", "arms": ["a", "b"], "reward": "bernoulli",
          "prior": {"alpha": -1}}, "prior.alpha"),
        ([1, 2], "expected an object"),
    ],
)
async def test_invalid_experiments_are_refused_with_422(
    client: Client, body: Any, message: str
) -> None:
    response = await client.post("/v1/experiments", json=body)
    assert response.status == 422
    assert message in error_of(await response.json())
    assert (await (await client.get("/v1/experiments")).json())["experiments"] == []


@pytest.mark.parametrize(
    "raw", [b"{not json", b"", b'{"id": NaN}', b"\xff\xfe", b'{"id": "e", "arms": ["a", "b"], '
            b'"reward": "bernoulli", "prior": {"alpha": 1e999}}', b'{"n": Infinity}'])
async def test_malformed_json_is_400(client: Client, raw: bytes) -> None:
    response = await client.post("/v1/experiments", data=raw,
                                 headers={"Content-Type": "application/json"})
    assert response.status == 400
    body = await response.json()
    assert body["error"]["code"] == "malformed"


async def test_unknown_experiment_route_and_method(client: Client) -> None:
    for method, path in [("GET", "/v1/experiments/nope"), ("GET", "/v1/experiments/nope/stats"),
                         ("POST", "/v1/experiments/nope/allocate"), ("GET", "/v2/whatever")]:
        response = await client.request(method, path)
        assert response.status == 404, path
        assert (await response.json())["error"]["code"] == "not_found"
    response = await client.put("/v1/experiments")
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_body_over_the_configured_size_is_413(client: Client) -> None:
    await create(client)
    padding = "x" * (17 * 1024 * 1024)
    response = await client.post("/v1/events",
                                 data=io.BytesIO(f'{{"pad": "{padding}"}}'.encode()),
                                 headers={"Content-Type": "application/json"})
    assert response.status == 413



async def test_a_small_limit_holds_for_bodies_that_arrive_whole(settings: Settings) -> None:
    """A body already received when the handler runs is taken without request.read() (the
    fast path): the size limit must hold there too, and changes nothing."""
    small = dataclasses.replace(settings, max_body_bytes=1024)
    async with TestClient(TestServer(create_app(small, seed=1))) as client:
        await create(client)
        event = {"id": "e1", "experiment": "homepage", "arm": "arm0", "reward": 1}
        padded = json.dumps({"events": [event], "pad": "x" * 2000})
        response = await client.post("/v1/events", data=padded,
                                     headers={"Content-Type": "application/json"})
        assert response.status == 413, await response.text()
        assert "1024 bytes" in error_of(await response.json())
        # Exactly the limit is read (and its unknown field refused with a 422, not a 413).
        body = json.dumps({"events": [event]})
        exact = body[:-1] + ', "pad": "' + "x" * (1024 - len(body) - 11) + '"}'
        assert len(exact) == 1024
        response = await client.post("/v1/events", data=exact,
                                     headers={"Content-Type": "application/json"})
        assert response.status == 422, await response.text()
        assert "unknown field" in error_of(await response.json())
        assert (await stats(client))["arms"][0]["n"] == 0


# -- decisions -------------------------------------------------------------------------------


async def test_allocate_single_batch_and_slate(client: Client) -> None:
    await create(client, arms=4)
    one = await (await client.post("/v1/experiments/homepage/allocate")).json()
    assert one["version"] == 1
    [decision] = one["decisions"]
    assert decision["arm"] in {"arm0", "arm1", "arm2", "arm3"}
    # A fresh experiment has identical posteriors: Thompson gives each arm 1/4.
    assert decision["propensity"] == pytest.approx(0.25, abs=1e-6)
    many = await (await client.post("/v1/experiments/homepage/allocate",
                                    json={"n": 10_000})).json()
    assert len(many["decisions"]) == 10_000
    assert len({d["decision_id"] for d in many["decisions"]}) == 10_000
    slate = await (await client.post("/v1/experiments/homepage/allocate",
                                     json={"n": 3, "k": 4})).json()
    for decision in slate["decisions"]:
        assert sorted(decision["arms"]) == ["arm0", "arm1", "arm2", "arm3"]
        # Plackett-Luce over equal probabilities: 1/4 * 1/3 * 1/2 * 1.
        assert decision["propensity"] == pytest.approx(1 / 24, rel=1e-6)


async def test_single_decisions_drawn_ahead_follow_the_shares_and_take_rewards(
        client: Client) -> None:
    """A busy experiment's single decisions are drawn ahead in runs (decisions._DrawnAhead):
    they must still follow the shares, carry them as propensities, and each id must take
    exactly one reward."""
    await create(client)
    outcomes = [("arm0", 12), ("arm1", 10), ("arm2", 8)]  # successes of 40 each
    await events(client, [{"id": f"seed-{arm}-{i}", "experiment": "homepage", "arm": arm,
                           "reward": int(i < wins)} for arm, wins in outcomes
                          for i in range(40)])
    before = await wait_for_revision(client, lambda s: sum(a["n"] for a in s["arms"]) == 120)
    shares = {arm["arm"]: arm["share"] for arm in before["arms"]}
    assert min(shares.values()) > 0.01 and max(shares.values()) < 0.99, shares

    async def one() -> dict[str, Any]:
        response = await client.post("/v1/experiments/homepage/allocate")
        assert response.status == 200, await response.text()
        [decision] = (await response.json())["decisions"]
        return dict(decision)

    decisions: list[dict[str, Any]] = []
    service = client.app[SERVICE]
    drew_ahead = False
    for _ in range(20):
        decisions += await asyncio.gather(*(one() for _ in range(100)))
        ahead = service.decisions._ahead["d"].get("homepage")
        drew_ahead = drew_ahead or (ahead is not None and len(ahead.arms) > 0)
    assert drew_ahead, "no run of decisions was drawn ahead"
    assert all(d["propensity"] == shares[d["arm"]] for d in decisions)
    # Counts against the shares: chi-square with 2 degrees of freedom, refused below p = 1e-6
    # (seeded service, so this cannot flake; a wrong draw or a skipped one fails it).
    n = len(decisions)
    counts = Counter(d["arm"] for d in decisions)
    statistic = sum((counts[arm] - n * p) ** 2 / (n * p) for arm, p in shares.items())
    assert scipy.stats.chi2.sf(statistic, df=len(shares) - 1) > 1e-6, (counts, shares)
    # Every id is valid and new: each takes its reward once, and a second time is a duplicate.
    rewards = [{"id": f"r{i}", "experiment": "homepage", "arm": d["arm"], "reward": 1,
                "decision_id": d["decision_id"]} for i, d in enumerate(decisions)]
    assert len({r["decision_id"] for r in rewards}) == n
    for start in range(0, n, 1000):
        result = await events(client, rewards[start:start + 1000])
        assert result["accepted"] == len(rewards[start:start + 1000]), result
    again = await events(client, [{**rewards[0], "id": "r-again"}])
    assert again["accepted"] == 0 and len(again["rejected"]) == 1, again


@pytest.mark.parametrize(
    ("body", "message"),
    [({"n": 0}, "n: must be between 1 and 10000"), ({"n": 10_001}, "n: must be between"),
     ({"n": 1.5}, "n: expected an integer"), ({"k": 0}, "k: must be between"),
     ({"k": 4}, "k: 4 is more than the 3 arms"), ({"sticky": True}, "sticky: needs a unit"),
     ({"unit": ""}, "unit: expected a string"), ({"surprise": 1}, "unknown field")],
)
async def test_allocate_refuses_out_of_range_requests(
    client: Client, body: dict[str, Any], message: str
) -> None:
    await create(client)
    response = await client.post("/v1/experiments/homepage/allocate", json=body)
    assert response.status == 422
    assert message in error_of(await response.json())


async def test_sticky_units_keep_their_arm(client: Client) -> None:
    await create(client, arms=10)
    first = await (await client.post("/v1/experiments/homepage/allocate",
                                     json={"unit": "user-1", "sticky": True})).json()
    arm = first["decisions"][0]["arm"]
    for _ in range(20):
        again = await (await client.post("/v1/experiments/homepage/allocate",
                                         json={"unit": "user-1", "sticky": True})).json()
        assert again["decisions"][0]["arm"] == arm
        assert again["decisions"][0]["propensity"] == first["decisions"][0]["propensity"]
    others = set()
    for unit in range(40):
        result = await (await client.post("/v1/experiments/homepage/allocate",
                                          json={"unit": f"u{unit}", "sticky": True})).json()
        others.add(result["decisions"][0]["arm"])
    assert len(others) > 1  # stickiness is per unit, not one arm for everyone
    # Every sticky decision is counted as served once, the first one included (its
    # assignment is proposed to Redis without being served itself).
    await client.post("/v1/experiments/homepage/allocate", json={"unit": "k", "sticky": True,
                                                                "k": 2, "n": 3})
    served = await wait_for_revision(
        client, lambda s: sum(a["served"] for a in s["arms"]) >= 1 + 20 + 40 + 6)
    assert sum(a["served"] for a in served["arms"]) == 1 + 20 + 40 + 6


# -- rewards ---------------------------------------------------------------------------------


async def test_events_are_applied_once_and_bad_ones_reported_by_index(client: Client) -> None:
    await create(client)
    batch = [
        {"id": "e1", "experiment": "homepage", "arm": "arm0", "reward": 1},
        {"id": "e2", "experiment": "homepage", "arm": "arm0", "reward": 0},
        {"id": "e3", "experiment": "homepage", "arm": "arm1", "reward": 1.5},
        {"id": "e4", "experiment": "homepage", "arm": "nope", "reward": 1},
        {"id": "e5", "experiment": "missing", "arm": "arm0", "reward": 1},
        {"id": "e6", "experiment": "homepage", "arm": "arm1", "reward": "1"},
        {"id": "", "experiment": "homepage", "arm": "arm1", "reward": 1},
        {"id": "e1", "experiment": "homepage", "arm": "arm0", "reward": 1},
        {"id": "e7", "experiment": "homepage", "arm": "arm2", "reward": 0.25},
        "not an object",
    ]
    result = await events(client, batch)
    assert result["accepted"] == 3
    assert result["duplicates"] == 1
    assert [r["index"] for r in result["rejected"]] == [2, 3, 4, 5, 6, 9]
    messages = [r["error"] for r in result["rejected"]]
    assert "outside [0, 1]" in messages[0]
    assert "'nope' is not an arm" in messages[1]
    assert "does not exist" in messages[2]
    assert "expected a number" in messages[3]
    retried = await events(client, batch)
    assert retried["accepted"] == 0 and retried["duplicates"] == 4
    result_stats = await wait_for_revision(client, lambda s: s["arms"][0]["n"] == 2)
    arms = result_stats["arms"]
    assert [arm["n"] for arm in arms] == [2, 0, 1]
    # Beta(1 + 1, 1 + 1) and Beta(1 + 0.25, 1 + 0.75): fractional rewards count fractionally.
    assert arms[0]["mean"] == pytest.approx(0.5)
    assert arms[2]["mean"] == pytest.approx(1.25 / 3)


@pytest.mark.parametrize(
    ("raw", "status"),
    [(b'{"events": {"a": 1}}', 422), (b'{"events": [], "extra": 1}', 422), (b"[]", 422),
     (b'{"events": [{"id": "e", "experiment": "homepage", "arm": "arm0", "reward": NaN}]}',
      400)],
)
async def test_event_batches_of_the_wrong_shape(client: Client, raw: bytes, status: int) -> None:
    await create(client)
    response = await client.post("/v1/events", data=raw,
                                 headers={"Content-Type": "application/json"})
    assert response.status == status


async def test_infinite_reward_is_refused_and_changes_nothing(client: Client) -> None:
    await client.post("/v1/experiments", json={"id": "revenue", "arms": ["a", "b"],
                                               "reward": "gaussian"})
    raw = (b'{"events": [{"id": "ok", "experiment": "revenue", "arm": "a", "reward": 1},'
           b'{"id": "e", "experiment": "revenue", "arm": "a", "reward": 1e999}]}')
    response = await client.post("/v1/events", data=raw,
                                 headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert "infinity" in error_of(await response.json())
    await asyncio.sleep(0.2)
    assert (await stats(client, "revenue"))["arms"][0]["n"] == 0


async def test_too_many_events_is_422_and_applies_nothing(client: Client) -> None:
    """A list over its maxItems is an invalid value (422), as the OpenAPI document says; 413
    is for a body over the byte limit (schemathesis found the two disagreeing)."""
    await create(client)
    batch = [{"id": f"e{i}", "experiment": "homepage", "arm": "arm0", "reward": 1}
             for i in range(10_001)]
    response = await client.post("/v1/events", json={"events": batch})
    assert response.status == 422
    assert (await response.json())["error"]["message"] == (
        "events: at most 10000 events per batch, got 10001")
    await asyncio.sleep(0.2)
    assert (await stats(client))["arms"][0]["n"] == 0


async def test_gaussian_rewards(client: Client) -> None:
    response = await client.post("/v1/experiments", json={
        "id": "revenue", "arms": ["a", "b"], "reward": "gaussian"})
    assert response.status == 201
    rewards = [10.0, 12.0, 11.0, 13.0, 9.0]
    await events(client, [{"id": f"r{i}", "experiment": "revenue", "arm": "a", "reward": r}
                          for i, r in enumerate(rewards)])
    await events(client, [{"id": f"b{i}", "experiment": "revenue", "arm": "b", "reward": r - 9}
                          for i, r in enumerate(rewards)])
    result = await wait_for_revision(client, lambda s: s["arms"][1]["n"] == 5, "revenue")
    arm = result["arms"][0]
    # Normal-Gamma with kappa0 = 0.01 at mean 0: posterior mean = 5 * 11 / 5.01.
    assert arm["mean"] == pytest.approx(5 * 11 / 5.01)
    assert arm["ci95"][0] < arm["mean"] < arm["ci95"][1]
    # Means 11 and 2 with a spread of about 1.6: arm b is practically never better.
    assert result["arms"][0]["p_best"] > 0.999


async def test_provisional_failure_converts_once(client: Client) -> None:
    await create(client, arms=2)
    decision = (await (await client.post("/v1/experiments/homepage/allocate",
                                         json={"provisional": True})).json())["decisions"][0]
    assert decision["decision_id"].startswith("p")
    arm = decision["arm"]
    index = int(arm[-1])
    served = await wait_for_revision(client, lambda s: s["arms"][index]["n"] == 1)
    # Counted as a failure when served: Beta(1, 2).
    assert served["arms"][index]["mean"] == pytest.approx(1 / 3)
    other = "arm0" if arm == "arm1" else "arm1"
    wrong = await events(client, [{"id": "c0", "experiment": "homepage", "arm": other,
                                   "reward": 1, "decision_id": decision["decision_id"]}])
    assert wrong["accepted"] == 0 and wrong["rejected"][0]["error"] == (
        f"decision_id: not a decision this service served for experiment 'homepage' and arm "
        f"{other!r}")
    converted = await events(client, [{"id": "c1", "experiment": "homepage", "arm": arm,
                                       "reward": 1, "decision_id": decision["decision_id"]}])
    assert converted["accepted"] == 1
    again = await events(client, [{"id": "c2", "experiment": "homepage", "arm": arm,
                                   "reward": 1, "decision_id": decision["decision_id"]}])
    assert again["accepted"] == 0 and again["duplicates"] == 1
    result = await wait_for_revision(
        client, lambda s: s["arms"][index]["mean"] > 0.5)
    assert result["arms"][index]["n"] == 1
    assert result["arms"][index]["mean"] == pytest.approx(2 / 3)  # Beta(2, 1)
    made_up = await events(client, [{"id": "c3", "experiment": "homepage", "arm": arm,
                                     "reward": 1, "decision_id": "p0123abc"}])
    assert "is not a decision id this service issued" in made_up["rejected"][0]["error"]


# -- settings --------------------------------------------------------------------------------


async def test_patch_changes_settings_and_refuses_stale_versions(client: Client) -> None:
    await create(client, arms=3)
    response = await client.patch("/v1/experiments/homepage", json={
        "version": 1, "exploration": {"epsilon": 0.3}, "arms": {"pause": ["arm2"]},
        "reason": "test"})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["version"] == 2
    assert body["exploration"]["epsilon"] == 0.3
    assert body["changes"]["exploration.epsilon"] == {"old": 0.0, "new": 0.3}
    stale = await client.patch("/v1/experiments/homepage", json={
        "version": 1, "exploration": {"epsilon": 0.1}})
    assert stale.status == 409
    assert "version 2, not 1" in error_of(await stale.json())
    result = await wait_for_revision(client, lambda s: s["version"] == 2)
    shares = [arm["share"] for arm in result["arms"]]
    assert shares[2] == 0.0 and shares[0] == pytest.approx(0.5)
    decisions = await (await client.post("/v1/experiments/homepage/allocate",
                                         json={"n": 2000})).json()
    assert "arm2" not in {d["arm"] for d in decisions["decisions"]}


@pytest.mark.parametrize(
    ("patch", "message"),
    [({"exploration": {"min_share": 0.5}}, "min_share"),
     ({"arms": {"pause": ["arm0", "arm1", "arm2"]}}, "at least one arm"),
     ({"arms": {"pause": ["zzz"]}}, "unknown arm"),
     ({"arms": {"add": ["arm0"]}}, "already exist"),
     ({"exploration": {"control": {"arm": "arm0", "share": 0.5}}, "arms": {"pause": ["arm0"]}},
      "must stay active"),
     ({"exploration": {"temperature": 0}}, "temperature")],
)
async def test_invalid_patches_change_nothing(
    client: Client, patch: dict[str, Any], message: str
) -> None:
    await create(client)
    response = await client.patch("/v1/experiments/homepage", json={"version": 1, **patch})
    assert response.status == 422
    assert message in error_of(await response.json())
    shown = await (await client.get("/v1/experiments/homepage")).json()
    assert shown["version"] == 1


async def test_added_arm_receives_traffic_and_rewards(client: Client) -> None:
    await create(client, arms=2)
    response = await client.patch("/v1/experiments/homepage", json={
        "version": 1, "arms": {"add": ["arm9"]}})
    assert response.status == 200
    result = await events(client, [{"id": "n1", "experiment": "homepage", "arm": "arm9",
                                    "reward": 1}])
    assert result["accepted"] == 1
    final = await wait_for_revision(client, lambda s: len(s["arms"]) == 3
                                    and s["arms"][2]["n"] == 1)
    assert final["arms"][2]["n"] == 1


async def test_control_share_is_exact(client: Client) -> None:
    await create(client, arms=4, exploration={"control": {"arm": "arm0", "share": 0.4}})
    result = await stats(client)
    assert result["arms"][0]["share"] == pytest.approx(0.4, abs=1e-12)
    assert sum(a["share"] for a in result["arms"]) == pytest.approx(1.0, abs=1e-12)


async def test_archive(client: Client) -> None:
    await create(client)
    response = await client.delete("/v1/experiments/homepage")
    assert response.status == 200
    assert (await response.json())["status"] == "archived"
    allocate = await client.post("/v1/experiments/homepage/allocate")
    assert allocate.status == 404
    result = await events(client, [{"id": "a1", "experiment": "homepage", "arm": "arm0",
                                    "reward": 1}])
    assert result["accepted"] == 0 and "archived" in result["rejected"][0]["error"]


# -- operations ------------------------------------------------------------------------------


async def test_health_readiness_metrics_openapi(client: Client) -> None:
    await create(client)
    await client.post("/v1/experiments/homepage/allocate", json={"n": 5})
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'bandit_decisions_total{experiment="homepage"} 5.0' in metrics
    allocate_route = 'route="/v1/experiments/{id}/allocate",status="200"'
    assert f"bandit_request_seconds_count{{{allocate_route}}} 1.0" in metrics
    document = await (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    routes = {(path, method) for path, item in document["paths"].items() for method in item
              if method != "parameters"}
    # (Not HEAD, the catch-all, nor the CORS preflight: no operations of the API.)
    registered = {(r.resource.canonical, r.method.lower()) for r in client.app.router.routes()
                  if r.method not in ("HEAD", "*", "OPTIONS") and r.resource is not None}
    assert routes == registered


# -- audit -----------------------------------------------------------------------------------


async def test_audit_records_every_change_with_old_and_new_values(client: Client) -> None:
    await create(client, arms=3)
    first = await client.patch("/v1/experiments/homepage", json={
        "version": 1, "exploration": {"epsilon": 0.1}, "arms": {"pause": ["arm2"]},
        "reason": "too many complaints"})
    assert first.status == 200
    refused = [
        await client.patch("/v1/experiments/homepage", json={"version": 1,
                                                             "exploration": {"epsilon": 0.3}}),
        await client.patch("/v1/experiments/homepage", json={"version": 2,
                                                             "exploration": {"min_share": 0.9}}),
    ]
    assert [r.status for r in refused] == [409, 422]
    assert (await client.delete("/v1/experiments/homepage")).status == 200
    response = await client.get("/v1/experiments/homepage/audit")
    assert response.status == 200
    entries = (await response.json())["entries"]
    # Refused changes leave no trace; each accepted one is there, in order, with its version.
    assert [(e["action"], e["version"]) for e in entries] == [
        ("create", 1), ("update", 2), ("archive", 3)]
    assert all(e["actor"] == "anonymous" and e["at"] > 0 for e in entries)
    assert entries[0]["changes"]["arms"]["new"][0] == {"id": "arm0", "state": "active"}
    assert entries[1]["changes"] == {
        "exploration.epsilon": {"old": 0.0, "new": 0.1},
        "arms.arm2": {"old": "active", "new": "paused"},
    }
    assert entries[1]["reason"] == "too many complaints"
    assert entries[2]["changes"] == {"status": {"old": "active", "new": "archived"}}


async def test_audit_of_an_unknown_experiment_is_404(client: Client) -> None:
    response = await client.get("/v1/experiments/nope/audit")
    assert response.status == 404


async def test_stats_report_decisions_served(client: Client) -> None:
    await create(client, arms=2)
    await client.post("/v1/experiments/homepage/allocate", json={"n": 50})
    await client.post("/v1/experiments/homepage/allocate", json={"k": 2})
    await asyncio.sleep(0.3)  # the fixture flushes served counts every 0.1 s
    served = [arm["served"] for arm in (await stats(client))["arms"]]
    assert sum(served) == 52  # 50 single decisions and one slate holding both arms


async def test_stats_name_the_call_rule_without_a_winner(client: Client) -> None:
    await create(client, arms=2)
    body = await stats(client)
    assert body["winner"] is None  # no data: both arms at P(best) 0.5
    # Prior means 0.5 each: the default loss bound is 1% of the best mean.
    assert body["call_rule"] == {"threshold": 0.95, "max_loss": pytest.approx(0.005)}


# -- input hardening (found by tests/test_schemathesis.py) -----------------------------------


async def test_integral_numbers_count_as_integers(client: Client) -> None:
    # JSON has one number type: 3.0 is the integer 3 (as JSON Schema says), 1.5 is not.
    await create(client)
    result = await (await client.post("/v1/experiments/homepage/allocate",
                                      json={"n": 3.0})).json()
    assert len(result["decisions"]) == 3
    changed = await client.patch("/v1/experiments/homepage",
                                 json={"version": 1.0, "exploration": {"warmup": 10.0}})
    assert changed.status == 200
    assert (await changed.json())["exploration"]["warmup"] == 10


async def test_rewards_too_large_for_the_posterior_are_refused(client: Client) -> None:
    # 1e200 squared overflows the Normal-Gamma sums: it broke the experiment for good (the
    # posteriors could not be read back, so every later reward was accepted and ignored).
    await client.post("/v1/experiments", json={"id": "revenue", "arms": ["a", "b"],
                                               "reward": "gaussian"})
    result = await events(client, [
        {"id": "big", "experiment": "revenue", "arm": "a", "reward": 1e200},
        {"id": "edge", "experiment": "revenue", "arm": "a", "reward": -1e15},
        {"id": "ok", "experiment": "revenue", "arm": "b", "reward": 2.5}])
    assert result["accepted"] == 2
    assert result["rejected"] == [{"index": 0, "error": "reward: must be a finite number "
                                                        "within ±1e+15"}]
    body = await wait_for_revision(client, lambda s: s["arms"][1]["n"] == 1, "revenue")
    assert [arm["n"] for arm in body["arms"]] == [1, 1]
    assert all(arm["mean"] is not None for arm in body["arms"])


@pytest.mark.parametrize(("reward", "prior", "message"), [
    # Denormal parameters made the kernels divide by zero: 500 on every decision.
    ("bernoulli", {"alpha": 5e-324}, "prior.alpha: must be >= 1e-06"),
    ("gaussian", {"kappa": 1e13}, "prior.kappa: must be <= 1000000000000.0"),
    ("gaussian", {"mean": 1e308}, "prior.mean: must be <= 1000000000000000.0"),
    # The advisor's draws of the noise precision underflowed to 0: 500 on advise.
    ("gaussian", {"alpha": 0.001}, "prior.alpha: must be >= 0.05"),
])
async def test_priors_the_kernels_cannot_use_are_refused(
    client: Client, reward: str, prior: dict[str, float], message: str
) -> None:
    response = await client.post("/v1/experiments", json={
        "id": "e", "arms": ["a", "b"], "reward": reward, "prior": prior})
    assert response.status == 422
    assert error_of(await response.json()).startswith(message)


@pytest.mark.parametrize(("query", "message"), [
    # "inf" parsed as a number, and the stats answered "max_loss": null.
    ("stats?max_loss=inf", "max_loss: must be a finite number, got inf"),
    ("stats?threshold=nan", "threshold: must be a finite number, got nan"),
    ("history?since=1e999", "since: must be a finite number, got 1e999"),
    ("history?limit=1.5", "limit: expected a whole number, got 1.5"),
])
async def test_query_numbers_are_finite(client: Client, query: str, message: str) -> None:
    await create(client)
    response = await client.get(f"/v1/experiments/homepage/{query}")
    assert response.status == 422
    assert error_of(await response.json()) == message


async def test_advise_refuses_a_traffic_rate_with_no_finite_horizon(client: Client) -> None:
    # 5e-324 decisions/s made the horizon in seconds infinite: "horizon_s": null.
    await create(client)
    response = await client.post("/v1/experiments/homepage/advise", json={
        "traffic_per_s": 5e-324, "decisions": 10, "reps": 10})
    assert response.status == 422
    assert error_of(await response.json()).startswith("traffic_per_s: must be >= 1e-06")


async def test_advise_with_a_reward_delay_far_beyond_the_horizon(client: Client) -> None:
    # 30 days at 10 million decisions/s: the simulation sized its pending-reward heap for a
    # delay of 2.6e13 decisions and failed to allocate it (500).
    await create(client)
    response = await client.post("/v1/experiments/homepage/advise", json={
        "traffic_per_s": 1e7, "reward_delay_s": 30 * 86_400, "decisions": 1000, "reps": 10})
    assert response.status == 200, await response.text()
    assert (await response.json())["assumptions"]["reward_delay_s"] == 30 * 86_400
