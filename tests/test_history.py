"""GET /v1/experiments/{id}/history: sampled over time, once per interval across processes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bandit.api.app import create_app
from bandit.settings import Settings
from bandit.store.redis_store import RedisStore

Client = TestClient[Any, Any]
INTERVAL = 0.2


@pytest.fixture
async def two_processes(redis_url: str) -> AsyncIterator[list[Client]]:
    """Two service instances on one Redis, sampling history every 0.2 s, at most 8 kept."""
    settings = Settings(redis_url=redis_url, refresh_interval_s=0.05,
                        served_flush_interval_s=0.05, history_interval_s=INTERVAL,
                        history_max_samples=8)
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(
            TestClient(TestServer(create_app(settings, seed=seed)))) for seed in (1, 2)]
        yield clients


async def test_history_is_sampled_once_per_interval_across_processes(
    two_processes: list[Client],
) -> None:
    first, second = two_processes
    response = await first.post("/v1/experiments", json={
        "id": "hist", "arms": ["a", "b"], "reward": "bernoulli"})
    assert response.status == 201
    for client in two_processes:  # both processes now serve (and sample) the experiment
        assert (await client.post("/v1/experiments/hist/allocate", json={"n": 10})).status == 200
    await asyncio.sleep(3 * INTERVAL)
    events = [{"id": f"e{i}", "experiment": "hist", "arm": "b", "reward": 1} for i in range(30)]
    assert (await (await first.post("/v1/events", json={"events": events})).json())[
        "accepted"] == 30
    await asyncio.sleep(4 * INTERVAL)
    body = await (await second.get("/v1/experiments/hist/history")).json()
    samples = body["samples"]
    assert body["interval_s"] == INTERVAL
    # Sampled when first served and after each change (decisions served, rewards): not
    # while idle, at most once per interval, trimmed to the newest 8.
    assert 2 <= len(samples) <= 8
    times = [s["t"] for s in samples]
    # Two processes offer samples, but the script keeps one per interval (5% slack on timers).
    assert all(b - a >= 0.95 * INTERVAL for a, b in itertools.pairwise(times))
    for entry in samples:
        assert entry["arms"] == ["a", "b"]
        assert sum(entry["share"]) == pytest.approx(1.0)
        assert entry["ci_low"][1] <= entry["mean"][1] <= entry["ci_high"][1]
    assert samples[0]["n"] == [0.0, 0.0]
    assert samples[-1]["n"] == [0.0, 30.0]
    # Beta(31, 1) against Beta(1, 1): P(b best) = 1 - E[1 - p_b] = 31/32.
    assert samples[-1]["share"][1] == pytest.approx(31 / 32, abs=0.005)
    assert samples[-1]["served"][0] + samples[-1]["served"][1] >= 20
    recent = await (await first.get("/v1/experiments/hist/history",
                                    params={"since": str(times[-3]), "limit": "1"})).json()
    assert [s["t"] for s in recent["samples"]] == [times[-1]]


async def test_an_idle_experiment_is_not_sampled(two_processes: list[Client]) -> None:
    """Sampling costs what happens: 20,000 idle cached experiments once kept a core busy."""
    first, second = two_processes
    assert (await first.post("/v1/experiments", json={
        "id": "idle", "arms": ["a", "b"], "reward": "bernoulli"})).status == 201
    for client in two_processes:
        assert (await client.post("/v1/experiments/idle/allocate")).status == 200

    async def samples() -> list[dict[str, Any]]:
        body = await (await second.get("/v1/experiments/idle/history")).json()
        return list(body["samples"])

    # Both processes served it: it is sampled (each process offers until one sample lands).
    deadline = asyncio.get_running_loop().time() + 30 * INTERVAL
    while not await samples():
        assert asyncio.get_running_loop().time() < deadline, "never sampled"
        await asyncio.sleep(INTERVAL / 2)
    await asyncio.sleep(3 * INTERVAL)  # offers of the served decisions' interval settle
    settled = await samples()
    await asyncio.sleep(6 * INTERVAL)  # twelve offer rounds of two processes, nothing new
    assert await samples() == settled
    # A change is sampled again.
    assert (await first.post("/v1/experiments/idle/allocate")).status == 200
    deadline = asyncio.get_running_loop().time() + 30 * INTERVAL
    while len(await samples()) == len(settled):
        assert asyncio.get_running_loop().time() < deadline, "the change was not sampled"
        await asyncio.sleep(INTERVAL / 2)


@pytest.mark.parametrize(("query", "message"), [({"since": "yesterday"}, "since"),
                                                ({"limit": "0"}, "limit"),
                                                ({"limit": "100000"}, "limit")])
async def test_bad_history_queries_are_422(two_processes: list[Client], query: dict[str, str],
                                           message: str) -> None:
    client = two_processes[0]
    await client.post("/v1/experiments", json={"id": "hist", "arms": ["a", "b"],
                                               "reward": "bernoulli"})
    response = await client.get("/v1/experiments/hist/history", params=query)
    assert response.status == 422
    assert message in (await response.json())["error"]["message"]


async def test_history_of_an_unknown_experiment_is_404(two_processes: list[Client]) -> None:
    assert (await two_processes[0].get("/v1/experiments/nope/history")).status == 404


async def test_recent_history_is_finer_and_merged_with_the_coarse_list(redis_url: str) -> None:
    """A fine list (0.2 s, kept 1 s here; 10 s for an hour by default) beside the coarse one
    (1 s): reads give the coarse samples older than the fine list, then the fine ones."""
    settings = Settings(redis_url=redis_url, refresh_interval_s=0.05,
                        served_flush_interval_s=0.05, history_interval_s=1.0,
                        history_max_samples=20, history_fine_interval_s=0.2,
                        history_fine_window_s=1.0)
    async with TestClient(TestServer(create_app(settings, seed=3))) as client:
        assert (await client.post("/v1/experiments", json={
            "id": "fine", "arms": ["a", "b"], "reward": "bernoulli"})).status == 201
        loop = asyncio.get_running_loop()
        end = loop.time() + 4.0
        while loop.time() < end:  # served all along: sampled at every interval
            assert (await client.post("/v1/experiments/fine/allocate")).status == 200
            await asyncio.sleep(0.02)
        body = await (await client.get("/v1/experiments/fine/history")).json()
        assert (body["interval_s"], body["coarse_interval_s"], body["fine_window_s"]) == (
            0.2, 1.0, 1.0)
        times = [s["t"] for s in body["samples"]]
        assert times == sorted(times)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # ceil(1 s / 0.2 s) + 1 fine samples, the newest; coarse ones before them.
        assert all(0.95 * 0.2 <= gap < 0.5 for gap in gaps[-5:]), gaps
        assert all(gap >= 0.95 * 1.0 for gap in gaps[:-6]), gaps
        assert len(times) >= 6 + 2
        store = RedisStore.from_settings(settings)
        try:
            assert await store.client.llen(store.keys("fine").history_fine) == 6
            # A since in the fine stretch gives only what is newer; a limit the newest.
            recent = await store.history("fine", times[-3], 10)
            assert recent is not None and [s["t"] for s in recent] == times[-2:]
            newest = await store.history("fine", 0.0, 3)
            assert newest is not None and [s["t"] for s in newest] == times[-3:]
        finally:
            await store.close()
        for sample in body["samples"]:
            assert sum(sample["drawn"]) <= sum(sample["served"])
            assert sum(sample["expected"]) == pytest.approx(sum(sample["drawn"]), abs=0.01)


async def test_a_guardrail_experiments_samples_carry_p_violates_and_the_gate(
    two_processes: list[Client],
) -> None:
    """Arm b breaks the revenue guardrail (10% below the control, 400 observations each) and
    the gate holds it; d is paused: its P(violates) is null, as the control's. A sample
    carries what the stats say; a plain experiment's samples carry neither column."""
    first, second = two_processes
    response = await first.post("/v1/experiments", json={
        "id": "guarded", "arms": ["control", "b", "c", "d"], "reward": "bernoulli",
        "control": "control",
        "guardrails": [{"metric": "revenue", "kind": "gaussian", "direction": "higher",
                        "threshold": {"relative": -0.02}},
                       {"metric": "unsubscribe", "kind": "bernoulli", "direction": "lower",
                        "threshold": {"absolute": 0.01}}],
        "exploration": {"min_share": 0.05, "gate_min_samples": 100}})
    assert response.status == 201, await response.text()
    assert (await first.post("/v1/experiments", json={
        "id": "plain", "arms": ["a", "b"], "reward": "bernoulli"})).status == 201
    noise = [(-1) ** i * 0.5 for i in range(400)]
    events: list[dict[str, Any]] = []
    for arm, level in (("control", 1.0), ("b", 0.9), ("c", 1.2), ("d", 1.0)):
        events += [{"id": f"{arm}-r{i}", "experiment": "guarded", "arm": arm,
                    "metric": "revenue", "reward": level + e} for i, e in enumerate(noise)]
        events += [{"id": f"{arm}-u{i}", "experiment": "guarded", "arm": arm,
                    "metric": "unsubscribe", "reward": 0} for i in range(1000)]
        events += [{"id": f"{arm}-p{i}", "experiment": "guarded", "arm": arm,
                    "reward": int(i < 40)} for i in range(400)]
    events += [{"id": f"plain-{i}", "experiment": "plain", "arm": "b", "reward": 1}
               for i in range(10)]
    body = await (await first.post("/v1/events", json={"events": events})).json()
    assert body["accepted"] == len(events), body
    response = await second.patch("/v1/experiments/guarded", json={
        "version": 1, "arms": {"pause": ["d"]}, "reason": "a null P(violates) in the history"})
    assert response.status == 200, await response.text()

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 50 * INTERVAL
    while True:  # until a sample of the settled state (b held, d paused) has landed
        for client in two_processes:
            assert (await client.post("/v1/experiments/guarded/allocate")).status == 200
            assert (await client.post("/v1/experiments/plain/allocate")).status == 200
        stats = await (await first.get("/v1/experiments/guarded/stats")).json()
        history = await (await second.get("/v1/experiments/guarded/history")).json()
        last = history["samples"][-1] if history["samples"] else None
        if (last is not None and last["version"] == 2 and last["held"][1]
                and last["n"] == [arm["n"] for arm in stats["arms"]]):
            break
        assert loop.time() < deadline, (stats["arms"], last)
        await asyncio.sleep(INTERVAL / 2)
    assert last["arms"] == ["control", "b", "c", "d"]
    assert [arm["held"] for arm in stats["arms"]] == last["held"] == [False, True, False,
                                                                       False]
    for arm, p_violates in zip(stats["arms"], last["p_violates"], strict=True):
        if arm["p_violates"] is None:
            assert p_violates is None, arm["arm"]
        else:
            assert p_violates == pytest.approx(arm["p_violates"], abs=5e-5), arm["arm"]
    assert last["p_violates"][0] is None and last["p_violates"][3] is None  # control, paused
    assert last["p_violates"][1] >= 0.95 > last["p_violates"][2]
    for sample in history["samples"]:
        assert len(sample["p_violates"]) == len(sample["held"]) == 4

    plain = await (await first.get("/v1/experiments/plain/history")).json()
    assert plain["samples"]
    for sample in plain["samples"]:
        assert "p_violates" not in sample and "held" not in sample
        assert set(sample) == {"t", "version", "arms", "share", "mean", "ci_low", "ci_high",
                               "n", "served", "drawn", "expected", "variance"}
