"""Contextual experiments through HTTP: create with a model, decide per context, reward with the
context again, learn a world whose best arm differs by segment."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]

MODEL = {"type": "linear", "features": [
    {"name": "region", "type": "categorical", "values": ["eu", "us", "apac"]},
    {"name": "recency", "type": "numeric", "scale": [0, 30], "default": 0},
]}


async def _create(client: Client, experiment_id: str, **extra: Any) -> dict[str, Any]:
    body = {"id": experiment_id, "arms": ["a", "b", "c"], "reward": "bernoulli",
            "model": MODEL, **extra}
    response = await client.post("/v1/experiments", json=body)
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def test_a_contextual_round_trip(client: Client) -> None:
    created = await _create(client, "ctx")
    assert created["model"]["dimension"] == 1 + 4 + 1
    response = await client.post("/v1/experiments/ctx/allocate",
                                 json={"context": {"region": "eu", "recency": 3}})
    assert response.status == 200, await response.text()
    [decision] = (await response.json())["decisions"]
    assert abs(decision["propensity"] - 1 / 3) < 1e-12  # identical priors
    event = {"id": "e1", "experiment": "ctx", "arm": decision["arm"], "reward": 1,
             "decision_id": decision["decision_id"],
             "context": {"region": "eu", "recency": 3}}
    answer = await (await client.post("/v1/events", json={"events": [event]})).json()
    assert answer == {"accepted": 1, "duplicates": 0, "rejected": []}
    again = await (await client.post("/v1/events", json={"events": [event] * 3})).json()
    assert again["accepted"] == 0 and again["duplicates"] == 3
    # Another context than the one served: refused, nothing changes.
    wrong = {**event, "id": "e2", "context": {"region": "us", "recency": 3}}
    answer = await (await client.post("/v1/events", json={"events": [wrong]})).json()
    assert answer["accepted"] == 0
    assert "with this context" in answer["rejected"][0]["error"]
    missing = {**event, "id": "e3"}
    del missing["context"]
    answer = await (await client.post("/v1/events", json={"events": [missing]})).json()
    assert "context.region: required" in answer["rejected"][0]["error"]


async def test_bad_contexts_answer_422(client: Client) -> None:
    await _create(client, "ctx-bad")
    for context, message in (
        ({"region": 3}, "context.region: expected a string"),
        ({"region": "eu", "recency": "x"}, "context.recency: expected a number"),
        ({"recency": 2}, "context.region: required"),
        ("eu", "context: expected an object"),
    ):
        response = await client.post("/v1/experiments/ctx-bad/allocate",
                                     json={"context": context})
        assert response.status == 422, context
        assert message in (await response.json())["error"]["message"], context
    # NaN cannot even be sent as JSON; an undeclared value is "other", not an error.
    response = await client.post("/v1/experiments/ctx-bad/allocate",
                                 json={"context": {"region": "mars"}})
    assert response.status == 200


async def test_the_service_learns_the_best_arm_of_each_segment(client: Client) -> None:
    await _create(client, "seg", exploration={})
    truth = {"eu": [0.1, 0.3, 0.1], "us": [0.3, 0.1, 0.1], "apac": [0.1, 0.1, 0.3]}
    rng = np.random.default_rng(3)
    best = {region: int(np.argmax(p)) for region, p in truth.items()}
    last_round: dict[str, list[int]] = {region: [] for region in truth}
    for round_number in range(30):
        events = []
        for region in truth:
            context = {"region": region, "recency": float(rng.uniform(0, 30))}
            decisions = (await (await client.post(
                "/v1/experiments/seg/allocate", json={"n": 50, "context": context})).json()
            )["decisions"]
            for j, d in enumerate(decisions):
                arm = "abc".index(d["arm"])
                if round_number == 29:
                    last_round[region].append(arm)
                events.append({"id": f"{round_number}-{region}-{j}", "experiment": "seg",
                               "arm": d["arm"], "decision_id": d["decision_id"],
                               "reward": int(rng.random() < truth[region][arm]),
                               "context": context})
        answer = await (await client.post("/v1/events", json={"events": events})).json()
        assert answer["accepted"] == len(events), answer
        await asyncio.sleep(0.12)  # the next refresh
    for region, arms in last_round.items():
        share = np.mean(np.array(arms) == best[region])
        assert share >= 0.8, (region, share)
