"""The experiment list's summaries (``?summary=true``) and the lifts in the stats, through a real
aiohttp server and a real Redis; the last hour's traffic count on made-up samples."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bandit.api.app import SERVICE
from bandit.serving.overview import TRAFFIC_STEP_S, TrafficWindow

Client = TestClient[Any, Any]
HOUR = 3600.0


def samples(times: list[float], rate: float) -> list[dict[str, Any]]:
    """Samples at ``times`` of two arms served ``rate`` decisions a second (half each)."""
    return [{"t": t, "served": [int(rate * t / 2), int(rate * t / 2)]} for t in times]


def test_decisions_in_the_last_hour_from_samples_at_any_spacing() -> None:
    window = TrafficWindow()
    # A minute apart for two hours, then 10 s apart for the last hour, as the history keeps.
    times = [float(t) for t in range(0, 7200, 60)] + [float(t) for t in range(7200, 10800, 10)]
    window.add(samples(times, 2.0))
    now = 10800.0
    traffic = window.last_hour(now, created_at=0.0, served=int(2 * now))
    assert traffic is not None
    # Counted from the last point at or before the hour's start: at most a step more.
    assert HOUR <= traffic["seconds"] <= HOUR + TRAFFIC_STEP_S + 10
    assert traffic["decisions"] == pytest.approx(2 * traffic["seconds"], abs=2)
    assert len(window.points) <= HOUR / TRAFFIC_STEP_S + 3


def test_an_idle_experiment_served_nothing_in_the_last_hour() -> None:
    window = TrafficWindow()
    window.add(samples([0.0, 10.0, 20.0, 25.0], 4.0))  # then idle for hours
    traffic = window.last_hour(5 * HOUR, created_at=0.0, served=2 * 50)
    assert traffic == {"decisions": 0, "seconds": 5 * HOUR - 25.0}


def test_a_new_experiment_counts_everything_since_it_was_created() -> None:
    window = TrafficWindow()
    window.add(samples([100.0, 110.0], 1.0))
    assert window.last_hour(200.0, created_at=90.0, served=150) == {"decisions": 150,
                                                                     "seconds": 110.0}
    # History that does not reach back an hour cannot say (unless nothing was ever served).
    assert TrafficWindow().last_hour(2 * HOUR, created_at=0.0, served=5) is None
    assert TrafficWindow().last_hour(2 * HOUR, created_at=0.0, served=0) == {
        "decisions": 0, "seconds": HOUR}


async def create(client: Client, experiment_id: str, rewards: dict[str, tuple[int, int]],
                 **extra: Any) -> None:
    response = await client.post("/v1/experiments", json={
        "id": experiment_id, "arms": list(rewards), "reward": "bernoulli", **extra})
    assert response.status == 201, await response.text()
    events = [{"id": f"{arm}-{i}", "experiment": experiment_id, "arm": arm,
               "reward": int(i < successes)}
              for arm, (successes, observations) in rewards.items()
              for i in range(observations)]
    response = await client.post("/v1/events", json={"events": events})
    assert response.status == 200, await response.text()
    # The process's snapshot follows within a refresh interval.
    for _ in range(250):
        stats = await get(client, f"/v1/experiments/{experiment_id}/stats")
        if sum(arm["n"] for arm in stats["arms"]) == len(events):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the rewards never showed in the stats")


async def get(client: Client, path: str, status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status == status, await response.text()
    return await response.json()


async def test_stats_give_each_arms_lift_against_the_control(client: Client) -> None:
    await create(client, "named", {"blue": (30, 300), "control": (20, 300), "green": (25, 300)})
    stats = await get(client, "/v1/experiments/named/stats")
    assert stats["control"] == {"arm": "control", "chosen_by": "name"}
    lifts = {arm["arm"]: arm["lift"] for arm in stats["arms"]}
    assert lifts["control"] is None
    blue = lifts["blue"]
    assert blue["against"] == "control" and blue["kind"] == "relative"
    assert blue["mean"] == pytest.approx((31 / 302) / (21 / 302) - 1)
    assert blue["ci95"][0] < blue["mean"] < blue["ci95"][1]
    # Asked again: the same draws, the same interval.
    assert (await get(client, "/v1/experiments/named/stats"))["arms"] == stats["arms"]

    await create(client, "held", {"a": (30, 300), "b": (20, 300)},
                 exploration={"control": {"arm": "b", "share": 0.2}})
    stats = await get(client, "/v1/experiments/held/stats")
    assert stats["control"] == {"arm": "b", "chosen_by": "setting"}
    assert [arm["lift"] and arm["lift"]["against"] for arm in stats["arms"]] == ["b", None]

    await create(client, "plain", {"a": (30, 300), "b": (20, 300), "c": (10, 300)})
    stats = await get(client, "/v1/experiments/plain/stats")
    assert stats["control"] is None
    assert [arm["lift"]["against"] for arm in stats["arms"]] == ["b", "a", "a"]


async def test_the_list_summarises_each_experiment_as_its_stats_do(client: Client) -> None:
    await create(client, "alpha", {"control": (20, 400), "blue": (60, 400)})
    await create(client, "beta", {"x": (10, 100), "y": (11, 100), "z": (9, 100)})
    plain = await get(client, "/v1/experiments")
    assert all("summary" not in entry for entry in plain["experiments"])
    shown = await get(client, "/v1/experiments/alpha")
    assert plain["experiments"][0]["created_at"] == shown["created_at"]
    assert plain["experiments"][0]["updated_at"] == shown["updated_at"]

    page = await get(client, "/v1/experiments?summary=true&limit=1")
    assert [entry["id"] for entry in page["experiments"]] == ["alpha"] and page["next"] == "alpha"
    page = await get(client, "/v1/experiments?summary=true&after=alpha")
    assert [entry["id"] for entry in page["experiments"]] == ["beta"]

    for entry in (await get(client, "/v1/experiments?summary=true"))["experiments"]:
        stats = await get(client, f"/v1/experiments/{entry['id']}/stats")
        summary = entry["summary"]
        leader = max(stats["arms"], key=lambda arm: arm["p_best"])
        assert summary["leader"] == {"arm": leader["arm"], "p_best": leader["p_best"]}
        assert summary["winner"] == (stats["winner"] and stats["winner"]["arm"])
        assert summary["lift"] == leader["lift"]
        health = stats["health"]
        assert summary["health"] == {
            "sample_ratio_ok": health["sample_ratio"] and health["sample_ratio"]["ok"],
            "rewards_stalled": health["rewards"] and health["rewards"]["stalled"]}
        # Created a moment ago, nothing served: nothing in the last hour.
        assert summary["traffic_last_hour"]["decisions"] == 0
    alpha = (await get(client, "/v1/experiments?summary=true&limit=1"))["experiments"][0]
    assert alpha["summary"]["winner"] == "blue"
    assert alpha["summary"]["lift"]["against"] == "control"

    response = await client.post("/v1/experiments/alpha/allocate", json={"n": 40})
    assert response.status == 200
    await client.app[SERVICE].flush_served()
    alpha = (await get(client, "/v1/experiments?summary=true&limit=1"))["experiments"][0]
    assert alpha["summary"]["traffic_last_hour"]["decisions"] == 40

    error = await get(client, "/v1/experiments?summary=yes", 422)
    assert "summary" in error["error"]["message"]


async def test_no_leader_before_the_first_observation(client: Client) -> None:
    response = await client.post("/v1/experiments", json={
        "id": "fresh", "arms": ["control", "b"], "reward": "bernoulli"})
    assert response.status == 201
    [entry] = (await get(client, "/v1/experiments?summary=true"))["experiments"]
    assert entry["summary"]["leader"] is None and entry["summary"]["lift"] is None
    assert entry["summary"]["winner"] is None
