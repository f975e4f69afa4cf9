"""What the service reports of a contextual experiment, through HTTP: the stats' shares (the
average propensity served), coefficient posteriors and segments, history samples with segments,
the list's summary, the health checks, and the advisor's refusal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bandit.api.app import create_app
from bandit.features import parse_model
from bandit.settings import Settings

Client = TestClient[Any, Any]
INTERVAL = 0.2

MODEL = {"type": "linear", "features": [
    {"name": "region", "type": "categorical", "values": ["eu", "us"]},
    {"name": "device", "type": "categorical", "values": ["mobile"], "default": "desktop"},
    {"name": "recency", "type": "numeric", "scale": [0, 30], "default": 0},
]}
COLUMNS = ["intercept", "region=eu", "region=us", "region=other", "device=mobile",
           "device=other", "recency"]


@pytest.fixture
async def sampled(redis_url: str) -> AsyncIterator[Client]:
    """A service sampling its history every 0.2 s."""
    settings = Settings(redis_url=redis_url, refresh_interval_s=0.05,
                        served_flush_interval_s=0.05, history_interval_s=INTERVAL,
                        history_fine_interval_s=INTERVAL)
    async with TestClient(TestServer(create_app(settings, seed=7))) as client:
        yield client


async def _create(client: Client, experiment_id: str, arms: list[str] | None = None,
                  **extra: Any) -> None:
    response = await client.post("/v1/experiments", json={
        "id": experiment_id, "arms": arms or ["a", "b", "c"], "reward": "bernoulli",
        "model": MODEL, **extra})
    assert response.status == 201, await response.text()


async def _allocate(client: Client, experiment_id: str, context: dict[str, Any],
                    n: int = 1) -> list[dict[str, Any]]:
    response = await client.post(f"/v1/experiments/{experiment_id}/allocate",
                                 json={"n": n, "context": context})
    assert response.status == 200, await response.text()
    return list((await response.json())["decisions"])


async def _get(client: Client, path: str, status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status == status, await response.text()
    return await response.json()


async def _flushed(client: Client, experiment_id: str, decisions: int) -> dict[str, Any]:
    """The stats once the served counts of ``decisions`` decisions reached Redis."""
    for _ in range(100):
        stats = await _get(client, f"/v1/experiments/{experiment_id}/stats")
        if sum(arm["served"] for arm in stats["arms"]) >= decisions:
            return dict(stats)
        await asyncio.sleep(0.05)
    raise AssertionError("served counts not flushed")


async def _reward(client: Client, experiment_id: str, world: dict[str, list[float]],
                  rounds: int, rng: np.random.Generator) -> None:
    """Decisions and rewards: region r rewards arm i with probability world[r][i]."""
    arms = "abc"
    for round_number in range(rounds):
        events = []
        for region, rates in world.items():
            context = {"region": region, "recency": float(rng.uniform(0, 30))}
            for j, decision in enumerate(await _allocate(client, experiment_id, context, 30)):
                rate = rates[arms.index(decision["arm"])]
                events.append({"id": f"{round_number}-{region}-{j}",
                               "experiment": experiment_id, "arm": decision["arm"],
                               "decision_id": decision["decision_id"],
                               "reward": int(rng.random() < rate), "context": context})
        answer = await (await client.post("/v1/events", json={"events": events})).json()
        assert answer["accepted"] == len(events), answer
        await asyncio.sleep(0.06)


async def test_the_stats_report_coefficients_segments_and_the_propensity_served(
    client: Client,
) -> None:
    await _create(client, "ctx-stats")
    before = await _get(client, "/v1/experiments/ctx-stats/stats")
    # Nothing drawn yet: no average propensity; every segment empty.
    assert [arm["share"] for arm in before["arms"]] == [None, None, None]
    assert before["model"]["columns"] == COLUMNS
    assert before["model"]["columns"] == parse_model(MODEL, "bernoulli").columns()
    assert [segment["feature"] for segment in before["segments"]] == ["region", "device"]
    assert [v["value"] for v in before["segments"][0]["values"]] == ["eu", "us", "other"]
    assert all(v["decisions"] == 0 and v["share"] == [None] * 3
               for segment in before["segments"] for v in segment["values"])

    # 30 decisions from identical priors (1/3 each), then c is paused and 60 more are drawn
    # (1/2 each for a and b): the average propensities are exact.
    for region in ("eu", "us", "mars"):
        await _allocate(client, "ctx-stats", {"region": region}, 10)
    response = await client.patch("/v1/experiments/ctx-stats", json={
        "version": 1, "arms": {"pause": ["c"]}})
    assert response.status == 200, await response.text()
    for _ in range(3):
        await _allocate(client, "ctx-stats", {"region": "eu", "device": "mobile"}, 20)
    stats = await _flushed(client, "ctx-stats", 90)
    shares = [arm["share"] for arm in stats["arms"]]
    assert shares == pytest.approx([4 / 9, 4 / 9, 1 / 9])
    region, device = stats["segments"]
    served = {v["value"]: v for v in region["values"]}
    assert served["eu"]["decisions"] == 70
    assert served["us"]["decisions"] == 10
    assert served["other"]["decisions"] == 10  # "mars" is not a declared value
    devices = {v["value"]: v["decisions"] for v in device["values"]}
    assert devices == {"mobile": 60, "other": 30}  # the default, "desktop", is undeclared
    for segment in stats["segments"]:
        assert sum(v["decisions"] for v in segment["values"]) == 90
        total = np.sum([v["served"] for v in segment["values"]], axis=0)
        assert total.tolist() == [arm["served"] for arm in stats["arms"]]
        for v in segment["values"]:
            assert sum(v["served"]) == v["decisions"]
            assert v["share"] == pytest.approx([c / v["decisions"] for c in v["served"]])
    assert served["eu"]["served"][2] <= 10  # c was paused for 60 of eu's 70
    # Every field of the context-free stats is still there, for the marginals.
    assert [arm["n"] for arm in stats["arms"]] == [0, 0, 0]
    assert stats["winner"] is None
    assert stats["health"]["rewards"] is None or stats["health"]["rewards"]["stalled"] is False


async def test_the_coefficients_learn_each_segment_and_ignore_the_temperature(
    client: Client,
) -> None:
    world = {"eu": [0.9, 0.1, 0.1], "us": [0.1, 0.9, 0.1]}
    await _create(client, "plain", exploration={"min_share": 0.1})
    await _reward(client, "plain", world, 8, np.random.default_rng(5))
    stats = await _get(client, "/v1/experiments/plain/stats")
    model = stats["model"]
    assert model["columns"] == COLUMNS
    assert [arm["arm"] for arm in model["arms"]] == ["a", "b", "c"]
    eu, us = COLUMNS.index("region=eu"), COLUMNS.index("region=us")
    by_arm = {arm["arm"]: arm for arm in model["arms"]}
    for arm, stat in zip(model["arms"], stats["arms"], strict=True):
        assert arm["n"] == stat["n"] > 0
        assert len(arm["mean"]) == len(arm["ci95"]) == len(COLUMNS)
        for mean, (low, high) in zip(arm["mean"], arm["ci95"], strict=True):
            assert low < mean < high
    # a is the arm of eu, b the arm of us: their region coefficients say so.
    a, b = by_arm["a"], by_arm["b"]
    assert a["mean"][eu] - a["mean"][us] > 0.3
    assert b["mean"][us] - b["mean"][eu] > 0.3
    # The report is of the untempered posteriors (a temperature widens only the decisions'):
    # with the temperature changed, the same statistics report the same coefficients.
    version = (await _get(client, "/v1/experiments/plain"))["version"]
    response = await client.patch("/v1/experiments/plain", json={
        "version": version, "exploration": {"temperature": 4.0}})
    assert response.status == 200, await response.text()
    again = await _get(client, "/v1/experiments/plain/stats")
    for first, second in zip(model["arms"], again["model"]["arms"], strict=True):
        assert second["mean"] == pytest.approx(first["mean"], rel=1e-9, abs=1e-12)
        assert np.array(second["ci95"]) == pytest.approx(np.array(first["ci95"]), rel=1e-9,
                                                         abs=1e-12)


async def test_a_context_free_experiment_has_no_model_nor_segments(client: Client) -> None:
    response = await client.post("/v1/experiments", json={
        "id": "plain", "arms": ["a", "b"], "reward": "bernoulli"})
    assert response.status == 201
    stats = await _get(client, "/v1/experiments/plain/stats")
    assert stats["model"] is None and stats["segments"] is None
    assert [arm["share"] for arm in stats["arms"]] == [0.5, 0.5]


async def test_history_samples_carry_segments_and_the_propensity_served(
    sampled: Client,
) -> None:
    client = sampled
    await _create(client, "ctx-hist")
    response = await client.post("/v1/experiments", json={
        "id": "plain-hist", "arms": ["a", "b"], "reward": "bernoulli"})
    assert response.status == 201
    await _allocate(client, "plain-hist", {}, 5)
    for region in ("eu", "us"):
        await _allocate(client, "ctx-hist", {"region": region}, 10)
    await asyncio.sleep(3 * INTERVAL)
    await _allocate(client, "ctx-hist", {"region": "eu", "device": "mobile"}, 7)
    await asyncio.sleep(3 * INTERVAL)
    samples = (await _get(client, "/v1/experiments/ctx-hist/history"))["samples"]
    assert len(samples) >= 2
    last = samples[-1]
    assert last["segments"] == {"region=eu": _per_arm(last, "region=eu"),
                                "region=us": _per_arm(last, "region=us"),
                                "device=mobile": _per_arm(last, "device=mobile"),
                                "device=other": _per_arm(last, "device=other")}
    assert sum(last["segments"]["region=eu"]) == 17
    assert sum(last["segments"]["region=us"]) == 10
    assert sum(last["segments"]["device=mobile"]) == 7
    assert sum(last["segments"]["device=other"]) == 20
    # Each feature's segments add up to the served counts; a difference of two samples is
    # the allocation by segment in between.
    for feature in ("region", "device"):
        columns = [v for k, v in last["segments"].items() if k.startswith(f"{feature}=")]
        assert np.sum(columns, axis=0).tolist() == last["served"]
    first = next(s for s in samples if "region=eu" in s.get("segments", {}))
    grown = np.array(last["segments"]["region=eu"]) - np.array(first["segments"]["region=eu"])
    assert grown.sum() == 17 - sum(first["segments"]["region=eu"])
    # The average propensity so far: the identical priors give 1/3 each.
    assert last["share"] == pytest.approx([1 / 3] * 3)
    stats = await _get(client, "/v1/experiments/ctx-hist/stats")
    assert [arm["share"] for arm in stats["arms"]] == pytest.approx(last["share"])
    plain = (await _get(client, "/v1/experiments/plain-hist/history"))["samples"]
    assert plain and all("segments" not in s for s in plain)
    assert plain[-1]["share"] == [0.5, 0.5]
    # The health checks run on the contextual draws.
    ratio = stats["health"]["sample_ratio"]
    assert ratio is None or ratio["ok"]


def _per_arm(sample: dict[str, Any], segment: str) -> list[int]:
    counts = sample["segments"][segment]
    assert len(counts) == len(sample["arms"])
    return list(counts)


async def test_the_list_summary_and_health_of_a_contextual_experiment(
    sampled: Client,
) -> None:
    client = sampled
    await _create(client, "ctx-list")
    await _reward(client, "ctx-list", {"eu": [0.6, 0.2, 0.2], "us": [0.6, 0.2, 0.2]}, 6,
                  np.random.default_rng(2))
    await asyncio.sleep(3 * INTERVAL)
    await _allocate(client, "ctx-list", {"region": "eu"}, 30)
    await asyncio.sleep(3 * INTERVAL)
    page = await _get(client, "/v1/experiments?summary=true")
    [entry] = page["experiments"]
    summary = entry["summary"]
    assert summary["leader"]["arm"] == "a"
    assert summary["lift"] is not None and summary["lift"]["against"] in ("b", "c")
    assert summary["traffic_last_hour"]["decisions"] >= 360
    assert summary["health"]["rewards_stalled"] is False
    stats = await _get(client, "/v1/experiments/ctx-list/stats")
    ratio = stats["health"]["sample_ratio"]
    assert ratio is not None and ratio["ok"], ratio
    assert ratio["decisions"] >= 30  # (since the first sample)
    # The expected draws are the propensities actually served, not the marginals'.
    assert sum(ratio["expected"]) == pytest.approx(ratio["decisions"], abs=1)
    assert summary["health"]["sample_ratio_ok"] is True


async def test_advise_is_refused_for_a_contextual_experiment(client: Client) -> None:
    await _create(client, "ctx-adv")
    await _allocate(client, "ctx-adv", {"region": "eu"}, 5)
    response = await client.post("/v1/experiments/ctx-adv/advise",
                                 json={"exploration": {"epsilon": 0.1}})
    assert response.status == 422
    message = (await response.json())["error"]["message"]
    assert "not supported yet for contextual experiments" in message
    # An archived one is gone first (404), as for any experiment.
    assert (await client.delete("/v1/experiments/ctx-adv")).status == 200
    response = await client.post("/v1/experiments/ctx-adv/advise", json={})
    assert response.status == 404
